//! Overlay records: registration, lookups, listings, lifecycle compare-and-set, trust, deletion.

use crate::Db;
use crate::fixture::{active, event, overlay, quarantine_event, register, rewrite_manifest};
use forge_model::{
    CapabilityName, LatencyHistogram, OverlayFilter, OverlayHealth, OverlayState, PageRequest,
    QuarantinePolicy, TrustLevel,
};
use forge_storage::{HealthDelta, StorageError, open_repository};
use uuid::Uuid;

use OverlayState::{Active, Deprecated, Pending, Quarantined, Suspended};

pub async fn insert_returns_the_stored_overlay_and_records_the_event(db: &Db) {
    let new = overlay("text-stats", "1.2.3", &["capsule:read", "capsule:write"]);
    let stored = db.repo.insert_overlay(&new, event(new.id, "register", None, Some(Pending))).await.unwrap();
    assert_eq!(stored.manifest, new.manifest, "u64::MAX fuel and capabilities survive");
    assert_eq!((stored.id, stored.state, stored.trust_level), (new.id, Pending, TrustLevel::Sandbox));
    assert_eq!((&stored.wasm_key, &stored.wasm_hash), (&new.wasm_key, &new.wasm_hash));
    assert!(stored.requires_approval);
    assert_eq!(stored.health, OverlayHealth::default());
    let micros = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros();
    assert_eq!(micros(stored.created_at), micros(new.created_at), "kept to the microsecond");

    assert_eq!(db.repo.get_overlay(new.id).await.unwrap().as_ref(), Some(&stored));
    assert_eq!(
        db.repo.get_overlay_by_name_version("text-stats", "1.2.3").await.unwrap().as_ref(),
        Some(&stored)
    );
    assert_eq!(db.repo.latency_histogram(new.id).await.unwrap().counts, vec![0; LatencyHistogram::BUCKETS]);

    let events = db.repo.list_events(new.id, PageRequest::default()).await.unwrap();
    assert_eq!(events.total, 1);
    let registered = &events.items[0];
    assert_eq!((registered.action.as_str(), registered.to_state), ("register", Some(Pending)));
    assert_eq!(registered.created_at, stored.created_at);
}

pub async fn name_and_version_are_unique(db: &Db) {
    let first = register(db, "echo", "1.0.0").await;
    let again = overlay("echo", "1.0.0", &[]);
    let err =
        db.repo.insert_overlay(&again, event(again.id, "register", None, Some(Pending))).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Conflict(m) if m.contains("echo") && m.contains("1.0.0")),
        "{err:?}"
    );
    assert_eq!(db.repo.get_overlay(again.id).await.unwrap(), None, "nothing of the refused insert is kept");
    assert_eq!(db.repo.list_events(again.id, PageRequest::default()).await.unwrap().total, 0);
    assert!(db.repo.get_overlay(first.id).await.unwrap().is_some());
    register(db, "echo", "1.0.1").await;
}

pub async fn unknown_overlays_are_none(db: &Db) {
    assert_eq!(db.repo.get_overlay(Uuid::now_v7()).await.unwrap(), None);
    assert_eq!(db.repo.get_overlay_by_name_version("nope", "1.0.0").await.unwrap(), None);
    assert!(db.repo.active_overlays_named("nope").await.unwrap().is_empty());
}

