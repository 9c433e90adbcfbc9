//! End-to-end tests of the HTTP API: the real `forge-overlay serve` process, driven over HTTP.
//!
//! Every endpoint, every refusal with the standard error body (and the process serving on after
//! each), back-pressure, tampered binaries, graceful shutdown, the admin bootstrap and offline
//! tokens. The PostgreSQL + S3 deployment is at the bottom, `#[ignore]`d: `.ci/run` runs it with
//! `--ignored`, and it fails when its servers are absent.

mod server;

use forge_model::api::{ListQuery, PageQuery, SearchQuery, TrustLevelBody};
use forge_model::{
    CapsuleType, ErrorCode, ErrorKind, LifecycleAction, NewCapsule, Overlay, OverlayFilter,
    OverlayInvocation, OverlayState, Role, TrustLevel,
};
use reqwest::Method;
use reqwest::blocking::multipart;
use serde_json::{Value, json};
use server::*;
use std::path::Path;
use uuid::Uuid;

/// A random id no overlay or capsule has.
const UNKNOWN_ID: &str = "01900000-0000-7000-8000-000000000000";

fn unknown_id() -> Uuid {
    UNKNOWN_ID.parse().unwrap()
}

fn data_dir(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("data")
}

#[test]
fn probes_and_the_api_description_are_open_and_everything_else_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).start();
    let anonymous = server.anonymous();

    let health = anonymous.get("/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.body, json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}));
    assert_eq!(anonymous.server_health().unwrap().version, env!("CARGO_PKG_VERSION"));
    let metrics = anonymous.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    let text = metrics.body.as_str().unwrap();
    for family in
        ["forge_instances_in_flight", "forge_http_requests_total", "forge_http_request_duration_seconds"]
    {
        assert!(text.contains(family), "{family} missing from\n{text}");
    }

    for path in ["/api/v1/overlays", "/api/v1/overlays/by-name/echo/1.0.0", "/api/v1/capsules?query=x"] {
        let reply = anonymous.get(path);
        reply.refused(401, "authentication_error");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    server.api("fgo_not-a-token").get("/api/v1/overlays").refused(401, "authentication_error");
    let basic = anonymous.request(Method::GET, "/api/v1/overlays").basic_auth("admin", Some(ADMIN_TOKEN));
    anonymous.send(basic).refused(401, "authentication_error");
    // Refused before the body is read.
    anonymous
        .post("/api/v1/overlays/by-name/echo/invoke", &json!({"function": "process"}))
        .refused(401, "authentication_error");
    server.assert_serving();

    // The API's description is public, as client generators and fuzzers expect.
    let openapi = anonymous.get("/api/v1/openapi.json");
    assert_eq!(openapi.status, 200);
    assert_eq!(openapi.header("content-type"), Some("application/json"));
    assert!(openapi.body["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(anonymous.openapi().unwrap(), server.admin().openapi().unwrap());
    for path in [
        "/api/v1/overlays",
        "/api/v1/overlays/{id}",
        "/api/v1/overlays/{id}/{action}",
        "/api/v1/overlays/{id}/invoke",
        "/api/v1/overlays/by-name/{name}/invoke",
        "/api/v1/capsules",
        "/api/v1/users",
        "/api/v1/tokens/revoke",
        "/health",
        "/metrics",
    ] {
        assert!(openapi.body["paths"][path].is_object(), "{path} is not documented");
    }
    let metrics = anonymous.get("/metrics").body;
    assert!(
        metrics.as_str().unwrap().contains(r#"route="/api/v1/overlays",status="401""#),
        "requests are counted by route and status"
    );
}

#[test]
fn overlays_go_through_their_whole_lifecycle_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let wasm = fixture_bytes("echo.wasm");

    // Register: multipart with TOML, JSON with an object, JSON with TOML text and a source hash.
    let echo = admin.register(fixture_text("echo.toml"), wasm.clone(), None).unwrap();
    assert_eq!(
        (echo.manifest.name.as_str(), echo.manifest.version.as_str(), echo.state, echo.trust_level),
        ("echo", "0.1.0", OverlayState::Pending, TrustLevel::Sandbox)
    );
    assert_eq!(echo.submitted_by, "admin");
    assert_eq!(echo.manifest.entry_points, ["process", "fail"]);
    assert!(!echo.requires_approval);
    let object = admin
        .register_json(
            json!({"name": "echo-object", "version": "1.0.0", "entry_points": ["process"]}),
            &wasm,
            None,
        )
        .unwrap();
    assert_eq!(object.manifest.max_memory_mb, 64, "defaults fill the manifest");
    let newer = admin.register_json(Value::String(echo_manifest("echo", "0.2.0")), &wasm, None).unwrap();
    let with_source = admin
        .register_json(json!(echo_manifest("echo-source", "1.0.0")), &wasm, Some("ab12cd34".into()))
        .unwrap();
    assert_eq!(with_source.source_hash.as_deref(), Some("ab12cd34"));
    let with_form =
        admin.register(echo_manifest("echo-form", "1.0.0"), wasm.clone(), Some("ef56".into())).unwrap();
    assert_eq!(with_form.source_hash.as_deref(), Some("ef56"));

    // Read: by id, by name and version, listed with filters and pages.
    assert_eq!(admin.overlay(echo.id).unwrap(), echo);
    assert_eq!(admin.overlay_by_name_version("echo", "0.2.0").unwrap().id, newer.id);
    let list = admin.get("/api/v1/overlays?name=echo&per_page=2&page=2");
    assert_eq!(list.status, 200);
    assert_eq!(list.body["meta"], json!({"total": 5, "page": 2, "per_page": 2, "pages": 3}));
    assert_eq!(list.body["data"].as_array().unwrap().len(), 2);
    let count = |filter: OverlayFilter| {
        admin.list_overlays(&ListQuery::new(filter, PageQuery::default())).unwrap().meta.total
    };
    let pending_by_admin = OverlayFilter {
        state: Some(OverlayState::Pending),
        submitter: Some("admin".into()),
        ..OverlayFilter::default()
    };
    assert_eq!(count(pending_by_admin), 5);
    assert_eq!(count(OverlayFilter { name: Some("object".into()), ..OverlayFilter::default() }), 1);
    assert_eq!(count(OverlayFilter { submitter: Some("nobody".into()), ..OverlayFilter::default() }), 0);
    let reader =
        OverlayFilter { capability: Some("capsule:read".parse().unwrap()), ..OverlayFilter::default() };
    assert_eq!(count(reader), 0);

    // Activate and invoke, by id and by name (the newest active version).
    let active = admin.transition(echo.id, LifecycleAction::Activate, None).unwrap();
    assert_eq!(active.state, OverlayState::Active);
    let result = admin.invoke(echo.id, &call("process", json!({"n": 1}))).unwrap();
    assert!(result.success);
    assert_eq!(result.result.map(Value::Object), Some(json!({"echo": {"n": 1}})));
    assert!(result.fuel_consumed > 0);
    let by_name = OverlayInvocation { timeout_ms: Some(500), ..call("process", json!({"n": 2})) };
    assert_eq!(admin.invoke_by_name("echo", &by_name).unwrap().result.unwrap()["echo"]["n"], 2);
    admin.transition(newer.id, LifecycleAction::Activate, Some("newer".into())).unwrap();
    admin.invoke_by_name("echo", &by_name).unwrap();
    assert_eq!(admin.health(newer.id).invocation_count, 1, "by name runs the newest active version");
    let failed = admin.invoke(echo.id, &call("fail", json!({"message": "on purpose"}))).unwrap();
    assert_eq!((failed.success, failed.error_kind), (false, Some(ErrorKind::OverlayError)));
    assert!(failed.error.unwrap().contains("on purpose"));

    let health = admin.health(echo.id);
    assert_eq!((health.invocation_count, health.failure_count), (3, 1));
    assert_eq!((health.name.as_str(), health.state), ("echo", OverlayState::Active));
    assert!(health.p50_execution_ms.unwrap() > 0.0);
    assert!(health.last_error.unwrap().contains("on purpose"));

    // The rest of the lifecycle, and trust.
    let act = |action: LifecycleAction, reason: Option<&str>| {
        admin.transition(echo.id, action, reason.map(Into::into)).unwrap().state
    };
    assert_eq!(act(LifecycleAction::Suspend, Some("maintenance")), OverlayState::Suspended);
    let refused =
        refusal(admin.invoke(echo.id, &call("process", json!({}))), 422, ErrorCode::ValidationError);
    assert_eq!(refused.details["state"], "suspended");
    assert_eq!(act(LifecycleAction::Resume, None), OverlayState::Active);
    assert_eq!(act(LifecycleAction::Quarantine, Some("looks odd")), OverlayState::Quarantined);
    assert_eq!(act(LifecycleAction::Release, None), OverlayState::Active);
    assert_eq!(admin.health(echo.id).invocation_count, 0, "release resets the counters");
    let trusted = TrustLevelBody { trust_level: TrustLevel::Trusted, reason: Some("reviewed".into()) };
    assert_eq!(admin.set_trust_level(echo.id, &trusted).unwrap().trust_level, TrustLevel::Trusted);
    // Trust levels are also read as their numbers.
    let path = format!("/api/v1/overlays/{}/trust-level", echo.id);
    assert_eq!(admin.put(&path, &json!({"trust_level": 60})).data(200)["trust_level"], "standard");
    assert_eq!(act(LifecycleAction::Deprecate, None), OverlayState::Deprecated);

    let events = admin.events(echo.id, PageQuery { page: None, per_page: Some(100) }).unwrap();
    let actions: Vec<&str> = events.data.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "register",
            "activate",
            "suspend",
            "resume",
            "quarantine",
            "release",
            "set_trust_level",
            "set_trust_level",
            "deprecate"
        ]
    );
    assert_eq!(events.data[2].reason.as_deref(), Some("maintenance"));
    assert_eq!(events.data[2].actor, "admin");
    assert_eq!(events.meta.total, 9);

    // Delete: the record and the binary go, the audit trail stays.
    let deleted = admin.delete(&format!("/api/v1/overlays/{}?reason=cleanup", echo.id));
    assert_eq!((deleted.status, &deleted.body), (204, &json!("")));
    refusal(admin.overlay(echo.id), 404, ErrorCode::NotFound);
    refusal(admin.delete_overlay(echo.id, None), 404, ErrorCode::NotFound);
    let trail = admin.events(echo.id, PageQuery { page: None, per_page: Some(100) }).unwrap();
    assert_eq!((trail.data[9].action.as_str(), trail.data[9].reason.as_deref()), ("delete", Some("cleanup")));
    admin.delete_overlay(with_form.id, Some("typed".into())).unwrap();
    assert!(blob_path(&data_dir(&dir), &newer.wasm_key).exists(), "other versions keep theirs");
    server.assert_serving();
}

/// Checks a refusal and that the server is still serving after it.
fn refused(server: &mut ServerProcess, reply: Reply, status: u16, code: &str) -> Value {
    let body = reply.refused(status, code).clone();
    server.assert_serving();
    body
}

/// Checks a refusal of a typed call and that the server is still serving after it.
fn refused_call<T: std::fmt::Debug>(
    server: &mut ServerProcess,
    result: Result<T, forge_client::Error>,
    status: u16,
    code: ErrorCode,
) -> forge_model::ForgeError {
    let error = refusal(result, status, code);
    server.assert_serving();
    error
}

#[test]
fn every_refusal_has_the_standard_body_and_the_server_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let echo = admin.active_echo("echo", "0.1.0");
    let echo_id = echo.id;
    let pending = admin.register(echo_manifest("echo", "0.2.0"), fixture_bytes("echo.wasm"), None).unwrap();
    let user = server.api(&admin.user_token("ursula", &[Role::User], TrustLevel::Standard));
    let operator = server.api(&admin.user_token("otto", &[Role::Operator], TrustLevel::Trusted));
    let invoke = format!("/api/v1/overlays/{echo_id}/invoke");

    // 404: unknown routes, unknown resources, paths that name nothing.
    refused(&mut server, admin.get("/nope"), 404, "not_found");
    refused(&mut server, admin.get("/api/v1/overlay"), 404, "not_found");
    refused(&mut server, admin.get(&format!("/api/v1/overlays/{UNKNOWN_ID}")), 404, "not_found");
    let process = call("process", json!({}));
    refused_call(&mut server, admin.invoke(unknown_id(), &process), 404, ErrorCode::NotFound);
    refused(&mut server, admin.get("/api/v1/overlays/by-name/echo/9.9.9"), 404, "not_found");
    let body = json!({"function": "process"});
    refused(&mut server, admin.post("/api/v1/overlays/by-name/nothing/invoke", &body), 404, "not_found");
    refused(&mut server, admin.get(&format!("/api/v1/capsules/{UNKNOWN_ID}")), 404, "not_found");
    refused(&mut server, admin.get("/api/v1/overlays/not-a-uuid"), 404, "not_found");
    refused(
        &mut server,
        admin.post_empty(&format!("/api/v1/overlays/{echo_id}/frobnicate")),
        404,
        "not_found",
    );
    refused(&mut server, admin.delete(&format!("/api/v1/overlays/{UNKNOWN_ID}")), 404, "not_found");
    refused(
        &mut server,
        admin.post("/api/v1/tokens/revoke", &json!({"token": "fgo_unknown"})),
        404,
        "not_found",
    );

    // 405: a known path with another method; `Allow` says which.
    let wrong = admin.delete("/health");
    assert_eq!(wrong.header("allow"), Some("GET,HEAD"));
    refused(&mut server, wrong, 405, "method_not_allowed");
    refused(&mut server, admin.put("/api/v1/overlays", &json!({})), 405, "method_not_allowed");

    // 415: not JSON (nor multipart, for registration).
    let text = admin
        .request(Method::POST, &invoke)
        .header("content-type", "text/plain")
        .body(r#"{"function":"process"}"#);
    refused(&mut server, admin.send(text), 415, "unsupported_media_type");
    let no_type = admin.request(Method::POST, "/api/v1/overlays").body("manifest");
    refused(&mut server, admin.send(no_type), 415, "unsupported_media_type");

    // 422: broken JSON, missing or unknown fields, invalid manifests and modules, wrong states.
    let broken = admin
        .request(Method::POST, &invoke)
        .header("content-type", "application/json")
        .body("{\"function\": ");
    refused(&mut server, admin.send(broken), 422, "validation_error");
    refused(&mut server, admin.post(&invoke, &json!({"args": {}})), 422, "validation_error");
    refused(
        &mut server,
        admin.post(&invoke, &json!({"function": "process", "argz": {}})),
        422,
        "validation_error",
    );
    refused(
        &mut server,
        admin.post(&invoke, &json!({"function": "process", "args": [1]})),
        422,
        "validation_error",
    );
    let slow = json!({"function": "process", "timeout_ms": 5});
    refused(&mut server, admin.post(&invoke, &slow), 422, "validation_error");
    let manifest = json!({"name": "Bad Name", "version": "1", "max_memory_mb": 4096});
    let echo_wasm = fixture_bytes("echo.wasm");
    let invalid = admin.register_json(manifest, &echo_wasm, None);
    let body = refused_call(&mut server, invalid, 422, ErrorCode::ValidationError);
    let fields: Vec<&str> =
        body.details["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["name", "version", "max_memory_mb"]);
    let unparsed = admin.register_json(json!("name = "), &echo_wasm, None);
    let body = refused_call(&mut server, unparsed, 422, ErrorCode::ValidationError);
    assert!(body.message.contains("TOML"), "{body:?}");
    let garbage = admin.register(echo_manifest("garbage", "1.0.0"), b"\0asm but not really".to_vec(), None);
    refused_call(&mut server, garbage, 422, ErrorCode::ValidationError);
    let no_exports = admin.register_json(json!(echo_manifest("hollow", "1.0.0")), b"(module)", None);
    let body = refused_call(&mut server, no_exports, 422, ErrorCode::ValidationError);
    assert!(body.message.contains("forge_alloc") || body.message.contains("memory"), "{body:?}");
    let bad_base64 = json!({"manifest": echo_manifest("b64", "1.0.0"), "wasm_base64": "!!!"});
    refused(&mut server, admin.post("/api/v1/overlays", &bad_base64), 422, "validation_error");
    let missing_part = multipart::Form::new().text("manifest", echo_manifest("parts", "1.0.0"));
    let body = refused(
        &mut server,
        admin.send(admin.request(Method::POST, "/api/v1/overlays").multipart(missing_part)),
        422,
        "validation_error",
    );
    assert_eq!(body["details"]["errors"][0]["field"], "wasm");
    let extra_part =
        multipart::Form::new().text("manifest", echo_manifest("parts", "1.0.0")).text("colour", "blue");
    refused(
        &mut server,
        admin.send(admin.request(Method::POST, "/api/v1/overlays").multipart(extra_part)),
        422,
        "validation_error",
    );
    let body = refused_call(&mut server, admin.invoke(pending.id, &process), 422, ErrorCode::ValidationError);
    assert_eq!(body.details["state"], "pending");
    let nope = call("nope", json!({}));
    let body = refused_call(&mut server, admin.invoke(echo_id, &nope), 422, ErrorCode::ValidationError);
    assert_eq!(body.details["available"], json!(["process", "fail"]));
    let body = refused(
        &mut server,
        admin.post_empty(&format!("/api/v1/overlays/{echo_id}/resume")),
        422,
        "validation_error",
    );
    assert!(body["message"].as_str().unwrap().contains("active"), "{body}");
    let unreasoned = admin.post_empty(&format!("/api/v1/overlays/{echo_id}/suspend"));
    refused(&mut server, unreasoned, 422, "validation_error");
    refused(&mut server, admin.get("/api/v1/overlays?state=bogus"), 422, "validation_error");
    refused(&mut server, admin.get("/api/v1/overlays?page=first"), 422, "validation_error");
    refused(&mut server, admin.get("/api/v1/overlays?colour=blue"), 422, "validation_error");
    refused(&mut server, admin.get("/api/v1/capsules"), 422, "validation_error");
    let trust = format!("/api/v1/overlays/{echo_id}/trust-level");
    refused(&mut server, admin.put(&trust, &json!({"trust_level": "root"})), 422, "validation_error");
    refused(
        &mut server,
        admin.post("/api/v1/capsules", &json!({"content": " ", "type": "insight"})),
        422,
        "validation_error",
    );
    refused(
        &mut server,
        admin.post("/api/v1/users", &json!({"name": "has space", "roles": []})),
        422,
        "validation_error",
    );

    // 409: the same name and version again, the same user name again.
    let again = admin.register(fixture_text("echo.toml"), fixture_bytes("echo.wasm"), None);
    refused_call(&mut server, again, 409, ErrorCode::Conflict);
    refused(
        &mut server,
        admin.post("/api/v1/users", &json!({"name": "ursula", "roles": ["user"]})),
        409,
        "conflict",
    );

    // 403: roles, then trust.
    let body = refused(
        &mut server,
        user.post_empty(&format!("/api/v1/overlays/{}/activate", pending.id)),
        403,
        "authorization_error",
    );
    assert_eq!(body["details"]["required_roles"], json!(["admin"]));
    refused(&mut server, operator.delete(&format!("/api/v1/overlays/{echo_id}")), 403, "authorization_error");
    refused(
        &mut server,
        user.post(&format!("/api/v1/overlays/{echo_id}/suspend"), &json!({"reason": "r"})),
        403,
        "authorization_error",
    );
    refused(&mut server, user.put(&trust, &json!({"trust_level": "trusted"})), 403, "authorization_error");
    refused(
        &mut server,
        user.post("/api/v1/users", &json!({"name": "eve", "roles": ["admin"]})),
        403,
        "authorization_error",
    );
    admin.put(&trust, &json!({"trust_level": "trusted"})).data(200);
    let body = refused_call(&mut server, user.invoke(echo_id, &process), 403, ErrorCode::AuthorizationError);
    assert!(body.message.contains("trust"), "{body:?}");
    assert!(operator.invoke(echo_id, &process).unwrap().success, "trusted reaches trusted");
    let modest_admin = server.api(&admin.user_token("modest", &[Role::Admin], TrustLevel::Standard));
    refused(
        &mut server,
        modest_admin.put(&trust, &json!({"trust_level": "core"})),
        403,
        "authorization_error",
    );
    let secret = json!({"content": "board minutes", "type": "decision", "trust_level": "core"});
    refused(&mut server, user.post("/api/v1/capsules", &secret), 403, "authorization_error");
    let secret = NewCapsule {
        trust_level: TrustLevel::Core,
        ..NewCapsule::new("minutes", forge_model::CapsuleType::Decision)
    };
    refused_call(&mut server, user.create_capsule(&secret), 403, ErrorCode::AuthorizationError);
}

#[test]
fn oversized_bodies_are_refused_with_413() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("forge.toml");
    std::fs::write(&config, "# 256 KiB\nmax_body_bytes = 262144\n").unwrap();
    let mut server = Launch::new(&data_dir(&dir)).env("FORGE_CONFIG", config.to_str().unwrap()).start();
    let admin = server.admin();
    let big = "A".repeat(300 << 10);

    let json_body = json!({"manifest": echo_manifest("big", "1.0.0"), "wasm_base64": big});
    refused(&mut server, admin.post("/api/v1/overlays", &json_body), 413, "payload_too_large");
    let form = multipart::Form::new()
        .text("manifest", echo_manifest("big", "1.0.0"))
        .part("wasm", multipart::Part::bytes(big.clone().into_bytes()));
    refused(
        &mut server,
        admin.send(admin.request(Method::POST, "/api/v1/overlays").multipart(form)),
        413,
        "payload_too_large",
    );
    // Invocations and capsules have limits of their own, from what they carry, whatever
    // `max_body_bytes` says: 300 KiB passes them, 3 MiB does not.
    let echo = admin.active_echo("echo", "0.1.0");
    admin.invoke(echo.id, &call("process", json!({"text": big}))).expect("a 300 KiB input is accepted");
    let huge = "A".repeat(3 << 20);
    let args = call("process", json!({"text": huge}));
    refused_call(&mut server, admin.invoke(echo.id, &args), 413, ErrorCode::PayloadTooLarge);
    let capsule = NewCapsule::new(huge.clone(), forge_model::CapsuleType::Knowledge);
    refused_call(&mut server, admin.create_capsule(&capsule), 413, ErrorCode::PayloadTooLarge);
    assert!(admin.invoke(echo.id, &call("process", json!({"small": true}))).unwrap().success);
}

#[test]
fn too_many_invocations_in_flight_are_refused_with_429_and_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir))
        .env("FORGE_MAX_IN_FLIGHT", "2")
        .arg("--max-in-flight-per-overlay=1")
        .env("FORGE_LOG_FORMAT", "json")
        .start();
    let admin = server.admin();
    let spinners = admin.active_spinners(&["spin", "spin-b"], 1500);
    let echo = admin.active_echo("echo", "0.1.0").id;

    let spin = |spinner: Uuid| {
        let api = admin.clone();
        std::thread::spawn(move || api.invoke(spinner, &call("spin", json!({}))).unwrap())
    };
    let mut running = vec![spin(spinners[0])];
    server.await_in_flight(1);
    let per_overlay = format!("/api/v1/overlays/{}/invoke", spinners[0]);
    let per_overlay = admin.post(&per_overlay, &json!({"function": "spin"}));
    assert_eq!(per_overlay.header("retry-after"), Some("1"));
    let body = refused(&mut server, per_overlay, 429, "rate_limit_exceeded");
    assert_eq!(body["details"]["retry_after"], 1);
    assert!(body["message"].as_str().unwrap().contains("spin@1.0.0"), "{body}");

    running.push(spin(spinners[1]));
    server.await_in_flight(2);
    let global = admin.invoke(echo, &call("process", json!({})));
    let Err(forge_client::Error::Refused { retry_after, .. }) = &global else { panic!("{global:?}") };
    assert_eq!(*retry_after, Some(1), "the client reads Retry-After");
    let body = refused_call(&mut server, global, 429, ErrorCode::RateLimitExceeded);
    assert!(body.message.contains("limit 2"), "{body:?}");

    for thread in running {
        let result = thread.join().unwrap();
        assert_eq!((result.success, result.error_kind), (false, Some(ErrorKind::Timeout)));
    }
    assert!(admin.invoke(echo, &call("process", json!({}))).unwrap().success, "slots come back");
    let metrics = server.anonymous().get("/metrics").body;
    for reason in ["global_limit", "overlay_limit"] {
        assert!(
            metrics.as_str().unwrap().contains(&format!("forge_refusals_total{{reason=\"{reason}\"}} 1"))
        );
    }
    let log = server.log();
    assert!(!log.is_empty() && log.lines().all(|line| serde_json::from_str::<Value>(line).is_ok()), "{log}");
}

