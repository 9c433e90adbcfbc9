//! Host functions as a guest sees them: capsules through their trust filter, HTTP through its
//! allow-list, host faults and slow backends bounded by the call's deadline, and whose fault a
//! deadline passed in a host call is.

mod common;
use common::*;
use forge_model::{Capsule, CapsuleHit, CapsuleType, ErrorKind, NewCapsule, OverlayInvocation, TrustLevel};
use forge_runtime::{
    CapsuleStore, HostCallError, HostServices, InMemoryCapsules, NoNetwork, OverlayIdentity,
};
use serde_json::{Value, json};
use std::sync::Arc;

/// A guest whose `process` hands its input to host function `name` and returns the host's answer.
fn proxy(name: &str) -> Vec<u8> {
    guest(
        &format!(r#"(import "forge" "{name}" (func $host (param i32 i32) (result i64)))"#),
        r#"(func (export "process") (param $ptr i32) (param $len i32) (result i64)
             (call $host (local.get $ptr) (local.get $len)))"#,
    )
}

fn sample_capsules() -> Arc<InMemoryCapsules> {
    common::capsule_store(&[
        ("rust overlays compile to wasm", TrustLevel::Sandbox),
        ("wasm sandboxes keep overlays apart", TrustLevel::Standard),
        ("core secrets about wasm", TrustLevel::Core),
    ])
}

fn call_as(
    services: HostServices,
    function: &str,
    capabilities: &str,
    trust: TrustLevel,
    request: Value,
) -> forge_runtime::CallOutcome {
    let rt = runtime_with(services);
    let prepared = rt.prepare(&manifest(capabilities), &proxy(function)).unwrap();
    let me = OverlayIdentity { id: Some(uuid::Uuid::nil()), name: "reader".into(), trust_level: trust };
    let invocation =
        OverlayInvocation { timeout_ms: Some(300), ..OverlayInvocation::new("process", args(request)) };
    invoke(&rt, &prepared, &me, &invocation).unwrap()
}

fn services(store: Arc<InMemoryCapsules>) -> HostServices {
    HostServices { capsules: store, http: Arc::new(NoNetwork) }
}

const READ: &str = r#"capabilities = ["capsule:read"]"#;

#[test]
fn capsule_read_hides_what_the_overlay_may_not_see() {
    let store = sample_capsules();
    let all = store.all();
    let (sandbox, core) = (&all[0], &all[2]);
    let answer = |id: &uuid::Uuid, trust| {
        let outcome = call_as(services(store.clone()), "capsule_read", READ, trust, json!({"id": id}));
        assert!(outcome.result.success, "{:?}", outcome.result);
        outcome.result.result.unwrap()
    };
    let seen = answer(&sandbox.id, TrustLevel::Standard);
    let capsule: Capsule = serde_json::from_value(seen["ok"].clone()).unwrap();
    assert_eq!(capsule.content, sandbox.content);
    let hidden = answer(&core.id, TrustLevel::Standard);
    let missing = answer(&uuid::Uuid::now_v7(), TrustLevel::Standard);
    assert_eq!(hidden["error"]["code"], "not_found");
    assert_eq!(missing["error"]["code"], "not_found");
    assert_eq!(
        hidden["error"]["message"],
        format!("capsule {} not found", core.id),
        "same words as a missing one"
    );
    assert_eq!(answer(&core.id, TrustLevel::Core)["ok"]["content"], core.content);
}

#[test]
fn capsule_search_filters_by_trust_and_ranks() {
    let store = sample_capsules();
    let outcome = call_as(
        services(store),
        "capsule_search",
        READ,
        TrustLevel::Standard,
        json!({"query": "wasm overlays", "limit": 10}),
    );
    let hits: Vec<CapsuleHit> = serde_json::from_value(outcome.result.result.unwrap()["ok"].clone()).unwrap();
    assert_eq!(hits.len(), 2, "the core capsule is filtered out");
    assert!(hits.iter().all(|h| h.capsule.trust_level <= TrustLevel::Standard));
    assert!(hits[0].score >= hits[1].score);
}

