//! The invocation pipeline: its refusals in order, metrics, health and quarantine.

use crate::common::*;
use forge_model::{
    AuditAction, ErrorCode, ErrorKind, LifecycleAction, OverlayInvocation, OverlayState, PageRequest, Role,
    TrustLevel,
};
use forge_service::ServiceConfig;
use serde_json::json;
use std::time::Duration;

pub async fn refusals_come_in_the_original_order(env: &Env) {
    let svc = &env.service;
    let missing =
        svc.invoke(&user(), uuid::Uuid::now_v7(), invocation("process", echo_args())).await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);

    let overlay = env.register_example("echo").await;
    // Pending, and the caller could not access it anyway: the state is reported first.
    svc.set_trust_level(&admin(), overlay.id, TrustLevel::Core, None).await.unwrap();
    let pending = svc.invoke(&user(), overlay.id, invocation("nope", echo_args())).await.unwrap_err();
    assert_eq!(pending.code, ErrorCode::ValidationError);
    assert!(pending.message.contains("is pending, not active"), "{}", pending.message);
    assert_eq!(pending.details["state"], "pending");

    svc.transition(&admin(), overlay.id, LifecycleAction::Activate, None).await.unwrap();
    let trust = svc.invoke(&user(), overlay.id, invocation("nope", echo_args())).await.unwrap_err();
    assert_eq!(trust.code, ErrorCode::AuthorizationError, "standard cannot access core");

    svc.set_trust_level(&admin(), overlay.id, TrustLevel::Standard, None).await.unwrap();
    let function = svc.invoke(&user(), overlay.id, invocation("nope", echo_args())).await.unwrap_err();
    assert_eq!(function.code, ErrorCode::ValidationError);
    assert!(function.message.contains("available: process, fail"), "{}", function.message);

    let ok = svc.invoke(&user(), overlay.id, invocation("process", echo_args())).await.unwrap();
    assert!(ok.success);
    assert_eq!(ok.result.unwrap()["echo"], echo_args());
    let failed =
        svc.invoke(&user(), overlay.id, invocation("fail", json!({"message": "boom"}))).await.unwrap();
    assert_eq!((failed.success, failed.error_kind), (false, Some(ErrorKind::OverlayError)));
}

pub async fn tampered_or_missing_binary_is_never_run(env: &Env) {
    let svc = &env.service;
    let tampered = env.active_example("echo", TrustLevel::Sandbox).await;
    env.blobs.blobs.put(&tampered.wasm_key, fixture("text-stats.wasm").into()).await.unwrap();
    let err = svc.invoke(&user(), tampered.id, invocation("process", echo_args())).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ServiceUnavailable);
    assert_eq!(err.code.http_status(), 503);

    let missing = env.active_example("text-stats", TrustLevel::Sandbox).await;
    env.blobs.blobs.delete(&missing.wasm_key).await.unwrap();
    let err = svc.invoke(&user(), missing.id, invocation("process", json!({"text": "a"}))).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ServiceUnavailable);

    svc.flush_health().await.unwrap();
    for id in [tampered.id, missing.id] {
        assert_eq!(svc.get(&admin(), id).await.unwrap().health.invocation_count, 0, "nothing ran");
    }
}

