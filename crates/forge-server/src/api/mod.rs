//! The routes, and the OpenAPI document generated from the same handlers.

mod capsules;
mod overlays;
mod system;
mod users;

use crate::error::{unknown_route, wrong_method};
use crate::http_metrics;
use crate::limits;
use crate::{AppState, HttpLimits};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::{Extension, middleware};
use forge_model::{ForgeError, LifecycleAction};
use forge_service::OverlayService;
use std::sync::Arc;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Where the versioned API lives.
pub const PREFIX: &str = "/api/v1";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Forge Overlay Runtime",
        description = "Registers and runs WebAssembly overlays. Every route under /api/v1 but this \
            document takes `Authorization: Bearer <token>`; every refusal has the body \
            `{code, message, details}`."
    ),
    // Schemas that only path parameters use are referred to but not collected with the paths.
    components(schemas(LifecycleAction)),
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

/// Adds the 401 answer to every operation that takes a token: all but those declared open with
/// `security(())` (run after the paths are collected).
fn document_authentication(openapi: &mut Document) {
    let unauthorized = refusal("Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)");
    let open = SecurityRequirement::default();
    for (_, operation) in operations(openapi) {
        if operation.security.as_ref().is_some_and(|required| required.contains(&open)) {
            continue;
        }
        operation.responses.responses.insert("401".into(), unauthorized.clone().into());
    }
}

/// A refusal answer: the standard error body, described.
fn refusal(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(Ref::from_schema_name(ForgeError::name()))).build(),
        )
        .build()
}

/// Every operation of the document, with its path.
fn operations(openapi: &mut Document) -> impl Iterator<Item = (&String, &mut Operation)> {
    openapi.paths.paths.iter_mut().flat_map(|(path, item)| {
        [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch]
            .into_iter()
            .flatten()
            .map(move |operation| (path, operation))
    })
}

/// Adds the refusals that the extractors and middleware give any operation of their kind, where
/// the handler's own list leaves them out (run after [`document_authentication`]); found by testing
/// the server against this document (`scripts/api-fuzz.sh`):
/// - a path parameter that does not parse (no UUID, no such action): 404;
/// - a query parameter that does not parse: 422;
/// - a request body: 413 over the route's limit, 415 without `Content-Type: application/json`
///   (multipart too for registrations), 422 not JSON, not of the body's shape, or too slow to arrive;
/// - 429 with `Retry-After`: for a token, a client address over `failed_auth_per_minute`; for a
///   body, no room in `max_body_bytes_in_flight` within 5 s;
/// - 503 with `Retry-After`: for a token, the metadata store does not answer (every authenticated
///   operation looks its caller up there).
///
/// A status the handler documents keeps its description; a 429 has the causes above added to it.
fn document_refusals(openapi: &mut Document) {
    for (path, operation) in operations(openapi) {
        let responses = &mut operation.responses.responses;
        let authenticated = responses.contains_key("401");
        let mut add = |status: &str, description: &str| {
            responses.entry(status.into()).or_insert_with(|| refusal(description).into());
        };
        if path.contains('{') {
            add("404", "A path parameter does not parse, so it names nothing");
        }
        let queried = operation
            .parameters
            .iter()
            .flatten()
            .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query));
        if queried {
            add("422", "A query parameter does not parse");
        }
        let has_body = operation.request_body.is_some();
        if has_body {
            add("413", "Body larger than this route's limit (`details.limit` names it)");
            add("415", "Body without `Content-Type: application/json`");
            add(
                "422",
                "Body not JSON, not of the documented shape, or not all arrived within `body_read_timeout_secs`",
            );
        }
        if authenticated {
            add("503", "A store the server depends on is unavailable for now");
        }
        if let Some(RefOr::T(unavailable)) = responses.get_mut("503") {
            unavailable.description = format!(
                "{}; nothing was changed, retry after `Retry-After` seconds",
                unavailable.description
            );
            unavailable.headers.entry("Retry-After".into()).or_insert_with(retry_after_header);
        }
        let mut causes = Vec::new();
        if authenticated {
            causes.push(
                "this client address looked up more unknown tokens than `failed_auth_per_minute` allows",
            );
        }
        if has_body {
            causes.push("no room came in `max_body_bytes_in_flight` within 5 s");
        }
        if causes.is_empty() {
            continue;
        }
        let causes = causes.join("; or ");
        match responses.entry("429".into()).or_insert_with(|| refusal("").into()) {
            RefOr::T(response) => {
                response.description = if response.description.is_empty() {
                    format!("Too many requests: {causes}; retry after `Retry-After` seconds")
                } else {
                    format!("{}; or {causes}", response.description)
                };
                response.headers.entry("Retry-After".into()).or_insert_with(retry_after_header);
            }
            RefOr::Ref(_) => {}
        }
    }
}

