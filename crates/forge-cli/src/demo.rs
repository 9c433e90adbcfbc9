//! `demo`: a newcomer's first five minutes. Starts a server on the embedded default (this very
//! binary, `serve`, on a free port) and drives it over real HTTP, as any client would: registers the
//! example overlays, activates them, seeds capsules, invokes each (fetch-json against a server on
//! loopback standing in for the outside world, file-notes on two mounts in the data directory), drives a failing overlay into automatic
//! quarantine, shows its health and audit trail, and stops the server with SIGTERM.

use crate::client::{Failure, render};
use clap::Args;
use forge_client::Client;
use forge_model::api::{PageQuery, TrustLevelBody};
use forge_model::{
    CapsuleType, LifecycleAction, NewCapsule, Overlay, OverlayInvocation, OverlayManifest, OverlayResult,
    OverlayState, QuarantinePolicy, TrustLevel,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Map, Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const EXIT_CODES: &str = "\
Exit status:
  0  the whole story ran
  1  the server refused a step (its message is printed)
  2  the server could not be started or reached, or did not behave as the story expects;
     or --keep names a directory that is not empty";

#[derive(Args)]
#[command(after_help = EXIT_CODES)]
pub struct DemoArgs {
    /// Keep the server's data (SQLite database, modules, server.log) in DIR instead of a temporary
    /// directory removed at the end; `serve --data-dir DIR` reopens it.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

/// The example overlays, embedded so the demo runs from the binary alone.
const EXAMPLES: [(&str, &[u8]); 5] = [
    (include_str!("../../../fixtures/wasm/echo.toml"), include_bytes!("../../../fixtures/wasm/echo.wasm")),
    (
        include_str!("../../../fixtures/wasm/text-stats.toml"),
        include_bytes!("../../../fixtures/wasm/text-stats.wasm"),
    ),
    (
        include_str!("../../../fixtures/wasm/capsule-insight.toml"),
        include_bytes!("../../../fixtures/wasm/capsule-insight.wasm"),
    ),
    (
        include_str!("../../../fixtures/wasm/fetch-json.toml"),
        include_bytes!("../../../fixtures/wasm/fetch-json.wasm"),
    ),
    (
        include_str!("../../../fixtures/wasm/file-notes.toml"),
        include_bytes!("../../../fixtures/wasm/file-notes.wasm"),
    ),
];

/// The operator mounts the demo's server offers, under its data directory: file-notes reads `docs`
/// (read-only) and writes `notes`.
const DOCS_MOUNT: &str = "mounts/docs";
const NOTES_MOUNT: &str = "mounts/notes";

/// The note file-notes reads from the `docs` mount.
const WELCOME_NOTE: (&str, &str) =
    ("welcome.txt", "Overlays see only the directories the operator mounts and their manifest names.");

/// What the stand-in for the outside world answers fetch-json.
const WORLD_DOCUMENT: &str = r#"{"city": "Lisbon", "forecast": "sunny", "high_c": 24}"#;

/// The patterns the demo's server lets manifests ask for: fetch-json's stand-in listens on
/// loopback, which its manifest names literally.
const DEMO_ALLOWED_HOSTS: &str = "http://127.0.0.1:*";

/// Capsules seeded for capsule-insight to find; each mentions "overlay", the query used.
const CAPSULES: [(CapsuleType, &str); 3] = [
    (
        CapsuleType::Knowledge,
        "Every overlay call runs in a fresh WebAssembly instance with fuel, memory and time limits.",
    ),
    (
        CapsuleType::Decision,
        "An overlay is quarantined automatically when more than half of at least 10 calls fail.",
    ),
    (CapsuleType::Policy, "An overlay asking for capsule:write waits for an admin's activation."),
];

/// The flaky overlay's calls: a few successes, then failures, so that more than half of the
/// policy's minimum number of calls fail.
const FLAKY_SUCCESSES: u64 = 3;

/// How long the server may take to say it is listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to shut down after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Width of a result or argument summary on one line.
const SUMMARY_CHARS: usize = 72;

pub fn demo(args: DemoArgs) -> ExitCode {
    let temporary;
    let dir = match &args.keep {
        Some(dir) => match prepare_kept(dir) {
            Ok(()) => dir.clone(),
            Err(failure) => return failure.report(),
        },
        None => match tempfile::Builder::new().prefix("forge-demo-").tempdir() {
            Ok(dir) => {
                temporary = dir;
                temporary.path().to_owned()
            }
            Err(e) => return Failure::Usage(format!("cannot create a temporary directory: {e}")).report(),
        },
    };
    // 122 random bits: this server's admin for the length of the demo (and of a kept data dir).
    let token = format!("fgo_demo_{}", Uuid::new_v4().simple());

    println!("Forge overlay runtime: demo");
    println!("Starting a server on the embedded default (SQLite and local files in {}) ...", dir.display());
    let mut server = match Server::start(&dir, &token) {
        Ok(server) => server,
        Err(failure) => return failure.report(),
    };
    println!("Listening on {}; this demo acts as its admin.", server.url);

    let outcome =
        Client::new(&server.url, Some(token.clone())).map_err(Failure::from).and_then(|client| tour(&client));
    println!();
    match server.stop() {
        Some(status) if status.success() => println!("Server stopped cleanly (SIGTERM, exit 0)."),
        Some(status) => println!("Server stopped: {status}."),
        None => println!("Server did not stop in time and was killed."),
    }
    match outcome {
        Ok(flaky) => {
            next_steps(args.keep.as_deref(), &token, &flaky);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            server.print_log_tail();
            eprintln!("The demo stopped early.");
            failure.report()
        }
    }
}

/// Creates the kept data directory; one that holds anything already is refused, since the demo's
/// overlays would clash with what a previous run registered there.
fn prepare_kept(dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let mut entries =
        std::fs::read_dir(dir).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", dir.display())))?;
    if entries.next().is_some() {
        return Err(Failure::Usage(format!(
            "{} is not empty; keep the demo's data in a new directory",
            dir.display()
        )));
    }
    Ok(())
}

/// The story, told over HTTP. Returns the flaky overlay's NAME@VERSION for the closing hints.
fn tour(api: &Client) -> Result<String, Failure> {
    section(1, "Register the example overlays (each starts pending, at sandbox trust)");
    let mut overlays = Vec::new();
    for (manifest, wasm) in EXAMPLES {
        let overlay = api.register(manifest.into(), wasm.into(), None)?;
        let note = if overlay.requires_approval { "  privileged: needs an admin's activation" } else { "" };
        println!("   {:<22} {:<9} {}{note}", label(&overlay), overlay.state.as_str(), overlay.id);
        overlays.push(overlay);
    }

    section(2, "Activate them (an admin approves; capsule-insight also gets standard trust)");
    for overlay in &overlays {
        let active = api.transition(overlay.id, LifecycleAction::Activate, None)?;
        println!("   {:<22} {}", label(&active), active.state.as_str());
    }
    // Capsules are seeded at standard trust, and an overlay reads only what its own trust reaches.
    let insight = &overlays[2];
    let reason = Some("reads the team's standard capsules".to_owned());
    let trusted =
        api.set_trust_level(insight.id, &TrustLevelBody { trust_level: TrustLevel::Standard, reason })?;
    println!("   {:<22} trust {} -> {}", label(&trusted), insight.trust_level, trusted.trust_level);

    section(3, "Seed a few capsules (the service's shared knowledge)");
    for (kind, content) in CAPSULES {
        let capsule = api.create_capsule(&NewCapsule::new(content, kind))?;
        println!("   {:<10} {}", capsule.capsule_type.as_str(), render::cut(&capsule.content, SUMMARY_CHARS));
    }

    section(4, "Invoke each overlay (a fresh sandboxed instance per call)");
    let world = stand_in_for_the_world()?;
    let calls = [
        (&overlays[0], json!({"hello": "forge"})),
        (&overlays[1], json!({"text": "Forge runs overlays. Overlays are small and sandboxed.", "top": 2})),
        (insight, json!({"query": "overlay", "limit": 5})),
        (&overlays[3], json!({ "url": format!("{world}/weather") })),
    ];
    for (overlay, args) in calls {
        let result = invoke(api, overlay.id, "process", &args)?;
        show_call(overlay, "process", &args, &result);
        let written =
            result.result.as_ref().and_then(|r| r.get("insight_id").or_else(|| r.get("capsule_id")));
        if let Some(id) = written.and_then(Value::as_str).and_then(|id| id.parse::<Uuid>().ok()) {
            let capsule = api.capsule(id)?;
            let kind = capsule.capsule_type.as_str();
            println!("     it wrote a capsule ({kind}): {}", render::cut(&capsule.content, SUMMARY_CHARS));
        }
    }

    let notes = &overlays[4];
    let read = json!({"path": format!("/docs/{}", WELCOME_NOTE.0)});
    show_call(notes, "read_file", &read, &invoke(api, notes.id, "read_file", &read)?);
    let summary = json!({"files": [{"path": "/out/summary.txt", "content": "Read through the docs mount."}]});
    show_call(notes, "write_files", &summary, &invoke(api, notes.id, "write_files", &summary)?);
    println!("     the file is now in the server's `notes` mount ({NOTES_MOUNT}/summary.txt)");

    let policy = QuarantinePolicy::default();
    section(5, "A flaky overlay: echo's module again, named `flaky`, called through its `fail` entry point");
    let flaky = register_flaky(api)?;
    api.transition(flaky.id, LifecycleAction::Activate, None)?;
    println!("   registered and activated {} ({})", label(&flaky), flaky.id);
    let mut marks = Vec::new();
    for call in 0..policy.min_invocations {
        let function = if call < FLAKY_SUCCESSES { "process" } else { "fail" };
        let result = invoke(api, flaky.id, function, &json!({"message": "the demo's deliberate failure"}))?;
        marks.push(if result.success { "ok" } else { "FAIL" });
    }
    println!("   calls: {}", marks.join(" "));
    let health = api.overlay_health(flaky.id)?;
    if health.state != OverlayState::Quarantined {
        return Err(Failure::Server(format!(
            "flaky should have been quarantined after {} calls, but it is {}",
            health.invocation_count, health.state
        )));
    }
    println!(
        "   {} of {} calls failed (more than {:.0}% of at least {}): the server quarantined it by itself.",
        health.failure_count,
        health.invocation_count,
        policy.max_failure_rate * 100.0,
        policy.min_invocations
    );
    match invoke(api, flaky.id, "process", &json!({})) {
        Err(refusal) if refusal.refused_state() == Some(OverlayState::Quarantined.as_str()) => {
            println!("   one more call is refused: {refusal}");
        }
        Err(other) => return Err(other),
        Ok(_) => return Err(Failure::Server("a quarantined overlay still ran".into())),
    }

    section(6, "flaky's health (GET /api/v1/overlays/{id}/health)");
    indented(&render::health(&health));

    section(7, "flaky's audit trail (GET /api/v1/overlays/{id}/events)");
    indented(&render::events(&api.events(flaky.id, PageQuery::default())?.data, None));
    Ok(label(&flaky))
}

/// An HTTP server on 127.0.0.1 answering every request with [`WORLD_DOCUMENT`], for fetch-json
/// to fetch; returns its base URL. It lives as long as the demo.
fn stand_in_for_the_world() -> Result<String, Failure> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Failure::Usage(format!("cannot listen on 127.0.0.1 for the stand-in server: {e}")))?;
    let url = format!("http://{}", listener.local_addr().map_err(|e| Failure::Usage(e.to_string()))?);
    println!(
        "   (a server at {url} stands in for the outside world; the demo's server allows `{DEMO_ALLOWED_HOSTS}`)"
    );
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{WORLD_DOCUMENT}",
                WORLD_DOCUMENT.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    Ok(url)
}

