//! Service-level throughput against the runtime alone, on the count-vowels workload.
//!
//! ```text
//! cargo run --release -p forge-service --example throughput -- [sqlite|postgres] [CALLS] [THREADS]
//! ```
//!
//! Both run on THREADS Tokio workers with four tasks per worker. Prints one JSON line per
//! measurement: the runtime invoking a prepared overlay directly, then the full service pipeline
//! (cache, admission, pre-linked module, metrics written to the database in batches), the final
//! flush included, and checks that every call was counted.
//! PostgreSQL runs on a throw-away database of `FORGE_TEST_POSTGRES_URL`.

use forge_model::{LifecycleAction, OverlayInvocation, OverlayManifest, Principal, Role, TrustLevel};
use forge_runtime::{HostServices, OverlayIdentity, Runtime, RuntimeConfig};
use forge_service::{OverlayService, Registration, ServiceConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../fixtures/wasm/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture")
}

fn report(what: &str, calls: usize, concurrency: usize, seconds: f64) {
    let line = json!({"measure": what, "calls": calls, "concurrency": concurrency, "seconds": seconds,
                      "calls_per_sec": calls as f64 / seconds, "us_per_call": seconds * 1e6 / calls as f64});
    println!("{line}");
}

fn invocation() -> OverlayInvocation {
    let args = json!({"text": "hello world, overlays are sandboxed ".repeat(4)});
    OverlayInvocation::new("count_vowels", args.as_object().unwrap().clone())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let backend = args.next().unwrap_or_else(|| "sqlite".into());
    let calls: usize = args.next().map_or(100_000, |n| n.parse().expect("CALLS"));
    let concurrency: usize = args.next().map_or(2, |n| n.parse().expect("CONCURRENCY"));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(concurrency)
        .enable_all()
        .build()
        .unwrap()
        .block_on(measure(backend, calls, concurrency));
}

async fn measure(backend: String, calls: usize, concurrency: usize) {
    let manifest = OverlayManifest::parse(&String::from_utf8(fixture("count-vowels.toml")).unwrap()).unwrap();
    let wasm = fixture("count-vowels.wasm");

    // The runtime alone: prepared once, invoked from `concurrency` tasks.
    let runtime = Runtime::new(RuntimeConfig::default(), HostServices::default()).unwrap();
    let prepared = Arc::new(runtime.prepare(&manifest, &wasm).unwrap());
    let identity = OverlayIdentity { id: None, name: "count-vowels".into(), trust_level: TrustLevel::Core };
    let direct = |calls: usize| {
        let (runtime, prepared, identity) = (runtime.clone(), prepared.clone(), identity.clone());
        tokio::spawn(async move {
            for _ in 0..calls {
                assert!(runtime.invoke(&prepared, &identity, &invocation()).await.unwrap().result.success);
            }
        })
    };
    direct(2000).await.unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency * 4).map(|_| direct(calls / (concurrency * 4))).collect();
    for task in tasks {
        task.await.unwrap();
    }
    report("runtime_alone", calls, concurrency * 4, started.elapsed().as_secs_f64());
    drop((prepared, runtime));

    // The service, metrics persisted.
    let db = match backend.as_str() {
        "sqlite" => forge_storage::testing::sqlite().await,
        "postgres" => forge_storage::testing::postgres().await,
        other => panic!("unknown backend {other} (sqlite or postgres)"),
    };
    let blobs = forge_storage::testing::local_blobs();
    let service =
        OverlayService::new(ServiceConfig::default(), db.repo.clone(), blobs.blobs.clone()).unwrap();
    let admin = Principal { name: "bench".into(), roles: vec![Role::Admin], trust_level: TrustLevel::Core };
    let overlay = service
        .register(&admin, Registration { manifest, wasm: wasm.into(), source_hash: None })
        .await
        .unwrap();
    service.transition(&admin, overlay.id, LifecycleAction::Activate, None).await.unwrap();
    for _ in 0..2000 {
        service.invoke(&admin, overlay.id, invocation()).await.unwrap();
    }
    service.flush_health().await.unwrap();
    let before = service.health(&admin, overlay.id).await.unwrap().invocation_count;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency * 4)
        .map(|_| {
            let (service, admin) = (service.clone(), admin.clone());
            tokio::spawn(async move {
                for _ in 0..calls / (concurrency * 4) {
                    assert!(service.invoke(&admin, overlay.id, invocation()).await.unwrap().success);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    service.flush_health().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let counted = service.health(&admin, overlay.id).await.unwrap().invocation_count - before;
    let ran = calls / (concurrency * 4) * concurrency * 4;
    assert_eq!(counted, ran as u64, "every invocation is counted");
    report(&format!("service_{backend}"), ran, concurrency * 4, seconds);
}
