//! The example overlays (fixtures/wasm, rebuilt by scripts/build-fixtures.sh) run under their own
//! manifests; those written in every SDK language (Rust, C, AssemblyScript) pass the same assertions.

mod common;
use common::*;
use forge_model::{CapsuleType, ErrorKind, LogLevel, NewCapsule, OverlayManifest, TrustLevel};
use forge_runtime::{HostServices, InMemoryCapsules, NoNetwork};
use serde_json::{Value, json};
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
    assert_eq!(failed.error_kind, Some(ErrorKind::InvalidInput), "the caller's fault");
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

/// The languages with an SDK and the suffix their builds of an example carry in fixtures/wasm:
/// `count-vowels.wasm` (Rust, examples/), `count-vowels-c.wasm` (sdks/c/examples),
/// `count-vowels-as.wasm` (sdks/assemblyscript/examples).
const LANGUAGES: [(&str, &str); 3] = [("rust", ""), ("c", "-c"), ("assemblyscript", "-as")];

/// `example` as built in each language: (language, manifest, module).
fn in_every_language(name: &str) -> impl Iterator<Item = (&'static str, OverlayManifest, Vec<u8>)> {
    LANGUAGES.into_iter().map(move |(language, suffix)| {
        let (manifest, wasm) = example(&format!("{name}{suffix}"));
        (language, manifest, wasm)
    })
}

#[test]
fn count_vowels_matches_the_benchmark_workload() {
    let rt = runtime();
    for (language, manifest, wasm) in in_every_language("count-vowels") {
        let prepared = rt.prepare(&manifest, &wasm).unwrap();
        let text = "hello world, overlays are sandboxed ".repeat(4);
        let result = call(&rt, &prepared, "count_vowels", json!({"text": text})).result;
        assert_eq!(
            result.result.clone().map(Value::Object),
            Some(json!({"vowels": 44})),
            "{language}: {result:?}"
        );
        let result = call(&rt, &prepared, "count_vowels", json!({"text": "ÀéIoU y"})).result;
        assert_eq!(
            result.result.map(Value::Object),
            Some(json!({"vowels": 3})),
            "{language}: only ASCII vowels count"
        );
    }
}

#[test]
fn arguments_of_the_wrong_shape_fail_the_call_in_every_language() {
    let rt = runtime();
    for (language, manifest, wasm) in in_every_language("count-vowels") {
        let prepared = rt.prepare(&manifest, &wasm).unwrap();
        let failed = call(&rt, &prepared, "count_vowels", json!({"text": 42})).result;
        assert_eq!(failed.error_kind, Some(ErrorKind::InvalidInput), "{language}: {failed:?}");
        assert!(!failed.error.unwrap().is_empty(), "{language} says why");
    }
}

/// Linear memory in pages right after instantiation and after one call of `function` with
/// `input`, in a plain wasmtime instance whose imports all trap (the call must not need them).
fn pages_around_one_call(wasm: &[u8], function: &str, input: &[u8]) -> (u64, u64) {
    use wasmtime::{Engine, Linker, Module, Store};
    let engine = Engine::default();
    let module = Module::new(&engine, wasm).unwrap();
    let mut linker = Linker::new(&engine);
    linker.define_unknown_imports_as_traps(&module).unwrap();
    let mut store = Store::new(&engine, ());
    let instance = linker.instantiate(&mut store, &module).unwrap();
    if let Ok(initialize) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
        initialize.call(&mut store, ()).unwrap();
    }
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    let initial = memory.size(&store);
    let alloc = instance.get_typed_func::<i32, i32>(&mut store, "forge_alloc").unwrap();
    let ptr = alloc.call(&mut store, input.len() as i32).unwrap();
    memory.write(&mut store, ptr as usize, input).unwrap();
    let entry = instance.get_typed_func::<(i32, i32), i64>(&mut store, function).unwrap();
    let packed = entry.call(&mut store, (ptr, input.len() as i32)).unwrap();
    assert_ne!(packed & 0xffff_ffff, 0, "{function} answered");
    (initial, memory.size(&store))
}

