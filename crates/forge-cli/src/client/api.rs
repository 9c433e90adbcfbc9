//! The HTTP side of the client: one function sends a request and turns the answer into data or a
//! [`Failure`], and one method per endpoint wraps it. The client commands and `demo` both use it.

use super::Paging;
use forge_model::{
    CapsuleType, ForgeError, LifecycleAction, OverlayFilter, OverlayInvocation, Role, TrustLevel,
};
use reqwest::blocking::{Client, RequestBuilder, multipart};
use reqwest::header::RETRY_AFTER;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

/// Exit status of a request the server refused, and of an invocation whose overlay failed.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status of a usage error (bad flags, unreadable file) and of a server that could not be
/// reached or did not answer with Forge's API.
pub const EXIT_USAGE: u8 = 2;

/// Longest wait for one answer. Invocations stop at 30 s on the server and registration compiles the
/// module, so anything much longer means the server is stuck.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a command did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with Forge's error body.
    Refused { status: StatusCode, error: ForgeError, retry_after: Option<u64> },
    /// Bad input, found before anything was sent.
    Usage(String),
    /// No answer, or an answer that is not Forge's API.
    Unreachable(String),
}

impl Failure {
    /// Prints the failure on stderr and gives the exit status it stands for.
    pub fn report(&self) -> ExitCode {
        match self {
            Failure::Refused { status, error, retry_after } => {
                eprintln!("error: {} ({}, HTTP {})", error.message, error.code.as_str(), status.as_u16());
                if let Some(seconds) = retry_after {
                    eprintln!("hint: the server is busy; retry in {seconds} s");
                } else if *status == StatusCode::UNAUTHORIZED {
                    eprintln!("hint: pass a valid token with --token or FORGE_TOKEN");
                }
                ExitCode::from(EXIT_REFUSED)
            }
            Failure::Usage(message) | Failure::Unreachable(message) => {
                eprintln!("error: {message}");
                ExitCode::from(EXIT_USAGE)
            }
        }
    }

    /// `details.state` of a refusal that names the overlay's state (e.g. one that is not active).
    pub fn refused_state(&self) -> Option<&str> {
        match self {
            Failure::Refused { error, .. } => error.details.get("state").and_then(Value::as_str),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused { error, .. } => f.write_str(&error.message),
            Failure::Usage(message) | Failure::Unreachable(message) => f.write_str(message),
        }
    }
}

/// Paging numbers of a list response.
#[derive(Debug, Clone, Deserialize)]
pub struct Meta {
    pub total: u64,
    pub page: u32,
    pub pages: u32,
}

/// A successful answer: its `data` (null for 204 No Content) and, for lists, `meta`.
#[derive(Debug)]
pub struct Reply {
    pub data: Value,
    pub meta: Option<Meta>,
}

impl Reply {
    /// The data as a model type; a mismatch means the server speaks another version of the API.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        T::deserialize(&self.data)
            .map_err(|e| Failure::Unreachable(format!("unexpected response from the server: {e}")))
    }
}

/// An overlay named on the command line: its id, or `NAME@VERSION`.
#[derive(Debug, Clone)]
pub enum OverlayRef {
    Id(Uuid),
    Version { name: String, version: String },
}

impl FromStr for OverlayRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(id) = s.parse() {
            return Ok(OverlayRef::Id(id));
        }
        match s.rsplit_once('@') {
            Some((name, version)) if !name.is_empty() && !version.is_empty() => {
                Ok(OverlayRef::Version { name: name.into(), version: version.into() })
            }
            _ => Err(format!("`{s}` is neither an overlay id (UUID) nor NAME@VERSION")),
        }
    }
}

/// A client of one server, acting with one token.
pub struct Api {
    base: Url,
    token: Option<String>,
    http: Client,
}

impl Api {
    pub fn new(url: &str, token: Option<String>) -> Result<Api, Failure> {
        let base = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| Failure::Usage(format!("`{url}` is not an http(s) URL")))?;
        let http = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("forge-overlay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Api { base, token, http })
    }

