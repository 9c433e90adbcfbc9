//! Storage faults against a real `forge-overlay serve`, each scripted while clients keep working:
//!
//! - The S3 server cut off and restored (a relay between the server and the bucket drops every
//!   connection) during registrations and first calls, which fetch the binary from the bucket.
//! - The data directory (SQLite and the local binaries) on a tmpfs that fills up, then gets room.
//!
//! During a fault, refused requests get the standard 503 `service_unavailable` body with a
//! `Retry-After` header (never a 500, never a panic) and nothing wedges. After it, requests succeed
//! again without a restart, and what the clients saw holds: every registration answered 201 is
//! listed with its binary intact (same SHA-256), every one answered 503 left no record and can be
//! made again, and the invocation counts equal the calls that ran. Recovery times and the 503
//! latencies are printed (`--nocapture`) for docs/security.md.

mod server;

use base64::Engine;
use forge_model::{ErrorCode, LifecycleAction, NewUser, Overlay, Role, sha256_hex};
use serde_json::json;
use server::{Api, Launch, Reply, ServerProcess, all_overlays, call, echo_manifest, fixture_bytes, refusal};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// `echo.wasm` made distinct by a custom section holding `tag` and `padding` bytes: its own hash,
/// so its own stored binary, and as large as the test needs.
fn distinct_echo(tag: &str, padding: usize) -> Vec<u8> {
    let name = b"forge-fault-test";
    let mut content = leb128(name.len());
    content.extend_from_slice(name);
    content.extend_from_slice(tag.as_bytes());
    content.resize(content.len() + padding, 0);
    let mut wasm = fixture_bytes("echo.wasm");
    wasm.push(0); // custom section
    wasm.extend(leb128(content.len()));
    wasm.extend(content);
    wasm
}

fn leb128(mut n: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            bytes.push(low);
            return bytes;
        }
        bytes.push(low | 0x80);
    }
}

/// `POST /api/v1/overlays` (JSON), answered as it is: the typed client would hide the headers.
fn register(api: &Api, name: &str, wasm: &[u8]) -> Reply {
    let wasm_base64 = base64::engine::general_purpose::STANDARD.encode(wasm);
    api.post(
        "/api/v1/overlays",
        &json!({"manifest": echo_manifest(name, "1.0.0"), "wasm_base64": wasm_base64}),
    )
}

fn invoke(api: &Api, id: Uuid, n: usize) -> Reply {
    let invocation = serde_json::to_value(call("process", json!({"n": n}))).unwrap();
    api.post(&format!("/api/v1/overlays/{id}/invoke"), &invocation)
}

fn timed<T>(work: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    (work(), start.elapsed())
}

/// The overlay a registration created (201), or `None` for a standard 503; anything else fails.
fn registered(reply: &Reply) -> Option<Overlay> {
    if reply.status == 503 {
        reply.refused_with_retry_after(503, "service_unavailable");
        return None;
    }
    assert_eq!(reply.status, 201, "a registration is created or refused with 503: {}", reply.body);
    Some(serde_json::from_value(reply.body["data"].clone()).unwrap())
}

/// Whether a call ran and echoed its `n` (200), or got a standard 503; anything else fails.
fn ran(reply: &Reply, n: usize) -> bool {
    if reply.status == 503 {
        reply.refused_with_retry_after(503, "service_unavailable");
        return false;
    }
    assert_eq!(reply.status, 200, "a call runs or is refused with 503: {}", reply.body);
    assert_eq!(reply.body["data"]["success"], true, "{}", reply.body);
    assert_eq!(reply.body["data"]["result"]["echo"]["n"], n, "{}", reply.body);
    true
}

