//! The client subcommands, run as the real binary against a real server process over HTTP: each
//! one's happy path, its refusals (the server's message and code, exit 1), usage errors (exit 2) and
//! `--json` output that parses.

mod server;

use serde_json::{Value, json};
use server::{ADMIN_TOKEN, Launch, ServerProcess};
use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_forge-overlay");

fn fixture(name: &str) -> String {
    server::fixture(name).to_str().unwrap().to_owned()
}

/// A server on a fresh data directory, and the client binary pointed at it.
struct Server {
    process: ServerProcess,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let process = Launch::new(&dir.path().join("data")).start();
        Server { process, _dir: dir }
    }

    /// Runs the client as the admin.
    fn cli(&self, args: &[&str]) -> Run {
        self.cli_as(Some(ADMIN_TOKEN), args, None)
    }

    fn cli_as(&self, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Run {
        let mut command = Command::new(BIN);
        command.args(args).env("FORGE_URL", &self.process.url).env_remove("FORGE_TOKEN");
        if let Some(token) = token {
            command.env("FORGE_TOKEN", token);
        }
        run(command, stdin)
    }

    /// Registers and activates an example; returns its id.
    fn active(&self, example: &str) -> String {
        let wasm = fixture(&format!("{example}.wasm"));
        let manifest = fixture(&format!("{example}.toml"));
        let registered =
            self.cli(&["overlay", "register", "--wasm", &wasm, "--manifest", &manifest, "--json"]);
        let id = registered.ok().json()["id"].as_str().unwrap().to_owned();
        self.cli(&["overlay", "activate", &id]).ok();
        id
    }
}

