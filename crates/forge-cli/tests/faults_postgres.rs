//! PostgreSQL faults, each injected into a real `forge-overlay serve` while client threads load it.
//!
//! - PostgreSQL restarted during load: the server runs on a private cluster, which is stopped
//!   twice while clients invoke active overlays and register new ones. The first outage is short
//!   (about 2 s, fast shutdown). The second is long (about 12 s, immediate shutdown, so the cluster
//!   recovers from a crash) and outlasts the pool's acquire timeout.
//! - A capsule store that stalls: a session holds `capsules` locked against writes while clients
//!   invoke an overlay that searches capsules and records an insight capsule and, beside it, a plain
//!   echo overlay. The searches pass; the writes wait, and hold the host calls' database turns.
//!
//! What is checked, against what the clients saw:
//! - During a fault, every refused request is a 503 `service_unavailable` with the standard body,
//!   `Retry-After` and `details.retry_after`; nothing else fails, and the server log has no panic.
//! - Calls that do not need the stalled store stay fast, and stalled host calls end by their deadline
//!   as `host_error`, counted apart from the overlay's own failures: a stall quarantines nothing.
//! - After the fault, requests succeed again without a restart.
//! - Nothing is lost or invented: every registration a client saw succeed is listed and its binary
//!   runs, every 503'd one left no record, and invocation counts equal the calls clients saw answered.
//!
//! `#[ignore]`d, like the other PostgreSQL tests (CI runs them with `--ignored`). The restart test
//! needs root and PostgreSQL's server binaries (`pg_config --bindir`, or `FORGE_TEST_PG_BINDIR`);
//! the stall test needs the server at `FORGE_TEST_POSTGRES_URL`. A missing one fails the test.

mod server;

use base64::Engine;
use forge_model::{CapsuleType, LifecycleAction, NewCapsule, OverlayState, TrustLevel};
use serde_json::{Value, json};
use server::*;
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A PostgreSQL cluster of the test's own, which it may stop and start at will; stopped when
/// dropped, also when the test fails.
struct PrivateCluster {
    bindir: PathBuf,
    data: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateCluster {
    /// `initdb` and start, as the `postgres` user (PostgreSQL refuses to run as root).
    fn create() -> PrivateCluster {
        let bindir = postgres_bindir();
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("chown").args(["postgres:", "--"]).arg(dir.path()));
        let data = dir.path().join("data");
        let mut initdb = as_postgres(&bindir.join("initdb"));
        run(initdb.args(["--username=postgres", "--auth=trust", "--no-sync", "-D"]).arg(&data));
        let cluster = PrivateCluster { bindir, data, port: free_port(), dir };
        cluster.start();
        cluster
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the cluster and waits until it accepts connections.
    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let mut start = as_postgres(&self.bindir.join("pg_ctl"));
        start.args(["start", "-w", "-t", "60", "-o", &options, "-D"]).arg(&self.data);
        run(start.arg("-l").arg(self.dir.path().join("postgres.log")));
    }

    /// Stops the cluster: `fast` ends sessions and checkpoints, `immediate` is a crash.
    fn stop(&self, mode: &str) {
        let mut stop = as_postgres(&self.bindir.join("pg_ctl"));
        run(stop.args(["stop", "-w", "-m", mode, "-D"]).arg(&self.data));
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let mut stop = as_postgres(&self.bindir.join("pg_ctl"));
        stop.args(["stop", "-w", "-m", "immediate", "-D"]).arg(&self.data).output().ok();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
            eprintln!("--- private PostgreSQL log ---\n{log}");
        }
    }
}

fn postgres_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("FORGE_TEST_PG_BINDIR") {
        return dir.into();
    }
    let output = Command::new("pg_config").arg("--bindir").output().unwrap_or_else(|e| {
        panic!("the restart test needs PostgreSQL's binaries (pg_config, or FORGE_TEST_PG_BINDIR): {e}")
    });
    assert!(output.status.success(), "pg_config --bindir: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().into()
}

fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn assert_no_panic(server: &ServerProcess) {
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

/// One answer a client saw: to what, when it asked, how long the answer took, and its status.
#[derive(Clone, Copy)]
struct Answer {
    what: &'static str,
    sent: Instant,
    took: Duration,
    status: u16,
}

/// Client threads looping on one kind of request until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn new() -> Load {
        Load { stop: Arc::new(AtomicBool::new(false)), threads: Vec::new() }
    }

    /// Runs `request` (given its round number) every `pause` until stopped.
    fn spawn(&mut self, pause: Duration, mut request: impl FnMut(u64) + Send + 'static) {
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            for round in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                request(round);
                std::thread::sleep(pause);
            }
        }));
    }

    /// Stops the clients; panics if one of them did.
    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let panicked = self.threads.into_iter().map(JoinHandle::join).filter(Result::is_err).count();
        assert_eq!(panicked, 0, "a client saw an answer it should not have (its panic is above)");
    }
}

fn timed(what: &'static str, request: impl FnOnce() -> Reply) -> (Reply, Answer) {
    let sent = Instant::now();
    let reply = request();
    let answer = Answer { what, sent, took: sent.elapsed(), status: reply.status };
    (reply, answer)
}

fn invocation_path(id: Uuid) -> String {
    format!("/api/v1/overlays/{id}/invoke")
}

/// One outage of the cluster as the test drove it.
struct Outage {
    name: &'static str,
    down: Instant,
    up: Instant,
    /// From the cluster accepting connections to the first request that needs the database answered.
    recovery: Duration,
}