pub async fn list_filters_orders_and_pages(db: &Db) {
    let mut ids = Vec::new();
    for (name, submitter, caps) in [
        ("alpha-one", "alice", vec!["capsule:read"]),
        ("beta-two", "bob", vec!["network:http"]),
        ("alpha-three", "bob", vec!["capsule:read", "capsule:write"]),
        ("gamma", "alice", vec![]),
    ] {
        let mut new = overlay(name, "1.0.0", &caps);
        new.submitted_by = submitter.into();
        db.repo.insert_overlay(&new, event(new.id, "register", None, Some(Pending))).await.unwrap();
        ids.push(new.id);
    }
    let third = ids[2];
    db.repo.transition(third, Pending, Active, false, event(third, "activate", None, None)).await.unwrap();

    let list = |filter: OverlayFilter, page: PageRequest| {
        let repo = db.repo.clone();
        async move { repo.list_overlays(&filter, page).await.unwrap() }
    };
    let all = list(OverlayFilter::default(), PageRequest::default()).await;
    assert_eq!(all.items.iter().map(|o| o.id).collect::<Vec<_>>(), ids, "oldest first");
    assert_eq!((all.total, all.pages), (4, 1));

    let by_name =
        list(OverlayFilter { name: Some("ALPHA".into()), ..Default::default() }, PageRequest::default());
    assert_eq!(by_name.await.items.iter().map(|o| o.id).collect::<Vec<_>>(), [ids[0], ids[2]]);
    let wildcard = OverlayFilter { name: Some("a_t".into()), ..Default::default() };
    assert_eq!(list(wildcard, PageRequest::default()).await.total, 0, "`_` is no wildcard (beta-two)");
    let by_state = OverlayFilter { state: Some(Active), ..Default::default() };
    assert_eq!(list(by_state, PageRequest::default()).await.items[0].id, third);
    let by_submitter = OverlayFilter { submitter: Some("alice".into()), ..Default::default() };
    assert_eq!(list(by_submitter, PageRequest::default()).await.total, 2);
    let by_capability = OverlayFilter { capability: Some(CapabilityName::CapsuleRead), ..Default::default() };
    assert_eq!(
        list(by_capability, PageRequest::default()).await.items.iter().map(|o| o.id).collect::<Vec<_>>(),
        [ids[0], ids[2]]
    );
    let combined = OverlayFilter {
        submitter: Some("bob".into()),
        capability: Some(CapabilityName::CapsuleRead),
        state: Some(Pending),
        ..Default::default()
    };
    assert_eq!(list(combined, PageRequest::default()).await.total, 0);

    let second_page = list(OverlayFilter::default(), PageRequest::new(Some(2), Some(3))).await;
    assert_eq!(second_page.items.iter().map(|o| o.id).collect::<Vec<_>>(), [ids[3]]);
    assert_eq!((second_page.total, second_page.page, second_page.per_page, second_page.pages), (4, 2, 3, 2));
    let beyond = list(OverlayFilter::default(), PageRequest::new(Some(9), Some(3))).await;
    assert!(beyond.items.is_empty() && beyond.total == 4);
}

pub async fn active_overlays_named_skips_other_states(db: &Db) {
    let one = register(db, "echo", "1.0.0").await;
    let two = register(db, "echo", "2.0.0").await;
    register(db, "echo", "3.0.0").await;
    register(db, "other", "1.0.0").await;
    for o in [&one, &two] {
        db.repo.transition(o.id, Pending, Active, false, event(o.id, "activate", None, None)).await.unwrap();
    }
    let active = db.repo.active_overlays_named("echo").await.unwrap();
    assert_eq!(active.iter().map(|o| o.id).collect::<Vec<_>>(), [one.id, two.id]);
}

pub async fn transition_is_compare_and_set(db: &Db) {
    let o = register(db, "echo", "1.0.0").await;
    let refused = db.repo.transition(o.id, Active, Suspended, false, event(o.id, "suspend", None, None));
    assert_eq!(refused.await.unwrap(), None, "not active, so not suspended");
    let missing =
        db.repo.transition(Uuid::now_v7(), Pending, Active, false, event(o.id, "activate", None, None));
    assert_eq!(missing.await.unwrap(), None);
    assert_eq!(
        db.repo.list_events(o.id, PageRequest::default()).await.unwrap().total,
        1,
        "refusals write nothing"
    );

    let moved = db.repo.transition(
        o.id,
        Pending,
        Active,
        false,
        event(o.id, "activate", Some(Pending), Some(Active)),
    );
    let moved = moved.await.unwrap().expect("pending -> active");
    assert_eq!(moved.state, Active);
    assert!(moved.updated_at > o.updated_at);
    assert_eq!(moved.created_at, o.created_at);
    assert_eq!(db.repo.get_overlay(o.id).await.unwrap().unwrap(), moved);
    for (from, to) in
        [(Active, Suspended), (Suspended, Active), (Active, Quarantined), (Quarantined, Deprecated)]
    {
        let e = event(o.id, "suspend", Some(from), Some(to));
        assert_eq!(db.repo.transition(o.id, from, to, false, e).await.unwrap().unwrap().state, to);
    }
    let events = db.repo.list_events(o.id, PageRequest::default()).await.unwrap();
    let trail: Vec<_> = events.items.iter().map(|e| (e.from_state, e.to_state)).collect();
    assert_eq!(
        trail[1..],
        [
            (Some(Pending), Some(Active)),
            (Some(Active), Some(Suspended)),
            (Some(Suspended), Some(Active)),
            (Some(Active), Some(Quarantined)),
            (Some(Quarantined), Some(Deprecated)),
        ]
    );
}

