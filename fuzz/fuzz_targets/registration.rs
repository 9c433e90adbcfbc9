//! The checks registration runs on an uploaded module before storing it (forge-service's
//! `Registry::register`): the size check, binary-or-text decoding, then `Runtime::prepare`
//! (compile, ABI checks against the manifest, linking). Inputs are either arbitrary bytes or a
//! valid but strange module from wasm-smith that imports `forge` functions and exports the ABI.
#![no_main]

use forge_model::OverlayManifest;
use forge_runtime::{HostServices, Runtime, RuntimeConfig};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// Modules wasm-smith makes are kept small, so that a compilation stays well under the timeout.
const MAX_GENERATED_FUNCS: usize = 8;
const MAX_GENERATED_INSTRUCTIONS: usize = 200;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let config = RuntimeConfig { max_instances: 4, module_cache_entries: 1, ..RuntimeConfig::default() };
        Runtime::new(config, HostServices::default()).expect("runtime starts")
    })
}

fn manifests() -> &'static [OverlayManifest] {
    static MANIFESTS: OnceLock<Vec<OverlayManifest>> = OnceLock::new();
    MANIFESTS.get_or_init(|| {
        [
            "",
            "capabilities = [\"capsule:read\", \"capsule:write\", \"capsule:delete\"]\n\
             entry_points = [\"process\", \"summarize\"]",
            "capabilities = [{ name = \"network:http\", constraints = { hosts = [\"api.example.com\"] } }]\n\
             max_memory_mb = 1",
        ]
        .iter()
        .map(|extra| {
            OverlayManifest::parse(&format!("name = \"fuzz\"\nversion = \"1.0.0\"\n{extra}")).expect("manifest")
        })
        .collect()
    })
}

/// What a generated module may import (every `forge` host function, plus one the runtime does not
/// know and one WASI function) and must export (the ABI).
fn smith_config(u: &mut Unstructured<'_>) -> Result<wasm_smith::Config> {
    static IMPORTS: OnceLock<Vec<u8>> = OnceLock::new();
    static EXPORTS: OnceLock<Vec<u8>> = OnceLock::new();
    let imports = IMPORTS.get_or_init(|| {
        let mut text = String::from("(module\n");
        for f in forge_runtime::HostFunction::ALL {
            let result = if f.returns_response() { "(result i64)" } else { "" };
            text.push_str(&format!("(import \"forge\" \"{}\" (func (param i32 i32) {result}))\n", f.name()));
        }
        text.push_str("(import \"forge\" \"no_such_function\" (func (param i32 i32)))\n");
        text.push_str("(import \"wasi_snapshot_preview1\" \"proc_exit\" (func (param i32)))\n)");
        wat::parse_str(&text).expect("imports module")
    });
    let exports = EXPORTS.get_or_init(|| {
        wat::parse_str(
            r#"(module
                 (memory (export "memory") 1 2)
                 (func (export "forge_alloc") (param i32) (result i32) unreachable)
                 (func (export "process") (param i32 i32) (result i64) unreachable)
                 (func (export "summarize") (param i32 i32) (result i64) unreachable))"#,
        )
        .expect("exports module")
    });
    let mut config = wasm_smith::Config {
        max_funcs: MAX_GENERATED_FUNCS,
        max_instructions: MAX_GENERATED_INSTRUCTIONS,
        max_memories: 1,
        max_tables: 1,
        max_table_elements: 1_000,
        max_memory32_bytes: 4 << 20,
        max_data_segments: 8,
        max_element_segments: 8,
        max_elements: 100,
        max_globals: 16,
        max_exports: 16,
        max_imports: 12,
        max_nesting_depth: 8,
        gc_enabled: false,
        exceptions_enabled: false,
        memory64_enabled: false,
        threads_enabled: false,
        compact_imports_enabled: false,
        available_imports: Some(imports.clone()),
        ..wasm_smith::Config::default()
    };
    // Mostly with the ABI's exports; sometimes whatever wasm-smith picks, for the refusals.
    if u.ratio(7, 8)? {
        config.exports = Some(exports.clone());
    }
    Ok(config)
}

fn register(wasm: &[u8], manifest: &OverlayManifest) {
    let runtime = runtime();
    if runtime.check_module_size(wasm.len()).is_err() {
        return;
    }
    let Ok(binary) = forge_runtime::wasm_from_binary_or_text(wasm) else { return };
    if let Ok(prepared) = runtime.prepare(manifest, &binary) {
        // What passed has an entry point the manifest names, each one exported.
        assert!(prepared.entry_points().count() > 0, "a prepared overlay has entry points");
        for name in prepared.entry_points() {
            assert!(manifest.entry_points.iter().any(|e| e == name), "entry point {name} not in the manifest");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let manifest = &manifests()[usize::from(selector >> 1) % manifests().len()];
    if selector & 1 == 0 {
        register(rest, manifest);
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(config) = smith_config(&mut u) else { return };
    let Ok(module) = wasm_smith::Module::new(config, &mut u) else { return };
    register(&module.to_bytes(), manifest);
});
