//! `run`, `validate` and `bench`: the local commands, through the real binary.

use serde_json::Value;
use std::process::{Command, Output};

fn forge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_forge-overlay")).args(args).output().expect("forge-overlay runs")
}

fn fixture(name: &str) -> String {
    format!("{}/../../fixtures/wasm/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn stdout_json(output: &Output) -> Value {
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn run_prints_the_result_and_exits_by_outcome() {
    let (wasm, manifest) = (fixture("text-stats.wasm"), fixture("text-stats.toml"));
    let ok = forge(&[
        "run",
        "--wasm",
        &wasm,
        "--manifest",
        &manifest,
        "--function",
        "process",
        "--args",
        r#"{"text": "One fish. Two fish."}"#,
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let result = stdout_json(&ok);
    assert_eq!((result["success"].as_bool(), result["result"]["words"].as_u64()), (Some(true), Some(4)));
    assert!(String::from_utf8_lossy(&ok.stderr).contains("[info]"), "the overlay's log goes to stderr");

    let (echo, echo_manifest) = (fixture("echo.wasm"), fixture("echo.toml"));
    let failed = forge(&[
        "run",
        "--wasm",
        &echo,
        "--manifest",
        &echo_manifest,
        "--function",
        "fail",
        "--args",
        r#"{"message": "nope"}"#,
    ]);
    assert_eq!(failed.status.code(), Some(1));
    let result = stdout_json(&failed);
    assert_eq!(
        (result["error_kind"].as_str(), result["error"].as_str()),
        (Some("overlay_error"), Some("nope"))
    );
}

#[test]
fn run_rejects_before_running_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm but not really").unwrap();
    let rejected = forge(&["run", "--wasm", junk.to_str().unwrap(), "--function", "process"]);
    assert_eq!(rejected.status.code(), Some(2));
    assert!(rejected.stdout.is_empty());
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("rejected"), "the reason is on stderr");

    let bad_manifest = dir.path().join("overlay.toml");
    std::fs::write(&bad_manifest, "name = \"Bad Name\"\nversion = \"1\"\n").unwrap();
    let echo = fixture("echo.wasm");
    let rejected = forge(&[
        "run",
        "--wasm",
        &echo,
        "--manifest",
        bad_manifest.to_str().unwrap(),
        "--function",
        "process",
    ]);
    assert_eq!(rejected.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&rejected.stderr);
    assert!(stderr.contains("name") && stderr.contains("version"), "{stderr}");
}

#[test]
fn run_accepts_wat_text_with_default_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("answer.wat");
    std::fs::write(
        &wat,
        r#"(module (memory (export "memory") 1)
             (data (i32.const 16) "{\"answer\": 42}")
             (func (export "forge_alloc") (param i32) (result i32) (i32.const 1024))
             (func (export "answer") (param i32 i32) (result i64)
               (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 14))))"#,
    )
    .unwrap();
    let ok = forge(&["run", "--wasm", wat.to_str().unwrap(), "--function", "answer", "--timeout-ms", "500"]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(stdout_json(&ok)["result"]["answer"], 42);
}

#[test]
fn validate_reports_the_checks() {
    let valid = forge(&[
        "validate",
        "--wasm",
        &fixture("capsule-insight.wasm"),
        "--manifest",
        &fixture("capsule-insight.toml"),
    ]);
    assert_eq!(valid.status.code(), Some(0));
    let report = stdout_json(&valid);
    assert_eq!(report["valid"], true);
    assert!(report["host_imports"].as_array().unwrap().contains(&Value::from("capsule_create")));
    let rejected =
        forge(&["validate", "--wasm", &fixture("capsule-insight.wasm"), "--manifest", &fixture("echo.toml")]);
    assert_eq!(rejected.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("needs capability"));
}

#[test]
fn bench_prints_one_json_line_of_figures() {
    let args = r#"{"text": "hello world"}"#;
    let bench = forge(&[
        "bench",
        "--wasm",
        &fixture("count-vowels.wasm"),
        "--manifest",
        &fixture("count-vowels.toml"),
        "--function",
        "count_vowels",
        "--args",
        args,
        "--iterations",
        "200",
        "--concurrency",
        "2",
    ]);
    assert_eq!(bench.status.code(), Some(0), "{}", String::from_utf8_lossy(&bench.stderr));
    let report = stdout_json(&bench);
    assert_eq!(report["calls"], 200);
    for key in ["seconds", "calls_per_sec", "p50_us", "p99_us"] {
        assert!(report[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {report}");
    }
    assert!(report["p50_us"].as_f64() <= report["p99_us"].as_f64());
}

#[test]
fn run_reaches_the_mounts_given_with_the_same_checks_as_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (docs, notes) = (dir.path().join("docs"), dir.path().join("notes"));
    std::fs::create_dir(&docs).unwrap();
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(docs.join("a.txt"), "local docs").unwrap();
    let (wasm, manifest) = (fixture("file-notes.wasm"), fixture("file-notes.toml"));
    let docs_mount = format!("docs={}", docs.display());
    let run = |notes_mount: &str, function: &str, args: &str| {
        forge(&[
            "run",
            "--wasm",
            &wasm,
            "--manifest",
            &manifest,
            "--mount",
            &docs_mount,
            "--mount",
            notes_mount,
            "--function",
            function,
            "--args",
            args,
        ])
    };
    let writable = format!("notes={}:rw", notes.display());
    let read = run(&writable, "read_file", r#"{"path": "/docs/a.txt"}"#);
    assert_eq!(read.status.code(), Some(0), "{}", String::from_utf8_lossy(&read.stderr));
    assert_eq!(stdout_json(&read)["result"]["ok"], "local docs");
    let written = run(&writable, "write_files", r#"{"files": [{"path": "/out/s.txt", "content": "hi"}]}"#);
    assert_eq!(written.status.code(), Some(0), "{}", String::from_utf8_lossy(&written.stderr));
    assert_eq!(std::fs::read_to_string(notes.join("s.txt")).unwrap(), "hi");

    let read_only = run(&format!("notes={}:ro", notes.display()), "read_file", "{}");
    assert_eq!(read_only.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&read_only.stderr).contains("mount `notes`, which is read-only"));
    let missing = forge(&["run", "--wasm", &wasm, "--manifest", &manifest, "--function", "read_file"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("mount `docs`, which this host does not define")
    );
}
