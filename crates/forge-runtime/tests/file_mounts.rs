//! `file:read` / `file:write` through WASI preopens, with a real guest using `std::fs`
//! (examples/file-notes, built for wasm32-wasip1) and real directories: reads allowed, escapes by
//! `..`, absolute paths and symlinks refused, writes only with `file:write`, staged per call and
//! kept only within the quotas.

mod common;
use common::*;
use forge_model::{ErrorCode, ErrorKind, OverlayManifest, OverlayResult};
use forge_runtime::{HostServices, Mount, PreparedOverlay, Runtime, RuntimeConfig};
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};

/// `docs/` (read-only mount `docs`), `notes/` (writable mount `notes`) and `outside/`, holding a
/// secret no overlay may read.
struct Dirs {
    _root: tempfile::TempDir,
    root: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().to_owned();
        for dir in ["docs", "notes", "outside"] {
            fs::create_dir(path.join(dir)).unwrap();
        }
        fs::write(path.join("docs/a.txt"), "hello docs").unwrap();
        fs::write(path.join("outside/secret.txt"), "top secret").unwrap();
        std::os::unix::fs::symlink(path.join("outside/secret.txt"), path.join("docs/escape")).unwrap();
        std::os::unix::fs::symlink("../outside", path.join("docs/up")).unwrap();
        Dirs { _root: root, root: path }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn runtime(&self, max_file_write_bytes: u64, max_files_written: u32) -> Runtime {
        let mounts = vec![
            Mount { name: "docs".into(), dir: self.path("docs"), writable: false },
            Mount { name: "notes".into(), dir: self.path("notes"), writable: true },
        ];
        let config =
            RuntimeConfig { mounts, max_file_write_bytes, max_files_written, ..RuntimeConfig::default() };
        Runtime::new(config, HostServices::default()).unwrap()
    }
}

fn file_notes() -> (OverlayManifest, Vec<u8>) {
    let toml = String::from_utf8(fixture("file-notes.toml")).unwrap();
    (OverlayManifest::parse(&toml).unwrap(), fixture("file-notes.wasm"))
}

/// file-notes' manifest with one `file:read` / `file:write` capability naming `mount` at `path`.
fn with_grant(capability: &str, mount: &str, path: &str) -> OverlayManifest {
    let mut manifest = serde_json::to_value(file_notes().0).unwrap();
    manifest["capabilities"] =
        json!([{"name": capability, "constraints": {"mounts": [{"mount": mount, "path": path}]}}]);
    OverlayManifest::from_value(manifest).unwrap()
}

fn run(rt: &Runtime, prepared: &PreparedOverlay, function: &str, args: Value) -> OverlayResult {
    call(rt, prepared, function, args).result
}

/// The guest's answer of a call that ran to its end.
fn answer(result: OverlayResult) -> Value {
    assert!(result.success, "{result:?}");
    Value::Object(result.result.unwrap())
}

fn write(files: &[(&str, &str)]) -> Value {
    json!({"files": files.iter().map(|(path, content)| json!({"path": path, "content": content})).collect::<Vec<_>>()})
}

#[test]
fn a_mount_is_read_with_std_fs() {
    let dirs = Dirs::new();
    let rt = dirs.runtime(1 << 20, 16);
    let (manifest, wasm) = file_notes();
    let prepared = rt.prepare(&manifest, &wasm).unwrap();
    assert_eq!(
        answer(run(&rt, &prepared, "read_file", json!({"path": "/docs/a.txt"}))),
        json!({"ok": "hello docs"})
    );
    let listed = answer(run(&rt, &prepared, "list_dir", json!({"path": "/docs"})));
    assert_eq!(listed, json!({"ok": ["a.txt", "escape", "up"]}));
}

#[test]
fn no_escape_by_dot_dot_absolute_paths_or_symlinks() {
    let dirs = Dirs::new();
    let rt = dirs.runtime(1 << 20, 16);
    let (manifest, wasm) = file_notes();
    let prepared = rt.prepare(&manifest, &wasm).unwrap();
    let secret = dirs.path("outside/secret.txt");
    for path in [
        "/docs/../outside/secret.txt",
        "/docs/../../../../../../etc/passwd",
        "/etc/passwd",
        secret.to_str().unwrap(),
        "/docs/escape",
        "/docs/up/secret.txt",
        "/out/../docs/a.txt",
    ] {
        let answer = answer(run(&rt, &prepared, "read_file", json!({"path": path})));
        assert!(answer["error"].is_string(), "{path} must be refused: {answer}");
        assert!(!answer.to_string().contains("top secret"), "{path}");
    }
    let escaping_write =
        answer(run(&rt, &prepared, "write_files", write(&[("/out/../outside/planted.txt", "x")])));
    assert!(escaping_write["error"].is_string(), "{escaping_write}");
    assert!(!dirs.path("outside/planted.txt").exists());
}