/// The overlay's `ok` invocations in `/metrics`.
fn ok_invocations(api: &Api, overlay: &Overlay) -> u64 {
    let label = format!("overlay=\"{}@{}\"", overlay.manifest.name, overlay.manifest.version);
    let metrics = api.get("/metrics");
    let text = metrics.body.as_str().unwrap();
    text.lines()
        .filter(|line| line.starts_with("forge_invocations_total{") && line.contains(&label))
        .filter(|line| line.contains("outcome=\"ok\""))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Asserts that health and `/metrics` count exactly the calls the client saw run.
fn assert_counted(api: &Api, overlay: &Overlay, calls_that_ran: u64) {
    let name = &overlay.manifest.name;
    assert_eq!(api.health(overlay.id).invocation_count, calls_that_ran, "health of {name}");
    assert_eq!(ok_invocations(api, overlay), calls_that_ran, "metrics of {name}");
}

/// Asserts the server is still up, ran no call left over, and never panicked.
fn assert_unharmed(server: &mut ServerProcess) {
    server.assert_serving();
    server.await_in_flight(0);
    assert!(!server.log().contains("panicked"), "the server panicked:\n{}", server.log());
}

/// "N in MIN..MAX (median M)", for the figures a run prints.
fn spread(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let (Some(first), Some(last)) = (latencies.first(), latencies.last()) else { return "none".into() };
    format!("{} in {first:.2?}..{last:.2?} (median {:.2?})", latencies.len(), latencies[latencies.len() / 2])
}

/// A TCP relay to the S3 server that can be cut: cutting closes every relayed connection, and new
/// ones are closed as soon as accepted, until it is restored.
struct Relay {
    addr: SocketAddr,
    state: Arc<Mutex<RelayState>>,
}

#[derive(Default)]
struct RelayState {
    cut: bool,
    /// Both ends of every relayed connection, to close them at the cut.
    open: Vec<TcpStream>,
}

impl Relay {
    fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(RelayState::default()));
        let relaying = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let mut state = relaying.lock().unwrap();
                if state.cut {
                    continue; // dropped: closed at once
                }
                let Ok(upstream) = TcpStream::connect(target) else { continue };
                state.open.extend([client.try_clone().unwrap(), upstream.try_clone().unwrap()]);
                pump(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pump(upstream, client);
            }
        });
        Relay { addr, state }
    }

    fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        for stream in state.open.drain(..) {
            stream.shutdown(Shutdown::Both).ok();
        }
    }

    fn restore(&self) {
        self.state.lock().unwrap().cut = false;
    }
}

/// Copies `from` to `to` until either closes.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        std::io::copy(&mut from, &mut to).ok();
        to.shutdown(Shutdown::Write).ok();
    });
}

/// How long the relay to S3 stays cut.
const S3_CUT: Duration = Duration::from_secs(3);

/// Overlays registered and activated before the cut, whose first calls fetch their binaries.
const FIRST_CALLS: usize = 30;

/// What one client thread saw: each request's answer and how long it took.
type Seen = Vec<(String, Vec<u8>, Reply, Duration)>;