/// Prints a renderer's text under the current section.
fn indented(text: &str) {
    for line in text.lines() {
        println!("   {line}");
    }
}

fn section(number: u32, title: &str) {
    println!();
    println!("{number}. {title}");
}

fn label(overlay: &Overlay) -> String {
    format!("{}@{}", overlay.manifest.name, overlay.manifest.version)
}

fn show_call(overlay: &Overlay, function: &str, args: &Value, result: &OverlayResult) {
    println!("   {} {function} {}", overlay.manifest.name, render::compact(args, SUMMARY_CHARS));
    println!("     -> {}", outcome(result));
}

fn invoke(api: &Client, id: Uuid, function: &str, args: &Value) -> Result<OverlayResult, Failure> {
    let args: Map<String, Value> = args.as_object().cloned().unwrap_or_default();
    Ok(api.invoke(id, &OverlayInvocation::new(function, args))?)
}

/// A result on one line: what came back (or what went wrong), time and fuel.
fn outcome(result: &OverlayResult) -> String {
    let cost = format!("{:.2} ms, {} fuel", result.execution_time_ms, result.fuel_consumed);
    match (&result.result, &result.error) {
        (_, Some(error)) => format!("failed, {}: {error} ({cost})", render::or_dash(result.error_kind)),
        (Some(value), None) => format!("{} ({cost})", render::compact(value, SUMMARY_CHARS)),
        (None, None) => format!("ok ({cost})"),
    }
}

