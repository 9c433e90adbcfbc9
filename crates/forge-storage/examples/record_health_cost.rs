//! Measures what persisting invocation health costs: one `record_health` batch of 1 delta and one
//! of 100 deltas (100 overlays), against the repository at the given URL.
//!
//! ```text
//! cargo run --release -p forge-storage --example record_health_cost -- sqlite:///tmp/bench/forge.db
//! cargo run --release -p forge-storage --example record_health_cost -- postgres://postgres@127.0.0.1/bench
//! ```
//!
//! It registers 100 active core overlays (core: never quarantined, so every batch does the same work)
//! named `bench-<run>-<n>`; point it at a scratch database.

use chrono::Utc;
use forge_model::{
    NewAuditEvent, Overlay, OverlayHealth, OverlayManifest, OverlayState, QuarantinePolicy, TrustLevel,
};
use forge_storage::{HealthDelta, Repository, open_repository};
use std::time::{Duration, Instant};
use uuid::Uuid;

type Error = Box<dyn std::error::Error>;

async fn active_core_overlay(repo: &dyn Repository, name: &str) -> Result<Uuid, Error> {
    let now = Utc::now();
    let manifest = OverlayManifest::parse(&format!("name = \"{name}\"\nversion = \"1.0.0\""))?;
    let overlay = Overlay {
        id: Uuid::now_v7(),
        wasm_key: Overlay::wasm_key_for(name, "1.0.0", "00"),
        wasm_hash: "00".into(),
        manifest,
        state: OverlayState::Active,
        trust_level: TrustLevel::Core,
        source_hash: None,
        submitted_by: "bench".into(),
        requires_approval: false,
        created_at: now,
        updated_at: now,
        health: OverlayHealth::default(),
    };
    let event = NewAuditEvent {
        overlay_id: overlay.id,
        actor: "bench".into(),
        action: forge_model::AuditAction::Register,
        from_state: None,
        to_state: Some(OverlayState::Active),
        reason: None,
        details: Default::default(),
    };
    Ok(repo.insert_overlay(&overlay, event).await?.id)
}

fn deltas(ids: &[Uuid]) -> Vec<HealthDelta> {
    ids.iter()
        .map(|id| {
            let mut delta = HealthDelta::new(*id, Utc::now());
            delta.invocations = 4;
            delta.failures = 1;
            for failed in [false, false, false, true] {
                delta.recent.push(failed);
            }
            delta.total_execution_ms = 3.5;
            delta.latency_buckets[4] = 4;
            delta.last_error = Some("trap".into());
            delta
        })
        .collect()
}

/// The overlays are core, so none is ever quarantined; the event is worded for completeness.
fn quarantine_event(overlay_id: Uuid, _: &OverlayHealth, _: QuarantinePolicy) -> NewAuditEvent {
    NewAuditEvent {
        overlay_id,
        actor: "bench".into(),
        action: forge_model::AuditAction::AutoQuarantine,
        from_state: Some(OverlayState::Active),
        to_state: Some(OverlayState::Quarantined),
        reason: None,
        details: Default::default(),
    }
}

/// Mean wall time of one batch over `rounds`, after a few unmeasured ones.
async fn mean(repo: &dyn Repository, batch: &[HealthDelta], rounds: u32) -> Result<Duration, Error> {
    for _ in 0..5 {
        repo.record_health(batch, QuarantinePolicy::default(), quarantine_event).await?;
    }
    let started = Instant::now();
    for _ in 0..rounds {
        repo.record_health(batch, QuarantinePolicy::default(), quarantine_event).await?;
    }
    Ok(started.elapsed() / rounds)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::args().nth(1).ok_or("usage: record_health_cost <repository URL>")?;
    let repo = open_repository(&url).await?;
    let run = Uuid::new_v4().simple().to_string();
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(active_core_overlay(repo.as_ref(), &format!("bench-{}-{n}", &run[..8])).await?);
    }
    let one = mean(repo.as_ref(), &deltas(&ids[..1]), 500).await?;
    let hundred = mean(repo.as_ref(), &deltas(&ids), 50).await?;
    println!("record_health, 1 delta:    {:>8.3} ms per batch", one.as_secs_f64() * 1e3);
    println!(
        "record_health, 100 deltas: {:>8.3} ms per batch ({:.1} µs per delta)",
        hundred.as_secs_f64() * 1e3,
        hundred.as_secs_f64() * 1e6 / 100.0
    );
    repo.close().await;
    Ok(())
}
