//! A blocking client of the Forge overlay runtime's HTTP API.
//!
//! One method per endpoint, sending and reading the model's own wire types
//! ([`forge_model::api`] and the resources themselves), so a client cannot drift from the server.
//! Every refusal comes back as [`Error::Refused`] holding the standard error body. The
//! `forge-overlay` CLI and the end-to-end tests both speak to servers through this crate.
//!
//! ```no_run
//! use forge_client::Client;
//! use forge_model::OverlayInvocation;
//!
//! let client = Client::new("http://127.0.0.1:8000", Some("fgo_...".into()))?;
//! let overlay = client.register(std::fs::read_to_string("echo.toml")?, std::fs::read("echo.wasm")?, None)?;
//! let result = client.invoke(overlay.id, &OverlayInvocation::new("process", Default::default()))?;
//! println!("{}", result.success);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use base64::Engine;
use forge_model::api::{
    CreatedUser, Data, DeleteQuery, List, ListQuery, LogsQuery, PageQuery, ReasonBody, RegisterJson,
    RevokeBody, Revoked, RevokedTokens, SearchQuery, ServerHealth, TokenInfo, TrustLevelBody,
};
use forge_model::{
    AuditEvent, Capsule, CapsuleHit, ForgeError, HealthReport, LifecycleAction, LogEntry, NewCapsule,
    NewUser, Overlay, OverlayInvocation, OverlayResult, User,
};
use reqwest::blocking::{RequestBuilder, multipart};
use reqwest::header::RETRY_AFTER;
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

pub use reqwest::StatusCode;

/// Longest wait for one answer. Invocations stop at 30 s on the server and registration compiles the
/// module, so anything much longer means the server is stuck.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with Forge's error body.
    #[error("{}", error.message)]
    Refused {
        status: StatusCode,
        error: ForgeError,
        /// Seconds to wait before retrying, for a 429 or a 503 (`Retry-After`, or `details.retry_after`).
        retry_after: Option<u64>,
    },
    /// The client could not be set up (a URL that is not http(s), say); nothing was sent.
    #[error("{0}")]
    Setup(String),
    /// No answer: the server could not be reached, or the connection broke.
    #[error("cannot reach the Forge server at {origin}: {cause}")]
    Unreachable {
        origin: String,
        /// The innermost cause ("Connection refused").
        cause: String,
        /// Whether no connection could be made at all (rather than one that broke).
        connect: bool,
    },
    /// An answer that is not Forge's API.
    #[error("{0}")]
    Foreign(String),
}

