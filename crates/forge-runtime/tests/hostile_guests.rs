//! Guests that try to break the host. Each must fail alone, with the right error_kind, and leave the
//! runtime serving.

mod common;
use common::*;
use forge_model::ErrorKind;
use forge_model::invocation::messages;
use serde_json::json;

const UNLIMITED_FUEL: &str = "max_fuel = 1000000000000000";

/// How far past its deadline a stopped guest may be seen to end here. The deadline is what these
/// tests prove (without it the guest would never end); on a quiet host the overshoot is a few ms, and
/// `examples/deadline.rs` measures it (docs/benchmarks.md). The slack is for the tests running beside
/// each other on two cores.
const SCHEDULING_SLACK_MS: f64 = 100.0;

#[test]
fn endless_loop_is_stopped_at_its_deadline() {
    let wasm = guest(
        "",
        r#"(func (export "process") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))"#,
    );
    let rt = runtime();
    let prepared =
        rt.prepare(&manifest(&format!("{UNLIMITED_FUEL}\nmax_execution_ms = 200")), &wasm).unwrap();
    let started = std::time::Instant::now();
    let result = call(&rt, &prepared, "process", json!({})).result;
    let waited = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(result.error_kind, Some(ErrorKind::Timeout));
    assert_eq!(result.error.as_deref(), Some(messages::timed_out(200).as_str()));
    assert!(result.execution_time_ms >= 200.0, "stopped early: {}", result.execution_time_ms);
    assert!(waited < 200.0 + SCHEDULING_SLACK_MS, "guest ran {waited} ms past a 200 ms deadline");
    assert!(result.fuel_consumed > 0);
}

#[test]
fn invocation_timeout_below_the_manifest_limit_wins() {
    let wasm = guest(
        "",
        r#"(func (export "process") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))"#,
    );
    let rt = runtime();
    let prepared = rt.prepare(&manifest(UNLIMITED_FUEL), &wasm).unwrap();
    let invocation = forge_model::OverlayInvocation {
        timeout_ms: Some(100),
        ..forge_model::OverlayInvocation::new("process", args(json!({})))
    };
    let result =
        invoke(&rt, &prepared, &identity(forge_model::TrustLevel::Sandbox), &invocation).unwrap().result;
    assert_eq!(result.error.as_deref(), Some("Execution timed out after 100ms"));
    let ran = result.execution_time_ms;
    assert!((100.0..100.0 + SCHEDULING_SLACK_MS).contains(&ran), "{ran}");
}

#[test]
fn start_function_that_never_returns_is_stopped_too() {
    let wasm = guest(
        "",
        r#"(func $spin (loop $l (br $l)))
           (start $spin)
           (func (export "process") (param i32 i32) (result i64) (i64.const 0))"#,
    );
    let result = run_once(&wasm, &format!("{UNLIMITED_FUEL}\nmax_execution_ms = 100"));
    assert_eq!(result.error_kind, Some(ErrorKind::Timeout));
}

#[test]
fn fuel_exhaustion_reports_the_fixed_message_and_all_fuel() {
    let wasm = guest(
        "",
        r#"(func (export "process") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))"#,
    );
    let result = run_once(&wasm, "max_fuel = 5000");
    assert_eq!(result.error_kind, Some(ErrorKind::FuelExhausted));
    assert_eq!(result.error.as_deref(), Some("CPU limit exceeded (fuel exhausted)"));
    assert_eq!(result.fuel_consumed, 5000);
}

#[test]
fn fuel_consumed_is_exact_when_a_guest_traps_early() {
    let wasm = guest(
        "",
        r#"(func (export "process") (param i32 i32) (result i64)
             (local $i i32)
             (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
                      (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))
             unreachable)"#,
    );
    let first = run_once(&wasm, "max_fuel = 1000000");
    let second = run_once(&wasm, "max_fuel = 1000000");
    assert_eq!(first.error_kind, Some(ErrorKind::Trap));
    assert!(first.fuel_consumed > 100 && first.fuel_consumed < 10_000, "{}", first.fuel_consumed);
    assert_eq!(first.fuel_consumed, second.fuel_consumed, "fuel accounting is deterministic");
}