/// Echo's module under a manifest of its own, so its failures count against `flaky` only.
fn register_flaky(api: &Client) -> Result<Overlay, Failure> {
    let (echo_manifest, echo_wasm) = EXAMPLES[0];
    let mut manifest = OverlayManifest::parse(echo_manifest).expect("the embedded echo manifest is valid");
    manifest.name = "flaky".into();
    manifest.description =
        "Echo's module; the demo calls its `fail` entry point until it is quarantined.".into();
    Ok(api.register(manifest.to_toml(), echo_wasm.into(), None)?)
}

/// What happened, in a few lines, and what to try next.
fn next_steps(kept: Option<&Path>, token: &str, flaky: &str) {
    println!();
    println!("What happened");
    println!("   - Overlays arrive pending at sandbox trust; an admin activates them. capsule-insight asks");
    println!("     for capsule:write, a privileged capability, so it could not run before that approval.");
    println!(
        "   - Each call ran sandboxed and reported its time and fuel; a failure is a result, not a crash."
    );
    println!(
        "   - fetch-json reached only the loopback stand-in its manifest names; file-notes saw only the"
    );
    println!("     two mounts the server offers, at the paths its manifest gives them.");
    println!("   - flaky failed too often, so the server stopped it and wrote why in its audit trail;");
    println!("     an admin can `release` it (fresh counters) or `deprecate` it for good.");
    println!();
    println!("Try it yourself");
    match kept {
        Some(dir) => {
            println!("   # this demo's data is in {}, and its admin token still works there:", dir.display());
            println!("   export FORGE_TOKEN={token}");
            println!("   FORGE_ADMIN_TOKEN=$FORGE_TOKEN forge-overlay serve --data-dir {} &", dir.display());
            println!("   forge-overlay overlay list");
            println!("   forge-overlay overlay events {flaky}");
            println!("   forge-overlay overlay release {flaky} --reason 'looked into it'");
            println!(
                "   curl -s -H \"Authorization: Bearer $FORGE_TOKEN\" -H 'Content-Type: application/json' \\\n     \
                 -d '{{\"function\": \"process\", \"args\": {{\"hello\": \"forge\"}}}}' \\\n     \
                 http://127.0.0.1:8000/api/v1/overlays/by-name/echo/invoke"
            );
        }
        None => {
            // Only commands that work from any directory: the example modules are inside the demo.
            println!("   # keep this demo's data and serve it yourself (the demo prints how):");
            println!("   forge-overlay demo --keep ./forge-demo");
            println!("   # or start an empty server of your own:");
            println!("   export FORGE_TOKEN=choose-a-long-random-secret");
            println!("   FORGE_ADMIN_TOKEN=$FORGE_TOKEN forge-overlay serve --data-dir ./forge-data &");
            println!("   forge-overlay overlay list");
        }
    }
}

