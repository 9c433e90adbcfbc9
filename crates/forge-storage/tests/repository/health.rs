//! Health counters, the latency histogram and automatic quarantine.

use crate::Db;
use crate::fixture::{active, quarantine_event, register};
use crate::fixture::{event, overlay};
use chrono::{Duration, Utc};
use forge_model::{
    AuditAction, LatencyHistogram, OverlayHealth, OverlayState, PageRequest, QuarantinePolicy, RecentCalls,
    TrustLevel,
};
use forge_storage::{HealthDelta, StorageError, open_repository};
use uuid::Uuid;

/// `invocations` calls that count, the last `failures` of them failed.
fn delta(overlay_id: Uuid, invocations: u64, failures: u64) -> HealthDelta {
    let mut delta = HealthDelta::new(overlay_id, Utc::now());
    delta.invocations = invocations;
    delta.failures = failures;
    for call in 0..invocations {
        delta.recent.push(call >= invocations - failures);
    }
    delta.total_execution_ms = invocations as f64 * 2.0;
    delta.latency_buckets[LatencyHistogram::bucket_of(2.0)] = invocations;
    delta
}

async fn events_of(db: &Db, id: Uuid, action: AuditAction) -> Vec<forge_model::AuditEvent> {
    let events = db.repo.list_events(id, PageRequest::new(Some(1), Some(100))).await.unwrap();
    events.items.into_iter().filter(|e| e.action == action).collect()
}

async fn quarantine_events(db: &Db, id: Uuid) -> usize {
    events_of(db, id, AuditAction::AutoQuarantine).await.len()
}

