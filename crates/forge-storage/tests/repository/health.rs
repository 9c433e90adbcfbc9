//! Health counters, the latency histogram and automatic quarantine.

use crate::Db;
use crate::fixture::{active, quarantine_event, register};
use chrono::{Duration, Utc};
use forge_model::{LatencyHistogram, OverlayState, PageRequest, QuarantinePolicy, TrustLevel};
use forge_storage::{HealthDelta, StorageError, open_repository};
use uuid::Uuid;

fn delta(overlay_id: Uuid, invocations: u64, failures: u64) -> HealthDelta {
    let mut delta = HealthDelta::new(overlay_id, Utc::now());
    delta.invocations = invocations;
    delta.failures = failures;
    delta.total_execution_ms = invocations as f64 * 2.0;
    delta.latency_buckets[LatencyHistogram::bucket_of(2.0)] = invocations;
    delta
}

async fn quarantine_events(db: &Db, id: Uuid) -> usize {
    let events = db.repo.list_events(id, PageRequest::new(Some(1), Some(100))).await.unwrap();
    events.items.iter().filter(|e| e.action == forge_model::AuditAction::AutoQuarantine).count()
}

pub async fn deltas_add_up(db: &Db) {
    let o = active(db, "echo", TrustLevel::Sandbox).await;
    let t0 = Utc::now();
    let mut first = HealthDelta::new(o.id, t0);
    first.invocations = 3;
    first.failures = 1;
    first.total_execution_ms = 3.0;
    first.latency_buckets[0] = 2;
    first.latency_buckets[LatencyHistogram::BUCKETS - 1] = 1;
    first.last_error = Some("trap: unreachable\u{0}".into());
    let mut older = HealthDelta::new(o.id, t0 - Duration::seconds(5));
    older.invocations = 1;
    older.total_execution_ms = 9.0;
    older.latency_buckets[0] = 1;

    let policy = QuarantinePolicy::default();
    db.repo.record_health(&[first], policy, quarantine_event).await.unwrap();
    let outcome = db.repo.record_health(&[older], policy, quarantine_event).await.unwrap();
    assert_eq!(outcome.len(), 1);
    let health = &outcome[0].health;
    assert_eq!((health.invocation_count, health.failure_count, health.host_failure_count), (4, 1, 0));
    assert!((health.avg_execution_ms - 3.0).abs() < 1e-9);
    assert_eq!(
        health.last_invoked_at.map(|t| t.timestamp_micros()),
        Some(t0.timestamp_micros()),
        "never moves back"
    );
    assert_eq!(health.last_error.as_deref(), Some("trap: unreachable\u{FFFD}"), "kept when a batch has none");
    assert_eq!(
        (outcome[0].state, outcome[0].trust_level, outcome[0].quarantined),
        (OverlayState::Active, TrustLevel::Sandbox, false)
    );

    let stored = db.repo.get_overlay(o.id).await.unwrap().unwrap();
    assert_eq!(&stored.health, health);
    let histogram = db.repo.latency_histogram(o.id).await.unwrap();
    assert_eq!(histogram.counts[0], 3);
    assert_eq!(histogram.counts[LatencyHistogram::BUCKETS - 1], 1);
    assert_eq!(histogram.counts.iter().sum::<u64>(), 4);
    assert!(db.repo.record_health(&[], policy, quarantine_event).await.unwrap().is_empty());
}

pub async fn auto_quarantine_happens_once_with_its_numbers(db: &Db) {
    let o = active(db, "flaky", TrustLevel::Standard).await;
    let policy = QuarantinePolicy::default();
    let below = db.repo.record_health(&[delta(o.id, 9, 9)], policy, quarantine_event).await.unwrap();
    assert!(!below[0].quarantined, "9 invocations are not enough");
    let tipping = db.repo.record_health(&[delta(o.id, 1, 0)], policy, quarantine_event).await.unwrap();
    assert_eq!((tipping[0].state, tipping[0].quarantined), (OverlayState::Quarantined, true));
    assert_eq!(db.repo.get_overlay(o.id).await.unwrap().unwrap().state, OverlayState::Quarantined);

    let after = db.repo.record_health(&[delta(o.id, 5, 5)], policy, quarantine_event).await.unwrap();
    assert_eq!((after[0].state, after[0].quarantined), (OverlayState::Quarantined, false));
    assert_eq!(after[0].health.invocation_count, 15, "counting goes on");
    assert_eq!(quarantine_events(db, o.id).await, 1);

    let events = db.repo.list_events(o.id, PageRequest::new(Some(1), Some(100))).await.unwrap();
    let quarantine =
        events.items.iter().find(|e| e.action == forge_model::AuditAction::AutoQuarantine).unwrap();
    assert_eq!(quarantine.actor, "system");
    assert_eq!(
        (quarantine.from_state, quarantine.to_state),
        (Some(OverlayState::Active), Some(OverlayState::Quarantined))
    );
    assert_eq!(quarantine.reason.as_deref(), Some("quarantined for the test"), "recorded as worded");
    assert_eq!(quarantine.details["failure_rate"], 0.9);
    assert_eq!(quarantine.details["invocation_count"], 10);
    assert_eq!(quarantine.details["failure_count"], 9);
}

pub async fn core_overlays_are_never_quarantined(db: &Db) {
    let core = active(db, "core-thing", TrustLevel::Core).await;
    let outcome = db
        .repo
        .record_health(&[delta(core.id, 100, 100)], QuarantinePolicy::default(), quarantine_event)
        .await
        .unwrap();
    assert_eq!((outcome[0].state, outcome[0].quarantined), (OverlayState::Active, false));
    assert_eq!(outcome[0].health.failure_rate(), 1.0);
    assert_eq!(quarantine_events(db, core.id).await, 0);
}