    /// The server's URL as the user gave it, for messages.
    fn origin(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base` followed by `segments` (each escaped as one path segment) and the given query pairs.
    fn endpoint(&self, segments: &[&str], query: &[(&str, Option<String>)]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("checked in Api::new").pop_if_empty().extend(segments);
        let pairs: Vec<_> = query.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k, v))).collect();
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends one request; `data` and `meta` of a 2xx answer, or the server's refusal.
    fn send(&self, request: RequestBuilder) -> Result<Reply, Failure> {
        let unreachable = |e: reqwest::Error| {
            let mut message =
                format!("cannot reach the Forge server at {}: {}", self.origin(), root_cause(&e));
            if e.is_connect() {
                message.push_str(" (is it running? set --url or FORGE_URL)");
            }
            Failure::Unreachable(message)
        };
        let response = request.send().map_err(unreachable)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = response.bytes().map_err(unreachable)?;
        let foreign = |what: &str| {
            let text = String::from_utf8_lossy(&body);
            let snippet: String = text.chars().take(200).collect();
            Failure::Unreachable(format!(
                "{} answered HTTP {} with {what} (is it a Forge server?): {snippet}",
                self.origin(),
                status.as_u16()
            ))
        };
        if !status.is_success() {
            let error: ForgeError =
                serde_json::from_slice(&body).map_err(|_| foreign("no Forge error body"))?;
            let retry_after = retry_after
                .or_else(|| error.details.get("retry_after").and_then(Value::as_u64))
                .filter(|_| status == StatusCode::TOO_MANY_REQUESTS);
            return Err(Failure::Refused { status, error, retry_after });
        }
        if body.is_empty() {
            return Ok(Reply { data: Value::Null, meta: None });
        }
        #[derive(Deserialize)]
        struct Envelope {
            data: Value,
            meta: Option<Meta>,
        }
        let envelope: Envelope = serde_json::from_slice(&body).map_err(|_| foreign("no `data`"))?;
        Ok(Reply { data: envelope.data, meta: envelope.meta })
    }

    fn get(&self, segments: &[&str], query: &[(&str, Option<String>)]) -> Result<Reply, Failure> {
        self.send(self.request(Method::GET, self.endpoint(segments, query)))
    }

    fn with_json(&self, method: Method, segments: &[&str], body: &Value) -> Result<Reply, Failure> {
        self.send(self.request(method, self.endpoint(segments, &[])).json(body))
    }

    /// `POST /overlays` as multipart: the manifest text (TOML or JSON) and the module as it is.
    pub fn register(
        &self,
        manifest: String,
        wasm: Vec<u8>,
        source_hash: Option<String>,
    ) -> Result<Reply, Failure> {
        let wasm = multipart::Part::bytes(wasm)
            .file_name("overlay.wasm")
            .mime_str("application/wasm")
            .expect("a valid MIME type");
        let mut form = multipart::Form::new().text("manifest", manifest).part("wasm", wasm);
        if let Some(hash) = source_hash {
            form = form.text("source_hash", hash);
        }
        let url = self.endpoint(&["api", "v1", "overlays"], &[]);
        self.send(self.request(Method::POST, url).multipart(form))
    }

    pub fn list_overlays(&self, filter: &OverlayFilter, paging: &Paging) -> Result<Reply, Failure> {
        let query = [
            ("state", filter.state.map(|s| s.to_string())),
            ("submitter", filter.submitter.clone()),
            ("name", filter.name.clone()),
            ("capability", filter.capability.map(|c| c.to_string())),
            ("page", paging.page.map(|p| p.to_string())),
            ("per_page", paging.per_page.map(|p| p.to_string())),
        ];
        self.get(&["api", "v1", "overlays"], &query)
    }

    pub fn overlay(&self, overlay: &OverlayRef) -> Result<Reply, Failure> {
        match overlay {
            OverlayRef::Id(id) => self.get(&["api", "v1", "overlays", &id.to_string()], &[]),
            OverlayRef::Version { name, version } => {
                self.get(&["api", "v1", "overlays", "by-name", name, version], &[])
            }
        }
    }

    /// The id of an overlay named either way (one request for `NAME@VERSION`).
    pub fn resolve(&self, overlay: &OverlayRef) -> Result<Uuid, Failure> {
        #[derive(Deserialize)]
        struct Id {
            id: Uuid,
        }
        match overlay {
            OverlayRef::Id(id) => Ok(*id),
            named => Ok(self.overlay(named)?.parse::<Id>()?.id),
        }
    }

    pub fn transition(
        &self,
        id: Uuid,
        action: LifecycleAction,
        reason: Option<&str>,
    ) -> Result<Reply, Failure> {
        let segments = ["api", "v1", "overlays", &id.to_string(), action.as_str()];
        self.with_json(Method::POST, &segments, &with_reason(Map::new(), reason))
    }

    pub fn set_trust_level(
        &self,
        id: Uuid,
        level: TrustLevel,
        reason: Option<&str>,
    ) -> Result<Reply, Failure> {
        let mut body = Map::new();
        body.insert("trust_level".into(), json!(level));
        let segments = ["api", "v1", "overlays", &id.to_string(), "trust-level"];
        self.with_json(Method::PUT, &segments, &with_reason(body, reason))
    }

    pub fn delete(&self, id: Uuid, reason: Option<&str>) -> Result<Reply, Failure> {
        let url =
            self.endpoint(&["api", "v1", "overlays", &id.to_string()], &[("reason", reason.map(Into::into))]);
        self.send(self.request(Method::DELETE, url))
    }

    pub fn invoke(&self, id: Uuid, invocation: &OverlayInvocation) -> Result<Reply, Failure> {
        let segments = ["api", "v1", "overlays", &id.to_string(), "invoke"];
        self.with_json(Method::POST, &segments, &json!(invocation))
    }

    /// Invokes the newest active version of the overlay called `name`.
    pub fn invoke_by_name(&self, name: &str, invocation: &OverlayInvocation) -> Result<Reply, Failure> {
        let segments = ["api", "v1", "overlays", "by-name", name, "invoke"];
        self.with_json(Method::POST, &segments, &json!(invocation))
    }

    pub fn health(&self, id: Uuid) -> Result<Reply, Failure> {
        self.get(&["api", "v1", "overlays", &id.to_string(), "health"], &[])
    }

    pub fn events(&self, id: Uuid, paging: &Paging) -> Result<Reply, Failure> {
        let query = [
            ("page", paging.page.map(|p| p.to_string())),
            ("per_page", paging.per_page.map(|p| p.to_string())),
        ];
        self.get(&["api", "v1", "overlays", &id.to_string(), "events"], &query)
    }

    /// `POST /capsules`; `trust_level` and `metadata` are left to the server's defaults when absent.
    pub fn add_capsule(
        &self,
        content: &str,
        capsule_type: CapsuleType,
        trust_level: Option<TrustLevel>,
        metadata: Option<&Map<String, Value>>,
    ) -> Result<Reply, Failure> {
        let mut body = Map::new();
        body.insert("content".into(), json!(content));
        body.insert("type".into(), json!(capsule_type));
        if let Some(level) = trust_level {
            body.insert("trust_level".into(), json!(level));
        }
        if let Some(metadata) = metadata {
            body.insert("metadata".into(), json!(metadata));
        }
        self.with_json(Method::POST, &["api", "v1", "capsules"], &Value::Object(body))
    }

    pub fn capsule(&self, id: Uuid) -> Result<Reply, Failure> {
        self.get(&["api", "v1", "capsules", &id.to_string()], &[])
    }

    pub fn search_capsules(&self, query: &str, limit: Option<u32>) -> Result<Reply, Failure> {
        let query = [("query", Some(query.to_owned())), ("limit", limit.map(|l| l.to_string()))];
        self.get(&["api", "v1", "capsules"], &query)
    }

    /// `POST /users`; the answer holds the user and its token.
    pub fn create_user(
        &self,
        name: &str,
        roles: &[Role],
        trust_level: Option<TrustLevel>,
    ) -> Result<Reply, Failure> {
        let mut body = Map::new();
        body.insert("name".into(), json!(name));
        body.insert("roles".into(), json!(roles));
        if let Some(level) = trust_level {
            body.insert("trust_level".into(), json!(level));
        }
        self.with_json(Method::POST, &["api", "v1", "users"], &Value::Object(body))
    }
}

/// A request body with `reason` added when one was given.
fn with_reason(mut body: Map<String, Value>, reason: Option<&str>) -> Value {
    if let Some(reason) = reason {
        body.insert("reason".into(), json!(reason));
    }
    Value::Object(body)
}

/// The innermost cause ("Connection refused"): reqwest's outer messages only say a request failed.
fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
