//! Outbound HTTP through the host (`forge.http_request`, capability `network:http`).
//!
//! The host makes the request, so the overlay never holds a socket. The manifest's
//! `constraints.hosts` are patterns `scheme://host[:port]` (`https://api.example.com`,
//! `https://*.example.com:443`, `http://10.0.0.0/8:8080`; a bare host means https on 443), checked
//! by the host as docs/abi.md says:
//!
//! - a URL outside them is not answered: it ends the call with error kind `capability_denied`;
//! - a method other than GET, HEAD, POST, PUT, PATCH, DELETE, or a `Host`, hop-by-hop or `Proxy-*`
//!   header, is answered [`HostErrorCode::InvalidRequest`](crate::HostErrorCode::InvalidRequest);
//! - a name resolving to a private, loopback or link-local address that no pattern names
//!   literally, a redirect outside the patterns (or past 5), a response body over the host's cap
//!   (1 MiB by default) or more requests than the call may send (16 by default) are answered
//!   [`HostErrorCode::NetworkDenied`](crate::HostErrorCode::NetworkDenied);
//! - a connection failure is answered [`HostErrorCode::Unavailable`](crate::HostErrorCode::Unavailable).
//!
//! The host follows allowed redirects itself. Bodies are text.
//!
//! ```
//! use forge_sdk::http::Request;
//!
//! let request = Request::post("https://api.example.com/v1/notes", r#"{"text":"hi"}"#)
//!     .header("content-type", "application/json");
//! assert_eq!(request.method, "POST");
//! // Outside a wasm guest there is no host to ask.
//! assert!(forge_sdk::http::request(&request).is_err());
//! ```

use crate::host::{self, HostError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An HTTP request for the host to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// `GET`, `HEAD`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Left out of the request JSON when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl Request {
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Request { method: method.into(), url: url.into(), headers: BTreeMap::new(), body: None }
    }

    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    pub fn post(url: impl Into<String>, body: impl Into<String>) -> Self {
        Self::new("POST", url).body(body)
    }

    /// Sets a header (replacing an earlier value of the same name).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }
}

/// The host's answer to a [`Request`]. A non-2xx status is still `Ok`: check [`Response::status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Makes `request` through the host.
pub fn request(request: &Request) -> Result<Response, HostError> {
    host::call("http_request", host::raw_calls::http_request, request)
}

/// Shorthand for a `GET` without headers.
pub fn get(url: &str) -> Result<Response, HostError> {
    self::request(&Request::get(url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_wire_shape() {
        assert_eq!(
            serde_json::to_value(Request::get("https://a.example/x")).unwrap(),
            json!({"method": "GET", "url": "https://a.example/x", "headers": {}})
        );
        assert_eq!(
            serde_json::to_value(Request::post("https://a.example/x", "b").header("k", "v")).unwrap(),
            json!({"method": "POST", "url": "https://a.example/x", "headers": {"k": "v"}, "body": "b"})
        );
    }

    #[test]
    fn response_parses() {
        let r: Response =
            serde_json::from_value(json!({"status": 404, "headers": {"a": "b"}, "body": "nope"})).unwrap();
        assert!(!r.is_success());
        assert_eq!(r.headers["a"], "b");
    }

    #[test]
    fn unavailable_natively() {
        assert_eq!(get("https://a.example").unwrap_err().code, crate::HostErrorCode::Unavailable);
    }
}