#[test]
fn capsule_create_takes_the_overlays_trust_and_records_provenance() {
    let store = sample_capsules();
    let request = json!({"content": "an insight", "type": "insight", "metadata": {"sources": 2}, });
    let outcome = call_as(
        services(store.clone()),
        "capsule_create",
        r#"capabilities = ["capsule:write"]"#,
        TrustLevel::Trusted,
        request,
    );
    let created: Capsule = serde_json::from_value(outcome.result.result.unwrap()["ok"].clone()).unwrap();
    assert_eq!(created.trust_level, TrustLevel::Trusted);
    assert_eq!(created.capsule_type, CapsuleType::Insight);
    assert_eq!(created.metadata["overlay_name"], "reader");
    assert_eq!(created.metadata["created_by_overlay"], uuid::Uuid::nil().to_string());
    assert_eq!(created.metadata["sources"], 2);
    assert_eq!(created.created_by_overlay, Some(uuid::Uuid::nil()));
    assert_eq!(store.all().len(), 4);
}

#[test]
fn capsule_delete_removes_only_what_the_overlay_can_see() {
    const DELETE: &str = r#"capabilities = ["capsule:delete"]"#;
    let store = sample_capsules();
    let all = store.all();
    let (standard, core) = (&all[1], &all[2]);
    let delete = |id: &uuid::Uuid| {
        let outcome = call_as(
            services(store.clone()),
            "capsule_delete",
            DELETE,
            TrustLevel::Standard,
            json!({"id": id}),
        );
        outcome.result.result.unwrap()
    };
    let hidden = delete(&core.id);
    let missing_id = uuid::Uuid::now_v7();
    let missing = delete(&missing_id);
    assert_eq!(hidden["error"]["code"], "not_found");
    assert_eq!(hidden["error"]["message"], format!("capsule {} not found", core.id));
    assert_eq!(missing["error"]["message"], format!("capsule {missing_id} not found"), "alike");
    assert_eq!(store.all().len(), 3, "the core capsule is still there");
    assert_eq!(delete(&standard.id)["ok"]["deleted"], standard.id.to_string());
    assert!(store.all().iter().all(|c| c.id != standard.id));
    assert_eq!(delete(&standard.id)["error"]["code"], "not_found", "deleted once");
}