#[test]
fn a_tampered_or_missing_binary_is_refused_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let tampered = admin.active_echo("echo", "0.1.0");
    let missing = admin.active_echo("echo", "0.2.0");
    let key = |overlay: &Overlay| blob_path(&data_dir(&dir), &overlay.wasm_key);
    assert!(key(&tampered).exists());
    std::fs::write(key(&tampered), fixture_bytes("text-stats.wasm")).unwrap();
    std::fs::remove_file(key(&missing)).unwrap();

    for overlay in [&tampered, &missing] {
        let invoked = admin.invoke(overlay.id, &call("process", json!({})));
        assert!(
            matches!(invoked, Err(forge_client::Error::Refused { retry_after: Some(1), .. })),
            "a 503 says when to retry: {invoked:?}"
        );
        let body = refused_call(&mut server, invoked, 503, ErrorCode::ServiceUnavailable);
        assert_eq!(body.message, "overlay binary unavailable");
        assert_eq!(body.details["retry_after"], 1);
    }
    assert!(server.log().contains("does not match its recorded SHA-256"), "the reason is logged");
    assert_eq!(admin.health(tampered.id).invocation_count, 0, "nothing ran");
}

#[test]
fn a_failing_overlay_is_quarantined_automatically() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let echo = admin.active_echo("echo", "0.1.0").id;
    for _ in 0..10 {
        let result = admin.invoke(echo, &call("fail", json!({"message": "broken"}))).unwrap();
        assert!(!result.success, "a failed call is still a 200");
    }
    let health = admin.health(echo);
    assert_eq!((health.state, health.failure_rate), (OverlayState::Quarantined, 1.0));
    let refused = admin.invoke(echo, &call("process", json!({})));
    let body = refused_call(&mut server, refused, 422, ErrorCode::ValidationError);
    assert_eq!(body.details["state"], "quarantined");
    let events = admin.events(echo, PageQuery::default()).unwrap();
    let last = events.data.last().unwrap();
    assert_eq!(
        (last.action.as_str(), last.actor.as_str(), last.to_state),
        ("auto_quarantine", "system", Some(OverlayState::Quarantined))
    );
    let quarantined = OverlayFilter { state: Some(OverlayState::Quarantined), ..OverlayFilter::default() };
    assert_eq!(
        admin.list_overlays(&ListQuery::new(quarantined, PageQuery::default())).unwrap().meta.total,
        1
    );

    let released = admin.transition(echo, LifecycleAction::Release, None).unwrap();
    assert_eq!(released.state, OverlayState::Active);
    assert!(admin.invoke(echo, &call("process", json!({}))).unwrap().success);
    let health = admin.health(echo);
    assert_eq!((health.invocation_count, health.on_probation), (1, true), "on probation after a release");
}

