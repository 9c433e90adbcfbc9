//! The example overlays built with the SDK (fixtures/wasm, rebuilt by scripts/build-fixtures.sh) run
//! under their own manifests.

mod common;
use common::*;
use forge_model::{CapsuleType, ErrorKind, NewCapsule, OverlayManifest, TrustLevel};
use forge_runtime::{CapsuleStore, HostServices, InMemoryCapsules, LogLevel, NoNetwork};
use serde_json::json;
use std::sync::Arc;

fn example(name: &str) -> (OverlayManifest, Vec<u8>) {
    let toml = String::from_utf8(fixture(&format!("{name}.toml"))).unwrap();
    (OverlayManifest::parse(&toml).unwrap(), fixture(&format!("{name}.wasm")))
}

#[test]
fn echo_returns_its_arguments_and_fail_fails() {
    let rt = runtime();
    let (manifest, wasm) = example("echo");
    let prepared = rt.prepare(&manifest, &wasm).unwrap();
    let outcome = call(&rt, &prepared, "process", json!({"hello": ["world", 1]}));
    assert!(outcome.result.success, "{:?}", outcome.result);
    assert_eq!(outcome.result.result.unwrap()["echo"], json!({"hello": ["world", 1]}));
    let failed = call(&rt, &prepared, "fail", json!({"message": "on purpose"})).result;
    assert_eq!(failed.error_kind, Some(ErrorKind::OverlayError));
    assert!(failed.error.unwrap().contains("on purpose"));
}

#[test]
fn sdk_rejects_arguments_of_the_wrong_shape() {
    let rt = runtime();
    let (manifest, wasm) = example("text-stats");
    let prepared = rt.prepare(&manifest, &wasm).unwrap();
    let failed = call(&rt, &prepared, "process", json!({"text": 42})).result;
    assert_eq!(failed.error_kind, Some(ErrorKind::OverlayError));
    assert!(failed.error.unwrap().contains("invalid arguments"));
}

#[test]
fn text_stats_counts_and_logs() {
    let rt = runtime();
    for name in ["text-stats", "text-stats-wasip1"] {
        let (manifest, _) = example("text-stats");
        let prepared = rt.prepare(&manifest, &fixture(&format!("{name}.wasm"))).unwrap();
        let outcome = call(&rt, &prepared, "process", json!({"text": "One fish. Two fish! Red fish?"}));
        assert!(outcome.result.success, "{name}: {:?}", outcome.result);
        let stats = outcome.result.result.unwrap();
        assert_eq!(stats["words"], 6, "{name}: {stats:?}");
        assert_eq!(stats["sentences"], 3, "{name}");
        assert!(outcome.log.lines.iter().any(|l| l.level == LogLevel::Info), "{name} logs a line");
    }
}

#[test]
fn count_vowels_matches_the_benchmark_workload() {
    let rt = runtime();
    let (manifest, wasm) = example("count-vowels");
    let prepared = rt.prepare(&manifest, &wasm).unwrap();
    let text = "hello world, overlays are sandboxed ".repeat(4);
    let result = call(&rt, &prepared, "count_vowels", json!({"text": text})).result;
    assert_eq!(result.result.unwrap()["vowels"], 44);
}

#[test]
fn capsule_insight_searches_and_creates_an_insight() {
    let store = Arc::new(InMemoryCapsules::default());
    for content in ["quarterly planning notes about wasm", "wasm runtime decision record", "lunch menu"] {
        let capsule = NewCapsule {
            content: content.into(),
            capsule_type: CapsuleType::Knowledge,
            trust_level: TrustLevel::Sandbox,
            metadata: Default::default(),
            owner: None,
            created_by_overlay: None,
        };
        io().block_on(store.create(capsule)).unwrap();
    }
    let rt = runtime_with(HostServices { capsules: store.clone(), http: Arc::new(NoNetwork) });
    let (manifest, wasm) = example("capsule-insight");
    let prepared = rt.prepare(&manifest, &wasm).unwrap();
    let invocation =
        forge_model::OverlayInvocation::new("process", args(json!({"query": "wasm", "limit": 5})));
    let outcome = invoke(&rt, &prepared, &identity(TrustLevel::Standard), &invocation).unwrap();
    assert!(outcome.result.success, "{:?}", outcome.result);
    let result = outcome.result.result.unwrap();
    assert_eq!(result["found"], 2);
    let insight = store
        .all()
        .into_iter()
        .find(|c| c.capsule_type == CapsuleType::Insight)
        .expect("an insight was created");
    assert_eq!(insight.id.to_string(), result["insight_id"].as_str().unwrap());
    assert_eq!(insight.trust_level, TrustLevel::Standard);
    assert_eq!(insight.metadata["overlay_name"], "test");
}