#[test]
fn memory_bomb_hits_the_manifest_limit() {
    let wasm = guest(
        "",
        r#"(func (export "process") (param i32 i32) (result i64)
             (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
             (i64.const 0))"#,
    );
    let result = run_once(&wasm, "max_memory_mb = 2");
    assert_eq!(result.error_kind, Some(ErrorKind::MemoryLimit), "{result:?}");
    assert!(result.error.unwrap().contains("max_memory_mb = 2"));
}

#[test]
fn one_huge_grow_is_refused() {
    let wasm = guest(
        "",
        r#"(func (export "process") (param i32 i32) (result i64) (drop (memory.grow (i32.const 60000))) (i64.const 0))"#,
    );
    assert_eq!(run_once(&wasm, "").error_kind, Some(ErrorKind::MemoryLimit));
}

#[test]
fn stack_overflow_is_a_trap() {
    let wasm = guest(
        "",
        r#"(func $recurse (param i32) (result i32) (i32.add (call $recurse (local.get 0)) (i32.const 1)))
           (func (export "process") (param i32 i32) (result i64) (drop (call $recurse (i32.const 0))) (i64.const 0))"#,
    );
    let result = run_once(&wasm, "");
    assert_eq!(result.error_kind, Some(ErrorKind::Trap));
    assert!(result.error.unwrap().contains("stack overflow"));
}

#[test]
fn traps_are_reported_with_their_reason() {
    let div = guest(
        "",
        r#"(func (export "process") (param i32 i32) (result i64) (drop (i32.div_u (i32.const 1) (i32.const 0))) (i64.const 0))"#,
    );
    let result = run_once(&div, "");
    assert_eq!(result.error_kind, Some(ErrorKind::Trap));
    assert!(result.error.unwrap().contains("divide by zero"));
    let oob =
        guest("", r#"(func (export "process") (param i32 i32) (result i64) (i64.load (i32.const 70000)))"#);
    let result = run_once(&oob, "");
    assert_eq!(result.error_kind, Some(ErrorKind::Trap));
    assert!(result.error.unwrap().contains("out of bounds"));
}

#[test]
fn output_pointer_outside_memory() {
    let wasm = guest(
        "",
        r#"(func (export "process") (param i32 i32) (result i64) (call $pack (i32.const 65530) (i32.const 100)))"#,
    );
    let result = run_once(&wasm, "");
    assert_eq!(result.error_kind, Some(ErrorKind::InvalidOutput));
    assert!(result.error.unwrap().contains("outside guest memory"));
    let wild = guest("", r#"(func (export "process") (param i32 i32) (result i64) (i64.const -1))"#);
    assert_eq!(run_once(&wild, "").error_kind, Some(ErrorKind::InvalidOutput));
}

#[test]
fn output_that_is_not_utf8_json_or_an_object() {
    let not_utf8 = guest(
        "",
        r#"(data (i32.const 16) "{\"a\":\"\ff\"}")
           (func (export "process") (param i32 i32) (result i64) (call $pack (i32.const 16) (i32.const 10)))"#,
    );
    let result = run_once(&not_utf8, "");
    assert_eq!(result.error_kind, Some(ErrorKind::InvalidOutput));
    assert!(result.error.unwrap().contains("not UTF-8"));
    for (text, expected) in [
        ("{\"a\": ", "not valid JSON"),
        ("[1, 2]", "not an array"),
        ("\"hi\"", "not a string"),
        ("null", "not null"),
    ] {
        let result = run_once(&returning(text), "");
        assert_eq!(result.error_kind, Some(ErrorKind::InvalidOutput), "{text}");
        assert!(result.error.as_deref().unwrap().contains(expected), "{text}: {:?}", result.error);
    }
}

#[test]
fn oversized_output_is_refused() {
    let wasm = guest(
        r#""#,
        r#"(memory (export "memory") 40)
           (func (export "process") (param i32 i32) (result i64) (call $pack (i32.const 0) (i32.const 2000000)))"#,
    );
    let result = run_once(&wasm, "");
    assert_eq!(result.error_kind, Some(ErrorKind::InvalidOutput));
    assert!(result.error.unwrap().contains("exceeds the limit of 1048576 bytes"));
}

#[test]
fn forge_alloc_that_fails_or_lies() {
    let zero = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "forge_alloc") (param i32) (result i32) (i32.const 0))
             (func (export "process") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    let result = run_once(&zero, "");
    assert_eq!(result.error_kind, Some(ErrorKind::OverlayError));
    assert!(result.error.unwrap().contains("returned 0"));
    let outside = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "forge_alloc") (param i32) (result i32) (i32.const 65535))
             (func (export "process") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    let result = run_once(&outside, "");
    assert_eq!(result.error_kind, Some(ErrorKind::OverlayError));
    assert!(result.error.unwrap().contains("outside memory"));
}

