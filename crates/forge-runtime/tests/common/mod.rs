//! Shared helpers: WAT guests built around a bump allocator, and a runtime to run them.
#![allow(dead_code)] // each test file uses a different part

use forge_model::{CapsuleType, NewCapsule, OverlayInvocation, OverlayManifest, OverlayResult, TrustLevel};
use forge_runtime::{
    CallOutcome, HostServices, InMemoryCapsules, OverlayIdentity, PreparedOverlay, Runtime, RuntimeConfig,
};
use serde_json::{Map, Value, json};
use std::sync::{Arc, OnceLock};

/// A module with `memory` (1 page unless `body` declares otherwise), a bump `forge_alloc` and a
/// `$pack` helper, plus `imports` and `body`.
pub fn guest(imports: &str, body: &str) -> Vec<u8> {
    let memory = if body.contains("(memory (export") { "" } else { r#"(memory (export "memory") 1)"# };
    let text = format!(
        r#"(module
          {imports}
          {memory}
          (global $next (mut i32) (i32.const 1024))
          (func $alloc (export "forge_alloc") (param $size i32) (result i32)
            (local $ptr i32)
            (local.set $ptr (global.get $next))
            (global.set $next (i32.add (global.get $next) (local.get $size)))
            (local.get $ptr))
          (func $pack (param $ptr i32) (param $len i32) (result i64)
            (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
                    (i64.extend_i32_u (local.get $len))))
          {body}
        )"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test WAT: {e}\n{text}"))
}

/// An entry point `process` that returns the constant `json` text.
pub fn returning(json_text: &str) -> Vec<u8> {
    let escaped: String = json_text.bytes().map(|b| format!("\\{b:02x}")).collect();
    guest(
        "",
        &format!(
            r#"(data (i32.const 16) "{escaped}")
               (func (export "process") (param i32 i32) (result i64)
                 (call $pack (i32.const 16) (i32.const {})))"#,
            json_text.len()
        ),
    )
}

pub fn manifest(extra_toml: &str) -> OverlayManifest {
    OverlayManifest::parse(&format!("name = \"test\"\nversion = \"1.0.0\"\n{extra_toml}")).unwrap()
}

/// One Tokio runtime to run invocations on, shared by the tests of a binary.
pub fn io() -> tokio::runtime::Handle {
    static IO: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    IO.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    })
    .handle()
    .clone()
}

pub fn runtime_with(services: HostServices) -> Runtime {
    Runtime::new(RuntimeConfig { max_instances: 64, ..RuntimeConfig::default() }, services).unwrap()
}

/// A runtime with in-memory capsules and no network.
pub fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| runtime_with(HostServices::default())).clone()
}

pub fn identity(trust_level: TrustLevel) -> OverlayIdentity {
    OverlayIdentity { id: Some(uuid::Uuid::now_v7()), name: Arc::from("test"), trust_level }
}

pub fn args(value: Value) -> Map<String, Value> {
    value.as_object().expect("args are an object").clone()
}

pub fn call(runtime: &Runtime, prepared: &PreparedOverlay, function: &str, input: Value) -> CallOutcome {
    let invocation = OverlayInvocation::new(function, args(input));
    invoke(runtime, prepared, &identity(TrustLevel::Standard), &invocation).expect("invocation accepted")
}

/// Runs `Runtime::invoke` to completion on the shared Tokio runtime.
pub fn invoke(
    runtime: &Runtime,
    prepared: &PreparedOverlay,
    identity: &OverlayIdentity,
    invocation: &OverlayInvocation,
) -> Result<CallOutcome, forge_model::ForgeError> {
    io().block_on(runtime.invoke(prepared, identity, invocation))
}

/// Prepares `wasm` under `manifest_toml` and calls `process` once with `{}`.
pub fn run_once(wasm: &[u8], manifest_toml: &str) -> OverlayResult {
    let rt = runtime();
    let prepared = rt.prepare(&manifest(manifest_toml), wasm).expect("module accepted");
    call(&rt, &prepared, "process", json!({})).result
}

/// The fixture built from examples/ (scripts/build-fixtures.sh).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../fixtures/wasm/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (run scripts/build-fixtures.sh)"))
}

/// An in-memory capsule store holding one knowledge capsule owned by `alice` per `(content, trust)`.
pub fn capsule_store(capsules: &[(&str, TrustLevel)]) -> Arc<InMemoryCapsules> {
    let store = Arc::new(InMemoryCapsules::default());
    for &(content, trust_level) in capsules {
        let capsule = NewCapsule {
            content: content.into(),
            capsule_type: CapsuleType::Knowledge,
            trust_level,
            metadata: Default::default(),
            owner: Some("alice".into()),
            created_by_overlay: None,
        };
        store.insert(capsule);
    }
    store
}
