//! `network:http` end to end: an overlay registered through the API (its patterns checked against
//! the operator's `--http-allowed-hosts`), activated, and invoked against an HTTP server on
//! 127.0.0.1 started by the test; the request logged and counted in `/metrics`. Locally too:
//! `forge-overlay run` uses the same client and checks.

mod server;

use forge_model::{ErrorCode, ErrorKind, LifecycleAction};
use serde_json::json;
use server::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

/// Answers every request on 127.0.0.1 with a small JSON document; returns its port.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let body = r#"{"price": 42}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    port
}

fn fetch_manifest(version: &str, hosts: &[String]) -> String {
    let hosts = serde_json::to_string(hosts).unwrap();
    format!(
        "name = \"fetcher\"\nversion = \"{version}\"\n\
         capabilities = [{{ name = \"network:http\", constraints = {{ hosts = {hosts} }} }}]\n"
    )
}

#[test]
fn an_allowed_request_succeeds_through_the_api_and_is_logged_and_counted() {
    let port = upstream();
    let dir = tempfile::tempdir().unwrap();
    let server =
        Launch::new(&dir.path().join("data")).arg("--http-allowed-hosts").arg("http://127.0.0.1:*").start();
    let admin = server.admin();

    let outside = admin.register(
        fetch_manifest("0.9.0", &["api.example.com".into()]),
        forwarding_guest("http_request").into_bytes(),
        None,
    );
    let err = refusal(outside, 422, ErrorCode::ValidationError);
    assert!(
        err.message.contains("`api.example.com`") && err.message.contains("http_allowed_hosts"),
        "{err:?}"
    );

    let pattern = format!("http://127.0.0.1:{port}");
    let overlay = admin
        .register(fetch_manifest("1.0.0", &[pattern]), forwarding_guest("http_request").into_bytes(), None)
        .unwrap();
    assert!(overlay.requires_approval, "network:http is privileged");
    admin.transition(overlay.id, LifecycleAction::Activate, None).unwrap();

    let fetched =
        admin.invoke(overlay.id, &call("process", json!({"url": format!("http://127.0.0.1:{port}/quote")})));
    let result = fetched.unwrap().result.unwrap();
    assert_eq!(result["ok"]["status"], 200, "{result:?}");
    assert_eq!(result["ok"]["body"], r#"{"price": 42}"#);

    let elsewhere = json!({"url": format!("http://127.0.0.1:{}/quote", port.wrapping_add(1).max(1))});
    let denied = admin.invoke(overlay.id, &call("process", elsewhere)).unwrap();
    assert_eq!(denied.error_kind, Some(ErrorKind::CapabilityDenied), "{denied:?}");

    let metrics = server.anonymous().get("/metrics").body;
    let counted = r#"forge_overlay_http_requests_total{outcome="ok",overlay="fetcher"} 1"#;
    let text = metrics.as_str().unwrap();
    assert!(text.lines().any(|line| line == counted), "{metrics}");
    // One family per name: the service's outbound counter and the HTTP layer's request counter
    // share the exposition.
    let families: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("# TYPE ")).collect();
    let names: std::collections::BTreeSet<&str> =
        families.iter().filter_map(|f| f.split(' ').next()).collect();
    assert_eq!(names.len(), families.len(), "a metric name declared twice:\n{text}");
    let log = server.log();
    let line = log.lines().find(|line| line.contains("outbound http")).unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("fetcher") && line.contains(&format!("127.0.0.1:{port}/quote")) && line.contains("ok")
    );
}

#[test]
fn run_uses_the_same_client_and_checks() {
    let port = upstream();
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("fetch.wat");
    std::fs::write(&wasm, forwarding_guest("http_request")).unwrap();
    let run = |hosts: &[String], url: String| {
        let manifest = dir.path().join("overlay.toml");
        std::fs::write(&manifest, fetch_manifest("1.0.0", hosts)).unwrap();
        let args = json!({ "url": url }).to_string();
        let output = Command::new(env!("CARGO_BIN_EXE_forge-overlay"))
            .args(["run", "--wasm"])
            .arg(&wasm)
            .arg("--manifest")
            .arg(&manifest)
            .args(["--args", &args])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
    };
    let literal = run(&[format!("http://127.0.0.1:{port}")], format!("http://127.0.0.1:{port}/quote"));
    assert!(literal.contains(r#"\"price\": 42"#), "{literal}");
    let by_name = run(&[format!("http://localhost:{port}")], format!("http://localhost:{port}/quote"));
    assert!(by_name.contains("network_denied") && by_name.contains("loopback"), "{by_name}");
}
