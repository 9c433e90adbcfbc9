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
mod server;
mod wire;

pub use api::{PREFIX, app};
pub use config::{ConfigError, LogFormat, ServerConfig};
pub use error::ApiError;
pub use server::{ADMIN_USER, Server, init_logging, mint_token, open_service, shutdown_signal};

use forge_service::OverlayService;

/// What every handler shares.
pub struct AppState {
    service: OverlayService,
    http: http_metrics::HttpMetrics,
    /// The OpenAPI document, serialized once.
    openapi: bytes::Bytes,
}
