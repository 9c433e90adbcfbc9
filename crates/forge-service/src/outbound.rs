//! The HTTP client behind `http_request`: sends what the runtime checked, and checks where it
//! really goes.
//!
//! Every name is resolved once, here; each address found must be an ordinary public one or be named
//! literally by one of the overlay's patterns ([`forge_model::network::special_range`]), and the
//! connection goes to the checked addresses only: the client's resolver answers only with the
//! addresses checked for the request being sent (a task-local), and fails otherwise, so there is no
//! second lookup and no DNS rebinding. Redirects are followed by hand, each target checked against
//! the patterns like the first, at most [`MAX_REDIRECTS`]. The response body is read as it arrives
//! and refused past its cap. No proxy from the environment is used, no body is decompressed, and no
//! connection is pooled: one checked for an overlay whose patterns name a private address must
//! not serve another overlay's request to the same name.

use forge_model::ForgeError;
use forge_model::network::{HostPattern, Scheme, special_range};
use forge_runtime::{
    GuestErrorCode, HostCallError, HttpClient, HttpResponse, OutboundRequest, target_allowed,
};
use prometheus::IntCounterVec;
use reqwest::{Method, StatusCode, header};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Redirects one request may follow.
pub const MAX_REDIRECTS: usize = 5;

/// Outbound HTTP for overlays, over rustls.
pub struct OutboundHttp {
    /// Shared by every request (its TLS roots are loaded once); connects only to checked addresses.
    client: reqwest::Client,
    /// `forge_overlay_http_requests_total`, by overlay and outcome; none for local runs.
    counter: Option<IntCounterVec>,
}

impl OutboundHttp {
    /// A client without metrics, as `forge-overlay run` and `bench` use.
    pub fn new() -> Result<Self, ForgeError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(0)
            .dns_resolver(Arc::new(CheckedAddresses))
            .build()
            .map_err(|e| ForgeError::internal(format!("cannot set up the outbound HTTP client: {e}")))?;
        Ok(OutboundHttp { client, counter: None })
    }

    pub(crate) fn counted(counter: IntCounterVec) -> Result<Self, ForgeError> {
        Ok(OutboundHttp { counter: Some(counter), ..Self::new()? })
    }
}

/// The addresses checked for the request being sent, by name.
struct Checked {
    name: String,
    addresses: Vec<SocketAddr>,
}

tokio::task_local! {
    static CHECKED: Checked;
}

/// The client's resolver: the addresses checked for this request's name, never a lookup of its own.
struct CheckedAddresses;

impl reqwest::dns::Resolve for CheckedAddresses {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let checked = CHECKED
            .try_with(|c| c.name.eq_ignore_ascii_case(name.as_str()).then(|| c.addresses.clone()))
            .ok()
            .flatten();
        Box::pin(async move {
            match checked {
                Some(addresses) => Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs),
                None => {
                    Err(format!("`{}` was not resolved and checked for this request", name.as_str()).into())
                }
            }
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for OutboundHttp {
    async fn send(&self, request: OutboundRequest) -> Result<HttpResponse, HostCallError> {
        let target = format!(
            "{} {}{}",
            request.method,
            request.url.origin().ascii_serialization(),
            request.url.path()
        );
        let mut record = Record {
            overlay: request.overlay.clone(),
            target,
            counter: self.counter.as_ref(),
            finished: false,
        };
        let result = exchange(&self.client, request).await;
        match &result {
            Ok(response) => record.finish("ok", &format!("status {}", response.status)),
            Err(HostCallError::Refused { code: GuestErrorCode::NetworkDenied, message }) => {
                record.finish("denied", message)
            }
            Err(error) => record.finish("failed", &error.to_string()),
        }
        result
    }
}

/// Logs and counts one outbound request when it ends; one dropped unfinished (the call's deadline
/// passed while it waited) is recorded as `timeout`.
struct Record<'a> {
    overlay: Arc<str>,
    target: String,
    counter: Option<&'a IntCounterVec>,
    finished: bool,
}

impl Record<'_> {
    fn finish(&mut self, outcome: &str, detail: &str) {
        self.finished = true;
        let overlay = &self.overlay;
        tracing::info!(%overlay, target = %self.target, outcome, detail, "outbound http");
        if let Some(counter) = self.counter {
            counter.with_label_values(&[&**overlay, outcome]).inc();
        }
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish("timeout", "the call's deadline passed first");
        }
    }
}

fn denied(message: impl Into<String>) -> HostCallError {
    HostCallError::refused(GuestErrorCode::NetworkDenied, message)
}