/// The server child process: this binary's `serve`, stopped with SIGTERM when done (or dropped).
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    /// Spawns `serve` on a free port and waits for its `listening on URL` line. The child gets none of
    /// our FORGE_* settings (a database URL, say), so it always runs on the embedded default in `dir`.
    fn start(dir: &Path, token: &str) -> Result<Server, Failure> {
        let exe = std::env::current_exe()
            .map_err(|e| Failure::Usage(format!("cannot find this executable to start the server: {e}")))?;
        let log = dir.join("server.log");
        let log_file = File::create(&log)
            .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", log.display())))?;
        let (docs, notes) = (dir.join(DOCS_MOUNT), dir.join(NOTES_MOUNT));
        let mounts = std::fs::create_dir_all(&docs)
            .and_then(|()| std::fs::create_dir_all(&notes))
            .and_then(|()| std::fs::write(docs.join(WELCOME_NOTE.0), WELCOME_NOTE.1));
        mounts.map_err(|e| {
            Failure::Usage(format!("cannot create the demo's mounts in {}: {e}", dir.display()))
        })?;
        let mut command = Command::new(exe);
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--http-allowed-hosts", DEMO_ALLOWED_HOSTS])
            .arg(format!("--mount=docs={}", docs.display()))
            .arg(format!("--mount=notes={}:rw", notes.display()))
            .arg("--data-dir")
            .arg(dir);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FORGE_") && name != "FORGE_LOG" {
                command.env_remove(name);
            }
        }
        let mut child = command
            .env("FORGE_ADMIN_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| Failure::Server(format!("cannot start the server: {e}")))?;

        // A reader thread keeps draining stdout, so the server never blocks on a full pipe.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut server = Server { child, url: String::new(), log };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.trim().strip_prefix("listening on ") {
                        server.url = url.to_owned();
                        return Ok(server);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    server.print_log_tail();
                    return Err(Failure::Server(format!(
                        "the server did not say it was listening within {} s",
                        START_TIMEOUT.as_secs()
                    )));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.stop();
                    server.print_log_tail();
                    let status = status.map_or_else(|| "unknown status".into(), |s| s.to_string());
                    return Err(Failure::Server(format!("the server exited before listening ({status})")));
                }
            }
        }
    }

    /// SIGTERM, then a bounded wait; SIGKILL if it does not go. `None` if it had to be killed.
    /// Idempotent: a server already gone just reports how it ended.
    fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).ok()?);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// The end of the server's log, to explain a failure.
    fn print_log_tail(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return;
        }
        eprintln!("--- last lines of {} ---", self.log.display());
        for line in &lines[lines.len().saturating_sub(15)..] {
            eprintln!("{line}");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
