//! `new` and `build`, and the local commands finding a project's manifest and module by default:
//! the author's loop through the real binary.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `forge-overlay ARGS` run in `dir`.
fn forge_in(dir: &Path, args: &[&str]) -> Output {
    forge_command(dir, args).output().expect("forge-overlay runs")
}

fn forge_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_forge-overlay"));
    command.args(args).current_dir(dir);
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout_json(output: &Output) -> Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn fixture(name: &str) -> String {
    format!("{}/../../fixtures/wasm/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A target directory kept between runs for the generated projects' builds, beside this test's
/// own: their dependencies (serde, the SDK) are then compiled once, not on every run.
fn shared_target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<this test> -> target/new-projects
    exe.ancestors().nth(3).unwrap().join("new-projects")
}

/// `new --lang LANG` -> `build` -> `validate` -> `run`: the project writes `files`, builds with
/// `build_env` and greets whoever it is given, logging as it does.
fn new_project_loop(lang: &str, files: &[&str], build_env: &[(&str, &std::ffi::OsStr)]) {
    let dir = tempfile::tempdir().unwrap();
    let created = forge_in(dir.path(), &["new", "hello-overlay", "--lang", lang]);
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let project = dir.path().join("hello-overlay");
    for file in files.iter().chain(&["overlay.toml", "README.md", ".gitignore"]) {
        assert!(project.join(file).is_file(), "{file} was not written");
    }
    let manifest = std::fs::read_to_string(project.join("overlay.toml")).unwrap();
    assert!(manifest.contains(r#"name = "hello-overlay""#) && !manifest.contains("{{"), "{manifest}");

    let built = forge_command(&project, &["build"]).envs(build_env.iter().copied()).output().unwrap();
    assert_eq!(built.status.code(), Some(0), "{}", stderr(&built));
    assert!(project.join("hello-overlay.wasm").is_file());

    let validated = forge_in(&project, &["validate"]);
    assert_eq!(validated.status.code(), Some(0), "{}", stderr(&validated));
    assert_eq!(stdout_json(&validated)["entry_points"], serde_json::json!(["process"]));

    let ran = forge_in(&project, &["run", "--args", r#"{"name": "Ada"}"#]);
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    assert_eq!(stdout_json(&ran)["result"]["greeting"], "Hello, Ada!");
    assert!(stderr(&ran).contains("[info] greeting"), "the overlay's log: {}", stderr(&ran));
    let unnamed = forge_in(&project, &["run"]);
    assert_eq!(unnamed.status.code(), Some(0), "{}", stderr(&unnamed));
    assert_eq!(stdout_json(&unnamed)["result"]["greeting"], "Hello, world!");
}

#[test]
fn a_new_rust_project_builds_validates_and_runs() {
    // Offline: the generated project resolves its dependencies from what this checkout already has.
    let target = shared_target_dir();
    let env = [("CARGO_TARGET_DIR", target.as_os_str()), ("CARGO_NET_OFFLINE", "true".as_ref())];
    new_project_loop("rust", &["Cargo.toml", "src/lib.rs"], &env);
}

/// Needs clang-14 with wasi-libc (README, "Write one in C").
#[test]
fn a_new_c_project_builds_validates_and_runs() {
    let sdk = ["forge.h", "forge.c", "vendor/cjson/cJSON.h", "vendor/cjson/cJSON.c", "vendor/cjson/LICENSE"];
    let sdk = sdk.map(|file| format!("forge-sdk/{file}"));
    let files: Vec<&str> = sdk.iter().map(String::as_str).chain(["overlay.c"]).collect();
    new_project_loop("c", &files, &[]);
}

/// Needs Node.js and npm, with the npm registry reachable (the build runs `npm install`).
#[test]
fn a_new_assemblyscript_project_builds_validates_and_runs() {
    new_project_loop("assemblyscript", &["package.json", ".npmrc", "overlay.ts"], &[]);
}

#[test]
fn new_refuses_bad_names_and_existing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let bad = forge_in(dir.path(), &["new", "Hello World"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("^[a-z0-9-]+$"), "{}", stderr(&bad));
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let taken = forge_in(dir.path(), &["new", "taken"]);
    assert_eq!(taken.status.code(), Some(2));
    assert!(stderr(&taken).contains("exists"), "{}", stderr(&taken));
    assert_eq!(std::fs::read_dir(dir.path().join("taken")).unwrap().count(), 0, "nothing was written");
    let unknown = forge_in(dir.path(), &["new", "x", "--lang", "cobol"]);
    assert_eq!(unknown.status.code(), Some(2), "clap refuses an unknown language");
    let no_sdk = forge_in(dir.path(), &["new", "y", "--sdk-path", "/nonexistent/forge-sdk"]);
    assert_eq!(no_sdk.status.code(), Some(2));
    assert!(stderr(&no_sdk).contains("--sdk-path"), "{}", stderr(&no_sdk));
    let c_sdk = forge_in(dir.path(), &["new", "z", "--lang", "c", "--sdk-path", "."]);
    assert_eq!(c_sdk.status.code(), Some(2));
    assert!(stderr(&c_sdk).contains("carries its SDK"), "{}", stderr(&c_sdk));
    assert!(!dir.path().join("z").exists(), "nothing was written");
}

/// A project whose build command copies the echo fixture: the loop without a compiler.
fn echo_project(build: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let manifest =
        format!("name = \"echo\"\nversion = \"0.1.0\"\nentry_points = [\"process\", \"fail\"]\n{build}");
    std::fs::write(dir.path().join("overlay.toml"), manifest).unwrap();
    dir
}

#[test]
fn build_runs_the_command_and_the_local_commands_use_its_module() {
    let build = format!(
        "[build]\ncommand = \"mkdir -p out && cp '{}' out/echo.wasm\"\nwasm = \"out/echo.wasm\"\n",
        fixture("echo.wasm")
    );
    let project = echo_project(&build);
    let before = forge_in(project.path(), &["run"]);
    assert_eq!(before.status.code(), Some(2));
    assert!(stderr(&before).contains("run `forge-overlay build` first"), "{}", stderr(&before));

    let built = forge_in(project.path(), &["build"]);
    assert_eq!(built.status.code(), Some(0), "{}", stderr(&built));
    assert!(String::from_utf8_lossy(&built.stdout).trim().ends_with("out/echo.wasm"));

    let ran = forge_in(project.path(), &["run", "--args", r#"{"a": 1}"#]);
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    assert_eq!(stdout_json(&ran)["result"]["echo"]["a"], 1, "the manifest's first entry point ran");
    let failed = forge_in(project.path(), &["run", "--function", "fail"]);
    assert_eq!(failed.status.code(), Some(1));
    let bench = forge_in(project.path(), &["bench", "--iterations", "10"]);
    assert_eq!(bench.status.code(), Some(0), "{}", stderr(&bench));
    assert_eq!(stdout_json(&bench)["calls"], 10);

    // From elsewhere, --manifest finds the module relative to the manifest.
    let manifest = project.path().join("overlay.toml");
    let validated = forge_in(Path::new("/"), &["validate", "--manifest", manifest.to_str().unwrap()]);
    assert_eq!(validated.status.code(), Some(0), "{}", stderr(&validated));
    assert_eq!(stdout_json(&validated)["entry_points"], serde_json::json!(["process", "fail"]));
}

#[test]
fn build_errors_say_what_is_missing() {
    let empty = tempfile::tempdir().unwrap();
    let no_manifest = forge_in(empty.path(), &["build"]);
    assert_eq!(no_manifest.status.code(), Some(2));
    assert!(
        stderr(&no_manifest).contains("overlay.toml") && stderr(&no_manifest).contains("forge-overlay new")
    );
    let run = forge_in(empty.path(), &["run"]);
    assert_eq!(run.status.code(), Some(2), "run without a module or a project is refused");

    let no_build = echo_project("");
    let refused = forge_in(no_build.path(), &["build"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("has no [build] table"), "{}", stderr(&refused));
    let run = forge_in(no_build.path(), &["validate"]);
    assert!(stderr(&run).contains("or pass --wasm"), "{}", stderr(&run));

    let failing = echo_project("[build]\ncommand = \"echo compiling >&2; exit 3\"\nwasm = \"echo.wasm\"\n");
    let failed = forge_in(failing.path(), &["build"]);
    assert_eq!(failed.status.code(), Some(1));
    let text = stderr(&failed);
    assert!(text.contains("compiling") && text.contains("the build command failed"), "{text}");

    let silent = echo_project("[build]\ncommand = \"true\"\nwasm = \"echo.wasm\"\n");
    let missing = forge_in(silent.path(), &["build"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("echo.wasm does not exist"), "{}", stderr(&missing));
}