pub async fn concurrent_transitions_let_exactly_one_win(db: &Db) {
    let o = register(db, "echo", "1.0.0").await;
    let attempts = (0..8).map(|i| {
        let repo = db.repo.clone();
        let to = if i % 2 == 0 { Active } else { Deprecated };
        tokio::spawn(async move {
            repo.transition(o.id, Pending, to, false, event(o.id, "activate", None, None)).await
        })
    });
    let mut winners = 0;
    for attempt in attempts {
        winners += usize::from(attempt.await.unwrap().unwrap().is_some());
    }
    assert_eq!(winners, 1);
    assert_eq!(db.repo.list_events(o.id, PageRequest::default()).await.unwrap().total, 2);
}

pub async fn transition_can_reset_health(db: &Db) {
    let o = active(db, "flaky", TrustLevel::Sandbox).await;
    let mut delta = HealthDelta::new(o.id, chrono::Utc::now());
    delta.invocations = 12;
    delta.failures = 12;
    delta.recent = forge_model::RecentCalls::parse(&"-".repeat(12)).unwrap();
    delta.total_execution_ms = 24.0;
    delta.latency_buckets[3] = 12;
    delta.last_error = Some("trap".into());
    let outcome =
        db.repo.record_health(&[delta], QuarantinePolicy::default(), quarantine_event).await.unwrap();
    assert!(outcome[0].quarantined);

    let release = event(o.id, "release", Some(Quarantined), Some(Active));
    let released = db.repo.transition(o.id, Quarantined, Active, true, release).await.unwrap().unwrap();
    assert_eq!(released.state, Active);
    let on_probation = OverlayHealth { on_probation: true, ..OverlayHealth::default() };
    assert_eq!(released.health, on_probation, "counters and window emptied, probation started");
    assert_eq!(db.repo.latency_histogram(o.id).await.unwrap().counts, vec![0; LatencyHistogram::BUCKETS]);

    let suspend = event(o.id, "suspend", Some(Active), Some(Suspended));
    let kept = db.repo.transition(o.id, Active, Suspended, false, suspend).await.unwrap().unwrap();
    assert_eq!(kept.health, on_probation);
}

pub async fn set_trust_level_records_the_change(db: &Db) {
    let o = register(db, "echo", "1.0.0").await;
    let changed =
        db.repo.set_trust_level(o.id, TrustLevel::Trusted, event(o.id, "set_trust_level", None, None));
    let changed = changed.await.unwrap().unwrap();
    assert_eq!(changed.trust_level, TrustLevel::Trusted);
    assert!(changed.updated_at > o.updated_at);
    assert_eq!(db.repo.get_overlay(o.id).await.unwrap().unwrap().trust_level, TrustLevel::Trusted);
    let unknown = Uuid::now_v7();
    let missing =
        db.repo.set_trust_level(unknown, TrustLevel::Core, event(unknown, "set_trust_level", None, None));
    assert_eq!(missing.await.unwrap(), None);
    assert_eq!(db.repo.list_events(unknown, PageRequest::default()).await.unwrap().total, 0);
    let events = db.repo.list_events(o.id, PageRequest::default()).await.unwrap();
    assert_eq!(events.items.last().unwrap().action.as_str(), "set_trust_level");
}