#[test]
#[ignore = "needs root and PostgreSQL's server binaries (pg_config --bindir or FORGE_TEST_PG_BINDIR)"]
fn postgres_restarted_during_load_costs_only_503s_and_nothing_the_clients_saw() {
    const INVOKERS: usize = 2;
    let cluster = PrivateCluster::create();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&dir.path().join("data")).env("FORGE_DATABASE_URL", cluster.url()).start();
    let admin = server.admin();
    let echoes: Vec<Uuid> =
        (0..INVOKERS).map(|n| admin.active_echo(&format!("echo-{n}"), "1.0.0").id).collect();

    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let invoked: Arc<Mutex<BTreeMap<Uuid, u64>>> = Arc::default();
    let registered: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let refused_registrations: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut load = Load::new();
    for &echo in &echoes {
        let (admin, answers, invoked) = (admin.clone(), answers.clone(), invoked.clone());
        load.spawn(Duration::from_millis(20), move |round| {
            let invocation = serde_json::to_value(call("process", json!({ "round": round }))).unwrap();
            let (reply, answer) = timed("invocation", || admin.post(&invocation_path(echo), &invocation));
            answers.lock().unwrap().push(answer);
            if reply.status == 503 {
                reply.refused_with_retry_after(503, "service_unavailable");
                return;
            }
            let result = reply.data(200);
            assert_eq!(result["success"], true, "{result}");
            *invoked.lock().unwrap().entry(echo).or_default() += 1;
        });
    }
    let wasm_base64 = base64::engine::general_purpose::STANDARD.encode(fixture_bytes("echo.wasm"));
    {
        let (admin, answers) = (admin.clone(), answers.clone());
        let (registered, refused) = (registered.clone(), refused_registrations.clone());
        load.spawn(Duration::from_millis(150), move |round| {
            let name = format!("registered-{round}");
            let body = json!({"manifest": echo_manifest(&name, "1.0.0"), "wasm_base64": wasm_base64});
            let (reply, answer) = timed("registration", || admin.post("/api/v1/overlays", &body));
            answers.lock().unwrap().push(answer);
            if reply.status == 503 {
                reply.refused_with_retry_after(503, "service_unavailable");
                refused.lock().unwrap().insert(name);
            } else {
                assert_eq!(reply.data(201)["name"], name);
                registered.lock().unwrap().insert(name);
            }
        });
    }

    let mut outages = Vec::new();
    for (name, mode, length) in
        [("short", "fast", Duration::from_secs(2)), ("long", "immediate", Duration::from_secs(12))]
    {
        std::thread::sleep(Duration::from_secs(2));
        let down = Instant::now();
        cluster.stop(mode);
        std::thread::sleep(length);
        cluster.start();
        let up = Instant::now();
        // The overlay list is read from the database on every request.
        loop {
            let reply = admin.get("/api/v1/overlays?per_page=1");
            if reply.status == 200 {
                break;
            }
            reply.refused_with_retry_after(503, "service_unavailable");
            assert!(up.elapsed() < Duration::from_secs(30), "no recovery 30 s after the cluster came back");
        }
        outages.push(Outage { name, down, up, recovery: up.elapsed() });
    }
    std::thread::sleep(Duration::from_secs(2));
    load.finish();

    let answers = answers.lock().unwrap();
    let ended = |answer: &Answer| answer.sent + answer.took;
    let recovered = |outage: &Outage| outage.up + outage.recovery;
    for (n, outage) in outages.iter().enumerate() {
        let during: Vec<&Answer> =
            answers.iter().filter(|a| ended(a) >= outage.down && a.sent <= recovered(outage)).collect();
        let refused = |what| during.iter().filter(|a| a.status == 503 && a.what == what).count();
        let slowest = during.iter().map(|a| a.took).max().unwrap_or_default();
        eprintln!(
            "{} outage ({:.1} s): {} answers overlapping it, 503 to {} invocations and {} registrations, \
             slowest {:.2} s; recovery {} ms after the cluster accepted connections",
            outage.name,
            (outage.up - outage.down).as_secs_f64(),
            during.len(),
            refused("invocation"),
            refused("registration"),
            slowest.as_secs_f64(),
            outage.recovery.as_millis()
        );
        let next_down = outages.get(n + 1).map(|next| next.down);
        let failed_after = answers
            .iter()
            .filter(|a| a.sent > recovered(outage) && next_down.is_none_or(|down| ended(a) < down))
            .filter(|a| a.status == 503)
            .count();
        assert_eq!(
            failed_after, 0,
            "requests sent after the recovery from the {} outage failed",
            outage.name
        );
    }
    let refused_outside = answers
        .iter()
        .filter(|a| a.status == 503)
        .filter(|a| !outages.iter().any(|o| ended(a) >= o.down && a.sent <= recovered(o)))
        .count();
    assert_eq!(refused_outside, 0, "503s while the cluster was up");
    let refused_total = answers.iter().filter(|a| a.status == 503).count();
    eprintln!("{} answers in all, {refused_total} of them 503", answers.len());

    let invoked = invoked.lock().unwrap();
    for echo in &echoes {
        let health = admin.health(*echo);
        let seen = invoked.get(echo).copied().unwrap_or_default();
        assert_eq!((health.invocation_count, health.failure_count), (seen, 0), "counts of {echo}");
    }
    let registered = registered.lock().unwrap();
    let refused = refused_registrations.lock().unwrap();
    eprintln!("registrations: {} stored, {} refused with 503", registered.len(), refused.len());
    let listed: BTreeMap<String, Uuid> =
        all_overlays(&admin).into_iter().map(|o| (o.manifest.name.clone(), o.id)).collect();
    for name in registered.iter() {
        let id =
            *listed.get(name).unwrap_or_else(|| panic!("registration {name} was answered 201 but is lost"));
        admin.transition(id, LifecycleAction::Activate, None).unwrap();
        let result = admin.invoke(id, &call("process", json!({"name": name}))).unwrap();
        assert!(result.success, "{name}'s binary does not run: {result:?}");
    }
    for name in refused.iter() {
        assert!(!listed.contains_key(name), "registration {name} was answered 503 but left a record");
        admin.register(echo_manifest(name, "1.0.0"), fixture_bytes("echo.wasm"), None).unwrap();
    }
    server.assert_serving();
    assert_no_panic(&server);
}

/// Capsule calls' deadline: `max_execution_ms` of the capsule-insight overlay in this test.
const CAPSULE_DEADLINE: Duration = Duration::from_millis(1000);

/// Database operations of host calls at once (`host_call_db_operations`, default).
const HOST_CALL_DB_OPERATIONS: i64 = 2;

/// Backends of `url`'s database waiting for a lock: the capsule statements stalled behind it.
async fn statements_waiting_for_a_lock(url: &str) -> i64 {
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    let sql = "SELECT COUNT(*) FROM pg_stat_activity \
               WHERE datname = current_database() AND wait_event_type = 'Lock'";
    sqlx::query_scalar(sql).fetch_one(&mut connection).await.unwrap()
}

