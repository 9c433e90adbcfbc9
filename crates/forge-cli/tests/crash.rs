//! The crash test of the service: a server killed with SIGKILL in the middle of registrations and
//! invocations comes back with every record's binary present and verified, every acknowledged
//! registration and activation kept, and no health count lower than one observed before the kill.

mod server;

use reqwest::Method;
use reqwest::blocking::multipart;
use serde_json::{Value, json};
use server::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the clients saw acknowledged before the kill.
#[derive(Default)]
struct Acknowledged {
    /// Registered overlays by id, and whether their activation was acknowledged too.
    overlays: Mutex<HashMap<String, bool>>,
    /// Highest `invocation_count` of each overlay read from its health before the kill.
    counts: Mutex<HashMap<String, u64>>,
    invocations: AtomicU64,
}

impl Acknowledged {
    fn saw_count(&self, id: &str, health: &Value) {
        let count = health["invocation_count"].as_u64().unwrap();
        let mut counts = self.counts.lock().unwrap();
        let seen = counts.entry(id.to_owned()).or_default();
        *seen = (*seen).max(count);
    }
}

fn id(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

/// Registers `crash-{worker}-{n}` overlays one after another, activating and invoking every other
/// one, until `stop` or the server goes away.
fn registrar(api: Api, worker: usize, stop: Arc<AtomicBool>, seen: Arc<Acknowledged>) {
    let wasm = fixture_bytes("echo.wasm");
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let form = multipart::Form::new()
            .text("manifest", echo_manifest(&format!("crash-{worker}-{n}"), "1.0.0"))
            .part("wasm", multipart::Part::bytes(wasm.clone()));
        let Ok(reply) = api.try_send(api.request(Method::POST, "/api/v1/overlays").multipart(form)) else {
            return;
        };
        assert_eq!(reply.status, 201, "{}", reply.body);
        let overlay = id(&reply.body["data"]);
        seen.overlays.lock().unwrap().insert(overlay.clone(), false);
        if n % 2 == 1 {
            continue;
        }
        let activate = api.request(Method::POST, &format!("/api/v1/overlays/{overlay}/activate"));
        let Ok(reply) = api.try_send(activate) else { return };
        assert_eq!(reply.status, 200, "{}", reply.body);
        seen.overlays.lock().unwrap().insert(overlay.clone(), true);
        let invoke = api.request(Method::POST, &format!("/api/v1/overlays/{overlay}/invoke"));
        let Ok(reply) = api.try_send(invoke.json(&json!({"function": "process"}))) else { return };
        assert_eq!(reply.status, 200, "{}", reply.body);
        seen.invocations.fetch_add(1, Ordering::Relaxed);
    }
}

/// Invokes `overlay` in a loop until `stop` or the server goes away.
fn invoker(api: Api, overlay: String, stop: Arc<AtomicBool>, seen: Arc<Acknowledged>) {
    let path = format!("/api/v1/overlays/{overlay}/invoke");
    while !stop.load(Ordering::Relaxed) {
        let request =
            api.request(Method::POST, &path).json(&json!({"function": "process", "args": {"x": 1}}));
        let Ok(reply) = api.try_send(request) else { return };
        assert_eq!(reply.status, 200, "{}", reply.body);
        seen.invocations.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads the health of `overlay` and of the newest acknowledged overlays, noting each count.
fn health_reader(api: Api, overlay: String, stop: Arc<AtomicBool>, seen: Arc<Acknowledged>) {
    while !stop.load(Ordering::Relaxed) {
        let mut ids = vec![overlay.clone()];
        ids.extend(
            seen.overlays
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, active)| **active)
                .map(|(id, _)| id.clone())
                .take(3),
        );
        for id in ids {
            let Ok(reply) = api.try_send(api.request(Method::GET, &format!("/api/v1/overlays/{id}/health")))
            else {
                return;
            };
            assert_eq!(reply.status, 200, "{}", reply.body);
            seen.saw_count(&id, &reply.body["data"]);
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
    let echo = id(&admin.active_echo("echo", "0.1.0"));

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Acknowledged::default());
    let mut workers = Vec::new();
    for worker in 0..2 {
        let (api, stop, seen) = (admin.clone(), stop.clone(), seen.clone());
        workers.push(std::thread::spawn(move || registrar(api, worker, stop, seen)));
    }
    for _ in 0..3 {
        let (api, echo, stop, seen) = (admin.clone(), echo.clone(), stop.clone(), seen.clone());
        workers.push(std::thread::spawn(move || invoker(api, echo, stop, seen)));
    }
    {
        let (api, echo, stop, seen) = (admin.clone(), echo.clone(), stop.clone(), seen.clone());
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
    let overlays: HashMap<String, Value> = all_overlays(&admin).into_iter().map(|o| (id(&o), o)).collect();
    let acknowledged = seen.overlays.lock().unwrap().clone();
    for (overlay, activated) in &acknowledged {
        let record =
            overlays.get(overlay).unwrap_or_else(|| panic!("acknowledged overlay {overlay} is gone"));
        if *activated {
            assert_eq!(record["state"], "active", "acknowledged activation of {overlay} is gone");
        }
    }
    for overlay in overlays.values() {
        let key = overlay["wasm_key"].as_str().unwrap();
        let binary =
            std::fs::read(blob_path(&data, key)).unwrap_or_else(|e| panic!("binary {key} of a record: {e}"));
        assert_eq!(forge_model::sha256_hex(&binary), overlay["wasm_hash"].as_str().unwrap(), "{key}");
        if overlay["state"] == "active" {
            let result = admin.invoke(&id(overlay), "process", json!({})).data(200);
            assert_eq!(result["success"], true, "{key}: {result}");
        }
    }
    let counts = seen.counts.lock().unwrap().clone();
    for (overlay, before) in counts {
        let after = admin.health(&overlay)["invocation_count"].as_u64().unwrap();
        assert!(after >= before, "the count of {overlay} went back from {before} to {after}");
    }
    assert!(acknowledged.len() >= 8 && overlays.len() > acknowledged.len(), "echo and the acknowledged ones");
}
