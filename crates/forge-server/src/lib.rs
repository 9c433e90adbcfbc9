//! The HTTP server of the Forge overlay runtime: axum handlers over the
//! [`OverlayService`](forge_service::OverlayService).
//!
//! - [`ServerConfig`]: every setting, from defaults, a TOML file, `FORGE_*` variables and flags.
//! - [`Server`]: opens storage, installs the bootstrap admin token, binds, serves, and stops
//!   gracefully (finishing requests in flight, then writing every metric).
//! - [`app`]: the routes under `/api/v1` (bearer tokens), and open without a token: `/health`,
//!   `/metrics` and the OpenAPI document generated from the handlers at `/api/v1/openapi.json`.
//!
//! Handlers stay small: extractors in, `Result<(StatusCode, Json<_>), ApiError>` out. Every refusal,
//! the service's or the framework's, becomes the standard body `{"code", "message", "details"}` in
//! one place ([`ApiError`]).

mod api;
mod config;
mod error;
mod extract;
mod http_metrics;
mod limits;
mod server;
mod wire;

pub use api::{PREFIX, app};
pub use config::{ConfigError, LogFormat, ServerConfig};
pub use error::ApiError;
pub use server::{ADMIN_USER, Server, init_logging, mint_token, open_service, shutdown_signal};

use forge_service::OverlayService;
use tokio_util::task::TaskTracker;

/// What every handler shares.
pub struct AppState {
    service: OverlayService,
    http: http_metrics::HttpMetrics,
    /// The OpenAPI document, serialized once.
    openapi: bytes::Bytes,
    /// Request body bytes being received, over all requests.
    bodies: limits::BodyBudget,
    /// Invocations running on tasks of their own: they finish (and are counted) even when their
    /// client goes away, and shutdown waits for them.
    calls: TaskTracker,
}

impl AppState {
    fn new(service: OverlayService, limits: &HttpLimits) -> Self {
        AppState {
            service,
            http: http_metrics::HttpMetrics::new(),
            openapi: api::document(limits),
            bodies: limits::BodyBudget::new(limits.max_body_bytes_in_flight, limits.body_read_timeout),
            calls: TaskTracker::new(),
        }
    }
}

/// The request body limits of an [`app`].
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// The largest registration body (`max_body_bytes`).
    pub max_body_bytes: usize,
    /// The runtime's input cap, which sizes the invocation routes' limit.
    pub max_input_bytes: usize,
    /// Body bytes received at once over all requests (`max_body_bytes_in_flight`).
    pub max_body_bytes_in_flight: usize,
    /// How long a request body may take to arrive whole (`body_read_timeout_secs`).
    pub body_read_timeout: std::time::Duration,
}

/// The limits of the default configuration.
impl Default for HttpLimits {
    fn default() -> Self {
        ServerConfig::default().http_limits()
    }
}
