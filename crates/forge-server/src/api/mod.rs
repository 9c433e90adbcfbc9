//! The routes, and the OpenAPI document generated from the same handlers.

mod capsules;
mod overlays;
mod system;
mod users;

use crate::AppState;
use crate::error::{unknown_route, wrong_method};
use crate::http_metrics::{self, HttpMetrics};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use bytes::Bytes;
use forge_service::OverlayService;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Where the versioned API lives.
pub const PREFIX: &str = "/api/v1";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Forge Overlay Runtime",
        description = "Registers and runs WebAssembly overlays. Every route under /api/v1 takes \
            `Authorization: Bearer <token>`; every refusal has the body `{code, message, details}`."
    ),
    modifiers(&BearerTokens),
    security(("bearer" = [])),
    tags(
        (name = "overlays", description = "Registry, lifecycle, trust, health and audit trail"),
        (name = "invocation", description = "Running overlays"),
        (name = "capsules", description = "The knowledge overlays read and write"),
        (name = "users", description = "Users and their API tokens"),
        (name = "system", description = "Probes and this document"),
    )
)]
struct ApiDoc;

/// Declares the bearer scheme, and the 401 every authenticated route can answer.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Adds the 401 answer to every operation under [`PREFIX`] (run after the paths are collected).
fn document_authentication(openapi: &mut Document) {
    let unauthorized = ResponseBuilder::new()
        .description("Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)")
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
        )
        .build();
    for (_, item) in openapi.paths.paths.iter_mut().filter(|(path, _)| path.starts_with(PREFIX)) {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            operation.responses.responses.insert("401".into(), unauthorized.clone().into());
        }
    }
}

/// The HTTP application over a running service: every route, the fallbacks, the body limit and
/// the request metrics.
pub fn app(service: OverlayService, max_body_bytes: usize) -> Router {
    let (routes, openapi) = routes();
    let openapi = openapi.to_json().expect("the OpenAPI document serializes");
    let state = Arc::new(AppState { service, http: HttpMetrics::new(), openapi: Bytes::from(openapi) });
    routes
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(max_body_bytes, refuse_oversized))
        .layer(middleware::from_fn_with_state(state.clone(), http_metrics::track))
        .with_state(state)
}

/// Declared bodies up to this size are read and dropped before a 413, larger ones are cut off.
const DRAIN_LIMIT: u64 = 256 << 20;

/// Answers 413 to a body whose declared length is over the limit, before any handler runs.
///
/// The body is read (and dropped) first: a server that answers and closes while the client is still
/// sending makes the client's socket reset, and most clients then report a broken connection
/// instead of the 413. Bodies without a declared length are cut off by `DefaultBodyLimit`.
async fn refuse_oversized(
    axum::extract::State(limit): axum::extract::State<usize>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let Some(length) = declared.filter(|length| *length > limit as u64) else {
        return next.run(request).await;
    };
    if length <= DRAIN_LIMIT {
        let mut body = request.into_body();
        while let Some(Ok(_)) = body.frame().await {}
    }
    let message = format!("request body of {length} bytes exceeds the limit of {limit} bytes");
    crate::error::ApiError(forge_model::ForgeError::new(forge_model::ErrorCode::PayloadTooLarge, message))
        .into_response()
}

/// The routes and the OpenAPI document of the same routes.
fn routes() -> (Router<Arc<AppState>>, Document) {
    let api = OpenApiRouter::new()
        .routes(routes!(overlays::register, overlays::list))
        .routes(routes!(overlays::get, overlays::delete))
        .routes(routes!(overlays::get_by_name_version))
        .routes(routes!(overlays::transition))
        .routes(routes!(overlays::set_trust_level))
        .routes(routes!(overlays::invoke))
        .routes(routes!(overlays::invoke_by_name))
        .routes(routes!(overlays::health))
        .routes(routes!(overlays::events))
        .routes(routes!(capsules::create, capsules::search))
        .routes(routes!(capsules::get))
        .routes(routes!(users::create))
        .routes(routes!(users::revoke_token))
        .routes(routes!(system::openapi));
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(system::metrics))
        .nest(PREFIX, api)
        .split_for_parts();
    document_authentication(&mut openapi);
    (router, openapi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_document_lists_every_route_with_its_methods() {
        let (_, openapi) = routes();
        let documented: BTreeSet<String> = openapi
            .paths
            .paths
            .iter()
            .flat_map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("DELETE", item.delete.is_some()),
                ];
                methods.into_iter().filter(|(_, present)| *present).map(move |(m, _)| format!("{m} {path}"))
            })
            .collect();
        let expected: BTreeSet<String> = [
            "GET /health",
            "GET /metrics",
            "GET /api/v1/openapi.json",
            "POST /api/v1/overlays",
            "GET /api/v1/overlays",
            "GET /api/v1/overlays/{id}",
            "DELETE /api/v1/overlays/{id}",
            "GET /api/v1/overlays/by-name/{name}/{version}",
            "POST /api/v1/overlays/{id}/{action}",
            "PUT /api/v1/overlays/{id}/trust-level",
            "POST /api/v1/overlays/{id}/invoke",
            "POST /api/v1/overlays/by-name/{name}/invoke",
            "GET /api/v1/overlays/{id}/health",
            "GET /api/v1/overlays/{id}/events",
            "POST /api/v1/capsules",
            "GET /api/v1/capsules",
            "GET /api/v1/capsules/{id}",
            "POST /api/v1/users",
            "POST /api/v1/tokens/revoke",
        ]
        .map(String::from)
        .into();
        assert_eq!(documented, expected);

        let json = serde_json::to_value(&openapi).unwrap();
        let invoke = &json["paths"]["/api/v1/overlays/{id}/invoke"]["post"];
        assert!(invoke["responses"]["401"].is_object(), "authenticated routes document 401");
        assert!(invoke["responses"]["429"]["headers"]["Retry-After"].is_object());
        assert!(json["paths"]["/health"]["get"]["responses"]["401"].is_null(), "/health is open");
        for schema in
            ["Overlay", "OverlayResult", "OverlayInvocation", "ErrorBody", "HealthReport", "CapsuleHit"]
        {
            assert!(json["components"]["schemas"][schema].is_object(), "{schema} is described");
        }
        assert_eq!(json["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    }
}
