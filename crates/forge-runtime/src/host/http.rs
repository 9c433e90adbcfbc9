//! `http_request`: outbound HTTP to the hosts an overlay's manifest allows.
//!
//! The manifest's `network:http` capability lists its hosts as `constraints.hosts` (exact names, or
//! `*.example.com` for subdomains). A request to any other host ends the call with
//! `capability_denied`. The client behind it is configured by the operator; [`NoNetwork`] answers
//! `unavailable`.

use super::{HandlerFuture, HostCallError, RequestContext, parse_request, to_answer};
use crate::abi::GuestErrorCode;
use crate::state::Abort;
use forge_model::ErrorKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

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

#[async_trait::async_trait]
pub trait HttpClient: Send + Sync + 'static {
    /// Sends a request whose host the overlay is allowed to reach.
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HostCallError>;
}

/// No outbound network: every request is answered `unavailable`.
pub struct NoNetwork;

#[async_trait::async_trait]
impl HttpClient for NoNetwork {
    async fn send(&self, _: HttpRequest) -> Result<HttpResponse, HostCallError> {
        Err(HostCallError::refused(
            GuestErrorCode::Unavailable,
            "outbound HTTP is not configured on this host",
        ))
    }
}

/// Whether `host` matches one of the allowed patterns (`api.example.com` or `*.example.com`).
pub(crate) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    allowed.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(domain) => host.strip_suffix(domain).is_some_and(|prefix| prefix.ends_with('.')),
            None => host == pattern,
        }
    })
}

/// A malformed request is the guest's to handle (`invalid_request`); a host outside the manifest's
/// list ends the call (`capability_denied`).
pub(crate) fn request(context: &RequestContext<'_>, request: Value) -> Result<HandlerFuture, Abort> {
    let client = context.grants.services.http.clone();
    let checked = parse_request::<HttpRequest>(request).and_then(|request| {
        match url::Url::parse(&request.url).ok().and_then(|u| u.host_str().map(str::to_owned)) {
            Some(host) => Ok((request, host)),
            None => Err(HostCallError::refused(
                GuestErrorCode::InvalidRequest,
                format!("`{}` is not an absolute URL", request.url),
            )),
        }
    });
    if let Ok((_, host)) = &checked
        && !host_allowed(host, &context.grants.http_hosts)
    {
        return Err(Abort::new(
            ErrorKind::CapabilityDenied,
            format!("http_request to `{host}` is not allowed by the manifest's network:http hosts"),
        ));
    }
    Ok(Box::pin(async move {
        let (request, _) = checked?;
        to_answer(client.send(request).await?)
    }))
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn host_patterns() {
        let allowed = vec!["api.example.com".to_owned(), "*.forge.dev".to_owned()];
        assert!(host_allowed("api.example.com", &allowed));
        assert!(host_allowed("API.Example.com", &allowed));
        assert!(host_allowed("a.b.forge.dev", &allowed));
        assert!(!host_allowed("forge.dev", &allowed));
        assert!(!host_allowed("evilforge.dev", &allowed));
        assert!(!host_allowed("example.com", &allowed));
        assert!(!host_allowed("api.example.com.evil.net", &allowed));
    }
}
