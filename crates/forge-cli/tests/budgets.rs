//! End-to-end tests of the bounds on registration and on calls, through the real server process:
//! the module size cap, the compiler's turns, each user's registration rate and the memory budget
//! of the calls in flight. Each refusal has the standard body (and `Retry-After` for a 429).

mod server;

use forge_model::{ErrorCode, ErrorKind, LifecycleAction, Role, TrustLevel};
use serde_json::json;
use server::*;
use std::time::Duration;

fn data_dir(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("data")
}

/// Asserts a 429 whose `Retry-After` header and `details.retry_after` agree, and the server
/// serving on; returns the seconds and the message.
fn retry_after(server: &mut ServerProcess, reply: &Reply) -> (u64, String) {
    let seconds = reply.refused_with_retry_after(429, "rate_limit_exceeded");
    let message = reply.body["message"].as_str().unwrap().to_owned();
    server.assert_serving();
    (seconds, message)
}

#[test]
fn a_module_over_max_module_bytes_is_refused_with_413_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    // A body limit of its own, so that the module cap is what refuses.
    let mut server =
        Launch::new(&data_dir(&dir)).arg("--max-module-bytes=4096").arg("--max-body-bytes=1048576").start();
    let admin = server.admin();
    let echo = fixture_bytes("echo.wasm");
    assert!(echo.len() > 4096);
    let error =
        refusal(admin.register(echo_manifest("big", "1.0.0"), echo, None), 413, ErrorCode::PayloadTooLarge);
    assert_eq!(error.details["limit"], "max_module_bytes", "{error:?}");
    assert_eq!(error.details["max_bytes"], 4096, "{error:?}");
    // Text is measured before it is parsed.
    let text = format!("{};; {}", SPIN_WAT, " ".repeat(4096));
    let reply = admin.post(
        "/api/v1/overlays",
        &json!({"manifest": spin_manifest(1000), "wasm_base64": base64_of(text.as_bytes())}),
    );
    assert_eq!(reply.refused(413, "payload_too_large")["details"]["limit"], "max_module_bytes");
    server.assert_serving();
    assert!(admin.register_json(spin_manifest(1000), SPIN_WAT.as_bytes(), None).is_ok(), "small ones pass");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn registrations_beyond_a_users_rate_are_refused_with_429_and_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).env("FORGE_REGISTRATIONS_PER_MINUTE", "2").start();
    let admin = server.admin();
    let token = admin.user_token("ursula", &[Role::User], TrustLevel::Standard);
    let user = server.api(&token);
    for version in ["1.0.0", "1.0.1"] {
        user.register(echo_manifest("mine", version), fixture_bytes("echo.wasm"), None).unwrap();
    }
    let body = json!({"manifest": echo_manifest("mine", "1.0.2"), "wasm_base64": base64_of(&fixture_bytes("echo.wasm"))});
    let third = user.post("/api/v1/overlays", &body);
    // Two a minute: the next token comes 30 s after the first registration.
    let (seconds, message) = retry_after(&mut server, &third);
    assert!((25..=30).contains(&seconds), "{seconds}");
    assert!(message.contains("ursula") && message.contains("2 overlays per minute"), "{message}");
    let other = admin.user_token("olga", &[Role::User], TrustLevel::Standard);
    assert!(
        server.api(&other).register(echo_manifest("hers", "1.0.0"), fixture_bytes("echo.wasm"), None).is_ok()
    );
    assert!(
        admin.register(echo_manifest("mine", "1.0.2"), fixture_bytes("echo.wasm"), None).is_ok(),
        "admins are not limited"
    );
}

/// A module of `functions` functions with a body each: seconds of compilation on a busy machine.
fn slow_to_compile(functions: usize) -> String {
    let mut wat = String::from(
        "(module (memory (export \"memory\") 1)\n\
         (func (export \"forge_alloc\") (param i32) (result i32) (i32.const 1024))\n\
         (func (export \"spin\") (param i32 i32) (result i64) (i64.const 0))\n",
    );
    for n in 0..functions {
        wat.push_str(&format!(
            "(func (param i32) (result i32) (i32.mul (i32.add (local.get 0) (i32.const {n})) \
             (i32.xor (local.get 0) (i32.const {n}))))\n"
        ));
    }
    wat.push(')');
    wat
}