fn unavailable(message: impl Into<String>) -> HostCallError {
    HostCallError::refused(GuestErrorCode::Unavailable, message)
}

async fn exchange(client: &reqwest::Client, request: OutboundRequest) -> Result<HttpResponse, HostCallError> {
    let OutboundRequest {
        method, mut url, mut headers, mut body, allowed, deadline, max_response_bytes, ..
    } = request;
    let mut method =
        Method::from_bytes(method.as_bytes()).map_err(|e| HostCallError::Fault(e.to_string()))?;
    let mut redirects = 0;
    loop {
        let response = send_once(client, &method, &url, &headers, body.clone(), &allowed, deadline).await?;
        let status = response.status();
        let location = response.headers().get(header::LOCATION).and_then(|l| l.to_str().ok());
        let redirected = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
        let Some(location) = location.filter(|_| redirected) else {
            return read(response, max_response_bytes).await;
        };
        let next =
            url.join(location).map_err(|_| denied(format!("redirect to `{location}` is not a URL")))?;
        if redirects == MAX_REDIRECTS {
            return Err(denied(format!("more than {MAX_REDIRECTS} redirects")));
        }
        if !next.username().is_empty() || next.password().is_some() {
            return Err(denied("redirect to a URL with credentials refused"));
        }
        if !target_allowed(&next, &allowed) {
            let origin = next.origin().ascii_serialization();
            return Err(denied(format!(
                "redirect to `{origin}` refused: it is outside the manifest's network:http hosts"
            )));
        }
        redirects += 1;
        let to_get = status == StatusCode::SEE_OTHER
            || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                && method == Method::POST);
        if to_get && method != Method::HEAD {
            method = Method::GET;
            body = None;
            headers.retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        }
        if next.origin() != url.origin() {
            // Credentials meant for one origin are not handed to another.
            headers.retain(|(name, _)| {
                !["authorization", "cookie"].contains(&name.to_ascii_lowercase().as_str())
            });
        }
        url = next;
    }
}

/// One request to `url` (its target already matched `allowed`), connected only to checked addresses.
async fn send_once(
    client: &reqwest::Client,
    method: &Method,
    url: &url::Url,
    headers: &[(String, String)],
    body: Option<String>,
    allowed: &[HostPattern],
    deadline: Instant,
) -> Result<reqwest::Response, HostCallError> {
    let scheme = Scheme::parse(url.scheme()).ok_or_else(|| denied("only http and https are sent"))?;
    let port = url.port_or_known_default().ok_or_else(|| denied("the URL has no port"))?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let checked = match url.host() {
        Some(url::Host::Domain(name)) => Checked {
            name: name.to_owned(),
            addresses: resolve(name, scheme, port, allowed, remaining).await?,
        },
        Some(url::Host::Ipv4(v4)) => {
            check_address(v4.into(), scheme, port, allowed).map(|()| Checked::none())?
        }
        Some(url::Host::Ipv6(v6)) => {
            check_address(v6.into(), scheme, port, allowed).map(|()| Checked::none())?
        }
        None => return Err(denied("the URL has no host")),
    };
    let mut request = client.request(method.clone(), url.clone()).timeout(remaining);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let origin = url.origin().ascii_serialization();
    CHECKED
        .scope(checked, request.send())
        .await
        .map_err(|e| unavailable(format!("request to `{origin}` failed: {e}")))
}

impl Checked {
    /// For an address literal, which the client connects to without resolving.
    fn none() -> Checked {
        Checked { name: String::new(), addresses: Vec::new() }
    }
}