#[test]
#[ignore = "needs an S3 server (FORGE_TEST_S3_ENDPOINT)"]
fn s3_cut_during_registrations_and_first_calls() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let endpoint = forge_storage::testing::s3_endpoint();
    let bucket = runtime.block_on(forge_storage::testing::create_bucket(&endpoint));
    let s3_addr = endpoint.strip_prefix("http://").unwrap().trim_end_matches('/').parse().unwrap();
    let relay = Relay::start(s3_addr);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(&dir.path().join("data"))
        .env("FORGE_OBJECT_STORE", format!("s3://{bucket}/binaries"))
        .env("AWS_ENDPOINT_URL", format!("http://{}", relay.addr))
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ALLOW_HTTP", "true")
        .start();
    let admin = server.admin();

    let waiting: Vec<Overlay> = (0..FIRST_CALLS)
        .map(|n| {
            let wasm = distinct_echo(&format!("first-call-{n}"), 0);
            let overlay = registered(&register(&admin, &format!("first-call-{n}"), &wasm)).unwrap();
            admin.transition(overlay.id, LifecycleAction::Activate, None).unwrap()
        })
        .collect();

    // The probe that times the recovery is compiled now, so that it then waits on S3 only.
    let probe = distinct_echo("probe", 0);
    registered(&register(&admin, "probe-warm-up", &probe)).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let registrars: Vec<_> = (0..2)
        .map(|worker| {
            let (api, stop) = (admin.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Seen::new();
                for n in 0.. {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let name = format!("load-{worker}-{n}");
                    let wasm = distinct_echo(&name, 0);
                    let (reply, latency) = timed(|| register(&api, &name, &wasm));
                    seen.push((name, wasm, reply, latency));
                }
                seen
            })
        })
        .collect();
    // Calls the waiting overlays in turn, all of them again and again: a first call fetches the
    // binary, later ones run what is loaded.
    let caller = {
        let (api, stop, waiting) = (admin.clone(), stop.clone(), waiting.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (n, overlay) in waiting.iter().cycle().enumerate() {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let (reply, latency) = timed(|| invoke(&api, overlay.id, n));
                seen.push((overlay.id, n, reply, latency));
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        })
    };

    std::thread::sleep(Duration::from_millis(1500));
    relay.cut();
    let cut_at = Instant::now();
    std::thread::sleep(S3_CUT);
    relay.restore();
    let restored_at = Instant::now();
    let mut probes = 0;
    while registered(&register(&admin, &format!("probe-{probes}"), &probe)).is_none() {
        probes += 1;
    }
    let recovery = restored_at.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Release);
    let registrations: Seen = registrars.into_iter().flat_map(|worker| worker.join().unwrap()).collect();
    let calls = caller.join().unwrap();
    // Again without load, which makes the probe wait for a compilation turn: how soon the restored
    // bucket serves.
    relay.cut();
    assert!(registered(&register(&admin, "probe-idle-cut", &probe)).is_none());
    relay.restore();
    let (idle_probe, idle_recovery) = timed(|| registered(&register(&admin, "probe-idle", &probe)));
    assert!(idle_probe.is_some(), "the first registration after an idle restore");

    // What the clients saw: every answer a 201 or 200, or a standard 503.
    let mut created = Vec::new();
    let mut refused = Vec::new();
    let mut registrations_refused_in = Vec::new();
    for (name, wasm, reply, latency) in &registrations {
        match registered(reply) {
            Some(overlay) => created.push((overlay, wasm)),
            None => {
                registrations_refused_in.push(*latency);
                refused.push((name, wasm));
            }
        }
    }
    let mut ran_per_overlay: HashMap<Uuid, u64> = HashMap::new();
    let mut calls_refused_in = Vec::new();
    for (id, n, reply, latency) in &calls {
        if ran(reply, *n) {
            *ran_per_overlay.entry(*id).or_default() += 1;
        } else {
            calls_refused_in.push(*latency);
        }
    }
    assert!(!refused.is_empty(), "no registration met the cut");
    assert!(!calls_refused_in.is_empty(), "no first call met the cut");
    let slowest = registrations_refused_in.iter().chain(&calls_refused_in).max().unwrap();
    assert!(*slowest < S3_CUT, "a refusal waited out the cut: {slowest:?}");
    eprintln!(
        "S3 cut for {:.2?}: {} registrations, {} created, 503 answers {}; {} calls, 503 answers {}; \
         recovery {recovery:.2?} under load ({probes} refused probes), {idle_recovery:.2?} idle",
        restored_at - cut_at,
        registrations.len(),
        created.len(),
        spread(&mut registrations_refused_in),
        calls.len(),
        spread(&mut calls_refused_in),
    );
    assert_unharmed(&mut server);

    // After it: what was created is listed with its binary, what was refused left nothing.
    let bucket_store = forge_storage::BlobStore::open_with_options(
        &format!("s3://{bucket}/binaries"),
        forge_storage::testing::s3_options(&endpoint),
    )
    .unwrap();
    let listed: HashMap<Uuid, Overlay> = all_overlays(&admin).into_iter().map(|o| (o.id, o)).collect();
    for (overlay, wasm) in &created {
        let on_record = &listed[&overlay.id];
        assert_eq!(on_record.wasm_hash, sha256_hex(wasm), "{}", overlay.manifest.name);
        let stored = runtime.block_on(bucket_store.get_verified(&on_record.wasm_key, &on_record.wasm_hash));
        assert_eq!(stored.unwrap().as_ref(), wasm.as_slice(), "{}", overlay.manifest.name);
    }
    for (name, wasm) in &refused {
        refusal(admin.overlay_by_name_version(name, "1.0.0"), 404, ErrorCode::NotFound);
        let again = registered(&register(&admin, name, wasm)).expect("registered again");
        assert_eq!(again.wasm_hash, sha256_hex(wasm));
    }
    let expected = FIRST_CALLS + created.len() + refused.len() + 3; // and the three probes that got in
    assert_eq!(all_overlays(&admin).len(), expected, "no record but those the clients saw");
    for (n, overlay) in waiting.iter().enumerate() {
        assert!(ran(&invoke(&admin, overlay.id, n), n), "{} runs after the cut", overlay.manifest.name);
        let calls_that_ran = ran_per_overlay.get(&overlay.id).copied().unwrap_or(0) + 1;
        assert_counted(&admin, overlay, calls_that_ran);
    }
    // Each created binary loads from the bucket on its first call.
    for (n, (overlay, _)) in created.iter().enumerate().step_by(5) {
        admin.transition(overlay.id, LifecycleAction::Activate, None).unwrap();
        assert!(ran(&invoke(&admin, overlay.id, n), n));
    }
    assert_unharmed(&mut server);
}