impl Error {
    /// The standard error body of a refusal.
    pub fn refusal(&self) -> Option<&ForgeError> {
        match self {
            Error::Refused { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A client of one server, acting with one token (or none: only `/health` and the OpenAPI
/// document answer without).
#[derive(Clone)]
pub struct Client {
    base: Url,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl Client {
    /// A client of the server at `url` (`http://host:port`, optionally with a path prefix).
    pub fn new(url: &str, token: Option<String>) -> Result<Client, Error> {
        let base = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| Error::Setup(format!("`{url}` is not an http(s) URL")))?;
        let http = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("forge-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Setup(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client { base, token, http })
    }

    /// The same server with another token.
    pub fn with_token(&self, token: Option<String>) -> Client {
        Client { token, ..self.clone() }
    }

    /// The server's URL as given, for messages.
    pub fn origin(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base` followed by `segments`, each escaped as one path segment.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("checked in Client::new").pop_if_empty().extend(segments);
        url
    }

    /// A request to `path` (e.g. `/api/v1/overlays?page=2`, its segments escaped, its query kept as
    /// written) with this client's token, for what the typed methods cannot send: tests of
    /// malformed bodies, say. [`Client::send`] reads the answer.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut url = self.url(&segments);
        url.set_query(Some(query).filter(|q| !q.is_empty()));
        self.authorized(method, url)
    }

    fn authorized(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends one request; the body of a 2xx answer (empty for 204), or the server's refusal.
    pub fn send(&self, request: RequestBuilder) -> Result<Vec<u8>, Error> {
        let unreachable = |e: reqwest::Error| Error::Unreachable {
            origin: self.origin().to_owned(),
            cause: root_cause(&e),
            connect: e.is_connect(),
        };
        let response = request.send().map_err(unreachable)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = response.bytes().map_err(unreachable)?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let error: ForgeError =
            serde_json::from_slice(&body).map_err(|_| self.foreign(status, "no Forge error body", &body))?;
        let retry_after = retry_after
            .or_else(|| error.details.get("retry_after").and_then(Value::as_u64))
            .filter(|_| matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE));
        Err(Error::Refused { status, error, retry_after })
    }

    fn foreign(&self, status: StatusCode, what: &str, body: &[u8]) -> Error {
        let text = String::from_utf8_lossy(body);
        let snippet: String = text.chars().take(200).collect();
        Error::Foreign(format!(
            "{} answered HTTP {} with {what} (is it a Forge server?): {snippet}",
            self.origin(),
            status.as_u16()
        ))
    }

    /// Sends and reads the answer as `T`.
    fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, Error> {
        let body = self.send(request)?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::Foreign(format!("{} answered with an unexpected body: {e}", self.origin())))
    }

    /// Sends and reads the `data` of the answer.
    fn data<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, Error> {
        self.call::<Data<T>>(request).map(|answer| answer.data)
    }

    fn get(&self, segments: &[&str], query: &impl Serialize) -> RequestBuilder {
        self.authorized(Method::GET, with_query(self.url(segments), query))
    }

    fn with_json(&self, method: Method, segments: &[&str], body: &impl Serialize) -> RequestBuilder {
        self.authorized(method, self.url(segments)).json(body)
    }

    /// `GET /health`: the server's liveness and version (no token needed).
    pub fn server_health(&self) -> Result<ServerHealth, Error> {
        self.call(self.get(&["health"], &()))
    }

    /// `GET /api/v1/openapi.json`: the API's description (no token needed).
    pub fn openapi(&self) -> Result<Value, Error> {
        self.call(self.get(&["api", "v1", "openapi.json"], &()))
    }

    /// `POST /overlays` as multipart: the manifest text (TOML or JSON) and the module as it is.
    pub fn register(
        &self,
        manifest: String,
        wasm: Vec<u8>,
        source_hash: Option<String>,
    ) -> Result<Overlay, Error> {
        let wasm = multipart::Part::bytes(wasm)
            .file_name("overlay.wasm")
            .mime_str("application/wasm")
            .expect("a valid MIME type");
        let mut form = multipart::Form::new().text("manifest", manifest).part("wasm", wasm);
        if let Some(hash) = source_hash {
            form = form.text("source_hash", hash);
        }
        self.data(self.authorized(Method::POST, self.url(&["api", "v1", "overlays"])).multipart(form))
    }

    /// `POST /overlays` as JSON: the manifest as an object or as TOML or JSON text, and the module.
    pub fn register_json(
        &self,
        manifest: Value,
        wasm: &[u8],
        source_hash: Option<String>,
    ) -> Result<Overlay, Error> {
        let wasm_base64 = base64::engine::general_purpose::STANDARD.encode(wasm);
        let body = RegisterJson { manifest, wasm_base64, source_hash };
        self.data(self.with_json(Method::POST, &["api", "v1", "overlays"], &body))
    }

    /// `GET /overlays`: one page of the overlays `query` filters.
    pub fn list_overlays(&self, query: &ListQuery) -> Result<List<Overlay>, Error> {
        self.call(self.get(&["api", "v1", "overlays"], query))
    }

    pub fn overlay(&self, id: Uuid) -> Result<Overlay, Error> {
        self.data(self.get(&["api", "v1", "overlays", &id.to_string()], &()))
    }

    pub fn overlay_by_name_version(&self, name: &str, version: &str) -> Result<Overlay, Error> {
        self.data(self.get(&["api", "v1", "overlays", "by-name", name, version], &()))
    }

    /// Moves an overlay through its lifecycle; `reason` goes to the audit trail.
    pub fn transition(
        &self,
        id: Uuid,
        action: LifecycleAction,
        reason: Option<String>,
    ) -> Result<Overlay, Error> {
        let segments = ["api", "v1", "overlays", &id.to_string(), action.as_str()];
        self.data(self.with_json(Method::POST, &segments, &ReasonBody { reason }))
    }

    pub fn set_trust_level(&self, id: Uuid, body: &TrustLevelBody) -> Result<Overlay, Error> {
        let segments = ["api", "v1", "overlays", &id.to_string(), "trust-level"];
        self.data(self.with_json(Method::PUT, &segments, body))
    }

    /// Deletes an overlay and its binary; `reason` goes to the audit trail.
    pub fn delete_overlay(&self, id: Uuid, reason: Option<String>) -> Result<(), Error> {
        let url = with_query(self.url(&["api", "v1", "overlays", &id.to_string()]), &DeleteQuery { reason });
        self.send(self.authorized(Method::DELETE, url)).map(drop)
    }

    /// Runs one entry point. A failed overlay is still `Ok`, with `success: false`.
    pub fn invoke(&self, id: Uuid, invocation: &OverlayInvocation) -> Result<OverlayResult, Error> {
        let segments = ["api", "v1", "overlays", &id.to_string(), "invoke"];
        self.data(self.with_json(Method::POST, &segments, invocation))
    }

    /// Runs the newest active version of the overlay called `name`.
    pub fn invoke_by_name(&self, name: &str, invocation: &OverlayInvocation) -> Result<OverlayResult, Error> {
        let segments = ["api", "v1", "overlays", "by-name", name, "invoke"];
        self.data(self.with_json(Method::POST, &segments, invocation))
    }

    pub fn overlay_health(&self, id: Uuid) -> Result<HealthReport, Error> {
        self.data(self.get(&["api", "v1", "overlays", &id.to_string(), "health"], &()))
    }

    /// One page of an overlay's audit trail, oldest first.
    pub fn events(&self, id: Uuid, page: PageQuery) -> Result<List<AuditEvent>, Error> {
        self.call(self.get(&["api", "v1", "overlays", &id.to_string(), "events"], &page))
    }

    /// The overlay's kept log entries matching `query`, newest first.
    pub fn overlay_logs(&self, id: Uuid, query: &LogsQuery) -> Result<List<LogEntry>, Error> {
        self.call(self.get(&["api", "v1", "overlays", &id.to_string(), "logs"], query))
    }

    pub fn create_capsule(&self, capsule: &NewCapsule) -> Result<Capsule, Error> {
        self.data(self.with_json(Method::POST, &["api", "v1", "capsules"], capsule))
    }

    pub fn capsule(&self, id: Uuid) -> Result<Capsule, Error> {
        self.data(self.get(&["api", "v1", "capsules", &id.to_string()], &()))
    }

    /// Full-text search among the capsules within the caller's trust, best first.
    pub fn search_capsules(&self, query: &SearchQuery) -> Result<List<CapsuleHit>, Error> {
        self.call(self.get(&["api", "v1", "capsules"], query))
    }

    /// Creates a user; the answer holds its token, shown this once.
    pub fn create_user(&self, user: &NewUser) -> Result<CreatedUser, Error> {
        self.data(self.with_json(Method::POST, &["api", "v1", "users"], user))
    }

    /// Revokes a token: the caller's own, or anyone's for an admin.
    pub fn revoke_token(&self, token: &str) -> Result<Revoked, Error> {
        let body = RevokeBody { token: token.to_owned() };
        self.data(self.with_json(Method::POST, &["api", "v1", "tokens", "revoke"], &body))
    }

    /// One page of a user's tokens, revoked ones too, oldest first (admin): metadata only.
    pub fn user_tokens(&self, name: &str, page: PageQuery) -> Result<List<TokenInfo>, Error> {
        self.call(self.get(&["api", "v1", "users", name, "tokens"], &page))
    }

    /// Revokes every live token of a user (admin).
    pub fn revoke_user_tokens(&self, name: &str) -> Result<RevokedTokens, Error> {
        self.user_action(name, "revoke-tokens")
    }

    /// Disables a user (admin): none of its tokens authenticates until it is enabled again.
    pub fn disable_user(&self, name: &str) -> Result<User, Error> {
        self.user_action(name, "disable")
    }

    /// Enables a disabled user again (admin).
    pub fn enable_user(&self, name: &str) -> Result<User, Error> {
        self.user_action(name, "enable")
    }

    /// `POST /api/v1/users/{name}/{action}`, without a body.
    fn user_action<T: DeserializeOwned>(&self, name: &str, action: &str) -> Result<T, Error> {
        self.data(self.authorized(Method::POST, self.url(&["api", "v1", "users", name, action])))
    }
}

/// `url` with the fields `query` serializes as its query string (`()` adds none).
fn with_query(mut url: Url, query: &impl Serialize) -> Url {
    let Ok(Value::Object(fields)) = serde_json::to_value(query) else { return url };
    if !fields.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (key, value) in fields {
            match value {
                Value::String(text) => pairs.append_pair(&key, &text),
                other => pairs.append_pair(&key, &other.to_string()),
            };
        }
    }
    url
}

/// The innermost cause ("Connection refused"): reqwest's outer messages only say a request failed.
fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