/// One finished run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(mut command: Command, stdin: Option<&str>) -> Run {
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(pipe);
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts the exit code and that stderr mentions each of `needles`.
    fn fails(self, code: i32, needles: &[&str]) -> Run {
        assert_eq!(self.code, code, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        for needle in needles {
            assert!(self.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", self.stderr);
        }
        self
    }

    fn says(self, needles: &[&str]) -> Run {
        for needle in needles {
            assert!(self.stdout.contains(needle), "stdout lacks {needle:?}:\n{}", self.stdout);
        }
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{}", self.stdout))
    }
}

#[test]
fn overlay_lifecycle_from_register_to_delete() {
    let server = Server::start();
    let (wasm, manifest) = (fixture("echo.wasm"), fixture("echo.toml"));
    let register = ["overlay", "register", "--wasm", &wasm, "--manifest", &manifest];
    server.cli(&register).ok().says(&["echo@0.1.0", "pending", "sandbox", "process, fail"]);
    server.cli(&register).fails(1, &["already registered", "conflict", "HTTP 409"]);
    let missing = ["overlay", "register", "--wasm", "/nonexistent.wasm", "--manifest", &manifest];
    server.cli(&missing).fails(2, &["cannot read /nonexistent.wasm"]);

    let listed = server.cli(&["overlay", "list", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["state"], "pending");
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    server.cli(&["overlay", "list"]).ok().says(&["NAME", "STATE", "echo", "page 1 of 1, 1 overlays in all"]);
    assert_eq!(server.cli(&["overlay", "list", "--state", "active", "--json"]).ok().json(), json!([]));
    server.cli(&["overlay", "list", "--state", "asleep"]).fails(2, &["unknown overlay state"]);

    assert_eq!(server.cli(&["overlay", "show", "echo@0.1.0", "--json"]).ok().json()["id"], id.as_str());
    server
        .cli(&["overlay", "show", "--name", "echo", "--version", "0.1.0"])
        .ok()
        .says(&[&id, "entry points"]);
    server.cli(&["overlay", "show", "echo@9.9.9"]).fails(1, &["not found", "not_found", "HTTP 404"]);
    server.cli(&["overlay", "show", "echo"]).fails(2, &["neither an overlay id"]);

    server.cli(&["overlay", "activate", "echo@0.1.0"]).ok().says(&["is now active"]);
    server.cli(&["overlay", "activate", &id]).fails(1, &["cannot activate", "validation_error"]);
    server.cli(&["overlay", "suspend", &id]).fails(1, &["reason is required"]);
    server.cli(&["overlay", "suspend", &id, "--reason", "maintenance"]).ok().says(&["is now suspended"]);
    server.cli(&["overlay", "resume", &id]).ok().says(&["is now active"]);
    server.cli(&["overlay", "release", &id]).fails(1, &["cannot release", "it is active"]);
    server.cli(&["overlay", "quarantine", &id]).fails(1, &["reason is required"]);
    server.cli(&["overlay", "quarantine", &id, "--reason", "suspicious"]).ok().says(&["is now quarantined"]);
    assert_eq!(server.cli(&["overlay", "release", &id, "--json"]).ok().json()["state"], "active");
    server
        .cli(&["overlay", "trust", &id, "standard", "--reason", "reviewed"])
        .ok()
        .says(&["trust level standard"]);
    server.cli(&["overlay", "trust", &id, "root"]).fails(2, &["unknown trust level"]);

    let events = server.cli(&["overlay", "events", "echo@0.1.0", "--json"]).ok().json();
    let actions: Vec<&str> =
        events.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in ["register", "activate", "suspend", "resume", "quarantine", "release", "set_trust_level"] {
        assert!(actions.contains(&action), "{action} missing from {actions:?}");
    }
    server.cli(&["overlay", "events", "echo@9.9.9"]).fails(1, &["not found"]);
    server.cli(&["overlay", "events", &id]).ok().says(&[
        "ACTION",
        "maintenance",
        "suspicious",
        "events in all",
    ]);

    server.cli(&["overlay", "deprecate", &id]).ok().says(&["is now deprecated"]);
    server.cli(&["overlay", "deprecate", &id]).fails(1, &["cannot deprecate"]);
    server.cli(&["overlay", "resume", &id]).fails(1, &["cannot resume"]);
    server.cli(&["overlay", "delete", &id, "--reason", "retired"]).ok().says(&["Deleted overlay"]);
    server.cli(&["overlay", "delete", &id]).fails(1, &["not found"]);
    server.cli(&["overlay", "health", &id]).fails(1, &["not found"]);
}

#[test]
fn invoke_prints_the_result_and_exits_1_when_the_overlay_failed() {
    let server = Server::start();
    let id = server.active("echo");

    let result = server.cli(&["overlay", "invoke", &id, "--args", r#"{"a": 1}"#, "--json"]).ok().json();
    assert_eq!(result["success"], true);
    assert_eq!(result["result"], json!({"echo": {"a": 1}}));
    server.cli(&["overlay", "invoke", "--name", "echo", "--args", r#"{"hello": "forge"}"#]).ok().says(&[
        "success",
        "yes",
        "\"hello\": \"forge\"",
        "fuel",
    ]);
    let failed = server.cli(&[
        "overlay",
        "invoke",
        "echo@0.1.0",
        "--function",
        "fail",
        "--args",
        r#"{"message": "boom"}"#,
    ]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    failed.says(&["no", "overlay_error", "boom"]);
    let failed_json = server.cli(&["overlay", "invoke", &id, "--function", "fail", "--json"]);
    assert_eq!(failed_json.code, 1);
    assert_eq!(failed_json.json()["success"], false);

    server
        .cli(&["overlay", "invoke", &id, "--function", "nope"])
        .fails(1, &["not an entry point", "HTTP 422"]);
    server.cli(&["overlay", "invoke", &id, "--args", "[1, 2]"]).fails(2, &["must be a JSON object"]);
    server.cli(&["overlay", "invoke", &id, "--args", "{oops"]).fails(2, &["not valid JSON"]);
    server.cli(&["overlay", "invoke", "--name", "nobody"]).fails(1, &["not_found"]);

    let health = server.cli(&["overlay", "health", "echo@0.1.0", "--json"]).ok().json();
    assert_eq!(health["invocation_count"], 4, "{health}");
    assert_eq!(health["failure_count"], 2, "{health}");
    server.cli(&["overlay", "health", &id]).ok().says(&["invocations", "failures", "2 (50%)", "p50"]);
}

#[test]
fn capsules_are_added_read_and_searched() {
    let server = Server::start();
    let added = server
        .cli(&[
            "capsule",
            "add",
            "Overlays run sandboxed.",
            "--type",
            "knowledge",
            "--metadata",
            r#"{"team": "core"}"#,
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(added["type"], "knowledge");
    assert_eq!(added["metadata"], json!({"team": "core"}));
    let id = added["id"].as_str().unwrap();
    server
        .cli_as(
            Some(ADMIN_TOKEN),
            &["capsule", "add", "-", "--type", "decision", "--trust-level", "sandbox"],
            Some("We sandbox every overlay."),
        )
        .ok()
        .says(&["decision", "sandbox", "We sandbox every overlay."]);
    server.cli(&["capsule", "add", "x", "--type", "rumour"]).fails(2, &["unknown capsule type"]);
    server
        .cli(&["capsule", "add", " ", "--type", "insight"])
        .fails(1, &["must not be empty", "validation_error"]);

    server.cli(&["capsule", "get", id]).ok().says(&["knowledge", "Overlays run sandboxed.", "core"]);
    server.cli(&["capsule", "get", "00000000-0000-0000-0000-000000000000"]).fails(1, &["not found"]);
    server.cli(&["capsule", "get", "nope"]).fails(2, &["invalid value"]);

    let hits = server.cli(&["capsule", "search", "sandboxed", "--json"]).ok().json();
    assert_eq!(hits[0]["capsule"]["id"], id, "{hits}");
    server.cli(&["capsule", "search", "sandboxed", "--limit", "5"]).ok().says(&[
        "SCORE",
        "knowledge",
        "capsules found",
    ]);
}

#[test]
fn user_create_prints_the_token_once_and_roles_hold() {
    let server = Server::start();
    let created = server.cli(&["user", "create", "alice", "--role", "user", "--json"]).ok().json();
    assert_eq!(created["user"]["roles"], json!(["user"]));
    let alice = created["token"].as_str().unwrap().to_owned();
    server
        .cli(&["user", "create", "bob", "--role", "operator", "--role", "user", "--trust-level", "trusted"])
        .ok()
        .says(&["bob", "operator, user", "trusted", "shown only this once", "fgo_", "export FORGE_TOKEN="]);
    server.cli(&["user", "create", "bad name!", "--role", "user"]).fails(1, &["name", "validation_error"]);
    server.cli(&["user", "create", "carol"]).fails(2, &["--role"]);

    let id = server.active("echo");
    server.cli_as(Some(&alice), &["overlay", "list"], None).ok().says(&["echo"]);
    server.cli_as(Some(&alice), &["overlay", "invoke", &id], None).ok();
    server
        .cli_as(Some(&alice), &["overlay", "suspend", &id, "--reason", "mine"], None)
        .fails(1, &["only admin or operator", "authorization_error", "HTTP 403"]);
    server
        .cli_as(Some(&alice), &["overlay", "trust", &id, "core"], None)
        .fails(1, &["only admin may set trust levels"]);
    server
        .cli_as(Some(&alice), &["user", "create", "mallory", "--role", "admin"], None)
        .fails(1, &["HTTP 403"]);
}

#[test]
fn bad_tokens_are_refused_and_missing_servers_are_usage_errors() {
    let server = Server::start();
    server
        .cli_as(Some("fgo_wrong"), &["overlay", "list"], None)
        .fails(1, &["authentication_error", "HTTP 401", "--token or FORGE_TOKEN"]);
    server.cli_as(None, &["capsule", "search", "x"], None).fails(1, &["HTTP 401"]);

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    server.cli(&["overlay", "list", "--url", &url]).fails(2, &["cannot reach the Forge server", "FORGE_URL"]);
    server.cli(&["overlay", "list", "--url", "ftp://example"]).fails(2, &["not an http(s) URL"]);
}

#[test]
fn user_tokens_revoke_tokens_disable_and_enable() {
    let server = Server::start();
    let created = server.cli(&["user", "create", "dora", "--role", "user", "--json"]).ok().json();
    let dora = created["token"].as_str().unwrap().to_owned();
    let listed = server.cli(&["user", "tokens", "dora", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"].as_str().unwrap().len(), 12);
    assert!(!listed.to_string().contains(&dora[4..]), "never the token");
    server.cli(&["user", "tokens", "dora"]).ok().says(&["ID", "CREATED", "REVOKED", "1 tokens"]);
    server.cli(&["user", "tokens", "nobody"]).fails(1, &["not_found", "HTTP 404"]);
    server
        .cli_as(Some(&dora), &["user", "tokens", "dora"], None)
        .fails(1, &["authorization_error", "HTTP 403"]);

    server.cli(&["user", "disable", "dora"]).ok().says(&["User dora is disabled"]);
    server.cli_as(Some(&dora), &["overlay", "list"], None).fails(1, &["HTTP 401"]);
    assert_eq!(server.cli(&["user", "enable", "dora", "--json"]).ok().json()["disabled"], false);
    server.cli_as(Some(&dora), &["overlay", "list"], None).ok();

    server.cli(&["user", "revoke-tokens", "dora"]).ok().says(&["Revoked 1 tokens of dora."]);
    server.cli_as(Some(&dora), &["overlay", "list"], None).fails(1, &["HTTP 401"]);
    assert_eq!(server.cli(&["user", "revoke-tokens", "dora", "--json"]).ok().json()["revoked"], 0);
}