pub async fn delete_keeps_the_audit_trail(db: &Db) {
    let mut new = overlay("reader", "1.0.0", &["capsule:read"]);
    new.source_hash = Some("abc".into());
    db.repo.insert_overlay(&new, event(new.id, "register", None, Some(Pending))).await.unwrap();
    assert!(db.repo.delete_overlay(new.id, event(new.id, "delete", Some(Pending), None)).await.unwrap());
    assert_eq!(db.repo.get_overlay(new.id).await.unwrap(), None);
    let holders = OverlayFilter { capability: Some(CapabilityName::CapsuleRead), ..Default::default() };
    assert_eq!(db.repo.list_overlays(&holders, PageRequest::default()).await.unwrap().total, 0);
    assert!(matches!(db.repo.latency_histogram(new.id).await, Err(StorageError::NotFound(_))));

    let trail = db.repo.list_events(new.id, PageRequest::default()).await.unwrap();
    assert_eq!(trail.items.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["register", "delete"]);
    assert!(!db.repo.delete_overlay(new.id, event(new.id, "delete", None, None)).await.unwrap());
    assert_eq!(db.repo.list_events(new.id, PageRequest::default()).await.unwrap().total, 2);

    let again = overlay("reader", "1.0.0", &[]);
    db.repo
        .insert_overlay(&again, event(again.id, "register", None, Some(Pending)))
        .await
        .expect("name is free again");
}

pub async fn events_page_oldest_first(db: &Db) {
    let o = register(db, "echo", "1.0.0").await;
    for i in 0..4 {
        let mut e = event(o.id, "set_trust_level", None, None);
        e.details.insert("i".into(), i.into());
        db.repo.set_trust_level(o.id, TrustLevel::Standard, e).await.unwrap();
    }
    let page = db.repo.list_events(o.id, PageRequest::new(Some(2), Some(2))).await.unwrap();
    assert_eq!((page.total, page.pages), (5, 3));
    assert_eq!(page.items.iter().map(|e| e.details["i"].clone()).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(page.items[0].actor, "admin");
    assert_eq!(page.items[0].reason.as_deref(), Some("set_trust_level for the test"));
    assert!(page.items[0].id < page.items[1].id && page.items[0].created_at <= page.items[1].created_at);
}

pub async fn reopening_keeps_everything(db: &Db) {
    let o = active(db, "echo", TrustLevel::Trusted).await;
    let reopened = open_repository(&db.url).await.expect("migrations run again without harm");
    assert_eq!(reopened.get_overlay(o.id).await.unwrap().unwrap(), o);
    reopened.close().await;
}

pub async fn manifests_broken_by_newer_rules_are_still_read(db: &Db) {
    let old = register(db, "old-rules", "1.0.0").await;
    register(db, "new-rules", "1.0.0").await;
    // Valid when stored; today's rules refuse its description's length and its memory.
    let mut manifest = serde_json::to_value(&old.manifest).unwrap();
    manifest["description"] = "d".repeat(forge_model::manifest::limits::DESCRIPTION_MAX_CHARS + 1).into();
    manifest["max_memory_mb"] = 4096.into();
    assert!(forge_model::OverlayManifest::from_value(manifest.clone()).is_err(), "breaks today's rules");
    rewrite_manifest(db, "old-rules", &manifest).await;

    let read = db.repo.get_overlay(old.id).await.unwrap().expect("an old row is still read");
    assert_eq!(read.manifest.max_memory_mb, 4096, "read as stored");
    let by_name = db.repo.get_overlay_by_name_version("old-rules", "1.0.0").await.unwrap();
    assert_eq!(by_name.map(|o| o.id), Some(old.id));
    let page = db.repo.list_overlays(&OverlayFilter::default(), PageRequest::default()).await.unwrap();
    assert_eq!(page.total, 2);
    assert!(page.items.iter().any(|o| o.id == old.id), "the old row is listed with the others");
}
