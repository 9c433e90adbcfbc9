//! End-to-end tests of the HTTP API: the real `forge-overlay serve` process, driven over HTTP.
//!
//! Every endpoint, every refusal with the standard error body (and the process serving on after
//! each), back-pressure, tampered binaries, graceful shutdown, the admin bootstrap and offline
//! tokens. The PostgreSQL + S3 deployment is at the bottom, `#[ignore]`d: `.ci/run` runs it with
//! `--ignored`, and it fails when its servers are absent.

mod server;

use reqwest::Method;
use reqwest::blocking::multipart;
use serde_json::{Value, json};
use server::*;
use std::path::Path;
use std::time::Duration;

fn id(overlay: &Value) -> String {
    overlay["id"].as_str().unwrap().to_owned()
}

/// A random id no overlay or capsule has.
const UNKNOWN_ID: &str = "01900000-0000-7000-8000-000000000000";

fn data_dir(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("data")
}

#[test]
fn probes_are_open_and_everything_else_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).start();
    let anonymous = server.anonymous();

    let health = anonymous.get("/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.body, json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}));
    let metrics = anonymous.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    let text = metrics.body.as_str().unwrap();
    for family in
        ["forge_instances_in_flight", "forge_http_requests_total", "forge_http_request_duration_seconds"]
    {
        assert!(text.contains(family), "{family} missing from\n{text}");
    }

    for path in ["/api/v1/overlays", "/api/v1/openapi.json", "/api/v1/capsules?query=x"] {
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

    let openapi = server.admin().get("/api/v1/openapi.json");
    assert_eq!(openapi.status, 200);
    assert!(openapi.body["openapi"].as_str().unwrap().starts_with("3.1"));
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
    let echo = admin.register_multipart(&fixture_text("echo.toml"), wasm.clone()).data(201);
    assert_eq!(
        (&echo["name"], &echo["version"], &echo["state"], &echo["trust_level"], &echo["submitted_by"]),
        (&json!("echo"), &json!("0.1.0"), &json!("pending"), &json!("sandbox"), &json!("admin"))
    );
    assert_eq!(echo["entry_points"], json!(["process", "fail"]));
    assert_eq!(echo["requires_approval"], false);
    let object = admin
        .register_json(json!({"name": "echo-object", "version": "1.0.0", "entry_points": ["process"]}), &wasm)
        .data(201);
    assert_eq!(object["max_memory_mb"], 64, "defaults fill the manifest");
    let newer = admin.register_json(Value::String(echo_manifest("echo", "0.2.0")), &wasm).data(201);
    let with_source = {
        use base64::Engine;
        let body = json!({"manifest": echo_manifest("echo-source", "1.0.0"),
                          "wasm_base64": base64::engine::general_purpose::STANDARD.encode(&wasm),
                          "source_hash": "ab12cd34"});
        admin.post("/api/v1/overlays", &body).data(201)
    };
    assert_eq!(with_source["source_hash"], "ab12cd34");
    let form = multipart::Form::new()
        .text("manifest", echo_manifest("echo-form", "1.0.0"))
        .part("wasm", multipart::Part::bytes(wasm.clone()))
        .text("source_hash", "ef56");
    let with_form = admin.send(admin.request(Method::POST, "/api/v1/overlays").multipart(form)).data(201);
    assert_eq!(with_form["source_hash"], "ef56");

    // Read: by id, by name and version, listed with filters and pages.
    let echo_id = id(&echo);
    assert_eq!(admin.get(&format!("/api/v1/overlays/{echo_id}")).data(200), echo);
    assert_eq!(id(&admin.get("/api/v1/overlays/by-name/echo/0.2.0").data(200)), id(&newer));
    let list = admin.get("/api/v1/overlays?name=echo&per_page=2&page=2");
    assert_eq!(list.status, 200);
    assert_eq!(list.body["meta"], json!({"total": 5, "page": 2, "per_page": 2, "pages": 3}));
    assert_eq!(list.body["data"].as_array().unwrap().len(), 2);
    let count = |query: &str| admin.get(&format!("/api/v1/overlays?{query}")).body["meta"]["total"].clone();
    assert_eq!(count("state=pending&submitter=admin"), 5);
    assert_eq!(count("name=object"), 1);
    assert_eq!(count("submitter=nobody"), 0);
    assert_eq!(count("capability=capsule:read"), 0);

    // Activate and invoke, by id and by name (the newest active version).
    let active = admin.post_empty(&format!("/api/v1/overlays/{echo_id}/activate")).data(200);
    assert_eq!(active["state"], "active");
    let result = admin.invoke(&echo_id, "process", json!({"n": 1})).data(200);
    assert_eq!(result["success"], true);
    assert_eq!(result["result"], json!({"echo": {"n": 1}}));
    assert!(result["fuel_consumed"].as_u64().unwrap() > 0);
    let by_name = json!({"function": "process", "args": {"n": 2}, "timeout_ms": 500});
    assert_eq!(
        admin.post("/api/v1/overlays/by-name/echo/invoke", &by_name).data(200)["result"]["echo"]["n"],
        2
    );
    admin.post(&format!("/api/v1/overlays/{}/activate", id(&newer)), &json!({"reason": "newer"})).data(200);
    admin.post("/api/v1/overlays/by-name/echo/invoke", &by_name).data(200);
    assert_eq!(admin.health(&id(&newer))["invocation_count"], 1, "by name runs the newest active version");
    let failed = admin.invoke(&echo_id, "fail", json!({"message": "on purpose"})).data(200);
    assert_eq!((&failed["success"], &failed["error_kind"]), (&json!(false), &json!("overlay_error")));
    assert!(failed["error"].as_str().unwrap().contains("on purpose"));

    let health = admin.health(&echo_id);
    assert_eq!((&health["invocation_count"], &health["failure_count"]), (&json!(3), &json!(1)));
    assert_eq!((&health["name"], &health["state"]), (&json!("echo"), &json!("active")));
    assert!(health["p50_execution_ms"].as_f64().unwrap() > 0.0);
    assert!(health["last_error"].as_str().unwrap().contains("on purpose"));

    // The rest of the lifecycle, and trust.
    let path = |action: &str| format!("/api/v1/overlays/{echo_id}/{action}");
    assert_eq!(
        admin.post(&path("suspend"), &json!({"reason": "maintenance"})).data(200)["state"],
        "suspended"
    );
    let refused = admin.invoke(&echo_id, "process", json!({}));
    assert_eq!(refused.refused(422, "validation_error")["details"]["state"], "suspended");
    assert_eq!(admin.post_empty(&path("resume")).data(200)["state"], "active");
    assert_eq!(
        admin.post(&path("quarantine"), &json!({"reason": "looks odd"})).data(200)["state"],
        "quarantined"
    );
    assert_eq!(admin.post_empty(&path("release")).data(200)["state"], "active");
    assert_eq!(admin.health(&echo_id)["invocation_count"], 0, "release resets the counters");
    let trusted =
        admin.put(&path("trust-level"), &json!({"trust_level": "trusted", "reason": "reviewed"})).data(200);
    assert_eq!(trusted["trust_level"], "trusted");
    assert_eq!(
        admin.put(&path("trust-level"), &json!({"trust_level": 60})).data(200)["trust_level"],
        "standard"
    );
    assert_eq!(admin.post_empty(&path("deprecate")).data(200)["state"], "deprecated");

    let events = admin.get(&format!("/api/v1/overlays/{echo_id}/events?per_page=100"));
    assert_eq!(events.status, 200);
    let actions: Vec<&str> =
        events.body["data"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
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
    assert_eq!(events.body["data"][2]["reason"], "maintenance");
    assert_eq!(events.body["data"][2]["actor"], "admin");
    assert_eq!(events.body["meta"]["total"], 9);

    // Delete: the record and the binary go, the audit trail stays.
    let deleted = admin.delete(&format!("/api/v1/overlays/{echo_id}?reason=cleanup"));
    assert_eq!((deleted.status, &deleted.body), (204, &json!("")));
    admin.get(&format!("/api/v1/overlays/{echo_id}")).refused(404, "not_found");
    let trail = admin.get(&format!("/api/v1/overlays/{echo_id}/events?per_page=100")).body;
    assert_eq!(trail["data"][9]["action"], "delete");
    assert_eq!(trail["data"][9]["reason"], "cleanup");
    assert!(
        blob_path(&data_dir(&dir), newer["wasm_key"].as_str().unwrap()).exists(),
        "other versions keep theirs"
    );
    server.assert_serving();
}

/// Checks a refusal and that the server is still serving after it.
fn refused(server: &mut ServerProcess, reply: Reply, status: u16, code: &str) -> Value {
    let body = reply.refused(status, code).clone();
    server.assert_serving();
    body
}

#[test]
fn every_refusal_has_the_standard_body_and_the_server_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let echo = admin.active_echo("echo", "0.1.0");
    let echo_id = id(&echo);
    let pending =
        admin.register_multipart(&echo_manifest("echo", "0.2.0"), fixture_bytes("echo.wasm")).data(201);
    let user = server.api(&admin.create_user("ursula", &["user"], "standard"));
    let operator = server.api(&admin.create_user("otto", &["operator"], "trusted"));
    let invoke = format!("/api/v1/overlays/{echo_id}/invoke");

    // 404: unknown routes, unknown resources, paths that name nothing.
    refused(&mut server, admin.get("/nope"), 404, "not_found");
    refused(&mut server, admin.get("/api/v1/overlay"), 404, "not_found");
    refused(&mut server, admin.get(&format!("/api/v1/overlays/{UNKNOWN_ID}")), 404, "not_found");
    refused(&mut server, admin.invoke(UNKNOWN_ID, "process", json!({})), 404, "not_found");
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
    let body = refused(
        &mut server,
        admin.register_json(manifest, &fixture_bytes("echo.wasm")),
        422,
        "validation_error",
    );
    let fields: Vec<&str> =
        body["details"]["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["name", "version", "max_memory_mb"]);
    let body = refused(
        &mut server,
        admin.register_json(json!("name = "), &fixture_bytes("echo.wasm")),
        422,
        "validation_error",
    );
    assert!(body["message"].as_str().unwrap().contains("TOML"), "{body}");
    let garbage =
        admin.register_multipart(&echo_manifest("garbage", "1.0.0"), b"\0asm but not really".to_vec());
    refused(&mut server, garbage, 422, "validation_error");
    let no_exports = admin.register_json(json!(echo_manifest("hollow", "1.0.0")), b"(module)");
    let body = refused(&mut server, no_exports, 422, "validation_error");
    assert!(
        body["message"].as_str().unwrap().contains("forge_alloc")
            || body["message"].as_str().unwrap().contains("memory"),
        "{body}"
    );
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
    let body =
        refused(&mut server, admin.invoke(&id(&pending), "process", json!({})), 422, "validation_error");
    assert_eq!(body["details"]["state"], "pending");
    let body = refused(&mut server, admin.invoke(&echo_id, "nope", json!({})), 422, "validation_error");
    assert_eq!(body["details"]["available"], json!(["process", "fail"]));
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
    refused(
        &mut server,
        admin.register_multipart(&fixture_text("echo.toml"), fixture_bytes("echo.wasm")),
        409,
        "conflict",
    );
    refused(
        &mut server,
        admin.post("/api/v1/users", &json!({"name": "ursula", "roles": ["user"]})),
        409,
        "conflict",
    );

    // 403: roles, then trust.
    let body = refused(
        &mut server,
        user.post_empty(&format!("/api/v1/overlays/{}/activate", id(&pending))),
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
    let body = refused(&mut server, user.invoke(&echo_id, "process", json!({})), 403, "authorization_error");
    assert!(body["message"].as_str().unwrap().contains("trust"), "{body}");
    assert_eq!(
        operator.invoke(&echo_id, "process", json!({})).data(200)["success"],
        true,
        "trusted reaches trusted"
    );
    let modest_admin = server.api(&admin.create_user("modest", &["admin"], "standard"));
    refused(
        &mut server,
        modest_admin.put(&trust, &json!({"trust_level": "core"})),
        403,
        "authorization_error",
    );
    let secret = json!({"content": "board minutes", "type": "decision", "trust_level": "core"});
    refused(&mut server, user.post("/api/v1/capsules", &secret), 403, "authorization_error");
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
    let echo = admin.active_echo("echo", "0.1.0");
    let args = json!({"text": big});
    refused(&mut server, admin.invoke(&id(&echo), "process", args), 413, "payload_too_large");
    let capsule = json!({"content": big, "type": "knowledge"});
    refused(&mut server, admin.post("/api/v1/capsules", &capsule), 413, "payload_too_large");
    // Under the limit, the same server takes a binary of 97 KiB in base64.
    assert_eq!(admin.invoke(&id(&echo), "process", json!({"small": true})).data(200)["success"], true);
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
    let spinners: Vec<String> = ["spin", "spin-b"]
        .into_iter()
        .map(|name| {
            let mut manifest = spin_manifest(1500);
            manifest["name"] = json!(name);
            let overlay = admin.register_json(manifest, SPIN_WAT.as_bytes()).data(201);
            admin.post_empty(&format!("/api/v1/overlays/{}/activate", id(&overlay))).data(200);
            id(&overlay)
        })
        .collect();
    let echo = id(&admin.active_echo("echo", "0.1.0"));

    let spin = |spinner: &String| {
        let (api, spinner) = (admin.clone(), spinner.clone());
        std::thread::spawn(move || api.invoke(&spinner, "spin", json!({})).data(200))
    };
    let mut running = vec![spin(&spinners[0])];
    std::thread::sleep(Duration::from_millis(300));
    let per_overlay = admin.invoke(&spinners[0], "spin", json!({}));
    assert_eq!(per_overlay.header("retry-after"), Some("1"));
    let body = refused(&mut server, per_overlay, 429, "rate_limit_exceeded");
    assert_eq!(body["details"]["retry_after"], 1);
    assert!(body["message"].as_str().unwrap().contains("spin@1.0.0"), "{body}");

    running.push(spin(&spinners[1]));
    std::thread::sleep(Duration::from_millis(300));
    let global = admin.invoke(&echo, "process", json!({}));
    assert_eq!(global.header("retry-after"), Some("1"));
    let body = refused(&mut server, global, 429, "rate_limit_exceeded");
    assert!(body["message"].as_str().unwrap().contains("limit 2"), "{body}");

    for thread in running {
        let result = thread.join().unwrap();
        assert_eq!((&result["success"], &result["error_kind"]), (&json!(false), &json!("timeout")));
    }
    assert_eq!(admin.invoke(&echo, "process", json!({})).data(200)["success"], true, "slots come back");
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
    let key = |overlay: &Value| blob_path(&data_dir(&dir), overlay["wasm_key"].as_str().unwrap());
    assert!(key(&tampered).exists());
    std::fs::write(key(&tampered), fixture_bytes("text-stats.wasm")).unwrap();
    std::fs::remove_file(key(&missing)).unwrap();

    for overlay in [&tampered, &missing] {
        let body = refused(
            &mut server,
            admin.invoke(&id(overlay), "process", json!({})),
            503,
            "service_unavailable",
        );
        assert_eq!(body["message"], "overlay binary unavailable");
    }
    assert!(server.log().contains("does not match its recorded SHA-256"), "the reason is logged");
    assert_eq!(admin.health(&id(&tampered))["invocation_count"], 0, "nothing ran");
}

#[test]
fn a_failing_overlay_is_quarantined_automatically() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let echo = id(&admin.active_echo("echo", "0.1.0"));
    for _ in 0..10 {
        let result = admin.invoke(&echo, "fail", json!({"message": "broken"})).data(200);
        assert_eq!(result["success"], false, "a failed call is still a 200");
    }
    let health = admin.health(&echo);
    assert_eq!((&health["state"], &health["failure_rate"]), (&json!("quarantined"), &json!(1.0)));
    let body = refused(&mut server, admin.invoke(&echo, "process", json!({})), 422, "validation_error");
    assert_eq!(body["details"]["state"], "quarantined");
    let events = admin.get(&format!("/api/v1/overlays/{echo}/events")).body;
    let last = events["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["action"], &last["actor"], &last["to_state"]),
        (&json!("auto_quarantine"), &json!("system"), &json!("quarantined"))
    );
    let listed = admin.get("/api/v1/overlays?state=quarantined").body;
    assert_eq!(listed["meta"]["total"], 1);

    assert_eq!(admin.post_empty(&format!("/api/v1/overlays/{echo}/release")).data(200)["state"], "active");
    assert_eq!(admin.invoke(&echo, "process", json!({})).data(200)["success"], true);
    assert_eq!(admin.health(&echo)["invocation_count"], 1);
}

#[test]
fn users_tokens_and_capsules() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let created = admin.post("/api/v1/users", &json!({"name": "ursula", "roles": ["user"]})).data(201);
    assert_eq!(
        (&created["user"]["roles"], &created["user"]["trust_level"]),
        (&json!(["user"]), &json!("standard"))
    );
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("fgo_"));
    let user = server.api(&token);

    // Users register and invoke; capsules are owned by their creator and hidden above one's trust.
    let overlay = user.register_multipart(&fixture_text("echo.toml"), fixture_bytes("echo.wasm")).data(201);
    assert_eq!(overlay["submitted_by"], "ursula");
    let open = user
        .post("/api/v1/capsules", &json!({"content": "We adopt WebAssembly overlays", "type": "decision"}))
        .data(201);
    assert_eq!(
        (&open["owner"], &open["trust_level"], &open["type"]),
        (&json!("ursula"), &json!("standard"), &json!("decision"))
    );
    let secret = admin
        .post("/api/v1/capsules", &json!({"content": "WebAssembly budget", "type": "policy", "trust_level": "core", "metadata": {"k": 1}}))
        .data(201);
    assert_eq!(user.get(&format!("/api/v1/capsules/{}", id(&open))).data(200), open);
    refused(&mut server, user.get(&format!("/api/v1/capsules/{}", id(&secret))), 404, "not_found");
    assert_eq!(
        admin.get(&format!("/api/v1/capsules/{}", id(&secret))).data(200)["metadata"],
        json!({"k": 1})
    );
    let hits = user.get("/api/v1/capsules?query=webassembly&limit=5");
    assert_eq!(hits.status, 200);
    assert_eq!(hits.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(hits.body["data"][0]["capsule"]["id"], open["id"]);
    assert!(hits.body["data"][0]["score"].as_f64().is_some());
    assert_eq!(hits.body["meta"], json!({"total": 1, "page": 1, "per_page": 5, "pages": 1}));
    assert_eq!(admin.get("/api/v1/capsules?query=webassembly").body["meta"]["total"], 2);

    // Revocation: someone else's token is not yours to revoke; your own is, at once.
    let other = admin.create_user("other", &["user"], "standard");
    refused(&mut server, user.post("/api/v1/tokens/revoke", &json!({"token": other})), 404, "not_found");
    assert_eq!(
        user.post("/api/v1/tokens/revoke", &json!({"token": token})).data(200),
        json!({"revoked": true})
    );
    refused(&mut server, user.get("/api/v1/overlays"), 401, "authentication_error");
    assert_eq!(admin.post("/api/v1/tokens/revoke", &json!({"token": other})).data(200)["revoked"], true);
    let revoked = server.api(&other).get("/api/v1/overlays");
    refused(&mut server, revoked, 401, "authentication_error");
}

#[test]
fn an_overlay_reads_and_writes_capsules_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let insight = admin
        .register_multipart(&fixture_text("capsule-insight.toml"), fixture_bytes("capsule-insight.wasm"))
        .data(201);
    assert_eq!(insight["requires_approval"], true, "capsule:write needs an admin's approval");
    admin.post_empty(&format!("/api/v1/overlays/{}/activate", id(&insight))).data(200);
    for content in ["Overlays run in WebAssembly sandboxes", "WebAssembly modules are verified by hash"] {
        admin
            .post(
                "/api/v1/capsules",
                &json!({"content": content, "type": "knowledge", "trust_level": "sandbox"}),
            )
            .data(201);
    }
    admin
        .post(
            "/api/v1/capsules",
            &json!({"content": "WebAssembly secrets", "type": "knowledge", "trust_level": "core"}),
        )
        .data(201);

    let result =
        admin.invoke(&id(&insight), "process", json!({"query": "webassembly", "limit": 5})).data(200);
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["result"]["found"], 2, "the core capsule is above the overlay's sandbox trust");
    let created = admin
        .get(&format!("/api/v1/capsules/{}", result["result"]["insight_id"].as_str().unwrap()))
        .data(200);
    assert_eq!((&created["type"], &created["trust_level"]), (&json!("insight"), &json!("sandbox")));
    assert_eq!(created["created_by_overlay"], insight["id"]);
}