#[test]
fn capsule_delete_needs_its_capability() {
    let rt = runtime_with(HostServices::default());
    let refused = rt.prepare(&manifest(r#"capabilities = ["capsule:write"]"#), &proxy("capsule_delete"));
    let message = refused.err().expect("capsule:write does not grant capsule_delete").to_string();
    assert!(message.contains("capsule:delete"), "{message}");
}

#[test]
fn malformed_requests_are_answered_not_trapped() {
    let store = sample_capsules();
    for request in [json!({"id": "not-a-uuid"}), json!({"idd": 1}), json!({})] {
        let outcome = call_as(services(store.clone()), "capsule_read", READ, TrustLevel::Core, request);
        assert_eq!(outcome.result.result.unwrap()["error"]["code"], "invalid_request");
    }
    let bad_type = json!({"content": "x", "type": "rumour"});
    let outcome = call_as(
        services(store),
        "capsule_create",
        r#"capabilities = ["capsule:write"]"#,
        TrustLevel::Core,
        bad_type,
    );
    assert_eq!(outcome.result.result.unwrap()["error"]["code"], "invalid_request");
}

#[test]
fn http_to_a_host_outside_the_allow_list_is_denied() {
    let capabilities =
        r#"capabilities = [{ name = "network:http", constraints = { hosts = ["api.example.com"] } }]"#;
    let denied = call_as(
        HostServices::default(),
        "http_request",
        capabilities,
        TrustLevel::Core,
        json!({"method": "GET", "url": "https://evil.example.net/steal"}),
    );
    assert_eq!(denied.result.error_kind, Some(ErrorKind::CapabilityDenied));
    assert!(denied.result.error.unwrap().contains("evil.example.net"));
    let allowed = call_as(
        HostServices::default(),
        "http_request",
        capabilities,
        TrustLevel::Core,
        json!({"url": "https://api.example.com/v1"}),
    );
    assert_eq!(allowed.result.result.unwrap()["error"]["code"], "unavailable", "no client is configured");
}

#[test]
fn http_requests_without_a_host_are_answered_not_trapped() {
    let capabilities =
        r#"capabilities = [{ name = "network:http", constraints = { hosts = ["api.example.com"] } }]"#;
    for request in [json!({"url": "/v1/relative"}), json!({"url": "mailto:a@api.example.com"}), json!({})] {
        let outcome =
            call_as(HostServices::default(), "http_request", capabilities, TrustLevel::Core, request.clone());
        let answer = outcome.result.result.unwrap_or_else(|| panic!("{request}: {:?}", outcome.result.error));
        assert_eq!(answer["error"]["code"], "invalid_request", "{request}");
    }
}

/// A backend whose reads take `delay`, then fail (`down`) or find nothing.
struct Lagging {
    delay: std::time::Duration,
    down: bool,
}

#[async_trait::async_trait]
impl CapsuleStore for Lagging {
    async fn read(&self, _: uuid::Uuid) -> Result<Option<Capsule>, HostCallError> {
        tokio::time::sleep(self.delay).await;
        if self.down { Err(HostCallError::Fault("database is down".into())) } else { Ok(None) }
    }
    async fn search(&self, _: &str, _: u32, _: TrustLevel) -> Result<Vec<CapsuleHit>, HostCallError> {
        unreachable!("not used by these tests")
    }
    async fn create(&self, _: NewCapsule, _: std::time::Instant) -> Result<Capsule, HostCallError> {
        unreachable!("not used by these tests")
    }
    async fn delete(
        &self,
        _: uuid::Uuid,
        _: &OverlayIdentity,
        _: std::time::Instant,
    ) -> Result<bool, HostCallError> {
        unreachable!("not used by these tests")
    }
}

#[test]
fn backend_fault_is_a_host_error() {
    let services = HostServices {
        capsules: Arc::new(Lagging { delay: Default::default(), down: true }),
        http: Arc::new(NoNetwork),
    };
    let outcome = call_as(services, "capsule_read", READ, TrustLevel::Core, json!({"id": uuid::Uuid::nil()}));
    assert_eq!(outcome.result.error_kind, Some(ErrorKind::HostError));
    assert_eq!(outcome.result.error.as_deref(), Some("database is down"));
}

#[test]
fn a_store_stalled_past_the_deadline_is_a_host_error_bounded_by_it() {
    let stalled = Lagging { delay: std::time::Duration::from_secs(5), down: true };
    let services = HostServices { capsules: Arc::new(stalled), http: Arc::new(NoNetwork) };
    let started = std::time::Instant::now();
    let outcome = call_as(services, "capsule_read", READ, TrustLevel::Core, json!({"id": uuid::Uuid::nil()}));
    let waited = started.elapsed().as_millis();
    assert_eq!(outcome.result.error_kind, Some(ErrorKind::HostError), "{:?}", outcome.result);
    let error = outcome.result.error.unwrap();
    assert!(error.starts_with("the capsule store did not answer `capsule_read`"), "{error}");
    assert!((300..400).contains(&waited), "waited {waited} ms for a 300 ms deadline");
}

#[test]
fn a_guest_that_spends_its_time_in_quick_host_calls_still_times_out() {
    let wasm = guest(
        r#"(import "forge" "capsule_read" (func $host (param i32 i32) (result i64)))"#,
        r#"(func (export "process") (param $ptr i32) (param $len i32) (result i64)
             (loop $again
               (drop (call $host (local.get $ptr) (local.get $len)))
               (br $again))
             (unreachable))"#,
    );
    let slow = Lagging { delay: std::time::Duration::from_millis(40), down: false };
    let rt = runtime_with(HostServices { capsules: Arc::new(slow), http: Arc::new(NoNetwork) });
    let prepared = rt.prepare(&manifest(READ), &wasm).unwrap();
    let invocation = OverlayInvocation {
        timeout_ms: Some(300),
        ..OverlayInvocation::new("process", args(json!({"id": uuid::Uuid::nil()})))
    };
    let outcome = invoke(&rt, &prepared, &identity(TrustLevel::Core), &invocation).unwrap();
    assert_eq!(outcome.result.error_kind, Some(ErrorKind::Timeout), "{:?}", outcome.result);
    assert_eq!(outcome.result.error.as_deref(), Some("Execution timed out after 300ms"));
}

/// A remote that never answers.
struct Hung;

#[async_trait::async_trait]
impl forge_runtime::HttpClient for Hung {
    async fn send(
        &self,
        _: forge_runtime::OutboundRequest,
    ) -> Result<forge_runtime::HttpResponse, HostCallError> {
        std::future::pending().await
    }
}

#[test]
fn a_remote_that_never_answers_is_the_overlays_timeout() {
    let capabilities =
        r#"capabilities = [{ name = "network:http", constraints = { hosts = ["api.example.com"] } }]"#;
    let services = HostServices { capsules: sample_capsules(), http: Arc::new(Hung) };
    let outcome = call_as(
        services,
        "http_request",
        capabilities,
        TrustLevel::Core,
        json!({"url": "https://api.example.com/"}),
    );
    assert_eq!(outcome.result.error_kind, Some(ErrorKind::Timeout), "{:?}", outcome.result);
    assert_eq!(outcome.result.error.as_deref(), Some("Execution timed out after 300ms"));
}

/// The answer to the fifth of five identical `capsule_search` calls, under `config`'s limits.
fn fifth_search_answer(config: forge_runtime::RuntimeConfig) -> Value {
    let wasm = guest(
        r#"(import "forge" "capsule_search" (func $host (param i32 i32) (result i64)))"#,
        r#"(func (export "process") (param $ptr i32) (param $len i32) (result i64)
             (local $calls i32) (local $answer i64)
             (loop $again
               (local.set $answer (call $host (local.get $ptr) (local.get $len)))
               (local.set $calls (i32.add (local.get $calls) (i32.const 1)))
               (br_if $again (i32.lt_u (local.get $calls) (i32.const 5))))
             (local.get $answer))"#,
    );
    let rt = forge_runtime::Runtime::new(config, services(sample_capsules())).unwrap();
    let prepared = rt.prepare(&manifest(READ), &wasm).unwrap();
    let call = OverlayInvocation::new("process", args(json!({"query": "wasm"})));
    let outcome = invoke(&rt, &prepared, &identity(TrustLevel::Core), &call).unwrap();
    assert!(outcome.result.success, "{:?}", outcome.result);
    Value::Object(outcome.result.result.unwrap())
}

#[test]
fn host_calls_beyond_the_limits_are_answered_limit_exceeded() {
    let config = |max_host_calls, max_host_call_bytes| forge_runtime::RuntimeConfig {
        max_instances: 4,
        max_host_calls,
        max_host_call_bytes,
        ..forge_runtime::RuntimeConfig::default()
    };
    assert_eq!(fifth_search_answer(config(5, 1 << 20))["ok"].as_array().unwrap().len(), 3, "within both");
    let counted = fifth_search_answer(config(4, 1 << 20));
    assert_eq!(counted["error"]["code"], "limit_exceeded", "{counted}");
    assert!(counted["error"]["message"].as_str().unwrap().contains("max_host_calls"), "{counted}");
    // The first call crosses one byte; every later one is refused.
    let weighed = fifth_search_answer(config(5, 1));
    assert_eq!(weighed["error"]["code"], "limit_exceeded", "{weighed}");
    assert!(weighed["error"]["message"].as_str().unwrap().contains("max_host_call_bytes"), "{weighed}");
}