/// Resolves `name` once and keeps the addresses it may reach; refuses it if none is left.
async fn resolve(
    name: &str,
    scheme: Scheme,
    port: u16,
    allowed: &[HostPattern],
    remaining: std::time::Duration,
) -> Result<Vec<SocketAddr>, HostCallError> {
    let lookup = tokio::time::timeout(remaining, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| unavailable(format!("resolving `{name}` timed out")))?
        .map_err(|e| unavailable(format!("cannot resolve `{name}`: {e}")))?;
    let (usable, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
        lookup.partition(|address| refusal(address.ip(), scheme, port, allowed).is_none());
    match refused.first().and_then(|address| refusal(address.ip(), scheme, port, allowed)) {
        _ if !usable.is_empty() => Ok(usable),
        Some(reason) => Err(denied(format!("`{name}` resolves to {reason}"))),
        None => Err(unavailable(format!("`{name}` resolves to no address"))),
    }
}

fn check_address(
    address: IpAddr,
    scheme: Scheme,
    port: u16,
    allowed: &[HostPattern],
) -> Result<(), HostCallError> {
    refusal(address, scheme, port, allowed).map_or(Ok(()), |reason| Err(denied(reason)))
}

/// Why `address` may not be reached: it is in a special range that no pattern names literally.
fn refusal(address: IpAddr, scheme: Scheme, port: u16, allowed: &[HostPattern]) -> Option<String> {
    let range = special_range(address)?;
    let named = allowed.iter().any(|pattern| pattern.names_address(scheme, address, port));
    (!named).then(|| format!("{address}, a {range} address that no network:http pattern names literally"))
}

/// Reads the answer, refusing a body larger than `max` bytes as soon as it is seen to be.
async fn read(mut response: reqwest::Response, max: usize) -> Result<HttpResponse, HostCallError> {
    let too_large =
        || denied(format!("the response body is larger than {max} bytes (max_http_response_bytes)"));
    if response.content_length().is_some_and(|length| length > max as u64) {
        return Err(too_large());
    }
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in response.headers() {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| *v = format!("{v}, {value}"))
            .or_insert(value.into_owned());
    }
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) =
        response.chunk().await.map_err(|e| unavailable(format!("reading the response failed: {e}")))?
    {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HttpResponse { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_need_a_literal_pattern() {
        let patterns = |list: &[&str]| list.iter().map(|p| p.parse().unwrap()).collect::<Vec<HostPattern>>();
        let by_name = patterns(&["http://metadata.internal", "https://*"]);
        for address in ["169.254.169.254", "127.0.0.1", "10.0.0.1", "fd00::1", "::", "224.0.0.1", "fe80::1"] {
            let err = check_address(address.parse().unwrap(), Scheme::Http, 80, &by_name).unwrap_err();
            assert!(err.to_string().contains("network_denied"), "{address}: {err}");
        }
        assert!(check_address("93.184.216.34".parse().unwrap(), Scheme::Https, 443, &by_name).is_ok());
        let literal = patterns(&["http://10.0.0.0/8:8080"]);
        assert!(check_address("10.1.2.3".parse().unwrap(), Scheme::Http, 8080, &literal).is_ok());
        assert!(check_address("10.1.2.3".parse().unwrap(), Scheme::Http, 8081, &literal).is_err());
        assert!(check_address("127.0.0.1".parse().unwrap(), Scheme::Http, 8080, &literal).is_err());
    }

    #[tokio::test]
    async fn the_resolver_answers_only_the_name_checked_for_this_request() {
        use reqwest::dns::Resolve;
        let resolve = |name: &str| CheckedAddresses.resolve(name.parse().unwrap());
        let found = |answer: Result<reqwest::dns::Addrs, _>| answer.ok().map(Iterator::collect::<Vec<_>>);
        assert_eq!(found(resolve("example.com").await), None, "no lookup outside a checked request");
        let address: SocketAddr = "93.184.216.34:443".parse().unwrap();
        let checked = Checked { name: "example.com".into(), addresses: vec![address] };
        let (same, other) = CHECKED
            .scope(checked, async {
                (found(resolve("Example.com").await), found(resolve("other.com").await))
            })
            .await;
        assert_eq!(same, Some(vec![address]));
        assert_eq!(other, None);
    }

    #[tokio::test]
    async fn a_request_cut_off_by_the_deadline_is_counted_as_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stalls = tokio::spawn(async move { listener.accept().await.map(|(stream, _)| stream) });
        let counter =
            IntCounterVec::new(prometheus::Opts::new("requests", "test"), &["overlay", "outcome"]).unwrap();
        let client = OutboundHttp::counted(counter.clone()).unwrap();
        let request = OutboundRequest {
            overlay: "stalled".into(),
            method: "GET",
            url: format!("http://127.0.0.1:{port}/").parse().unwrap(),
            headers: Vec::new(),
            body: None,
            allowed: vec![format!("http://127.0.0.1:{port}").parse().unwrap()].into(),
            deadline: Instant::now() + std::time::Duration::from_secs(10),
            max_response_bytes: 1024,
        };
        let cut = tokio::time::timeout(std::time::Duration::from_millis(200), client.send(request)).await;
        assert!(cut.is_err(), "the stalled server never answers");
        assert_eq!(counter.with_label_values(&["stalled", "timeout"]).get(), 1);
        drop(stalls);
    }
}
