//! The HTTP layer's own behaviour, in process: the router over a real service (SQLite and a local
//! directory in a temporary directory), driven with `oneshot` requests. Authentication, the
//! extractors' rejections, unknown resources, paging, role checks and what is open without a token.
//! The same API through a real server process is tested end to end in forge-cli.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use forge_model::api::{CreatedUser, Data, List, ServerHealth};
use forge_model::{ErrorCode, ForgeError, NewUser, Overlay, Role, TrustLevel};
use forge_server::HttpLimits;
use forge_service::{OverlayService, ServiceConfig};
use forge_storage::BlobStore;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN_TOKEN: &str = "fgo_in-process-admin-token";
const MAX_BODY_BYTES: usize = 1 << 20;
/// An id no overlay or capsule has.
const UNKNOWN_ID: &str = "01900000-0000-7000-8000-000000000000";

/// A module with one entry point, `process`, that answers an empty result.
const MODULE_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "forge_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "process") (param i32 i32) (result i64) (i64.const 0)))"#;

/// The router over a service on fresh storage, with an admin token installed.
struct Api {
    router: Router,
    service: OverlayService,
    _dir: tempfile::TempDir,
}

/// An answer: status, headers and the body as JSON (`null` when empty).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    /// Asserts a refusal with `status`, code `code` and exactly the standard body; returns it.
    fn refused(&self, status: StatusCode, code: ErrorCode) -> ForgeError {
        assert_eq!(self.status, status, "{}", self.body);
        let keys: Vec<&String> = self.body.as_object().expect("an object").keys().collect();
        assert_eq!(keys, ["code", "details", "message"], "{}", self.body);
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/json");
        let error: ForgeError = serde_json::from_value(self.body.clone()).expect("the standard body");
        assert_eq!(error.code, code, "{}", self.body);
        assert!(!error.message.is_empty());
        error
    }

    /// The answer read as `T`, after asserting `status`.
    fn read<T: serde::de::DeserializeOwned>(self, status: StatusCode) -> T {
        assert_eq!(self.status, status, "{}", self.body);
        serde_json::from_value(self.body).expect("the documented answer")
    }
}