pub async fn invocations_are_counted_with_latency(env: &Env) {
    let svc = &env.service;
    let overlay = env.active_example("echo", TrustLevel::Sandbox).await;
    for i in 0..20 {
        let function = if i % 5 == 0 { "fail" } else { "process" };
        svc.invoke(&user(), overlay.id, invocation(function, json!({"message": "every fifth"})))
            .await
            .unwrap();
    }
    let health = svc.health(&user(), overlay.id).await.unwrap();
    assert_eq!((health.invocation_count, health.failure_count, health.host_failure_count), (20, 4, 0));
    assert!((health.failure_rate - 0.2).abs() < 1e-9);
    assert!(health.avg_execution_ms > 0.0);
    let (p50, p95) = (health.p50_execution_ms.unwrap(), health.p95_execution_ms.unwrap());
    assert!(p50 > 0.0 && p50 <= p95, "{p50} {p95}");
    assert!(health.last_invoked_at.is_some());
    assert!(health.last_error.unwrap().contains("every fifth"));
    assert_eq!(health.state, OverlayState::Active);
    let metrics = svc.metrics().render();
    assert!(
        metrics.contains(r#"forge_invocations_total{outcome="ok",overlay="echo@0.1.0"} 16"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"forge_invocations_total{outcome="overlay_error",overlay="echo@0.1.0"} 4"#));
}

pub async fn failing_overlay_is_quarantined_once(env: &Env) {
    let svc = &env.service;
    let overlay = env.active_example("echo", TrustLevel::Sandbox).await;
    let mut ran = 0;
    for _ in 0..30 {
        match svc.invoke(&user(), overlay.id, invocation("fail", json!({"message": "broken"}))).await {
            Ok(result) => {
                assert!(!result.success);
                ran += 1;
            }
            Err(refused) => assert!(refused.message.contains("is quarantined"), "{}", refused.message),
        }
        if ran == 12 {
            svc.flush_health().await.unwrap();
        }
    }
    svc.flush_health().await.unwrap();
    let health = svc.health(&user(), overlay.id).await.unwrap();
    assert_eq!(health.state, OverlayState::Quarantined);
    assert_eq!(health.invocation_count, ran, "every invocation that ran is counted");
    assert!((10..30).contains(&ran), "quarantine stopped further calls after {ran}");
    let events = svc.events(&admin(), overlay.id, PageRequest::new(None, Some(100))).await.unwrap();
    let quarantines: Vec<_> =
        events.items.iter().filter(|e| e.action == forge_model::AuditAction::AutoQuarantine).collect();
    assert_eq!(quarantines.len(), 1);
    assert_eq!(quarantines[0].actor, "system");
    assert_eq!(quarantines[0].details["failure_rate"], 1.0);
    let reason = quarantines[0].reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("failure rate 100.0% over ") && reason.ends_with("is above 50.0%"),
        "{reason}"
    );
    assert!(
        svc.metrics()
            .render()
            .contains(r#"forge_quarantines_total{overlay="echo@0.1.0",trigger="automatic"} 1"#)
    );
}

pub async fn core_overlays_are_never_quarantined(env: &Env) {
    let svc = &env.service;
    let overlay = env.active_example("echo", TrustLevel::Core).await;
    let core_caller = principal("coreuser", Role::User, TrustLevel::Core);
    for _ in 0..25 {
        let result =
            svc.invoke(&core_caller, overlay.id, invocation("fail", json!({"message": "x"}))).await.unwrap();
        assert!(!result.success);
    }
    let health = svc.health(&core_caller, overlay.id).await.unwrap();
    assert_eq!((health.state, health.failure_count), (OverlayState::Active, 25));
}

pub async fn invoke_by_name_picks_the_newest_active_version(env: &Env) {
    let svc = &env.service;
    let mut ids = Vec::new();
    for version in ["1.9.0", "1.10.0", "1.2.0"] {
        let manifest = manifest_named("multi", version, "entry_points = [\"process\", \"fail\"]");
        let overlay = env.register_as(&user(), manifest, fixture("echo.wasm")).await.unwrap();
        svc.transition(&admin(), overlay.id, LifecycleAction::Activate, None).await.unwrap();
        ids.push(overlay.id);
    }
    let count = |svc: &forge_service::OverlayService, id| {
        let svc = svc.clone();
        async move { svc.health(&admin(), id).await.unwrap().invocation_count }
    };
    svc.invoke_by_name(&user(), "multi", invocation("process", echo_args())).await.unwrap();
    assert_eq!(count(svc, ids[1]).await, 1, "1.10.0 is newer than 1.9.0");
    svc.transition(&operator(), ids[1], LifecycleAction::Suspend, Some("rollback".into())).await.unwrap();
    svc.invoke_by_name(&user(), "multi", invocation("process", echo_args())).await.unwrap();
    assert_eq!(count(svc, ids[0]).await, 1, "then 1.9.0");
    let none =
        svc.invoke_by_name(&user(), "nothing-here", invocation("process", echo_args())).await.unwrap_err();
    assert_eq!(none.code, ErrorCode::NotFound);
}

pub async fn too_many_in_flight_is_refused_with_retry_after(env: &Env) {
    let spin = br#"(module (memory (export "memory") 1)
        (func (export "forge_alloc") (param i32) (result i32) (i32.const 16))
        (func (export "process") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0)))"#;
    let manifest = manifest_named("spinner", "1.0.0", "max_fuel = 1000000000000\nmax_execution_ms = 400");
    let overlay = env.register_as(&user(), manifest, spin.to_vec()).await.unwrap();
    env.service.transition(&admin(), overlay.id, LifecycleAction::Activate, None).await.unwrap();
    let narrow = env.sibling(ServiceConfig { max_in_flight_per_overlay: 1, ..ServiceConfig::default() });
    let busy = {
        let narrow = narrow.clone();
        tokio::spawn(
            async move { narrow.invoke(&user(), overlay.id, invocation("process", json!({}))).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let refused = narrow.invoke(&user(), overlay.id, invocation("process", json!({}))).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::RateLimitExceeded);
    assert_eq!(refused.code.http_status(), 429);
    assert_eq!(refused.details["retry_after"], 1);
    let first = busy.await.unwrap().unwrap();
    assert_eq!(first.error_kind, Some(ErrorKind::Timeout));
    // The slot is free again.
    let again = narrow.invoke(&user(), overlay.id, invocation("process", json!({}))).await.unwrap();
    assert_eq!(again.error_kind, Some(ErrorKind::Timeout));
    assert!(narrow.metrics().render().contains(r#"forge_refusals_total{reason="overlay_limit"} 1"#));
}

pub async fn capsule_insight_reads_and_writes_through_the_service(env: &Env) {
    let svc = &env.service;
    for (content, trust) in [
        ("wasm overlays isolate plugins", TrustLevel::Sandbox),
        ("wasm fuel bounds the cpu", TrustLevel::Standard),
        ("wasm secrets for the core team", TrustLevel::Core),
    ] {
        let capsule = forge_model::NewCapsule {
            content: content.into(),
            capsule_type: forge_model::CapsuleType::Knowledge,
            trust_level: trust,
            metadata: Default::default(),
            owner: None,
            created_by_overlay: None,
        };
        svc.create_capsule(&admin(), capsule).await.unwrap();
    }
    let overlay = env.active_example("capsule-insight", TrustLevel::Standard).await;
    let result = svc
        .invoke(&user(), overlay.id, invocation("process", json!({"query": "wasm", "limit": 10})))
        .await
        .unwrap();
    assert!(result.success, "{result:?}");
    let result = result.result.unwrap();
    assert_eq!(result["found"], 2, "the core capsule is beyond the overlay's trust");
    let id: uuid::Uuid = result["insight_id"].as_str().unwrap().parse().unwrap();
    let insight = svc.get_capsule(&user(), id).await.unwrap();
    assert_eq!(insight.capsule_type, forge_model::CapsuleType::Insight);
    assert_eq!(insight.trust_level, TrustLevel::Standard);
    assert_eq!(insight.created_by_overlay, Some(overlay.id));
    assert_eq!(insight.metadata["overlay_name"], "capsule-insight");
    assert_eq!(insight.metadata["created_by_overlay"], overlay.id.to_string());
}

pub async fn state_changes_apply_to_the_next_invocation(env: &Env) {
    let svc = &env.service;
    let overlay = env.active_example("echo", TrustLevel::Sandbox).await;
    let other =
        env.sibling(ServiceConfig { record_refresh: Duration::from_millis(100), ..ServiceConfig::default() });
    assert!(other.invoke(&user(), overlay.id, invocation("process", echo_args())).await.unwrap().success);
    svc.transition(&operator(), overlay.id, LifecycleAction::Suspend, Some("maintenance".into()))
        .await
        .unwrap();
    let here = svc.invoke(&user(), overlay.id, invocation("process", echo_args())).await.unwrap_err();
    assert!(here.message.contains("is suspended"), "this process sees its own change at once");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let there = other.invoke(&user(), overlay.id, invocation("process", echo_args())).await.unwrap_err();
    assert!(there.message.contains("is suspended"), "another process sees it within record_refresh");
}

/// A guest that says every input is invalid (`forge.reject_input`).
const REJECTING_WAT: &str = r#"(module
  (import "forge" "reject_input" (func $reject (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "`n` must be a number")
  (func (export "forge_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "process") (param i32 i32) (result i64) (call $reject (i32.const 16) (i32.const 20)) (i64.const 0)))"#;

/// A guest that never returns.
const SPIN_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "forge_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "spin") (param i32 i32) (result i64) (loop $forever (br $forever)) (i64.const 0)))"#;

async fn active_wat(env: &Env, manifest: forge_model::OverlayManifest, wat: &str) -> uuid::Uuid {
    let overlay = env.register_as(&user(), manifest, wat.as_bytes().to_vec()).await.unwrap();
    env.service.transition(&admin(), overlay.id, LifecycleAction::Activate, None).await.unwrap().id
}

/// Invalid input and timeouts under a deadline the caller shortened are the caller's doing: they are
/// counted and shown, never held against the overlay. A timeout under the manifest's own deadline is.
pub async fn failures_the_caller_caused_do_not_quarantine(env: &Env) {
    let svc = &env.service;
    let rejecting = active_wat(env, manifest_named("rejecting", "1.0.0", ""), REJECTING_WAT).await;
    for _ in 0..20 {
        let result = svc.invoke(&user(), rejecting, invocation("process", json!({"n": "x"}))).await.unwrap();
        assert_eq!(result.error_kind, Some(ErrorKind::InvalidInput), "{result:?}");
        assert_eq!(result.error.as_deref(), Some("`n` must be a number"));
    }
    let health = svc.health(&user(), rejecting).await.unwrap();
    assert_eq!(health.state, OverlayState::Active);
    assert_eq!((health.invocation_count, health.caller_failure_count, health.failure_count), (20, 20, 0));
    assert_eq!((health.window_invocation_count, health.failure_rate), (0, 0.0));
    assert_eq!(health.last_error.as_deref(), Some("`n` must be a number"), "visible in the report");

    let spin_manifest = manifest_named(
        "spin",
        "1.0.0",
        "entry_points = [\"spin\"]\nmax_execution_ms = 200\nmax_fuel = 1000000000000000",
    );
    let spin = active_wat(env, spin_manifest, SPIN_WAT).await;
    let hurried = OverlayInvocation { timeout_ms: Some(100), ..invocation("spin", json!({})) };
    for _ in 0..12 {
        let result = svc.invoke(&user(), spin, hurried.clone()).await.unwrap();
        assert_eq!(result.error_kind, Some(ErrorKind::Timeout));
    }
    let health = svc.health(&user(), spin).await.unwrap();
    assert_eq!(
        (health.state, health.caller_failure_count, health.failure_count),
        (OverlayState::Active, 12, 0)
    );

    // The manifest's own deadline: the overlay's fault.
    for _ in 0..10 {
        let result = svc.invoke(&user(), spin, invocation("spin", json!({}))).await.unwrap();
        assert_eq!(result.error_kind, Some(ErrorKind::Timeout));
    }
    let health = svc.health(&user(), spin).await.unwrap();
    assert_eq!(
        (health.state, health.failure_count, health.window_failure_count),
        (OverlayState::Quarantined, 10, 10)
    );
}

/// Released from quarantine, an overlay that fails its first window goes straight back, with its own
/// audit event.
pub async fn an_overlay_failing_its_probation_goes_straight_back(env: &Env) {
    let svc = &env.service;
    let overlay = env.active_example("echo", TrustLevel::Sandbox).await;
    let fail = || invocation("fail", json!({"message": "still broken"}));
    for _ in 0..10 {
        svc.invoke(&user(), overlay.id, fail()).await.unwrap();
    }
    assert_eq!(svc.health(&user(), overlay.id).await.unwrap().state, OverlayState::Quarantined);
    svc.transition(&admin(), overlay.id, LifecycleAction::Release, Some("fixed, we hope".into()))
        .await
        .unwrap();
    assert!(svc.health(&user(), overlay.id).await.unwrap().on_probation);

    for _ in 0..4 {
        svc.invoke(&user(), overlay.id, invocation("process", echo_args())).await.unwrap();
    }
    for _ in 0..6 {
        svc.invoke(&user(), overlay.id, fail()).await.unwrap();
    }
    let health = svc.health(&user(), overlay.id).await.unwrap();
    assert_eq!((health.state, health.on_probation), (OverlayState::Quarantined, false));
    let events = svc.events(&admin(), overlay.id, PageRequest::new(None, Some(100))).await.unwrap();
    let actions: Vec<AuditAction> = events.items.iter().map(|e| e.action).collect();
    assert_eq!(actions.iter().filter(|a| **a == AuditAction::AutoQuarantine).count(), 1);
    let relapse = events.items.last().unwrap();
    assert_eq!((relapse.action, relapse.actor.as_str()), (AuditAction::ProbationFailed, "system"));
    let reason = relapse.reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with(
            "failed its probation after a release from quarantine: failure rate 60.0% over its last 10"
        ),
        "{reason}"
    );
    assert_eq!(relapse.details["window_failure_count"], 6);
    assert!(
        svc.metrics()
            .render()
            .contains(r#"forge_quarantines_total{overlay="echo@0.1.0",trigger="automatic"} 2"#)
    );
}

/// The storage error's text stays in the server log: the result says only that the host failed.
pub async fn a_failing_capsule_store_is_a_generic_host_error(env: &Env) {
    let svc = &env.service;
    let overlay = env.active_example("capsule-insight", TrustLevel::Standard).await;
    let args = json!({"query": "wasm", "limit": 10});
    assert!(svc.invoke(&user(), overlay.id, invocation("process", args.clone())).await.unwrap().success);
    env.db.repo.close().await;
    let result = svc.invoke(&user(), overlay.id, invocation("process", args)).await.unwrap();
    assert_eq!(result.error_kind, Some(ErrorKind::HostError), "{result:?}");
    assert_eq!(result.error.as_deref(), Some(forge_service::CAPSULE_STORE_FAILED));
}

/// Error text can quote what other users sent: only admins, operators and the overlay's submitter
/// read it, in the overlay, its health and its audit trail.
pub async fn error_text_and_reasons_are_for_operations_and_the_submitter(env: &Env) {
    let svc = &env.service;
    let overlay = env.active_example("echo", TrustLevel::Sandbox).await;
    let secret = json!({"message": "password=hunter2"});
    let failed = svc.invoke(&admin(), overlay.id, invocation("fail", secret)).await.unwrap();
    assert!(failed.error.as_deref().is_some_and(|e| e.contains("hunter2")), "{failed:?}");
    svc.flush_health().await.unwrap();
    svc.transition(&operator(), overlay.id, LifecycleAction::Suspend, Some("hunter2 leaked".into()))
        .await
        .unwrap();
    let stranger = principal("stranger", Role::User, TrustLevel::Standard);
    let page = PageRequest::new(None, None);
    for (caller, sees) in [(user(), true), (operator(), true), (admin(), true), (stranger, false)] {
        let last_error = svc.get(&caller, overlay.id).await.unwrap().health.last_error;
        assert_eq!(last_error.is_some(), sees, "{}: overlay", caller.name);
        let listed = svc.list(&caller, &Default::default(), page).await.unwrap();
        assert_eq!(listed.items[0].health.last_error.is_some(), sees, "{}: list", caller.name);
        assert_eq!(svc.health(&caller, overlay.id).await.unwrap().last_error.is_some(), sees);
        let events = svc.events(&caller, overlay.id, page).await.unwrap().items;
        let suspended = events.iter().find(|e| e.actor == "oscar").unwrap();
        assert_eq!(suspended.reason.is_some(), sees, "{}: events", caller.name);
    }
}
