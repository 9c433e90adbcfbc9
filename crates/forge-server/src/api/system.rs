//! What answers without a token: the probes (`/health`, `/metrics`) and the API's own description.

use crate::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use forge_model::api::ServerHealth;
use std::sync::Arc;

/// Liveness: answers while the process serves. No token needed.
#[utoipa::path(get, path = "/health", tag = "system", security(()),
    responses((status = 200, description = "Serving", body = ServerHealth)))]
pub async fn health() -> Json<ServerHealth> {
    Json(ServerHealth { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() })
}

/// Prometheus metrics: invocations and failures by overlay and outcome, durations, fuel,
/// quarantines, refusals, invocations in flight, and HTTP requests by route and status. No token
/// needed.
#[utoipa::path(get, path = "/metrics", tag = "system", security(()),
    responses((status = 200, description = "Prometheus text exposition", body = String,
        content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let mut text = app.service.metrics().render();
    app.http.render_into(&mut text);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

/// This document: OpenAPI 3.1, generated from the handlers. No token needed: client generators and
/// API fuzzers fetch it without credentials, as from FastAPI and the like.
#[utoipa::path(get, path = "/openapi.json", tag = "system", security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json")))]
pub async fn openapi(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], app.openapi.clone())
}