impl Api {
    async fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let repo = forge_storage::open_sqlite(&dir.path().join("forge.db")).await.unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs").to_str().unwrap()).unwrap();
        let service = OverlayService::new(ServiceConfig::default(), repo, blobs).unwrap();
        service.ensure_token("admin", Role::Admin, TrustLevel::Core, ADMIN_TOKEN).await.unwrap();
        let limits = HttpLimits { max_body_bytes: MAX_BODY_BYTES, ..HttpLimits::default() };
        let router = forge_server::app(service.clone(), &limits);
        Api { router, service, _dir: dir }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else if headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/json") {
            serde_json::from_slice(&bytes).unwrap()
        } else {
            Value::String(String::from_utf8(bytes.to_vec()).unwrap())
        };
        Answer { status, headers, body }
    }

    /// A request with `token` as its bearer token, and `body` as JSON if there is one.
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => {
                request.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string()))
            }
            None => request.body(Body::empty()),
        };
        self.send(request.unwrap()).await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call(method, path, Some(ADMIN_TOKEN), body).await
    }

    /// A raw body with a content type, as the admin.
    async fn admin_raw(&self, method: Method, path: &str, content_type: &str, body: &str) -> Answer {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_owned()))
            .unwrap();
        self.send(request).await
    }

    /// Registers [`MODULE_WAT`] as `name@1.0.0` (pending) as the admin.
    async fn register(&self, name: &str) -> Overlay {
        use base64::Engine;
        let body = json!({
            "manifest": {"name": name, "version": "1.0.0"},
            "wasm_base64": base64::engine::general_purpose::STANDARD.encode(MODULE_WAT),
        });
        let answer = self.admin(Method::POST, "/api/v1/overlays", Some(body)).await;
        answer.read::<Data<Overlay>>(StatusCode::CREATED).data
    }

    /// `GET /api/v1/overlays?{query}` as the admin.
    async fn overlays(&self, query: &str) -> List<Overlay> {
        self.admin(Method::GET, &format!("/api/v1/overlays?{query}"), None).await.read(StatusCode::OK)
    }

    /// Creates a user holding `role` at standard trust; returns its token.
    async fn user(&self, name: &str, role: Role) -> String {
        let admin = self.service.authenticate(ADMIN_TOKEN).await.unwrap();
        let (_, token) = self.service.create_user(&admin, NewUser::new(name, vec![role])).await.unwrap();
        token
    }
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_with_the_standard_body() {
    let api = Api::start().await;
    let basic = Request::builder()
        .uri("/api/v1/overlays")
        .header(header::AUTHORIZATION, format!("Basic {ADMIN_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let empty_bearer = Request::builder()
        .uri("/api/v1/overlays")
        .header(header::AUTHORIZATION, "Bearer  ")
        .body(Body::empty());
    let answers = [
        api.call(Method::GET, "/api/v1/overlays", None, None).await,
        api.call(Method::GET, "/api/v1/overlays", Some("fgo_not-a-token"), None).await,
        api.send(basic).await,
        api.send(empty_bearer.unwrap()).await,
        api.call(Method::GET, "/api/v1/capsules?query=x", None, None).await,
        // Refused before the body is looked at.
        api.call(Method::POST, "/api/v1/overlays/by-name/echo/invoke", None, Some(json!("not JSON"))).await,
    ];
    for answer in answers {
        answer.refused(StatusCode::UNAUTHORIZED, ErrorCode::AuthenticationError);
        assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    let missing = api.call(Method::GET, "/api/v1/overlays", None, None).await;
    let error = missing.refused(StatusCode::UNAUTHORIZED, ErrorCode::AuthenticationError);
    assert!(error.message.contains("Bearer"), "{}", error.message);
    api.admin(Method::GET, "/api/v1/overlays", None).await.read::<List<Overlay>>(StatusCode::OK);
}

#[tokio::test]
async fn the_openapi_document_and_the_probes_need_no_token() {
    let api = Api::start().await;
    let document = api.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(document.status, StatusCode::OK);
    assert!(document.body["openapi"].as_str().unwrap().starts_with("3.1"), "{}", document.body);
    assert!(document.body["paths"]["/api/v1/overlays"].is_object());
    let with_token = api.admin(Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(with_token.body, document.body, "the same document for everyone");

    let health: ServerHealth = api.call(Method::GET, "/health", None, None).await.read(StatusCode::OK);
    assert_eq!((health.status.as_str(), health.version.as_str()), ("ok", env!("CARGO_PKG_VERSION")));
    let metrics = api.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.body.as_str().unwrap().contains("forge_http_requests_total"));

    // Nothing else is open: every other documented GET without a token is a 401.
    for path in document.body["paths"].as_object().unwrap().keys() {
        if ["/health", "/metrics", "/api/v1/openapi.json"].contains(&path.as_str()) {
            continue;
        }
        let concrete = path
            .replace("{id}", UNKNOWN_ID)
            .replace("{action}", "activate")
            .replace("{name}", "echo")
            .replace("{version}", "1.0.0");
        let operations = document.body["paths"][path].as_object().unwrap().keys();
        let methods = operations.filter(|m| ["get", "post", "put", "delete", "patch"].contains(&m.as_str()));
        for method in methods.map(|m| Method::from_bytes(m.to_uppercase().as_bytes()).unwrap()) {
            let answer = api.call(method.clone(), &concrete, None, None).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {concrete} is open");
        }
    }
}

#[tokio::test]
async fn broken_json_and_wrong_types_get_422_with_the_standard_body() {
    let api = Api::start().await;
    let overlay = api.register("shape").await;
    let invoke = format!("/api/v1/overlays/{}/invoke", overlay.id);
    let trust = format!("/api/v1/overlays/{}/trust-level", overlay.id);

    let broken = api.admin_raw(Method::POST, &invoke, "application/json", "{\"function\": ").await;
    broken.refused(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationError);
    let bodies = [
        (&invoke, json!({"function": 1})),
        (&invoke, json!({"function": "process", "args": [1]})),
        (&invoke, json!({"function": "process", "argz": {}})),
        (&invoke, json!({"args": {}})),
        (&trust, json!({"trust_level": "root"})),
        (&trust, json!({"trust_level": true})),
    ];
    for (path, body) in bodies {
        let method = if path == &trust { Method::PUT } else { Method::POST };
        let answer = api.admin(method, path, Some(body.clone())).await;
        let error = answer.refused(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationError);
        assert!(!error.message.is_empty(), "{body}");
    }
    for query in ["state=bogus", "page=first", "per_page=-1", "colour=blue"] {
        let answer = api.admin(Method::GET, &format!("/api/v1/overlays?{query}"), None).await;
        answer.refused(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationError);
    }
    api.admin(Method::GET, "/api/v1/capsules", None)
        .await
        .refused(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationError);

    let text = api.admin_raw(Method::POST, &invoke, "text/plain", r#"{"function": "process"}"#).await;
    text.refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::UnsupportedMediaType);
    // Each route has the limit of what it carries, whatever the registration limit.
    let input_cap = forge_runtime::RuntimeConfig::default().max_input_bytes;
    for (path, limit) in [
        (invoke.as_str(), input_cap + (64 << 10)),
        ("/api/v1/capsules", 2 * (1 << 20) + 2 * (64 << 10) + (64 << 10)),
        ("/api/v1/users", 64 << 10),
        ("/api/v1/tokens/revoke", 64 << 10),
    ] {
        let oversized = "x".repeat(limit + 1);
        let big = api.admin_raw(Method::POST, path, "application/json", &oversized).await;
        let refusal = big.refused(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge);
        assert_eq!(refusal.details["max_bytes"], limit, "{path}");
        let at_limit = api.admin_raw(Method::POST, path, "application/json", &oversized[1..]).await;
        at_limit.refused(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationError);
    }
}

#[tokio::test]
async fn deeply_nested_json_is_refused_not_followed() {
    let api = Api::start().await;
    let overlay = api.register("nested").await;
    let invoke = format!("/api/v1/overlays/{}/invoke", overlay.id);
    let depth = 100_000;
    let args =
        format!(r#"{{"function": "process", "args": {{"a": {}1{}}}}}"#, "[".repeat(depth), "]".repeat(depth));
    let answer = api.admin_raw(Method::POST, &invoke, "application/json", &args).await;
    let refusal = answer.refused(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationError);
    assert!(refusal.message.contains("recursion limit"), "{}", refusal.message);
    api.admin(Method::GET, "/health", None).await.read::<ServerHealth>(StatusCode::OK);
}

#[tokio::test]
async fn unknown_ids_routes_and_methods_get_404_and_405() {
    let api = Api::start().await;
    let overlay = api.register("known").await;
    for path in [
        format!("/api/v1/overlays/{UNKNOWN_ID}"),
        format!("/api/v1/overlays/{UNKNOWN_ID}/health"),
        format!("/api/v1/capsules/{UNKNOWN_ID}"),
        "/api/v1/overlays/not-a-uuid".to_owned(),
        "/api/v1/overlays/by-name/known/9.9.9".to_owned(),
        "/api/v1/overlay".to_owned(),
        "/nope".to_owned(),
    ] {
        let answer = api.admin(Method::GET, &path, None).await;
        answer.refused(StatusCode::NOT_FOUND, ErrorCode::NotFound);
    }
    let invocation = json!({"function": "process"});
    for (method, path, body) in [
        (Method::POST, format!("/api/v1/overlays/{UNKNOWN_ID}/invoke"), Some(invocation.clone())),
        (Method::POST, "/api/v1/overlays/by-name/nothing/invoke".to_owned(), Some(invocation)),
        (Method::POST, format!("/api/v1/overlays/{}/frobnicate", overlay.id), None),
        (Method::DELETE, format!("/api/v1/overlays/{UNKNOWN_ID}"), None),
        (Method::POST, "/api/v1/tokens/revoke".to_owned(), Some(json!({"token": "fgo_unknown"}))),
    ] {
        let answer = api.admin(method.clone(), &path, body).await;
        answer.refused(StatusCode::NOT_FOUND, ErrorCode::NotFound);
    }

    let wrong = api.admin(Method::DELETE, "/health", None).await;
    wrong.refused(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed);
    assert_eq!(wrong.headers[header::ALLOW], "GET,HEAD");
}

#[tokio::test]
async fn lists_are_paged_and_the_page_is_brought_into_range() {
    let api = Api::start().await;
    for name in ["page-a", "page-b", "page-c", "other"] {
        api.register(name).await;
    }
    let second = api.overlays("name=page&per_page=2&page=2").await;
    assert_eq!((second.meta.total, second.meta.page, second.meta.per_page, second.meta.pages), (3, 2, 2, 2));
    assert_eq!(second.data.len(), 1);
    let first = api.overlays("name=page&per_page=2").await;
    let mut names: Vec<String> =
        first.data.iter().chain(&second.data).map(|o| o.manifest.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["page-a", "page-b", "page-c"], "two pages hold each overlay once");

    let beyond = api.overlays("per_page=2&page=9").await;
    assert_eq!((beyond.data.len(), beyond.meta.total, beyond.meta.page), (0, 4, 9));
    let clamped = api.overlays("per_page=1000&page=0").await;
    assert_eq!((clamped.meta.per_page, clamped.meta.page, clamped.data.len()), (100, 1, 4));
    let smallest = api.overlays("per_page=0").await;
    assert_eq!((smallest.meta.per_page, smallest.meta.pages), (1, 4));

    let id = first.data[0].id;
    let events: List<Value> = api
        .admin(Method::GET, &format!("/api/v1/overlays/{id}/events?per_page=1"), None)
        .await
        .read(StatusCode::OK);
    assert_eq!((events.data[0]["action"].as_str(), events.meta.total), (Some("register"), 1));
}

#[tokio::test]
async fn roles_are_checked_with_403() {
    let api = Api::start().await;
    let overlay = api.register("guarded").await;
    let user = api.user("ursula", Role::User).await;
    let operator = api.user("otto", Role::Operator).await;
    let overlay_path = |action: &str| format!("/api/v1/overlays/{}/{action}", overlay.id);

    let activate = api.call(Method::POST, &overlay_path("activate"), Some(&user), None).await;
    let error = activate.refused(StatusCode::FORBIDDEN, ErrorCode::AuthorizationError);
    assert_eq!(error.details["required_roles"], json!(["admin"]));
    let refusals = [
        api.call(
            Method::PUT,
            &overlay_path("trust-level"),
            Some(&user),
            Some(json!({"trust_level": "trusted"})),
        )
        .await,
        api.call(Method::DELETE, &format!("/api/v1/overlays/{}", overlay.id), Some(&operator), None).await,
        api.call(
            Method::POST,
            "/api/v1/users",
            Some(&operator),
            Some(json!({"name": "eve", "roles": ["admin"]})),
        )
        .await,
        api.call(
            Method::POST,
            "/api/v1/capsules",
            Some(&user),
            Some(json!({"content": "c", "type": "code", "trust_level": "core"})),
        )
        .await,
    ];
    for answer in refusals {
        answer.refused(StatusCode::FORBIDDEN, ErrorCode::AuthorizationError);
    }

    // What the roles do allow.
    let created: CreatedUser = api
        .admin(Method::POST, "/api/v1/users", Some(json!({"name": "dana", "roles": ["operator"]})))
        .await
        .read::<Data<CreatedUser>>(StatusCode::CREATED)
        .data;
    assert_eq!((created.user.roles, created.user.trust_level), (vec![Role::Operator], TrustLevel::Standard));
    let listed: List<Overlay> =
        api.call(Method::GET, "/api/v1/overlays", Some(&user), None).await.read(StatusCode::OK);
    assert_eq!(listed.meta.total, 1, "any user may list");
}

/// The refusals the extractors give are in the served document for the operation that gave them:
/// the disagreements schemathesis found (`scripts/api-fuzz.sh`), each an undocumented status.
#[tokio::test]
async fn the_extractors_refusals_are_documented_where_they_happen() {
    let api = Api::start().await;
    let overlay = api.register("documented").await;
    let document = api.call(Method::GET, "/api/v1/openapi.json", None, None).await.body;
    let id = overlay.id.to_string();
    let cases: [(Method, &str, &str, Option<&str>, StatusCode); 8] = [
        (
            Method::POST,
            "/api/v1/tokens/revoke",
            "/api/v1/tokens/revoke",
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            Method::POST,
            "/api/v1/tokens/revoke",
            "/api/v1/tokens/revoke",
            Some("\0"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (Method::POST, "/api/v1/users", "/api/v1/users", None, StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (Method::POST, "/api/v1/capsules", "/api/v1/capsules", None, StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (
            Method::PUT,
            "/api/v1/overlays/{id}/trust-level",
            "trust-level",
            Some("{}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (Method::POST, "/api/v1/overlays/{id}/invoke", "invoke", None, StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (
            Method::GET,
            "/api/v1/overlays/{id}/events",
            "events?page=first",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            "/api/v1/overlays/{id}/events",
            "/api/v1/overlays/0/events",
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, template, uri, body, status) in cases {
        let uri = if uri.starts_with('/') { uri.to_owned() } else { format!("/api/v1/overlays/{id}/{uri}") };
        let answer = match body {
            Some(body) => api.admin_raw(method.clone(), &uri, "application/json", body).await,
            None => api.admin(method.clone(), &uri, None).await,
        };
        assert_eq!(answer.status, status, "{method} {uri}: {}", answer.body);
        let operation = &document["paths"][template][method.as_str().to_lowercase()];
        let documented = &operation["responses"][status.as_str()];
        assert!(documented.is_object(), "{method} {template} answers {status} undocumented");
    }
    // An authenticated route documents 429 too (failed lookups from one address), with the seconds
    // to wait.
    let revoke = &document["paths"]["/api/v1/tokens/revoke"]["post"]["responses"]["429"];
    assert!(revoke["headers"]["Retry-After"].is_object(), "{revoke}");
    let delete = &document["paths"]["/api/v1/overlays/{id}"]["delete"]["responses"];
    assert!(delete["422"].is_object(), "a query that does not parse: {delete}");
}
