//! How far past its wall-clock deadline an endless guest runs before the epoch ticker stops it.
//!
//! ```text
//! cargo run --release -p forge-runtime --example deadline -- [DEADLINE_MS] [CALLS] [CONCURRENCY]
//! ```
//!
//! Runs CALLS invocations of a guest that loops forever with unlimited fuel, CONCURRENCY at a time
//! (defaults: 100 ms, 200 calls, 1), and prints one JSON line: the overshoot past the deadline as
//! the caller waited it and as the result reports it (`execution_time_ms`), p50 / p99 / max. With
//! CONCURRENCY above the core count the overshoot includes waiting for a core, which is what a
//! loaded host adds; the unit tests bound it loosely for that reason and this measures it.

use forge_model::{ErrorKind, OverlayInvocation, OverlayManifest, TrustLevel};
use forge_runtime::{HostServices, OverlayIdentity, Runtime, RuntimeConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

const ENDLESS: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "forge_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "process") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0)))"#;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut overshoots: Vec<f64>) -> serde_json::Value {
    overshoots.sort_by(f64::total_cmp);
    json!({"p50_ms": percentile(&overshoots, 0.5), "p99_ms": percentile(&overshoots, 0.99),
           "max_ms": overshoots[overshoots.len() - 1]})
}

fn main() {
    let mut args = std::env::args().skip(1);
    let deadline_ms: u64 = args.next().map_or(100, |n| n.parse().expect("DEADLINE_MS"));
    let calls: usize = args.next().map_or(200, |n| n.parse().expect("CALLS"));
    let concurrency: usize = args.next().map_or(1, |n| n.parse().expect("CONCURRENCY"));

    let runtime = Runtime::new(RuntimeConfig::default(), HostServices::default()).expect("runtime");
    let manifest = OverlayManifest::parse(&format!(
        "name = \"endless\"\nversion = \"1.0.0\"\nmax_fuel = 1000000000000000\nmax_execution_ms = {deadline_ms}"
    ))
    .expect("manifest");
    let prepared =
        Arc::new(runtime.prepare(&manifest, &wat::parse_str(ENDLESS).expect("WAT")).expect("prepare"));
    let identity = OverlayIdentity { id: None, name: Arc::from("endless"), trust_level: TrustLevel::Sandbox };
    let invocation = OverlayInvocation::new("process", Default::default());

    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    let (waited, reported) = tokio.block_on(async {
        let per_task = calls.div_ceil(concurrency);
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (runtime, prepared, identity, invocation) =
                    (runtime.clone(), prepared.clone(), identity.clone(), invocation.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::with_capacity(per_task);
                    for _ in 0..per_task {
                        let started = Instant::now();
                        let outcome =
                            runtime.invoke(&prepared, &identity, &invocation).await.expect("accepted");
                        let waited = started.elapsed().as_secs_f64() * 1e3;
                        assert_eq!(outcome.result.error_kind, Some(ErrorKind::Timeout));
                        seen.push((waited, outcome.result.execution_time_ms));
                    }
                    seen
                })
            })
            .collect();
        let mut waited = Vec::new();
        let mut reported = Vec::new();
        for task in tasks {
            for (w, r) in task.await.expect("task") {
                waited.push(w - deadline_ms as f64);
                reported.push(r - deadline_ms as f64);
            }
        }
        (waited, reported)
    });
    let line = json!({"deadline_ms": deadline_ms, "calls": waited.len(), "concurrency": concurrency,
                      "overshoot_waited": summary(waited), "overshoot_reported": summary(reported)});
    println!("{line}");
}