#[test]
fn log_flood_is_capped_and_counted_without_failing_the_call() {
    let wasm = guest(
        r#"(import "forge" "log_info" (func $log (param i32 i32)))"#,
        r#"(data (i32.const 16) "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789")
           (func (export "process") (param i32 i32) (result i64)
             (local $i i32)
             (loop $l
               (call $log (i32.const 16) (i32.const 100))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 10000))))
             (i64.const 0))"#,
    );
    let rt = runtime();
    let prepared = rt.prepare(&manifest(""), &wasm).unwrap();
    let outcome = call(&rt, &prepared, "process", json!({}));
    assert!(outcome.result.success, "{:?}", outcome.result);
    let kept: usize = outcome.log.lines.iter().map(|l| l.message.len()).sum();
    assert!(kept <= 64 * 1024, "kept {kept} bytes");
    // Each line costs its text and LOG_LINE_OVERHEAD_BYTES: 65,536 / 132 = 496 whole lines fit.
    assert_eq!(outcome.log.lines.len(), 496, "kept as many whole lines as fit");
    assert_eq!(outcome.log.dropped_bytes, (10_000 - 496) * 100);
    assert_eq!(outcome.log.dropped_lines, 10_000 - 496);
}

#[test]
fn a_flood_of_empty_log_lines_is_capped_by_count() {
    let wasm = guest(
        r#"(import "forge" "log_info" (func $log (param i32 i32)))"#,
        r#"(func (export "process") (param i32 i32) (result i64)
             (local $i i32)
             (loop $l
               (call $log (i32.const 0) (i32.const 0))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 200000))))
             (i64.const 0))"#,
    );
    let rt = runtime();
    let prepared = rt.prepare(&manifest("max_fuel = 100000000"), &wasm).unwrap();
    let outcome = call(&rt, &prepared, "process", json!({}));
    assert!(outcome.result.success, "{:?}", outcome.result);
    assert_eq!(outcome.log.lines.len(), forge_runtime::MAX_LOG_LINES);
    assert_eq!(outcome.log.dropped_lines, 200_000 - forge_runtime::MAX_LOG_LINES as u64);
    assert_eq!(outcome.log.dropped_bytes, 0, "empty lines have no bytes to drop");
}

#[test]
fn log_with_a_wild_pointer_fails_only_that_call() {
    let wasm = guest(
        r#"(import "forge" "log_error" (func $log (param i32 i32)))"#,
        r#"(func (export "process") (param i32 i32) (result i64) (call $log (i32.const 65000) (i32.const 4000)) (i64.const 0))"#,
    );
    let result = run_once(&wasm, "");
    assert_eq!(result.error_kind, Some(ErrorKind::OverlayError));
    assert!(result.error.unwrap().contains("outside guest memory"));
}

#[test]
fn fail_ends_the_call_with_the_guests_message() {
    let wasm = guest(
        r#"(import "forge" "fail" (func $fail (param i32 i32)))"#,
        r#"(data (i32.const 16) "bad input")
           (func (export "process") (param i32 i32) (result i64) (call $fail (i32.const 16) (i32.const 9)) (i64.const 0))"#,
    );
    let result = run_once(&wasm, "");
    assert_eq!(result.error_kind, Some(ErrorKind::OverlayError));
    assert_eq!(result.error.as_deref(), Some("bad input"));
}