#[test]
fn sigterm_lets_invocations_finish_and_keeps_every_count() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let echo = id(&admin.active_echo("echo", "0.1.0"));
    let spin = admin.register_json(spin_manifest(1500), SPIN_WAT.as_bytes()).data(201);
    admin.post_empty(&format!("/api/v1/overlays/{}/activate", id(&spin))).data(200);
    for n in 0..25 {
        admin.invoke(&echo, if n % 5 == 0 { "fail" } else { "process" }, json!({"n": n})).data(200);
    }
    let in_flight = {
        let (api, spin) = (admin.clone(), id(&spin));
        std::thread::spawn(move || api.invoke(&spin, "spin", json!({})))
    };
    std::thread::sleep(Duration::from_millis(300));

    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    let finished = in_flight.join().unwrap().data(200);
    assert_eq!(finished["error_kind"], "timeout", "the call in flight ran to its end: {finished}");

    let server = Launch::new(&data_dir(&dir)).start();
    let admin = server.admin();
    let health = admin.health(&echo);
    assert_eq!((&health["invocation_count"], &health["failure_count"]), (&json!(25), &json!(5)));
    assert_eq!(admin.health(&id(&spin))["invocation_count"], 1);
    assert!(server.log().contains("shutting down"));
}

#[test]
fn the_admin_token_bootstrap_is_idempotent_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first = Launch::new(&data_dir(&dir)).start();
    first.admin().create_user("ursula", &["user"], "standard");
    assert!(first.terminate().success());

    let second = Launch::new(&data_dir(&dir)).start();
    let created =
        second.admin().post("/api/v1/users", &json!({"name": "victor", "roles": ["operator"]})).data(201);
    assert_eq!(created["user"]["name"], "victor");
    assert!(second.terminate().success());

    let rotated = "fgo_a-second-admin-token-for-the-same-admin";
    let third = Launch::new(&data_dir(&dir)).env("FORGE_ADMIN_TOKEN", rotated).start();
    third.api(rotated).create_user("walter", &["user"], "standard");
    third.admin().create_user("xena", &["user"], "standard");
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
    let overlay = admin.register_multipart(&fixture_text("echo.toml"), fixture_bytes("echo.wasm")).data(201);
    admin.post_empty(&format!("/api/v1/overlays/{}/activate", id(&overlay))).data(200);
    let carol = server.api(&user_token);
    assert_eq!(carol.invoke(&id(&overlay), "process", json!({})).data(200)["success"], true);
    let body = refused(
        &mut server,
        carol.post_empty(&format!("/api/v1/overlays/{}/deprecate", id(&overlay))),
        403,
        "authorization_error",
    );
    assert!(body["message"].as_str().unwrap().contains("admin"));
    let unknown = server.admin().get("/api/v1/overlays");
    refused(&mut server, unknown, 401, "authentication_error");

    // Minted while the server runs: the server finds it on first use.
    let late = token_create(&data_dir(&dir), &["--role", "operator", "--name", "olga"]);
    let late = String::from_utf8(late.stdout).unwrap().trim().to_owned();
    assert_eq!(server.api(&late).get("/api/v1/overlays").status, 200);
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
    let echo = id(&one.admin().active_echo("echo", "0.1.0"));
    for n in 0..10 {
        let node = if n % 2 == 0 { &one } else { &two };
        assert_eq!(node.admin().invoke(&echo, "process", json!({"n": n})).data(200)["success"], true);
    }
    assert!(one.terminate().success());
    assert!(two.terminate().success());
    for name in ["one", "two"] {
        let local = dir.path().join(name);
        assert!(!local.join("forge.db").exists() && !local.join("blobs").exists(), "nothing stored locally");
    }

    let again = launch("three");
    let admin = again.admin();
    assert_eq!(admin.health(&echo)["invocation_count"], 10, "both processes' counts are in PostgreSQL");
    assert_eq!(admin.invoke(&echo, "process", json!({})).data(200)["success"], true, "the binary is in S3");
    let capsule = admin
        .post("/api/v1/capsules", &json!({"content": "shared knowledge", "type": "knowledge"}))
        .data(201);
    assert_eq!(admin.get("/api/v1/capsules?query=shared").body["data"][0]["capsule"]["id"], capsule["id"]);
    assert_eq!(admin.delete(&format!("/api/v1/overlays/{echo}")).status, 204);
    assert!(again.terminate().success());
    runtime.block_on(async move { drop(db) });
}
