//! `forge-overlay demo`, run as the real binary: it starts its own server, tells the whole story and
//! exits 0; a kept data directory holds the server's data and log afterwards.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_forge-overlay");

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

    let again = Command::new(BIN).arg("demo").arg("--keep").arg(&kept).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
}