/// The `Retry-After` header of a 429 or 503 answer.
fn retry_after_header() -> RefOr<utoipa::openapi::header::Header> {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0))))
        .description(Some("Seconds to wait"))
        .build()
        .into()
}

/// The HTTP application over a running service: every route with its body limit, the fallbacks
/// and the request metrics.
pub fn app(service: OverlayService, http_limits: &HttpLimits) -> Router {
    router(Arc::new(AppState::new(service, http_limits)), http_limits)
}

/// [`app`] over a state the caller keeps (the server waits on its calls at shutdown).
pub(crate) fn router(state: Arc<AppState>, http_limits: &HttpLimits) -> Router {
    let (routes, _) = routes(http_limits);
    routes
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), http_metrics::track))
        // Read first, so the body limits of each group of routes find the state.
        .layer(Extension(state.clone()))
        .with_state(state)
}

/// The OpenAPI document of the routes, serialized.
pub(crate) fn document(http_limits: &HttpLimits) -> bytes::Bytes {
    let (_, openapi) = routes(http_limits);
    bytes::Bytes::from(openapi.to_json().expect("the OpenAPI document serializes"))
}

/// Routes whose bodies may be at most `max_bytes`, a limit a refusal calls `name`.
fn with_body_limit(
    max_bytes: usize,
    name: &'static str,
    routes: OpenApiRouter<Arc<AppState>>,
) -> OpenApiRouter<Arc<AppState>> {
    routes
        .layer(DefaultBodyLimit::max(max_bytes))
        .layer(middleware::from_fn_with_state(limits::BodyLimit { max_bytes, name }, limits::bound_body))
}