#[test]
fn a_small_call_never_grows_memory_in_any_language() {
    let input = json!({"text": "hello world, overlays are sandboxed ".repeat(4)}).to_string();
    for (language, _, wasm) in in_every_language("count-vowels") {
        let (initial, after) = pages_around_one_call(&wasm, "count_vowels", input.as_bytes());
        assert_eq!(after, initial, "{language}: memory grew from {initial} to {after} pages");
    }
}

/// A store with two capsules about wasm and one about lunch, all readable at sandbox trust.
fn wasm_capsules() -> Arc<InMemoryCapsules> {
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
        store.insert(capsule);
    }
    store
}

#[test]
fn capsule_insight_searches_and_creates_the_same_insight_in_every_language() {
    let mut contents = Vec::new();
    for (language, manifest, wasm) in in_every_language("capsule-insight") {
        let store = wasm_capsules();
        let rt = runtime_with(HostServices { capsules: store.clone(), http: Arc::new(NoNetwork) });
        let prepared = rt.prepare(&manifest, &wasm).unwrap();
        let invocation =
            forge_model::OverlayInvocation::new("process", args(json!({"query": " wasm ", "limit": 5})));
        let outcome = invoke(&rt, &prepared, &identity(TrustLevel::Standard), &invocation).unwrap();
        assert!(outcome.result.success, "{language}: {:?}", outcome.result);
        let result = outcome.result.result.unwrap();
        assert_eq!(result["found"], 2, "{language}");
        let insight = store
            .all()
            .into_iter()
            .find(|c| c.capsule_type == CapsuleType::Insight)
            .unwrap_or_else(|| panic!("{language}: an insight was created"));
        assert_eq!(insight.id.to_string(), result["insight_id"].as_str().unwrap(), "{language}");
        assert_eq!(insight.trust_level, TrustLevel::Standard, "{language}");
        assert_eq!(insight.metadata["overlay_name"], "test", "{language}");
        assert_eq!(insight.metadata["query"], "wasm", "{language}");
        assert_eq!(insight.metadata["source_capsule_ids"].as_array().unwrap().len(), 2, "{language}");
        assert!(
            insight
                .content
                .starts_with("Insight for \"wasm\": 2 related capsules (2 knowledge).\n1. [knowledge] "),
            "{language}: {}",
            insight.content
        );
        assert_eq!(outcome.log.lines.len(), 2, "{language} logs the search and the insight");
        contents.push((language, insight.content));
    }
    let (_, rust) = &contents[0];
    for (language, content) in &contents[1..] {
        assert_eq!(content, rust, "{language} writes the insight the Rust example writes");
    }
}

#[test]
fn capsule_insight_checks_its_arguments_and_records_nothing_when_nothing_matches() {
    for (language, manifest, wasm) in in_every_language("capsule-insight") {
        let store = wasm_capsules();
        let rt = runtime_with(HostServices { capsules: store.clone(), http: Arc::new(NoNetwork) });
        let prepared = rt.prepare(&manifest, &wasm).unwrap();
        let nothing = call(&rt, &prepared, "process", json!({"query": "kubernetes"})).result;
        assert_eq!(
            nothing.result.clone().map(Value::Object),
            Some(json!({"found": 0, "insight_id": null})),
            "{language}: {nothing:?}"
        );
        assert_eq!(store.all().len(), 3, "{language} created nothing");
        let empty = call(&rt, &prepared, "process", json!({"query": "  "})).result;
        assert_eq!(empty.error.as_deref(), Some("query must not be empty"), "{language}");
        assert_eq!(empty.error_kind, Some(ErrorKind::InvalidInput), "{language}: the caller's fault");
        let too_many = call(&rt, &prepared, "process", json!({"query": "wasm", "limit": 51})).result;
        let message = too_many.error.unwrap_or_default();
        assert!(message.starts_with("limit must be between 1 and 50"), "{language}: {message}");
    }
}
