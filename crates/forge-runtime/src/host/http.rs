//! `http_request`: outbound HTTP to the targets an overlay's manifest allows.
//!
//! The manifest's `network:http` capability lists its targets as `constraints.hosts`, patterns
//! `scheme://host[:port]` (see [`forge_model::network`]). The URL is parsed once, here; its scheme,
//! host and port must match a pattern, or the call ends with `capability_denied`. The method must be
//! one of [`METHODS`] and no header may be one of [`FORBIDDEN_HEADERS`] (`invalid_request`). What is
//! sent is the parsed URL, by the operator's [`HttpClient`], which checks every resolved address and
//! redirect against the same patterns ([`NoNetwork`] answers `unavailable`).

use super::{HandlerFuture, HostCallError, RequestContext, parse_request, to_answer};
use crate::abi::GuestErrorCode;
use crate::state::Abort;
use forge_model::ErrorKind;
use forge_model::network::{HostPattern, Scheme, Target};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// `http_request`'s argument, as the guest writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    #[serde(default = "default_method")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
}

fn default_method() -> String {
    "GET".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// The methods a guest may use.
pub const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// Headers the client owns: the target (`host`), the connection and its framing (hop-by-hop), and
/// proxies (any `proxy-*`). A guest setting one could smuggle a second request or reach another
/// host than the one checked.
pub const FORBIDDEN_HEADERS: [&str; 11] = [
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
    "forwarded",
    "via",
];

/// A request that passed the manifest's checks, as the client must send it.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// The overlay sending it, for the client's log and metrics.
    pub overlay: Arc<str>,
    /// One of [`METHODS`].
    pub method: &'static str,
    /// Parsed once; its scheme, host and port matched `allowed`.
    pub url: url::Url,
    pub headers: Vec<(String, String)>,
    /// Bounded by the call's input cap (the whole request is).
    pub body: Option<String>,
    /// The manifest's patterns: every resolved address and redirect is checked against them again.
    pub allowed: Arc<[HostPattern]>,
    /// The call's deadline, which bounds the whole exchange.
    pub deadline: Instant,
    /// Larger response bodies are cut off and refused (`max_http_response_bytes`).
    pub max_response_bytes: usize,
}

#[async_trait::async_trait]
pub trait HttpClient: Send + Sync + 'static {
    /// Sends a request whose target the overlay's patterns allow, checking where it really goes.
    async fn send(&self, request: OutboundRequest) -> Result<HttpResponse, HostCallError>;
}

/// No outbound network: every request is answered `unavailable`.
pub struct NoNetwork;

#[async_trait::async_trait]
impl HttpClient for NoNetwork {
    async fn send(&self, _: OutboundRequest) -> Result<HttpResponse, HostCallError> {
        Err(HostCallError::refused(
            GuestErrorCode::Unavailable,
            "outbound HTTP is not configured on this host",
        ))
    }
}

/// Whether `url`'s scheme, host and port are inside one of `allowed`.
pub fn target_allowed(url: &url::Url, allowed: &[HostPattern]) -> bool {
    let (Some(scheme), Some(port)) = (Scheme::parse(url.scheme()), url.port_or_known_default()) else {
        return false;
    };
    let target = match url.host() {
        Some(url::Host::Domain(name)) => Target::Name(name),
        Some(url::Host::Ipv4(v4)) => Target::Address(v4.into()),
        Some(url::Host::Ipv6(v6)) => Target::Address(v6.into()),
        None => return false,
    };
    allowed.iter().any(|pattern| pattern.matches(scheme, target, port))
}

