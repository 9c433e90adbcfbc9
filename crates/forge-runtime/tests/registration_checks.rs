//! The checks a module passes before anything runs: every violation named, all at once.

mod common;
use common::*;
use forge_model::ForgeError;

fn rejection(wasm: &[u8], manifest_toml: &str) -> ForgeError {
    match runtime().prepare(&manifest(manifest_toml), wasm) {
        Ok(_) => panic!("module accepted"),
        Err(e) => e,
    }
}

fn fields(err: &ForgeError) -> Vec<String> {
    err.details["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn malformed_binary_is_a_validation_error() {
    for bytes in [&b"not wasm at all"[..], b"\0asm\x01\0\0\0\xff\xff", b""] {
        let err = rejection(bytes, "");
        assert_eq!(err.code.http_status(), 422);
        assert!(err.message.contains("does not compile"), "{}", err.message);
    }
}

#[test]
fn wat_text_is_accepted_where_text_is_allowed() {
    let text = br#"(module (memory (export "memory") 1) (func (export "forge_alloc") (param i32) (result i32) (i32.const 8))
                    (func (export "process") (param i32 i32) (result i64) (i64.const 0)))"#;
    let binary = forge_runtime::wasm_from_binary_or_text(text).unwrap();
    assert!(binary.starts_with(b"\0asm"));
    assert!(runtime().prepare(&manifest(""), &binary).is_ok());
    let already = forge_runtime::wasm_from_binary_or_text(&binary).unwrap();
    assert_eq!(&*already, &*binary);
    assert!(forge_runtime::wasm_from_binary_or_text(b"(module (func").is_err());
}