pub async fn only_active_overlays_are_quarantined(db: &Db) {
    let pending = register(db, "pending-one", "1.0.0").await;
    let outcome = db
        .repo
        .record_health(&[delta(pending.id, 20, 20)], QuarantinePolicy::default(), quarantine_event)
        .await
        .unwrap();
    assert_eq!((outcome[0].state, outcome[0].quarantined), (OverlayState::Pending, false));
    assert_eq!(quarantine_events(db, pending.id).await, 0);
}

pub async fn host_failures_do_not_count_against_the_overlay(db: &Db) {
    let o = active(db, "unlucky", TrustLevel::Sandbox).await;
    let mut host_down = delta(o.id, 20, 0);
    host_down.host_failures = 20;
    host_down.last_error = Some("capsule store unavailable".into());
    let outcome =
        db.repo.record_health(&[host_down], QuarantinePolicy::default(), quarantine_event).await.unwrap();
    assert_eq!((outcome[0].state, outcome[0].quarantined), (OverlayState::Active, false));
    assert_eq!((outcome[0].health.host_failure_count, outcome[0].health.failure_rate()), (20, 0.0));

    // 20 host failures + 10 counted invocations of which 6 failed: 60% > 50% once host faults are set aside.
    let outcome = db
        .repo
        .record_health(&[delta(o.id, 10, 6)], QuarantinePolicy::default(), quarantine_event)
        .await
        .unwrap();
    assert!(outcome[0].quarantined, "{outcome:?}");
}

pub async fn deltas_of_missing_overlays_are_skipped(db: &Db) {
    let o = active(db, "echo", TrustLevel::Sandbox).await;
    let gone = Uuid::now_v7();
    let batch = [delta(gone, 5, 5), delta(o.id, 2, 0)];
    let outcome = db.repo.record_health(&batch, QuarantinePolicy::default(), quarantine_event).await.unwrap();
    assert_eq!(outcome.iter().map(|x| x.overlay_id).collect::<Vec<_>>(), [o.id]);
    assert_eq!(outcome[0].health.invocation_count, 2);
}

pub async fn one_batch_covers_many_overlays(db: &Db) {
    let mut overlays = Vec::new();
    for i in 0..5 {
        overlays.push(active(db, &format!("batch-{i}"), TrustLevel::Sandbox).await);
    }
    // 100 deltas, 20 per overlay, in no particular order; overlay 0 fails every time.
    let deltas: Vec<_> = (0..100)
        .map(|i| {
            let o = &overlays[(i * 7) % 5];
            delta(o.id, 1, u64::from(o.id == overlays[0].id))
        })
        .collect();
    let outcomes =
        db.repo.record_health(&deltas, QuarantinePolicy::default(), quarantine_event).await.unwrap();
    assert_eq!(outcomes.len(), 100);
    assert_eq!(outcomes.iter().filter(|x| x.quarantined).count(), 1);
    assert!(outcomes.iter().any(|x| x.quarantined && x.overlay_id == overlays[0].id));
    for o in &overlays {
        let stored = db.repo.get_overlay(o.id).await.unwrap().unwrap();
        assert_eq!(stored.health.invocation_count, 20);
    }
}

pub async fn latency_histogram_of_unknown_overlay_is_not_found(db: &Db) {
    let err = db.repo.latency_histogram(Uuid::now_v7()).await.unwrap_err();
    assert!(matches!(err, StorageError::NotFound(_)), "{err:?}");
}

/// Two repositories (two pools, as two server processes would have) on one database, 8 tasks,
/// 500 single-invocation deltas of which half fail.
pub async fn concurrent_recorders_lose_nothing_and_quarantine_once(db: &Db) {
    const TASKS: usize = 8;
    const TOTAL: usize = 500;
    let o = active(db, "contended", TrustLevel::Sandbox).await;
    let other_process = open_repository(&db.url).await.unwrap();
    let repos = [db.repo.clone(), other_process.clone()];
    let per_task = |task: usize| TOTAL / TASKS + usize::from(task < TOTAL % TASKS);
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let repo = repos[task % 2].clone();
            let calls = per_task(task);
            tokio::spawn(async move {
                let mut quarantines = 0;
                for call in 0..calls {
                    // Each task fails its first half: the first ten recorded calls are all failures,
                    // so the overlay must be quarantined, while exactly half of all calls fail.
                    let failed = call < calls / 2 + (calls % 2) * (task % 2);
                    let d = delta(o.id, 1, u64::from(failed));
                    let outcome = repo
                        .record_health(&[d], QuarantinePolicy::default(), quarantine_event)
                        .await
                        .unwrap();
                    quarantines += outcome.iter().filter(|x| x.quarantined).count();
                }
                quarantines
            })
        })
        .collect();
    let mut quarantines = 0;
    for task in tasks {
        quarantines += task.await.unwrap();
    }
    let expected_failures: usize = (0..TASKS).map(|t| per_task(t) / 2 + (per_task(t) % 2) * (t % 2)).sum();
    assert_eq!(expected_failures, TOTAL / 2);
    let stored = other_process.get_overlay(o.id).await.unwrap().unwrap();
    assert_eq!(stored.health.invocation_count, TOTAL as u64);
    assert_eq!(stored.health.failure_count, (TOTAL / 2) as u64);
    assert_eq!(db.repo.latency_histogram(o.id).await.unwrap().counts.iter().sum::<u64>(), TOTAL as u64);
    assert_eq!(stored.state, OverlayState::Quarantined);
    assert_eq!(quarantines, 1, "exactly one call reports the quarantine");
    assert_eq!(quarantine_events(db, o.id).await, 1, "exactly one event");
    other_process.close().await;
}
