//! `forge-overlay demo`, run as the real binary: it starts its own server, tells the whole story and
//! exits 0; a kept data directory holds the server's data and log afterwards.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_forge-overlay");

/// `bash -c LINE` in `dir` with this build's `forge-overlay` first on PATH and none of the caller's
/// `FORGE_*` variables.
fn shell(line: &str, dir: &Path) -> Command {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut command = Command::new("bash");
    command.arg("-c").arg(line).current_dir(dir).env("PATH", path);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FORGE_") {
            command.env_remove(name);
        }
    }
    command
}

#[test]
fn demo_drives_flaky_into_quarantine_and_stops_its_server() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("demo");
    let output = Command::new(BIN).arg("demo").arg("--keep").arg(&kept).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for step in [
        "echo@0.1.0",
        "text-stats@0.1.0",
        "capsule-insight@0.1.0",
        "fetch-json@0.1.0",
        "file-notes@0.1.0",
        "Overlays see only the directories the operator mounts",
        "file-notes write_files",
        "\"status\":200",
        "it wrote a capsule (knowledge): {\"city\":\"Lisbon\"",
        "privileged: needs an admin's activation",
        "trust sandbox -> standard",
        "\"found\":3",
        "calls: ok ok ok FAIL FAIL FAIL FAIL FAIL FAIL FAIL",
        "7 of 10 calls failed",
        "the server quarantined it by itself",
        "one more call is refused",
        "quarantined",
        "auto_quarantine",
        "Server stopped cleanly (SIGTERM, exit 0)",
        "Try it yourself",
    ] {
        assert!(stdout.contains(step), "the demo did not say {step:?}:\n{stdout}");
    }
    assert!(kept.join("server.log").exists(), "the kept directory holds the server's log");
    let written = std::fs::read_to_string(kept.join("mounts/notes/summary.txt")).unwrap();
    assert_eq!(written, "Read through the docs mount.", "file-notes wrote through its mount");

    let again = Command::new(BIN).arg("demo").arg("--keep").arg(&kept).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
}

/// The "Try it yourself" lines of a demo kept in a relative directory, run as printed from where the
/// demo ran. Only the port differs: the printed server gets a free one through `FORGE_BIND` (the
/// lines name no port), and the clients its URL, so that parallel tests cannot collide on 8000.
#[test]
fn a_kept_demos_lines_work_from_where_it_ran() {
    let fresh = tempfile::tempdir().unwrap();
    let output = shell(&format!("{BIN} demo --keep ./kept"), fresh.path()).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "demo failed\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let tried = stdout.split("Try it yourself").nth(1).unwrap().replace("\\\n", " ");
    let lines: Vec<&str> =
        tried.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).collect();
    let token = lines[0].strip_prefix("export FORGE_TOKEN=").expect("the token comes first");
    let serve = lines[1].strip_suffix(" &").expect("then the server, in the background");
    assert!(serve.ends_with("serve --data-dir ./kept"), "{serve}");

    let mut server = shell(serve, fresh.path())
        .env("FORGE_TOKEN", token)
        .env("FORGE_BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut listening = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut listening).unwrap();
    let url = listening.trim().strip_prefix("listening on ").map(str::to_owned);
    for line in &lines[2..] {
        let Some(url) = &url else { break };
        let line = line.replace("http://127.0.0.1:8000", url);
        let ran =
            shell(&line, fresh.path()).env("FORGE_TOKEN", token).env("FORGE_URL", url).output().unwrap();
        let out = String::from_utf8_lossy(&ran.stdout);
        assert!(ran.status.success(), "{line}\n{out}\n{}", String::from_utf8_lossy(&ran.stderr));
        if line.starts_with("curl") {
            assert!(out.contains("\"success\":true"), "{line}\n{out}");
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(url.is_some(), "the printed server did not start: {listening:?}");
}