/// A tmpfs mounted for the test, lazily unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(mounted.success(), "cannot mount a tmpfs on {} (needs root)", dir.display());
        Tmpfs { dir: dir.to_owned() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        std::process::Command::new("umount").arg("-l").arg(&self.dir).status().ok();
    }
}

/// Writes `path` until the file system is full; returns its size.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5; 64 << 10];
    let mut size = 0;
    while let Ok(written @ 1..) = file.write(&chunk) {
        size += written as u64;
    }
    size
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path.strip_prefix(dir).unwrap().to_owned());
            }
        }
    }
    files
}

/// Creates a user (a write to the database only).
fn create_user(api: &Api, name: &str) -> Reply {
    api.post("/api/v1/users", &serde_json::to_value(NewUser::new(name, vec![Role::Operator])).unwrap())
}

/// Room left for registrations once the filler has taken the rest of the tmpfs.
const ROOM: u64 = 2 << 20;

/// Padding per registered binary on the full disk: a few fill the room.
const PADDING: usize = 200 << 10;

#[test]
#[ignore = "mounts a tmpfs as the data directory: needs root"]
fn full_disk_under_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, "16m");
    let mut server = Launch::new(&data).start();
    let admin = server.admin();
    let keeper = admin.active_echo("keeper", "1.0.0");
    let mut keeper_ran = 0;
    assert!(ran(&invoke(&admin, keeper.id, 0), 0));
    keeper_ran += 1;

    // The probe that times the recovery is compiled now, so that it then waits on the disk only.
    let probe = distinct_echo("probe", 0);
    let mut created = vec![(registered(&register(&admin, "probe-warm-up", &probe)).unwrap(), probe.clone())];

    // Fill the disk but for `ROOM`, then register until a registration no longer fits.
    let filler = data.join("filler");
    let size = fill(&filler);
    std::fs::OpenOptions::new().write(true).open(&filler).unwrap().set_len(size - ROOM).unwrap();
    let mut refused = Vec::new();
    let mut unavailable = Vec::new();
    for n in 0.. {
        assert!(n < 40, "{ROOM} bytes never filled up");
        let name = format!("fill-{n}");
        let wasm = distinct_echo(&name, PADDING);
        let (reply, latency) = timed(|| register(&admin, &name, &wasm));
        match registered(&reply) {
            Some(overlay) => created.push((overlay, wasm)),
            None => {
                unavailable.push(latency);
                refused.push((name, wasm));
                if refused.len() == 3 {
                    break;
                }
            }
        }
    }
    // Whatever room is left goes too, then writes that touch only the database fill SQLite's log
    // until it is refused; and once more, now that SQLite has given up a transaction.
    let last_room = data.join("last-room");
    fill(&last_room);
    let mut users_refused = 0;
    for n in 0.. {
        assert!(n < 500, "the database never filled up");
        let (reply, latency) = timed(|| create_user(&admin, &format!("user-{n}")));
        if reply.status == 503 {
            reply.refused_with_retry_after(503, "service_unavailable");
            unavailable.push(latency);
            users_refused += 1;
            if users_refused == 3 {
                break;
            }
        } else {
            assert_eq!(reply.status, 201, "{}", reply.body);
        }
    }
    // A call to a loaded overlay writes nothing before its answer: it runs, and its count waits.
    for n in 1..=5 {
        assert!(ran(&invoke(&admin, keeper.id, n), n), "a call on the full disk");
        keeper_ran += 1;
    }
    assert_unharmed(&mut server);

    // Room again: registrations and database writes work without a restart.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&last_room).unwrap();
    let freed_at = Instant::now();
    let mut probes = 0;
    let probed = loop {
        if let Some(overlay) = registered(&register(&admin, &format!("probe-{probes}"), &probe)) {
            break overlay;
        }
        probes += 1;
        assert!(freed_at.elapsed() < Duration::from_secs(20), "registrations never worked again");
        std::thread::sleep(Duration::from_millis(10));
    };
    let recovery = freed_at.elapsed();
    created.push((probed, probe));
    assert_eq!(create_user(&admin, "after-the-fault").status, 201);
    eprintln!(
        "full disk: {} registrations created, {} refused, {users_refused} user creations refused; \
         503 answers {}; recovery {recovery:.2?} ({probes} refused probes)",
        created.len() - 2,
        refused.len(),
        spread(&mut unavailable),
    );

    for (name, wasm) in &refused {
        refusal(admin.overlay_by_name_version(name, "1.0.0"), 404, ErrorCode::NotFound);
        created.push((registered(&register(&admin, name, wasm)).expect("registered again"), wasm.clone()));
    }
    assert!(ran(&invoke(&admin, keeper.id, 6), 6));
    keeper_ran += 1;
    assert_counted(&admin, &keeper, keeper_ran);

    // Nothing half-written on disk: no staging file, a sound database, and exactly the binaries
    // on record, each with the bytes the client sent.
    let files = files_under(&data);
    let staging: Vec<_> = files
        .iter()
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.ends_with(".tmp") || name.contains('#')
        })
        .collect();
    assert!(staging.is_empty(), "staging files left: {staging:?}");
    let check = std::process::Command::new("sqlite3")
        .arg(data.join("forge.db"))
        .arg("PRAGMA integrity_check")
        .output();
    let check = check.expect("the sqlite3 command");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let listed = all_overlays(&admin);
    assert_eq!(listed.len(), created.len() + 1, "the keeper and the created overlays");
    let on_record: HashSet<PathBuf> = listed.iter().map(|o| Path::new("blobs").join(&o.wasm_key)).collect();
    let stored: HashSet<PathBuf> = files.iter().filter(|path| path.starts_with("blobs")).cloned().collect();
    assert_eq!(stored, on_record, "stored binaries are those on record");
    let by_id: HashMap<Uuid, &Overlay> = listed.iter().map(|o| (o.id, o)).collect();
    for (overlay, wasm) in &created {
        let on_record = by_id[&overlay.id];
        assert_eq!(on_record.wasm_hash, sha256_hex(wasm));
        assert_eq!(
            sha256_hex(&std::fs::read(data.join("blobs").join(&on_record.wasm_key)).unwrap()),
            on_record.wasm_hash
        );
    }
    assert_unharmed(&mut server);
}