/// The routes and the OpenAPI document of the same routes.
fn routes(http_limits: &HttpLimits) -> (Router<Arc<AppState>>, Document) {
    let registration = OpenApiRouter::new().routes(routes!(overlays::register, overlays::list));
    let invocation =
        OpenApiRouter::new().routes(routes!(overlays::invoke)).routes(routes!(overlays::invoke_by_name));
    let capsules = OpenApiRouter::new()
        .routes(routes!(capsules::create, capsules::search))
        .routes(routes!(capsules::get));
    let small = OpenApiRouter::new()
        .routes(routes!(overlays::get, overlays::delete))
        .routes(routes!(overlays::get_by_name_version))
        .routes(routes!(overlays::transition))
        .routes(routes!(overlays::set_trust_level))
        .routes(routes!(overlays::health))
        .routes(routes!(overlays::events))
        .routes(routes!(overlays::logs))
        .routes(routes!(users::create))
        .routes(routes!(users::revoke_token))
        .routes(routes!(users::tokens))
        .routes(routes!(users::revoke_tokens))
        .routes(routes!(users::disable))
        .routes(routes!(users::enable))
        .routes(routes!(system::openapi));
    let invocation_limit = limits::invocation_body_bytes(http_limits.max_input_bytes);
    let api = with_body_limit(http_limits.max_body_bytes, "max_body_bytes", registration)
        .merge(with_body_limit(invocation_limit, "invocation_body", invocation))
        .merge(with_body_limit(limits::CAPSULE_BODY_BYTES, "capsule_body", capsules))
        .merge(with_body_limit(limits::SMALL_BODY_BYTES, "request_body", small));
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(system::metrics))
        .nest(PREFIX, api)
        .split_for_parts();
    document_authentication(&mut openapi);
    document_refusals(&mut openapi);
    (router, openapi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use forge_model::{
        AuditEvent, CapabilityName, Capsule, CapsuleHit, CapsulePreview, CapsuleType, ErrorCode, ErrorKind,
        HealthReport, LatencyHistogram, LogEntry, LogLevel, LogLine, NewCapsule, Overlay, OverlayHealth,
        OverlayInvocation, OverlayManifest, OverlayResult, OverlayState, Role, TrustLevel, User,
    };
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::{Map, Value, json};
    use std::collections::BTreeSet;
    use uuid::Uuid;

    #[test]
    fn the_document_lists_every_route_with_its_methods() {
        let (_, openapi) = routes(&HttpLimits::default());
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
            "GET /api/v1/overlays/{id}/logs",
            "POST /api/v1/capsules",
            "GET /api/v1/capsules",
            "GET /api/v1/capsules/{id}",
            "POST /api/v1/users",
            "POST /api/v1/tokens/revoke",
            "GET /api/v1/users/{name}/tokens",
            "POST /api/v1/users/{name}/revoke-tokens",
            "POST /api/v1/users/{name}/disable",
            "POST /api/v1/users/{name}/enable",
        ]
        .map(String::from)
        .into();
        assert_eq!(documented, expected);

        let json = serde_json::to_value(&openapi).unwrap();
        let invoke = &json["paths"]["/api/v1/overlays/{id}/invoke"]["post"];
        assert!(invoke["responses"]["401"].is_object(), "authenticated routes document 401");
        assert!(invoke["responses"]["429"]["headers"]["Retry-After"].is_object());
        let register = &json["paths"]["/api/v1/overlays"]["post"];
        assert!(
            register["responses"]["429"]["headers"]["Retry-After"].is_object(),
            "registrations are rate-limited"
        );
        for open in ["/health", "/metrics", "/api/v1/openapi.json"] {
            let operation = &json["paths"][open]["get"];
            assert!(operation["responses"]["401"].is_null(), "{open} is open");
            assert_eq!(operation["security"], serde_json::json!([{}]), "{open} needs no token");
        }
        assert_eq!(json["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    }

    // The schemas are derived from the model's own types, but serde and utoipa each read the types
    // their own way (custom serde, `flatten`, `try_from`, defaults). These tests hold the document to
    // what serde actually writes and reads, so it cannot drift.

    /// Every `$ref` in `value`.
    fn references(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(fields) => {
                found.extend(fields.get("$ref").and_then(Value::as_str).map(str::to_owned));
                fields.values().for_each(|v| references(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_is_described() {
        let doc = document();
        let mut found = BTreeSet::new();
        references(&doc, &mut found);
        for target in &found {
            component(&doc, target.strip_prefix("#/components/schemas/").unwrap_or(target));
        }
        assert!(found.contains("#/components/schemas/LifecycleAction"), "a path parameter's schema");
    }

    /// The document as served: serialized, then read back as plain JSON.
    fn document() -> Value {
        let (_, openapi) = routes(&HttpLimits::default());
        serde_json::from_str(&openapi.to_json().unwrap()).expect("the document is valid JSON")
    }

    /// A component schema, by name.
    fn component<'a>(document: &'a Value, name: &str) -> &'a Value {
        let schema = &document["components"]["schemas"][name];
        assert!(schema.is_object(), "{name} is not described");
        schema
    }

    /// A schema's properties and the required ones, following `$ref` and `allOf` (flattened fields).
    fn fields(document: &Value, schema: &Value) -> (Map<String, Value>, BTreeSet<String>) {
        if let Some(target) = schema["$ref"].as_str() {
            return fields(document, component(document, target.trim_start_matches("#/components/schemas/")));
        }
        let mut properties = schema["properties"].as_object().cloned().unwrap_or_default();
        let mut required: BTreeSet<String> =
            schema["required"].as_array().into_iter().flatten().map(|v| v.as_str().unwrap().into()).collect();
        for part in schema["allOf"].as_array().into_iter().flatten() {
            let (more, more_required) = fields(document, part);
            properties.extend(more);
            required.extend(more_required);
        }
        (properties, required)
    }

    /// Asserts the component documents exactly the fields `value` serializes.
    fn documents_fields(document: &Value, name: &str, value: impl Serialize) {
        let (properties, _) = fields(document, component(document, name));
        let Value::Object(wire) = serde_json::to_value(value).unwrap() else {
            panic!("{name}: not an object")
        };
        let documented: BTreeSet<&String> = properties.keys().collect();
        assert_eq!(documented, wire.keys().collect(), "{name}");
    }

    /// Asserts that `minimal` holds exactly the component's required fields, that `T` reads it, and
    /// that every field left out is filled in as documented: its default, or nothing.
    fn documents_defaults<T: DeserializeOwned + Serialize>(document: &Value, name: &str, minimal: Value) {
        let (properties, required) = fields(document, component(document, name));
        let given: BTreeSet<String> = minimal.as_object().unwrap().keys().cloned().collect();
        assert_eq!(required, given, "{name}: the required fields");
        let read: T = serde_json::from_value(minimal).unwrap_or_else(|e| panic!("{name}: {e}"));
        let wire = serde_json::to_value(read).unwrap();
        for (field, schema) in properties.iter().filter(|(field, _)| !given.contains(*field)) {
            assert_eq!(wire[field], schema["default"], "{name}.{field}: the default");
        }
    }

    /// The component's enum values, each checked to read as a `T` that writes it back unchanged.
    fn enum_values<T: DeserializeOwned + Serialize>(document: &Value, name: &str) -> BTreeSet<String> {
        let values =
            component(document, name)["enum"].as_array().unwrap_or_else(|| panic!("{name}: no enum"));
        let names = values.iter().map(|value| {
            let read: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&serde_json::to_value(read).unwrap(), value, "{name}");
            value.as_str().unwrap().to_owned()
        });
        names.collect()
    }

    /// What serde writes for each of `values`.
    fn wire_names<T: Serialize>(values: impl IntoIterator<Item = T>) -> BTreeSet<String> {
        values.into_iter().map(|v| serde_json::to_value(v).unwrap().as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn enums_are_documented_as_serde_writes_them() {
        let doc = document();
        let states = enum_values::<OverlayState>(&doc, "OverlayState");
        assert_eq!(states, wire_names(OverlayState::ALL));
        assert!(states.contains("pending") && states.contains("quarantined"));
        let trust = enum_values::<TrustLevel>(&doc, "TrustLevel");
        assert_eq!(trust, wire_names(TrustLevel::ALL));
        assert!(trust.contains("sandbox"));
        let capabilities = enum_values::<CapabilityName>(&doc, "CapabilityName");
        assert_eq!(capabilities, wire_names(CapabilityName::ALL));
        assert!(capabilities.contains("capsule:read"));
        let kinds = enum_values::<ErrorKind>(&doc, "ErrorKind");
        assert_eq!(kinds, wire_names(ErrorKind::ALL));
        assert!(kinds.contains("fuel_exhausted"));
        assert_eq!(enum_values::<LifecycleAction>(&doc, "LifecycleAction"), wire_names(LifecycleAction::ALL));
        assert_eq!(enum_values::<CapsuleType>(&doc, "CapsuleType"), wire_names(CapsuleType::ALL));
        assert_eq!(enum_values::<LogLevel>(&doc, "LogLevel"), wire_names(LogLevel::ALL));
        assert_eq!(enum_values::<Role>(&doc, "Role"), wire_names([Role::Admin, Role::Operator, Role::User]));

        // Every refusal's body names its code from ErrorCode.
        let body = component(&doc, ForgeError::name().as_ref());
        assert_eq!(body["properties"]["code"]["$ref"], "#/components/schemas/ErrorCode");
        let codes = enum_values::<ErrorCode>(&doc, "ErrorCode");
        for code in ["validation_error", "authentication_error", "not_found", "rate_limit_exceeded"] {
            assert!(codes.contains(code), "{code}");
        }
        assert_eq!(codes.len(), 11);
    }

    #[test]
    fn objects_are_documented_as_serde_writes_them() {
        let doc = document();
        let now = Utc::now();
        let manifest = OverlayManifest::parse(
            r#"name = "echo"
               version = "1.0.0"
               capabilities = [{ name = "network:http", constraints = { hosts = ["example.com"] } }]"#,
        )
        .unwrap();
        documents_fields(&doc, "OverlayManifest", &manifest);
        documents_fields(&doc, "Capability", &manifest.capabilities[0]);
        let health = OverlayHealth::default();
        documents_fields(&doc, "OverlayHealth", &health);
        let overlay = Overlay {
            id: Uuid::nil(),
            manifest,
            state: OverlayState::Active,
            trust_level: TrustLevel::Sandbox,
            wasm_key: "k".into(),
            wasm_hash: "h".into(),
            source_hash: None,
            submitted_by: "u".into(),
            requires_approval: false,
            created_at: now,
            updated_at: now,
            health,
        };
        documents_fields(&doc, "Overlay", &overlay);
        documents_fields(&doc, "HealthReport", HealthReport::new(&overlay, &LatencyHistogram::default()));
        let event = AuditEvent {
            id: 1,
            overlay_id: Uuid::nil(),
            actor: "a".into(),
            action: forge_model::AuditAction::Register,
            from_state: None,
            to_state: None,
            reason: None,
            details: Map::new(),
            created_at: now,
        };
        documents_fields(&doc, "AuditEvent", event);
        let invocation = OverlayInvocation {
            timeout_ms: Some(100),
            include_logs: true,
            ..OverlayInvocation::new("process", Map::new())
        };
        documents_fields(&doc, "OverlayInvocation", invocation);
        let line = LogLine { level: LogLevel::Info, message: "m".into(), at: now };
        let result = OverlayResult {
            invocation_id: Some(Uuid::nil()),
            logs: Some(vec![line.clone()]),
            logs_dropped: Some(0),
            ..OverlayResult::ok(None, 0.1, 1)
        };
        documents_fields(&doc, "OverlayResult", result);
        documents_fields(&doc, "LogLine", &line);
        let failure = LogEntry::failure(Uuid::nil(), ErrorKind::Trap, "boom".into(), now);
        documents_fields(&doc, "LogEntry", failure);
        let capsule = Capsule {
            id: Uuid::nil(),
            content: "c".into(),
            capsule_type: CapsuleType::Insight,
            trust_level: TrustLevel::Standard,
            version: 1,
            metadata: Map::new(),
            owner: None,
            created_by_overlay: None,
            created_at: now,
        };
        documents_fields(&doc, "Capsule", &capsule);
        let preview = CapsulePreview::of(&capsule);
        documents_fields(&doc, "CapsulePreview", &preview);
        documents_fields(&doc, "CapsuleHit", CapsuleHit { capsule: preview, score: 1.0 });
        let user = User {
            id: Uuid::nil(),
            name: "u".into(),
            roles: vec![Role::User],
            trust_level: TrustLevel::Standard,
            created_at: now,
            disabled: false,
        };
        documents_fields(&doc, "User", user);
        let token = forge_model::api::TokenInfo {
            id: "0123456789ab".into(),
            created_at: now,
            revoked_at: None,
            bootstrap: false,
        };
        documents_fields(&doc, "TokenInfo", token);
        documents_fields(&doc, "RevokedTokens", forge_model::api::RevokedTokens { revoked: 1 });
        documents_fields(&doc, ForgeError::name().as_ref(), ForgeError::not_found("x"));
    }

    #[test]
    fn request_bodies_document_what_may_be_left_out() {
        let doc = document();
        documents_defaults::<OverlayManifest>(
            &doc,
            "OverlayManifest",
            json!({"name": "a", "version": "1.0.0"}),
        );
        documents_defaults::<OverlayInvocation>(&doc, "OverlayInvocation", json!({"function": "process"}));
        documents_defaults::<NewCapsule>(&doc, "NewCapsule", json!({"content": "c", "type": "code"}));
        documents_defaults::<forge_model::NewUser>(&doc, "NewUser", json!({"name": "u", "roles": ["user"]}));
    }

    /// Every operation documents the refusals its extractors and middleware can give (what
    /// schemathesis found missing: 415 and 422 of JSON bodies, 422 of queries, 404 of paths, 429).
    #[test]
    fn every_operation_documents_the_refusals_of_its_kind() {
        let (_, openapi) = routes(&HttpLimits::default());
        for (path, item) in &openapi.paths.paths {
            let operations = [&item.get, &item.put, &item.post, &item.delete];
            for operation in operations.into_iter().flatten() {
                let statuses: BTreeSet<&str> =
                    operation.responses.responses.keys().map(String::as_str).collect();
                let open = !statuses.contains("401");
                let mut expected = BTreeSet::new();
                if path.contains('{') {
                    expected.insert("404");
                }
                if operation.request_body.is_some() {
                    expected.extend(["413", "415", "422", "429"]);
                }
                if !open {
                    expected.insert("429");
                }
                let missing: Vec<_> = expected.difference(&statuses).collect();
                assert!(missing.is_empty(), "{path}: {missing:?} undocumented");
                if let Some(utoipa::openapi::RefOr::T(too_many)) = operation.responses.responses.get("429") {
                    assert!(too_many.headers.contains_key("Retry-After"), "{path}: 429 without Retry-After");
                }
            }
        }
        let doc = document();
        let events = &doc["paths"]["/api/v1/overlays/{id}/events"]["get"]["responses"];
        assert!(events["422"].is_object(), "a page that does not parse is a 422");
        let revoke = &doc["paths"]["/api/v1/tokens/revoke"]["post"]["responses"];
        assert!(revoke["429"]["description"].as_str().unwrap().contains("failed_auth_per_minute"));
    }
}