#[test]
fn reject_input_ends_the_call_as_the_callers_invalid_input() {
    let wasm = guest(
        r#"(import "forge" "reject_input" (func $reject (param i32 i32)))"#,
        r#"(data (i32.const 16) "no such unit")
           (func (export "process") (param i32 i32) (result i64) (call $reject (i32.const 16) (i32.const 12)) (unreachable))"#,
    );
    let result = run_once(&wasm, "");
    assert_eq!(result.error_kind, Some(ErrorKind::InvalidInput));
    assert_eq!(result.error.as_deref(), Some("no such unit"));
}

#[test]
fn every_call_gets_a_fresh_instance() {
    let wasm = guest(
        "",
        r#"(global $calls (mut i32) (i32.const 0))
           (data (i32.const 16) "{\"calls\": 0}")
           (func (export "process") (param i32 i32) (result i64)
             (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
             (i32.store8 (i32.const 26) (i32.add (i32.const 48) (global.get $calls)))
             (call $pack (i32.const 16) (i32.const 12)))"#,
    );
    let rt = runtime();
    let prepared = rt.prepare(&manifest(""), &wasm).unwrap();
    for _ in 0..3 {
        let result = call(&rt, &prepared, "process", json!({})).result;
        assert_eq!(result.result.unwrap()["calls"], 1, "state leaked between calls");
    }
}

#[test]
fn a_timeout_in_one_call_does_not_disturb_concurrent_calls() {
    let spin = guest(
        "",
        r#"(func (export "process") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))"#,
    );
    // About a quarter of a second of honest work, well inside its own 5 s deadline.
    let work = guest(
        "",
        r#"(data (i32.const 16) "{}")
           (func (export "process") (param i32 i32) (result i64)
             (local $i i64)
             (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1)))
                      (br_if $l (i64.lt_u (local.get $i) (i64.const 100000000))))
             (call $pack (i32.const 16) (i32.const 2)))"#,
    );
    let rt = runtime();
    let spin = rt.prepare(&manifest(&format!("{UNLIMITED_FUEL}\nmax_execution_ms = 100")), &spin).unwrap();
    let work = rt.prepare(&manifest(UNLIMITED_FUEL), &work).unwrap();
    std::thread::scope(|scope| {
        let honest = scope.spawn(|| call(&rt, &work, "process", json!({})).result);
        let stopped: Vec<_> = (0..3).map(|_| call(&rt, &spin, "process", json!({})).result).collect();
        assert!(stopped.iter().all(|r| r.error_kind == Some(ErrorKind::Timeout)));
        let honest = honest.join().unwrap();
        assert!(honest.success, "{honest:?}");
    });
}

#[test]
fn the_runtime_keeps_serving_after_hostile_calls() {
    let hostile = [
        guest("", r#"(func (export "process") (param i32 i32) (result i64) unreachable)"#),
        guest("", r#"(func (export "process") (param i32 i32) (result i64) (i64.const -1))"#),
        returning("[]"),
    ];
    for wasm in &hostile {
        assert!(!run_once(wasm, "").success);
    }
    let result = run_once(&returning(r#"{"ok": true}"#), "");
    assert!(result.success);
    assert_eq!(result.result.unwrap()["ok"], true);
}

#[test]
fn wasi_refusals_of_what_the_guest_asked_are_the_guests_traps() {
    for (import, body) in [
        (
            r#"(import "wasi_snapshot_preview1" "proc_exit" (func $wasi (param i32)))"#,
            "(call $wasi (i32.const 200))",
        ),
        (
            r#"(import "wasi_snapshot_preview1" "random_get" (func $wasi (param i32 i32) (result i32)))"#,
            "(drop (call $wasi (i32.const 0) (i32.const 0x7fffffff)))",
        ),
    ] {
        let wasm = guest(
            import,
            &format!(r#"(func (export "process") (param i32 i32) (result i64) {body} (i64.const 0))"#),
        );
        let rt = runtime();
        let prepared = rt.prepare(&manifest(""), &wasm).unwrap();
        let result = call(&rt, &prepared, "process", json!({})).result;
        assert_eq!(result.error_kind, Some(ErrorKind::Trap), "{import}: {result:?}");
    }
}