/// A malformed request, a method outside [`METHODS`] or a header in [`FORBIDDEN_HEADERS`] is the
/// guest's to handle (`invalid_request`); a target outside the manifest's patterns ends the call
/// (`capability_denied`); past `max_http_requests` the guest is answered `network_denied`.
pub(crate) fn request(context: &mut RequestContext<'_>, request: Value) -> Result<HandlerFuture, Abort> {
    let client = context.grants.services.http.clone();
    let checked = parse_request::<HttpRequest>(request).and_then(checked_shape);
    if let Ok((_, url, _)) = &checked
        && !target_allowed(url, &context.grants.http_hosts)
    {
        let target = url.origin().ascii_serialization();
        return Err(Abort::new(
            ErrorKind::CapabilityDenied,
            format!("http_request to `{target}` is not allowed by the manifest's network:http hosts"),
        ));
    }
    let checked = checked.and_then(|(method, url, request)| {
        let (sent, max) = (context.meter.http_requests, context.limits.max_http_requests);
        if sent >= max {
            return Err(HostCallError::refused(
                GuestErrorCode::NetworkDenied,
                format!("this call sent its {max} HTTP requests (max_http_requests)"),
            ));
        }
        context.meter.http_requests += 1;
        Ok(OutboundRequest {
            overlay: context.identity.name.clone(),
            method,
            url,
            headers: request.headers.into_iter().collect(),
            body: request.body,
            allowed: context.grants.http_hosts.clone(),
            deadline: context.deadline,
            max_response_bytes: context.limits.max_http_response_bytes,
        })
    });
    Ok(Box::pin(async move { to_answer(client.send(checked?).await?) }))
}

fn checked_shape(request: HttpRequest) -> Result<(&'static str, url::Url, HttpRequest), HostCallError> {
    let invalid = |message: String| HostCallError::refused(GuestErrorCode::InvalidRequest, message);
    let method = METHODS.into_iter().find(|m| m.eq_ignore_ascii_case(&request.method)).ok_or_else(|| {
        invalid(format!("method `{}` is not one of {}", request.method, METHODS.join(", ")))
    })?;
    let url = url::Url::parse(&request.url)
        .ok()
        .filter(|url| url.has_host())
        .ok_or_else(|| invalid(format!("`{}` is not an absolute URL", request.url)))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URL are not sent; use an `authorization` header".into()));
    }
    for (name, value) in &request.headers {
        let lower = name.to_ascii_lowercase();
        if FORBIDDEN_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
            return Err(invalid(format!("header `{name}` is set by the host, not the overlay")));
        }
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) || value.bytes().any(|b| b < 0x20 && b != b'\t') {
            return Err(invalid(format!("header `{name}` is not a valid header")));
        }
    }
    Ok((method, url, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            url: url.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: None,
        }
    }

    #[test]
    fn targets_are_checked_by_scheme_host_and_port() {
        let allowed: Vec<HostPattern> =
            ["api.example.com", "http://127.0.0.1:8080"].iter().map(|p| p.parse().unwrap()).collect();
        let allows = |url: &str| target_allowed(&url::Url::parse(url).unwrap(), &allowed);
        assert!(allows("https://api.example.com/v1?q=1"));
        assert!(allows("https://API.example.com:443/"));
        assert!(!allows("http://api.example.com/"));
        assert!(!allows("https://api.example.com:8443/"));
        assert!(!allows("https://other.example.com/"));
        assert!(allows("http://127.0.0.1:8080/x"));
        assert!(!allows("http://127.0.0.2:8080/x"));
        assert!(!allows("http://localhost:8080/x"));
        assert!(!allows("ftp://api.example.com/"));
    }

    #[test]
    fn methods_and_headers_are_checked() {
        assert!(checked_shape(request("get", "https://a.com", &[("accept", "x")])).is_ok());
        for method in ["CONNECT", "TRACE", "OPTIONS", "G ET"] {
            assert!(checked_shape(request(method, "https://a.com", &[])).is_err(), "{method}");
        }
        for header in ["Host", "connection", "Transfer-Encoding", "proxy-authorization", "Upgrade", "TE"] {
            let err = checked_shape(request("GET", "https://a.com", &[(header, "x")])).unwrap_err();
            assert!(err.to_string().contains("set by the host"), "{header}: {err}");
        }
        assert!(checked_shape(request("GET", "https://a.com", &[("x-a", "b\r\nHost: evil")])).is_err());
        assert!(checked_shape(request("GET", "https://u:p@a.com", &[])).is_err());
        assert!(checked_shape(request("GET", "/relative", &[])).is_err());
    }
}