#[test]
fn missing_exports_are_all_reported() {
    let wasm =
        wat::parse_str(r#"(module (func (export "other") (param i32) (result i32) (local.get 0)))"#).unwrap();
    let err = rejection(&wasm, r#"entry_points = ["process", "summarize"]"#);
    assert_eq!(
        fields(&err),
        ["wasm.exports.memory", "wasm.exports.forge_alloc", "wasm.exports.process", "wasm.exports.summarize"]
    );
}

#[test]
fn missing_abi_exports_name_the_sdk_that_provides_them() {
    let wasm =
        wat::parse_str(r#"(module (func (export "process") (param i32 i32) (result i64) (i64.const 0)))"#)
            .unwrap();
    let err = rejection(&wasm, "");
    assert_eq!(fields(&err), ["wasm.exports.memory", "wasm.exports.forge_alloc"]);
    for fix in ["--import-memory", "forge_sdk::entry_point!", "sdks/c/forge.c", "export { forge_alloc }"] {
        assert!(err.message.contains(fix), "{fix} missing from: {}", err.message);
    }
}

#[test]
fn a_command_module_is_told_to_build_as_a_reactor() {
    let wasm = guest(
        "",
        r#"(func (export "_start"))
           (func (export "process") (param i32 i32) (result i64) (i64.const 0))"#,
    );
    let err = rejection(&wasm, "");
    assert_eq!(fields(&err), ["wasm.exports._start"]);
    for fix in ["built as a command", "-mexec-model=reactor", r#"crate-type = ["cdylib"]"#, "--exportStart"] {
        assert!(err.message.contains(fix), "{fix} missing from: {}", err.message);
    }
}

#[test]
fn an_entry_point_not_exported_names_the_exports_and_the_fix() {
    let wasm = guest(
        "",
        r#"(func (export "proces") (param i32 i32) (result i64) (i64.const 0))
           (func (export "summary") (param i32 i32) (result i64) (i64.const 0))"#,
    );
    let err = rejection(&wasm, r#"entry_points = ["process"]"#);
    assert_eq!(fields(&err), ["wasm.exports.process"]);
    assert!(err.message.contains("(it exports functions: `proces`, `summary`)"), "{}", err.message);
    assert!(err.message.contains("forge_sdk::entry_point!(process)"), "{}", err.message);
    assert!(err.message.contains("or remove it from `entry_points`"));

    let many: String = (0..40)
        .map(|i| format!(r#"(func (export "f{i}") (param i32 i32) (result i64) (i64.const 0))"#))
        .collect();
    let err = rejection(&guest("", &many), "");
    assert!(err.message.contains("`f15` and 24 more"), "the list is capped: {}", err.message);
    assert!(!err.message.contains("`f16`"));
}

#[test]
fn a_result_that_is_not_an_object_says_what_to_return() {
    for (text, kind) in [("[1, 2]", "an array"), ("42", "a number"), (r#""done""#, "a string")] {
        let result = run_once(&returning(text), "");
        assert_eq!(result.error_kind, Some(forge_model::ErrorKind::InvalidOutput));
        let error = result.error.unwrap();
        assert!(error.contains(&format!("result must be a JSON object, not {kind}")), "{error}");
        assert!(
            error.contains("a struct deriving Serialize") && error.contains("cJSON_CreateObject"),
            "{error}"
        );
    }
}

#[test]
fn export_signatures_are_checked() {
    let wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "forge_alloc") (param i64) (result i32) (i32.const 0))
             (func (export "process") (param i32 i32) (result i32) (i32.const 0))
             (func (export "_initialize") (param i32)))"#,
    )
    .unwrap();
    let err = rejection(&wasm, "");
    assert_eq!(
        fields(&err),
        ["wasm.exports.forge_alloc", "wasm.exports.process", "wasm.exports._initialize"]
    );
    assert!(err.message.contains("(i32, i32) -> i64"));
}

#[test]
fn capability_gated_import_without_the_capability_names_both() {
    let wasm = guest(
        r#"(import "forge" "capsule_create" (func (param i32 i32) (result i64)))
           (import "forge" "http_request" (func (param i32 i32) (result i64)))"#,
        r#"(func (export "process") (param i32 i32) (result i64) (i64.const 0))"#,
    );
    let err = rejection(&wasm, r#"capabilities = ["capsule:read"]"#);
    assert_eq!(fields(&err), ["wasm.imports.forge.capsule_create", "wasm.imports.forge.http_request"]);
    assert!(err.message.contains("`capsule_create` needs capability `capsule:write`"), "{}", err.message);
    assert!(err.message.contains("`http_request` needs capability `network:http`"));
    assert!(
        err.message.contains(r#"add "capsule:write" to `capabilities` in overlay.toml"#),
        "{}",
        err.message
    );
    assert!(err.message.contains(r#"add "network:http" to `capabilities`"#));
    let granted = r#"capabilities = ["capsule:write", "network:http"]"#;
    assert!(runtime().prepare(&manifest(granted), &wasm).is_ok());
}

#[test]
fn unknown_and_mistyped_imports_are_rejected() {
    let wasm = guest(
        r#"(import "env" "abort" (func))
           (import "forge" "teleport" (func (param i32 i32)))
           (import "forge" "log_info" (func (param i32)))
           (import "forge" "fail" (global i32))"#,
        r#"(func (export "process") (param i32 i32) (result i64) (i64.const 0))"#,
    );
    let err = rejection(&wasm, "");
    assert_eq!(
        fields(&err),
        [
            "wasm.imports.env.abort",
            "wasm.imports.forge.teleport",
            "wasm.imports.forge.log_info",
            "wasm.imports.forge.fail"
        ]
    );
    assert!(err.message.contains("not allowed"));
}

#[test]
fn unknown_wasi_function_cannot_be_linked() {
    let wasm = guest(
        r#"(import "wasi_snapshot_preview1" "make_coffee" (func))"#,
        r#"(func (export "process") (param i32 i32) (result i64) (i64.const 0))"#,
    );
    let err = rejection(&wasm, "");
    assert!(
        err.message.contains("cannot be linked") && err.message.contains("make_coffee"),
        "{}",
        err.message
    );
}

#[test]
fn initial_memory_must_fit_the_manifest() {
    let wasm = guest(
        "",
        r#"(memory (export "memory") 32) (func (export "process") (param i32 i32) (result i64) (i64.const 0))"#,
    );
    let err = rejection(&wasm, "max_memory_mb = 1");
    assert_eq!(fields(&err), ["wasm.exports.memory"]);
    assert!(err.message.contains("2097152 bytes does not fit max_memory_mb = 1"));
    assert!(runtime().prepare(&manifest("max_memory_mb = 2"), &wasm).is_ok());
}

#[test]
fn invocation_refusals_happen_before_running() {
    let rt = runtime();
    let prepared = rt.prepare(&manifest(""), &returning("{}")).unwrap();
    let me = identity(forge_model::TrustLevel::Standard);
    let unknown = forge_model::OverlayInvocation::new("summarize", args(serde_json::json!({})));
    let err = invoke(&rt, &prepared, &me, &unknown).unwrap_err();
    assert_eq!(err.code.http_status(), 422);
    assert!(err.message.contains("available: process"));
    let big =
        forge_model::OverlayInvocation::new("process", args(serde_json::json!({"x": "y".repeat(2 << 20)})));
    assert_eq!(invoke(&rt, &prepared, &me, &big).unwrap_err().code.http_status(), 413);
    let bad_timeout = forge_model::OverlayInvocation {
        timeout_ms: Some(5),
        ..forge_model::OverlayInvocation::new("process", Default::default())
    };
    assert_eq!(invoke(&rt, &prepared, &me, &bad_timeout).unwrap_err().code.http_status(), 422);
}

#[test]
fn compiled_code_can_be_kept_on_disk_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = || forge_runtime::RuntimeConfig {
        compiled_cache_dir: Some(dir.path().to_owned()),
        max_instances: 4,
        ..forge_runtime::RuntimeConfig::default()
    };
    let wasm = returning(r#"{"kept": true}"#);
    let files = || walk(dir.path());
    let first = forge_runtime::Runtime::new(config(), Default::default()).unwrap();
    first.prepare(&manifest(""), &wasm).unwrap();
    drop(first);
    let stored = files();
    assert!(!stored.is_empty(), "compiling wrote the cache");
    // A new runtime (a restart) finds the module there instead of compiling it again.
    let second = forge_runtime::Runtime::new(config(), Default::default()).unwrap();
    let prepared = second.prepare(&manifest(""), &wasm).unwrap();
    assert_eq!(files(), stored, "nothing new was compiled");
    let outcome = invoke(
        &second,
        &prepared,
        &identity(forge_model::TrustLevel::Sandbox),
        &forge_model::OverlayInvocation::new("process", Default::default()),
    );
    assert_eq!(outcome.unwrap().result.result.unwrap()["kept"], true);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if !path.file_name().unwrap().to_string_lossy().contains('.') {
            // Compiled entries only: Wasmtime's cache also keeps `.stats` files and `.wip` files of
            // writes in progress beside them.
            files.push(path);
        }
    }
    files.sort();
    files
}