/// A guest that says every input is invalid (`forge.reject_input`).
const REJECTING_WAT: &str = r#"(module
  (import "forge" "reject_input" (func $reject (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "`text` is required")
  (func (export "forge_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "process") (param i32 i32) (result i64) (call $reject (i32.const 16) (i32.const 18)) (i64.const 0)))"#;

#[test]
fn a_guest_rejecting_invalid_input_stays_active() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).arg("--quarantine-window-calls=10").start();
    let admin = server.admin();
    let manifest = json!({"name": "strict", "version": "1.0.0", "entry_points": ["process"]});
    let strict = admin.register_json(manifest, REJECTING_WAT.as_bytes(), None).unwrap().id;
    admin.transition(strict, LifecycleAction::Activate, None).unwrap();
    for _ in 0..20 {
        let result = admin.invoke(strict, &call("process", json!({}))).unwrap();
        assert_eq!(
            (result.success, result.error_kind, result.error.as_deref()),
            (false, Some(ErrorKind::InvalidInput), Some("`text` is required"))
        );
    }
    let health = admin.health(strict);
    assert_eq!(health.state, OverlayState::Active, "the callers' fault, not the overlay's");
    assert_eq!((health.invocation_count, health.caller_failure_count, health.failure_count), (20, 20, 0));
    assert_eq!((health.window_invocation_count, health.window_failure_rate), (0, 0.0));
    assert_eq!(health.last_error.as_deref(), Some("`text` is required"));
    let events = admin.events(strict, PageQuery::default()).unwrap();
    assert!(events.data.iter().all(|e| e.actor != "system"), "no automatic action");
    server.assert_serving();
}

#[test]
fn users_tokens_and_capsules() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let created = admin.create_user(&forge_model::NewUser::new("ursula", vec![Role::User])).unwrap();
    assert_eq!(
        (created.user.roles.as_slice(), created.user.trust_level),
        ([Role::User].as_slice(), TrustLevel::Standard)
    );
    let token = created.token;
    assert!(token.starts_with("fgo_"));
    let user = server.api(&token);

    // Users register and invoke; capsules are owned by their creator and hidden above one's trust.
    let overlay = user.register(fixture_text("echo.toml"), fixture_bytes("echo.wasm"), None).unwrap();
    assert_eq!(overlay.submitted_by, "ursula");
    let open = user
        .create_capsule(&NewCapsule::new("We adopt WebAssembly overlays", CapsuleType::Decision))
        .unwrap();
    assert_eq!(
        (open.owner.as_deref(), open.trust_level, open.capsule_type),
        (Some("ursula"), TrustLevel::Standard, CapsuleType::Decision)
    );
    let mut secret = NewCapsule::new("WebAssembly budget", CapsuleType::Policy);
    secret.trust_level = TrustLevel::Core;
    secret.metadata.insert("k".into(), json!(1));
    let secret = admin.create_capsule(&secret).unwrap();
    assert_eq!(user.capsule(open.id).unwrap(), open);
    refused_call(&mut server, user.capsule(secret.id), 404, ErrorCode::NotFound);
    assert_eq!(admin.capsule(secret.id).unwrap().metadata["k"], 1);
    let hits = user.search_capsules(&SearchQuery { query: "webassembly".into(), limit: Some(5) }).unwrap();
    assert_eq!(hits.data.len(), 1);
    assert_eq!(hits.data[0].capsule.id, open.id);
    assert!(hits.data[0].score.is_finite());
    assert_eq!((hits.meta.total, hits.meta.page, hits.meta.per_page, hits.meta.pages), (1, 1, 5, 1));
    let everything = SearchQuery { query: "webassembly".into(), limit: None };
    assert_eq!(admin.search_capsules(&everything).unwrap().meta.total, 2);

    // Revocation: someone else's token is not yours to revoke; your own is, at once.
    let other = admin.user_token("other", &[Role::User], TrustLevel::Standard);
    refused_call(&mut server, user.revoke_token(&other), 404, ErrorCode::NotFound);
    assert!(user.revoke_token(&token).unwrap().revoked);
    refused(&mut server, user.get("/api/v1/overlays"), 401, "authentication_error");
    assert!(admin.revoke_token(&other).unwrap().revoked);
    let revoked = server.api(&other).list_overlays(&ListQuery::default());
    refused_call(&mut server, revoked, 401, ErrorCode::AuthenticationError);
}

#[test]
fn an_overlay_reads_and_writes_capsules_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let insight = admin
        .register(fixture_text("capsule-insight.toml"), fixture_bytes("capsule-insight.wasm"), None)
        .unwrap();
    assert!(insight.requires_approval, "capsule:write needs an admin's approval");
    admin.transition(insight.id, LifecycleAction::Activate, None).unwrap();
    for (content, trust_level) in [
        ("Overlays run in WebAssembly sandboxes", TrustLevel::Sandbox),
        ("WebAssembly modules are verified by hash", TrustLevel::Sandbox),
        ("WebAssembly secrets", TrustLevel::Core),
    ] {
        let capsule = NewCapsule { trust_level, ..NewCapsule::new(content, CapsuleType::Knowledge) };
        admin.create_capsule(&capsule).unwrap();
    }

    let result =
        admin.invoke(insight.id, &call("process", json!({"query": "webassembly", "limit": 5}))).unwrap();
    assert!(result.success, "{result:?}");
    let output = result.result.unwrap();
    assert_eq!(output["found"], 2, "the core capsule is above the overlay's sandbox trust");
    let created = admin.capsule(output["insight_id"].as_str().unwrap().parse().unwrap()).unwrap();
    assert_eq!((created.capsule_type, created.trust_level), (CapsuleType::Insight, TrustLevel::Sandbox));
    assert_eq!(created.created_by_overlay, Some(insight.id));
}