#[test]
#[ignore = "needs PostgreSQL (FORGE_TEST_POSTGRES_URL)"]
fn a_stalled_capsule_store_ends_capsule_calls_at_their_deadline_and_wedges_nothing_else() {
    const CAPSULE_CLIENTS: usize = 4;
    const STALL: Duration = Duration::from_secs(8);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(forge_storage::testing::fresh_postgres());
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&dir.path().join("data")).env("FORGE_DATABASE_URL", &db.url).start();
    let admin = server.admin();
    // Capsules a new (sandbox) overlay can find, so its calls record insights.
    for n in 0..5 {
        let note = NewCapsule::new(format!("wasm overlays note {n}"), CapsuleType::Knowledge);
        admin.create_capsule(&NewCapsule { trust_level: TrustLevel::Sandbox, ..note }).unwrap();
    }
    let manifest = fixture_text("capsule-insight.toml")
        .replace("max_execution_ms = 5000", &format!("max_execution_ms = {}", CAPSULE_DEADLINE.as_millis()));
    assert!(manifest.contains(&format!("max_execution_ms = {}", CAPSULE_DEADLINE.as_millis())));
    let insight = admin.register(manifest, fixture_bytes("capsule-insight.wasm"), None).unwrap().id;
    admin.transition(insight, LifecycleAction::Activate, None).unwrap();
    let echo = admin.active_echo("echo", "1.0.0").id;
    let insight_call = serde_json::to_value(call("process", json!({"query": "wasm", "limit": 5}))).unwrap();
    // No successes before the stall: its failures alone must not quarantine the overlay.
    let mut insights_created = Vec::new();

    let mut locker = runtime.block_on(sqlx::PgConnection::connect(&db.url)).unwrap();
    runtime.block_on(sqlx::raw_sql("BEGIN; LOCK TABLE capsules IN SHARE MODE").execute(&mut locker)).unwrap();
    let locked = Instant::now();
    let capsule_answers: Arc<Mutex<Vec<(Answer, Value)>>> = Arc::default();
    let echo_answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let mut load = Load::new();
    for _ in 0..CAPSULE_CLIENTS {
        let (admin, answers, call) = (admin.clone(), capsule_answers.clone(), insight_call.clone());
        load.spawn(Duration::ZERO, move |_| {
            let (reply, answer) = timed("invocation", || admin.post(&invocation_path(insight), &call));
            if reply.status == 503 {
                reply.refused_with_retry_after(503, "service_unavailable");
                answers.lock().unwrap().push((answer, Value::Null));
            } else {
                answers.lock().unwrap().push((answer, reply.data(200)));
            }
        });
    }
    {
        let (admin, answers) = (admin.clone(), echo_answers.clone());
        let invocation = serde_json::to_value(call("process", json!({"beside": "the stall"}))).unwrap();
        load.spawn(Duration::from_millis(20), move |_| {
            let (reply, answer) = timed("invocation", || admin.post(&invocation_path(echo), &invocation));
            assert_eq!(reply.data(200)["success"], true);
            answers.lock().unwrap().push(answer);
        });
    }

    let mut most_stalled = 0;
    while locked.elapsed() < STALL {
        std::thread::sleep(Duration::from_millis(250));
        most_stalled = most_stalled.max(runtime.block_on(statements_waiting_for_a_lock(&db.url)));
    }
    // The quarantine rule's view at the stall's worst, before successes refill the window.
    let at_worst = admin.health(insight);
    runtime.block_on(sqlx::raw_sql("ROLLBACK").execute(&mut locker)).unwrap();
    let unlocked = Instant::now();
    runtime.block_on(locker.close()).unwrap();
    let (mut probes, mut probe_failures) = (0, 0);
    let recovery = loop {
        let result = admin.post(&invocation_path(insight), &insight_call).data(200);
        probes += 1;
        if result["success"] == true {
            insights_created.push(result["result"]["insight_id"].clone());
            break unlocked.elapsed();
        }
        assert_eq!(result["error_kind"], "host_error", "{result}");
        probe_failures += 1;
        assert!(unlocked.elapsed() < Duration::from_secs(10), "capsule calls did not recover");
    };
    std::thread::sleep(Duration::from_secs(1));
    load.finish();

    let capsule_answers = capsule_answers.lock().unwrap();
    let (mut stalled, mut unavailable, mut succeeded, mut slowest_stalled) = (0, 0, 0, Duration::ZERO);
    for (answer, result) in capsule_answers.iter() {
        if answer.status == 503 {
            unavailable += 1;
        } else if result["success"] == true {
            succeeded += 1;
            insights_created.push(result["result"]["insight_id"].clone());
        } else {
            assert_eq!(result["error_kind"], "host_error", "{result}");
            let error = result["error"].as_str().unwrap();
            assert!(error.starts_with("the capsule store did not answer"), "{result}");
            assert!(answer.sent < unlocked, "a capsule call sent after the release failed: {result}");
            stalled += 1;
        }
        if answer.sent < unlocked {
            slowest_stalled = slowest_stalled.max(answer.took);
        }
    }
    let echo_answers = echo_answers.lock().unwrap();
    let during: Vec<Duration> =
        echo_answers.iter().filter(|a| a.sent >= locked && a.sent < unlocked).map(|a| a.took).collect();
    let slowest_echo = during.iter().max().copied().unwrap_or_default();
    eprintln!(
        "stall of {:.1} s: capsule calls {stalled} × host_error at the deadline, {unavailable} × 503, {succeeded} succeeded \
         after it; slowest capsule answer {:.2} s (deadline {} ms); echo {} calls, slowest {} ms; \
         at most {most_stalled} statements waited on the lock; recovery {} ms after the release",
        (unlocked - locked).as_secs_f64(),
        slowest_stalled.as_secs_f64(),
        CAPSULE_DEADLINE.as_millis(),
        during.len(),
        slowest_echo.as_millis(),
        recovery.as_millis()
    );
    assert!(stalled > 0, "no capsule call was cut off by the stall");
    assert_eq!(unavailable, 0, "a stalled host call ends its invocation at the deadline, not as a 503");
    let slack = Duration::from_millis(500);
    assert!(slowest_stalled < CAPSULE_DEADLINE + slack, "a stalled capsule call took {slowest_stalled:?}");
    assert!(during.len() > 50, "the echo client was held up: {} calls", during.len());
    assert!(slowest_echo < Duration::from_millis(500), "an echo call took {slowest_echo:?} beside the stall");
    assert!(
        most_stalled <= HOST_CALL_DB_OPERATIONS,
        "{most_stalled} stalled statements held connections; host calls have {HOST_CALL_DB_OPERATIONS} turns"
    );

    eprintln!(
        "capsule-insight at the end of the stall: {}, window failure rate {:.2} ({} of {} calls)",
        at_worst.state,
        at_worst.window_failure_rate,
        at_worst.window_failure_count,
        at_worst.window_invocation_count
    );
    let health = admin.health(insight);
    assert_eq!(health.state, OverlayState::Active, "the stall quarantined a healthy overlay: {health:?}");
    let answered = (probes + succeeded + stalled) as u64;
    let host_failures = (stalled + probe_failures) as u64;
    let counts = (health.invocation_count, health.failure_count, health.host_failure_count);
    assert_eq!(
        counts,
        (answered, 0, host_failures),
        "the stall is the host's failure, not the overlay's: {health:?}"
    );
    // An insight is recorded when the search found something (`insight_id` null otherwise).
    let insights_created: Vec<Uuid> = insights_created
        .iter()
        .filter(|id| !id.is_null())
        .map(|id| serde_json::from_value(id.clone()).unwrap())
        .collect();
    assert!(!insights_created.is_empty(), "no insight capsule was recorded");
    // The writes the stall cut off were rolled back, not committed once the lock was released.
    let count = "SELECT COUNT(*) FROM capsules WHERE created_by_overlay = $1";
    let stored: i64 = runtime.block_on(async {
        let mut connection = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query_scalar(count).bind(insight).fetch_one(&mut connection).await.unwrap()
    });
    assert_eq!(stored, insights_created.len() as i64, "insight capsules no client saw created were stored");
    for id in insights_created {
        admin
            .capsule(id)
            .unwrap_or_else(|e| panic!("insight capsule {id} a client saw created is lost: {e}"));
    }
    let echo_health = admin.health(echo);
    assert_eq!(echo_health.invocation_count, echo_answers.len() as u64);
    server.assert_serving();
    assert_no_panic(&server);
    drop(server);
    runtime.block_on(async move { drop(db) });
}