/// Failures the caller caused: `invocations` of them.
fn caller_faults(overlay_id: Uuid, invocations: u64) -> HealthDelta {
    let mut delta = HealthDelta::new(overlay_id, Utc::now());
    delta.invocations = invocations;
    delta.caller_failures = invocations;
    delta.last_error = Some("invalid arguments: missing field `text`".into());
    delta
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
    host_down.recent = RecentCalls::default();
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

/// An overlay with a million good calls behind it (written directly, as years of service would
/// have left it) that starts failing every call is quarantined within its next window, and its
/// lifetime counters carry on.
pub async fn a_long_good_past_does_not_shield_an_overlay_that_starts_failing(db: &Db) {
    let mut veteran = overlay("veteran", "1.0.0", &[]);
    veteran.state = OverlayState::Active;
    veteran.health = OverlayHealth {
        invocation_count: 1_000_000,
        failure_count: 1_000,
        avg_execution_ms: 1.5,
        recent: RecentCalls::parse(&"+".repeat(100)).unwrap(),
        ..OverlayHealth::default()
    };
    let register = event(veteran.id, "register", None, Some(OverlayState::Active));
    let stored = db.repo.insert_overlay(&veteran, register).await.unwrap();
    assert_eq!(stored.health.recent.calls(), 100, "the window is stored with the counters");

    let policy = QuarantinePolicy::default();
    let mut failures = 0;
    let outcome = loop {
        failures += 1;
        assert!(failures <= policy.window_calls, "still active after a whole window of failures");
        let outcome =
            db.repo.record_health(&[delta(veteran.id, 1, 1)], policy, quarantine_event).await.unwrap();
        if outcome[0].quarantined {
            break outcome[0].clone();
        }
    };
    assert_eq!(failures, 51, "49 successes and 51 failures in the window: above half");
    assert_eq!((outcome.health.recent.calls(), outcome.health.recent.failures()), (100, 51));
    assert_eq!(outcome.health.invocation_count, 1_000_051, "lifetime counters stay");
    assert!(outcome.health.failure_rate() < 0.01, "over its life it looks healthy");
    assert_eq!(quarantine_events(db, veteran.id).await, 1);
}

pub async fn caller_failures_are_recorded_but_not_held_against_the_overlay(db: &Db) {
    let o = active(db, "strict-parser", TrustLevel::Sandbox).await;
    let policy = QuarantinePolicy::default();
    let outcome = db.repo.record_health(&[caller_faults(o.id, 20)], policy, quarantine_event).await.unwrap();
    assert_eq!((outcome[0].state, outcome[0].quarantined), (OverlayState::Active, false));
    let health = db.repo.get_overlay(o.id).await.unwrap().unwrap().health;
    assert_eq!((health.invocation_count, health.caller_failure_count, health.failure_count), (20, 20, 0));
    assert_eq!((health.recent.calls(), health.failure_rate()), (0, 0.0), "not in the window, nor the rate");
    assert_eq!(health.last_error.as_deref(), Some("invalid arguments: missing field `text`"), "visible");

    // Its own failures still count: 10 more calls, 6 failed, judged without the caller's 20.
    let outcome = db.repo.record_health(&[delta(o.id, 10, 6)], policy, quarantine_event).await.unwrap();
    assert!(outcome[0].quarantined, "{outcome:?}");
}

/// Releases a quarantined overlay as the service does (resetting its health).
async fn release(db: &Db, id: Uuid) -> forge_model::Overlay {
    let release = event(id, "release", Some(OverlayState::Quarantined), Some(OverlayState::Active));
    let released =
        db.repo.transition(id, OverlayState::Quarantined, OverlayState::Active, true, release).await;
    released.unwrap().unwrap()
}

/// Released from quarantine, an overlay that fails its first window goes straight back, with its
/// own event; one that comes through a full window leaves probation.
pub async fn probation_after_a_release(db: &Db) {
    let policy = QuarantinePolicy { window_calls: 20, ..QuarantinePolicy::default() };
    let o = active(db, "relapsing", TrustLevel::Sandbox).await;
    assert!(
        db.repo.record_health(&[delta(o.id, 10, 10)], policy, quarantine_event).await.unwrap()[0].quarantined
    );
    assert!(!db.repo.get_overlay(o.id).await.unwrap().unwrap().health.on_probation, "never released yet");

    assert!(release(db, o.id).await.health.on_probation);
    let relapse = db.repo.record_health(&[delta(o.id, 10, 6)], policy, quarantine_event).await.unwrap();
    assert_eq!((relapse[0].state, relapse[0].quarantined), (OverlayState::Quarantined, true));
    assert!(!relapse[0].health.on_probation, "a quarantine ends the probation");
    let failed = events_of(db, o.id, AuditAction::ProbationFailed).await;
    assert_eq!(failed.len(), 1, "its own event");
    assert_eq!((failed[0].actor.as_str(), failed[0].to_state), ("system", Some(OverlayState::Quarantined)));
    assert_eq!(failed[0].details["window_failure_count"], 6, "worded from the window that failed");
    assert_eq!(quarantine_events(db, o.id).await, 1, "the first quarantine only");

    release(db, o.id).await;
    let first = db.repo.record_health(&[delta(o.id, 19, 0)], policy, quarantine_event).await.unwrap();
    assert!(first[0].health.on_probation, "19 of a 20-call window");
    let through = db.repo.record_health(&[delta(o.id, 1, 0)], policy, quarantine_event).await.unwrap();
    assert!(!through[0].health.on_probation, "a full window without a quarantine ends it");
    assert!(!db.repo.get_overlay(o.id).await.unwrap().unwrap().health.on_probation, "stored");
    let later = db.repo.record_health(&[delta(o.id, 20, 11)], policy, quarantine_event).await.unwrap();
    assert!(later[0].quarantined);
    assert_eq!(quarantine_events(db, o.id).await, 2, "after probation, an ordinary quarantine");
    assert_eq!(events_of(db, o.id, AuditAction::ProbationFailed).await.len(), 1);
}

/// A batch larger than the window leaves only the window's worth of its last calls.
pub async fn the_window_keeps_only_the_most_recent_calls(db: &Db) {
    let o = active(db, "busy", TrustLevel::Core).await;
    let policy = QuarantinePolicy { window_calls: 10, ..QuarantinePolicy::default() };
    let outcome = db.repo.record_health(&[delta(o.id, 25, 3)], policy, quarantine_event).await.unwrap();
    assert_eq!(outcome[0].health.recent.as_str(), "+++++++---");
    let outcome = db.repo.record_health(&[delta(o.id, 4, 4)], policy, quarantine_event).await.unwrap();
    assert_eq!(outcome[0].health.recent.as_str(), "+++-------");
    assert_eq!(outcome[0].health.invocation_count, 29);
}