#[test]
fn sigterm_lets_invocations_finish_and_keeps_every_count() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let echo = admin.active_echo("echo", "0.1.0").id;
    let spin = admin.register_json(spin_manifest(1500), SPIN_WAT.as_bytes(), None).unwrap().id;
    admin.transition(spin, LifecycleAction::Activate, None).unwrap();
    for n in 0..25 {
        admin.invoke(echo, &call(if n % 5 == 0 { "fail" } else { "process" }, json!({"n": n}))).unwrap();
    }
    let in_flight = {
        let api = admin.clone();
        std::thread::spawn(move || api.invoke(spin, &call("spin", json!({}))))
    };
    server.await_in_flight(1);

    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    let finished = in_flight.join().unwrap().unwrap();
    assert_eq!(
        finished.error_kind,
        Some(ErrorKind::Timeout),
        "the call in flight ran to its end: {finished:?}"
    );

    let server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let health = admin.health(echo);
    assert_eq!((health.invocation_count, health.failure_count), (25, 5));
    assert_eq!(admin.health(spin).invocation_count, 1);
    assert!(server.log().contains("shutting down"));
}

#[test]
fn the_admin_token_bootstrap_is_idempotent_across_restarts_and_replaced_when_changed() {
    let dir = tempfile::tempdir().unwrap();
    let first = Launch::new(&data_dir(&dir)).start();
    first.admin().user_token("ursula", &[Role::User], TrustLevel::Standard);
    assert!(first.terminate().success());

    let second = Launch::new(&data_dir(&dir)).start();
    second.admin().user_token("victor", &[Role::Operator], TrustLevel::Standard);
    assert!(second.terminate().success());

    let rotated = "fgo_a-second-admin-token-for-the-same-admin";
    let third = Launch::new(&data_dir(&dir)).env("FORGE_ADMIN_TOKEN", rotated).start();
    third.api(rotated).user_token("walter", &[Role::User], TrustLevel::Standard);
    let replaced = third.admin().list_overlays(&ListQuery::default());
    refusal(replaced, 401, ErrorCode::AuthenticationError);
    assert!(third.terminate().success());

    let weak = Launch::new(&data_dir(&dir)).without_admin_token().env("FORGE_ADMIN_TOKEN", "short");
    let refused = std::panic::catch_unwind(move || weak.start());
    assert!(refused.is_err(), "a short admin token is refused at start");
}