#[test]
fn compilations_beyond_the_limit_are_refused_with_429_after_their_wait() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir))
        .arg("--max-concurrent-compilations=1")
        .arg("--compile-wait-ms=0")
        .start();
    let admin = server.admin();
    let slow = {
        let admin = admin.clone();
        std::thread::spawn(move || {
            let mut manifest = spin_manifest(1000);
            manifest["name"] = json!("slow");
            admin.register_json(manifest, slow_to_compile(60_000).as_bytes(), None)
        })
    };
    // While the slow module compiles, every other registration finds no free turn.
    let mut refused = None;
    for version in 0.. {
        if slow.is_finished() {
            break;
        }
        let mut manifest = spin_manifest(1000);
        manifest["version"] = json!(format!("1.0.{version}"));
        let reply = admin.post(
            "/api/v1/overlays",
            &json!({"manifest": manifest, "wasm_base64": base64_of(SPIN_WAT.as_bytes())}),
        );
        if reply.status == 429 {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("a registration was refused while another module compiled");
    let (seconds, message) = retry_after(&mut server, &refused);
    assert_eq!(seconds, 1);
    assert!(message.contains("compiled") && message.contains("limit 1"), "{message}");
    slow.join().unwrap().expect("the slow module registers");
    let metrics = server.anonymous().get("/metrics").body;
    assert!(metrics.as_str().unwrap().contains("forge_refusals_total{reason=\"compile_limit\"} 1"));
}

#[test]
fn calls_beyond_the_memory_budget_are_refused_with_429() {
    let dir = tempfile::tempdir().unwrap();
    // Room for one call of 64 MiB (the manifests' default) at a time.
    let mut server = Launch::new(&data_dir(&dir)).env("FORGE_MEMORY_BUDGET_MB", "100").start();
    let admin = server.admin();
    let spinners = admin.active_spinners(&["spin", "spin-b"], 1500);
    let running = {
        let admin = admin.clone();
        let spinner = spinners[0];
        std::thread::spawn(move || admin.invoke(spinner, &call("spin", json!({}))).unwrap())
    };
    server.await_in_flight(1);
    let reply = admin.post(&format!("/api/v1/overlays/{}/invoke", spinners[1]), &json!({"function": "spin"}));
    let (seconds, message) = retry_after(&mut server, &reply);
    assert_eq!(seconds, 1);
    assert!(message.contains("budget of 100 MiB") && message.contains("spin-b@1.0.0"), "{message}");
    let result = running.join().unwrap();
    assert_eq!(result.error_kind, Some(ErrorKind::Timeout));
    let after = admin.invoke(spinners[1], &call("spin", json!({}))).unwrap();
    assert_eq!(after.error_kind, Some(ErrorKind::Timeout), "the budget comes back when calls end");
    let metrics = server.anonymous().get("/metrics").body;
    assert!(metrics.as_str().unwrap().contains("forge_refusals_total{reason=\"memory_budget\"} 1"));
}

/// A guest whose `search` calls `capsule_search` for "wasm" until its deadline.
const SEARCH_LOOP_WAT: &str = r#"(module
  (import "forge" "capsule_search" (func $search (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"query\":\"wasm\"}")
  (func (export "forge_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "search") (param i32 i32) (result i64)
    (loop $forever (drop (call $search (i32.const 16) (i32.const 16))) (br $forever))
    (i64.const 0)))"#;

#[test]
fn guests_looping_on_capsule_search_leave_the_database_to_lifecycle_requests() {
    const GUESTS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&data_dir(&dir)).arg("--max-host-calls=100000000").start();
    let admin = server.admin();
    for n in 0..200 {
        let content = format!("wasm overlays {n} share capsules about wasm runtimes and wasm hosts");
        admin
            .create_capsule(&forge_model::NewCapsule::new(content, forge_model::CapsuleType::Knowledge))
            .unwrap();
    }
    let manifest = json!({"name": "searcher", "version": "1.0.0", "entry_points": ["search"],
        "capabilities": ["capsule:read"], "max_execution_ms": 4000, "max_fuel": 1_000_000_000_000_000u64});
    let searcher = admin.register_json(manifest, SEARCH_LOOP_WAT.as_bytes(), None).unwrap();
    let searcher = admin.transition(searcher.id, LifecycleAction::Activate, None).unwrap().id;
    let echo = admin.register(echo_manifest("echo", "0.1.0"), fixture_bytes("echo.wasm"), None).unwrap().id;
    // A token not used yet, so that authenticating it reads the database.
    let other_admin = server.api(&admin.user_token("ada", &[Role::Admin], TrustLevel::Core));

    let guests: Vec<_> = (0..GUESTS)
        .map(|_| {
            let admin = admin.clone();
            std::thread::spawn(move || admin.invoke(searcher, &call("search", json!({}))).unwrap())
        })
        .collect();
    server.await_in_flight(GUESTS as u64);
    let started = std::time::Instant::now();
    let activated = other_admin.transition(echo, LifecycleAction::Activate, None).unwrap();
    let read = other_admin.overlay(echo).unwrap();
    let took = started.elapsed();
    assert_eq!(
        (activated.state, read.state),
        (forge_model::OverlayState::Active, forge_model::OverlayState::Active)
    );
    assert!(took < Duration::from_millis(500), "lifecycle requests took {took:?} under the search loops");
    for guest in guests {
        let result = guest.join().unwrap();
        assert_eq!(result.error_kind, Some(ErrorKind::Timeout), "{result:?}");
    }
    server.assert_serving();
}
