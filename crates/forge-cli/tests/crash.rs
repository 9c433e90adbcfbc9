//! The crash test of the service: a server killed with SIGKILL in the middle of registrations and
//! invocations comes back with every record's binary present and verified, every acknowledged
//! registration and activation kept, and no health count lower than one observed before the kill.

mod server;

use forge_client::Error;
use forge_model::{HealthReport, LifecycleAction, OverlayState};
use serde_json::json;
use server::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What the clients saw acknowledged before the kill.
#[derive(Default)]
struct Acknowledged {
    /// Registered overlays by id, and whether their activation was acknowledged too.
    overlays: Mutex<HashMap<Uuid, bool>>,
    /// Highest `invocation_count` of each overlay read from its health before the kill.
    counts: Mutex<HashMap<Uuid, u64>>,
    invocations: AtomicU64,
}

impl Acknowledged {
    fn saw_count(&self, health: &HealthReport) {
        let mut counts = self.counts.lock().unwrap();
        let seen = counts.entry(health.overlay_id).or_default();
        *seen = (*seen).max(health.invocation_count);
    }
}

/// The answer to a call made while the server may be killed: `None` once it no longer answers,
/// and a panic for any wrong answer before that.
fn answered<T>(result: Result<T, Error>) -> Option<T> {
    match result {
        Ok(answer) => Some(answer),
        Err(Error::Unreachable { .. }) => None,
        Err(wrong) => panic!("a wrong answer before the kill: {wrong:?}"),
    }
}

/// Registers `crash-{worker}-{n}` overlays one after another, activating and invoking every other
/// one, until `stop` or the server goes away.
fn registrar(api: Api, worker: usize, stop: Arc<AtomicBool>, seen: Arc<Acknowledged>) {
    let wasm = fixture_bytes("echo.wasm");
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let manifest = echo_manifest(&format!("crash-{worker}-{n}"), "1.0.0");
        let Some(overlay) = answered(api.register(manifest, wasm.clone(), None)) else { return };
        seen.overlays.lock().unwrap().insert(overlay.id, false);
        if n % 2 == 1 {
            continue;
        }
        if answered(api.transition(overlay.id, LifecycleAction::Activate, None)).is_none() {
            return;
        }
        seen.overlays.lock().unwrap().insert(overlay.id, true);
        if answered(api.invoke(overlay.id, &call("process", json!({})))).is_none() {
            return;
        }
        seen.invocations.fetch_add(1, Ordering::Relaxed);
    }
}

/// Invokes `overlay` in a loop until `stop` or the server goes away.
fn invoker(api: Api, overlay: Uuid, stop: Arc<AtomicBool>, seen: Arc<Acknowledged>) {
    let invocation = call("process", json!({"x": 1}));
    while !stop.load(Ordering::Relaxed) {
        if answered(api.invoke(overlay, &invocation)).is_none() {
            return;
        }
        seen.invocations.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads the health of `overlay` and of the newest acknowledged overlays, noting each count.
fn health_reader(api: Api, overlay: Uuid, stop: Arc<AtomicBool>, seen: Arc<Acknowledged>) {
    while !stop.load(Ordering::Relaxed) {
        let mut ids = vec![overlay];
        ids.extend(
            seen.overlays.lock().unwrap().iter().filter(|(_, active)| **active).map(|(id, _)| *id).take(3),
        );
        for id in ids {
            let Some(health) = answered(api.overlay_health(id)) else { return };
            seen.saw_count(&health);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigkill_amid_registrations_and_invocations_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Launch::new(&data).start();
    let admin = server.admin();
    let echo = admin.active_echo("echo", "0.1.0").id;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Acknowledged::default());
    let mut workers = Vec::new();
    for worker in 0..2 {
        let (api, stop, seen) = (admin.clone(), stop.clone(), seen.clone());
        workers.push(std::thread::spawn(move || registrar(api, worker, stop, seen)));
    }
    for _ in 0..3 {
        let (api, stop, seen) = (admin.clone(), stop.clone(), seen.clone());
        workers.push(std::thread::spawn(move || invoker(api, echo, stop, seen)));
    }
    {
        let (api, stop, seen) = (admin.clone(), stop.clone(), seen.clone());
        workers.push(std::thread::spawn(move || health_reader(api, echo, stop, seen)));
    }

    // Kill once every kind of work is well under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.overlays.lock().unwrap().len() < 8
        || seen.invocations.load(Ordering::Relaxed) < 200
        || seen.counts.lock().unwrap().len() < 2
    {
        assert!(Instant::now() < deadline, "the workload did not get going");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("a client saw a wrong answer before the kill");
    }

    let server = Launch::new(&data).start();
    let admin = server.admin();
    let overlays: HashMap<Uuid, _> = all_overlays(&admin).into_iter().map(|o| (o.id, o)).collect();
    let acknowledged = seen.overlays.lock().unwrap().clone();
    for (overlay, activated) in &acknowledged {
        let record =
            overlays.get(overlay).unwrap_or_else(|| panic!("acknowledged overlay {overlay} is gone"));
        if *activated {
            assert_eq!(record.state, OverlayState::Active, "acknowledged activation of {overlay} is gone");
        }
    }
    for overlay in overlays.values() {
        let key = &overlay.wasm_key;
        let binary =
            std::fs::read(blob_path(&data, key)).unwrap_or_else(|e| panic!("binary {key} of a record: {e}"));
        assert_eq!(forge_model::sha256_hex(&binary), overlay.wasm_hash, "{key}");
        if overlay.state == OverlayState::Active {
            let result = admin.invoke(overlay.id, &call("process", json!({}))).unwrap();
            assert!(result.success, "{key}: {result:?}");
        }
    }
    let counts = seen.counts.lock().unwrap().clone();
    for (overlay, before) in counts {
        let after = admin.health(overlay).invocation_count;
        assert!(after >= before, "the count of {overlay} went back from {before} to {after}");
    }
    assert!(acknowledged.len() >= 8 && overlays.len() > acknowledged.len(), "echo and the acknowledged ones");
}