fn token_create(data_dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_forge-overlay"))
        .args(["token", "create", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env_remove("FORGE_DATABASE_URL")
        .env_remove("FORGE_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn token_create_mints_working_tokens_offline() {
    let dir = tempfile::tempdir().unwrap();
    let minted = token_create(&data_dir(&dir), &["--role", "admin"]);
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let admin_token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    assert!(admin_token.starts_with("fgo_"), "{admin_token}");
    let user = token_create(&data_dir(&dir), &["--role", "user", "--name", "carol", "--trust", "sandbox"]);
    assert!(user.status.success());
    let user_token = String::from_utf8(user.stdout).unwrap().trim().to_owned();
    let clash = token_create(&data_dir(&dir), &["--role", "operator", "--name", "carol"]);
    assert!(!clash.status.success());
    assert!(String::from_utf8_lossy(&clash.stderr).contains("without role operator"));

    let mut server = Launch::new(&data_dir(&dir)).without_admin_token().start();
    let admin = server.api(&admin_token);
    let overlay = admin.register(fixture_text("echo.toml"), fixture_bytes("echo.wasm"), None).unwrap();
    admin.transition(overlay.id, LifecycleAction::Activate, None).unwrap();
    let carol = server.api(&user_token);
    assert!(carol.invoke(overlay.id, &call("process", json!({}))).unwrap().success);
    let deprecated = carol.transition(overlay.id, LifecycleAction::Deprecate, None);
    let body = refused_call(&mut server, deprecated, 403, ErrorCode::AuthorizationError);
    assert!(body.message.contains("admin"));
    let unknown = server.admin().list_overlays(&ListQuery::default());
    refused_call(&mut server, unknown, 401, ErrorCode::AuthenticationError);

    // Minted while the server runs: the server finds it on first use.
    let late = token_create(&data_dir(&dir), &["--role", "operator", "--name", "olga"]);
    let late = String::from_utf8(late.stdout).unwrap().trim().to_owned();
    assert_eq!(server.api(&late).list_overlays(&ListQuery::default()).unwrap().meta.total, 1);
}

/// The scale-out deployment: PostgreSQL for metadata, an S3 bucket for binaries, two server
/// processes sharing both.
#[test]
#[ignore = "needs PostgreSQL (FORGE_TEST_POSTGRES_URL) and an S3 server (FORGE_TEST_S3_ENDPOINT)"]
fn postgres_and_s3_serve_the_same_flow_across_two_processes() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(forge_storage::testing::postgres());
    let endpoint = forge_storage::testing::s3_endpoint();
    let bucket = runtime.block_on(forge_storage::testing::create_bucket(&endpoint));
    let dir = tempfile::tempdir().unwrap();
    let launch = |name: &str| {
        Launch::new(&dir.path().join(name))
            .env("FORGE_DATABASE_URL", &db.url)
            .env("FORGE_OBJECT_STORE", format!("s3://{bucket}/binaries"))
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ALLOW_HTTP", "true")
            .start()
    };
    let (one, two) = (launch("one"), launch("two"));
    let echo = one.admin().active_echo("echo", "0.1.0").id;
    for n in 0..10 {
        let node = if n % 2 == 0 { &one } else { &two };
        assert!(node.admin().invoke(echo, &call("process", json!({"n": n}))).unwrap().success);
    }
    assert!(one.terminate().success());
    assert!(two.terminate().success());
    for name in ["one", "two"] {
        let local = dir.path().join(name);
        assert!(!local.join("forge.db").exists() && !local.join("blobs").exists(), "nothing stored locally");
    }

    let again = launch("three");
    let admin = again.admin();
    assert_eq!(admin.health(echo).invocation_count, 10, "both processes' counts are in PostgreSQL");
    assert!(admin.invoke(echo, &call("process", json!({}))).unwrap().success, "the binary is in S3");
    let capsule = admin.create_capsule(&NewCapsule::new("shared knowledge", CapsuleType::Knowledge)).unwrap();
    let hits = admin.search_capsules(&SearchQuery { query: "shared".into(), limit: None }).unwrap();
    assert_eq!(hits.data[0].capsule.id, capsule.id);
    admin.delete_overlay(echo, None).unwrap();
    assert!(again.terminate().success());
    runtime.block_on(async move { drop(db) });
}