#[test]
fn writes_need_file_write_and_a_writable_mount() {
    let dirs = Dirs::new();
    let rt = dirs.runtime(1 << 20, 16);
    let (_, wasm) = file_notes();
    let read_only = with_grant("file:read", "notes", "/out");
    let prepared = rt.prepare(&read_only, &wasm).unwrap();
    let refused = answer(run(&rt, &prepared, "write_files", write(&[("/out/new.txt", "x")])));
    assert!(refused["error"].is_string(), "file:read alone cannot write: {refused}");
    assert!(!dirs.path("notes/new.txt").exists());

    let (manifest, _) = file_notes();
    let prepared = rt.prepare(&manifest, &wasm).unwrap();
    let refused = answer(run(&rt, &prepared, "write_files", write(&[("/docs/a.txt", "overwritten")])));
    assert!(refused["error"].is_string(), "/docs is read-only: {refused}");
    assert_eq!(fs::read_to_string(dirs.path("docs/a.txt")).unwrap(), "hello docs");
}

#[test]
fn registration_refuses_unknown_mounts_and_writes_to_read_only_ones() {
    let dirs = Dirs::new();
    let rt = dirs.runtime(1 << 20, 16);
    let (_, wasm) = file_notes();
    let unknown = with_grant("file:read", "home", "/h");
    let err = rt.prepare(&unknown, &wasm).err().unwrap();
    assert_eq!(err.code, ErrorCode::ValidationError);
    assert!(
        Value::Object(err.details.clone())
            .to_string()
            .contains("mount `home`, which this host does not define"),
        "{err:?}"
    );
    let write_ro = with_grant("file:write", "docs", "/d");
    let err = rt.prepare(&write_ro, &wasm).err().unwrap();
    assert!(
        Value::Object(err.details.clone()).to_string().contains("mount `docs`, which is read-only"),
        "{err:?}"
    );
}

#[test]
fn writes_land_whole_when_the_call_succeeds() {
    let dirs = Dirs::new();
    let rt = dirs.runtime(1 << 20, 16);
    let (manifest, wasm) = file_notes();
    let prepared = rt.prepare(&manifest, &wasm).unwrap();
    fs::write(dirs.path("notes/summary.txt"), "old").unwrap();
    let files = [("/out/summary.txt", "new summary"), ("/out/jan.txt", "january")];
    let done = answer(run(&rt, &prepared, "write_files", write(&files)));
    assert_eq!(done, json!({"ok": 18}));
    assert_eq!(fs::read_to_string(dirs.path("notes/summary.txt")).unwrap(), "new summary");
    assert_eq!(fs::read_to_string(dirs.path("notes/jan.txt")).unwrap(), "january");
    assert_eq!(entries(&dirs.path("notes")), ["jan.txt", "summary.txt"], "no temporary file is left behind");
    // A call's write area is its own: it starts empty, whatever earlier calls committed.
    assert_eq!(answer(run(&rt, &prepared, "list_dir", json!({"path": "/out"}))), json!({"ok": []}));
}

#[test]
fn writes_past_the_quotas_are_refused_as_they_happen() {
    let dirs = Dirs::new();
    let rt = dirs.runtime(100, 2);
    let (manifest, wasm) = file_notes();
    let prepared = rt.prepare(&manifest, &wasm).unwrap();
    let big = "x".repeat(101);
    let too_big = answer(run(&rt, &prepared, "write_files", write(&[("/out/big.txt", &big)])));
    assert!(too_big["error"].as_str().unwrap().to_lowercase().contains("quota"), "{too_big}");
    let kept = fs::read(dirs.path("notes/big.txt")).unwrap();
    assert!(kept.is_empty(), "the file was created within the quota, but not a byte of it was written");
    fs::remove_file(dirs.path("notes/big.txt")).unwrap();

    let files = [("/out/a", "1"), ("/out/b", "2"), ("/out/c", "3")];
    let too_many = answer(run(&rt, &prepared, "write_files", write(&files)));
    assert!(too_many["error"].as_str().unwrap().to_lowercase().contains("quota"), "{too_many}");
    assert_eq!(entries(&dirs.path("notes")), ["a", "b"], "the files within the quota are kept");
}

#[test]
fn a_call_past_the_quota_by_other_means_fails_and_keeps_nothing() {
    let dirs = Dirs::new();
    let rt = dirs.runtime(100, 2);
    // Creates /out/big (the first preopen is descriptor 3) and grows it to 1000 bytes without
    // writing a byte: only the check at the end of the call sees it.
    let grower = guest(
        r#"(import "wasi_snapshot_preview1" "path_open"
             (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "fd_filestat_set_size" (func $set_size (param i32 i64) (result i32)))"#,
        r#"(data (i32.const 16) "big")
           (func (export "process") (param i32 i32) (result i64)
             (drop (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 3) (i32.const 1)
                               (i64.const 0x1fffffff) (i64.const 0) (i32.const 0) (i32.const 64)))
             (drop (call $set_size (i32.load (i32.const 64)) (i64.const 1000)))
             (call $pack (i32.const 0) (i32.const 0)))"#,
    );
    let grant = r#"capabilities = [{ name = "file:write", constraints = { mounts = [{ mount = "notes", path = "/out" }] } }]"#;
    let prepared = rt.prepare(&manifest(grant), &grower).unwrap();
    let failed = run(&rt, &prepared, "process", json!({}));
    assert_eq!(failed.error_kind, Some(ErrorKind::OverlayError), "{failed:?}");
    assert!(failed.error.unwrap().contains("max_file_write_bytes"));
    assert_eq!(entries(&dirs.path("notes")), [] as [&str; 0]);
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}
