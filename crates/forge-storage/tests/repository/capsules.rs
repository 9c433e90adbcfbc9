//! Capsules and their full-text search.

use crate::Db;
use forge_model::{AuditAction, CapsuleHit, CapsuleType, NewAuditEvent, NewCapsule, PageRequest, TrustLevel};
use forge_storage::StorageError;
use serde_json::{Map, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn capsule(content: &str, trust_level: TrustLevel) -> NewCapsule {
    NewCapsule {
        content: content.into(),
        capsule_type: CapsuleType::Knowledge,
        trust_level,
        metadata: Map::new(),
        owner: Some("alice".into()),
        created_by_overlay: None,
    }
}

async fn ids(db: &Db, query: &str, max_trust: TrustLevel) -> Vec<Uuid> {
    let hits = db.repo.search_capsules(query, 10, max_trust).await.unwrap();
    hits.iter().map(|h| h.capsule.id).collect()
}

pub async fn capsules_are_stored_as_version_one(db: &Db) {
    let overlay = Uuid::now_v7();
    let mut new = capsule("Decisions are recorded.", TrustLevel::Sandbox);
    new.capsule_type = CapsuleType::Decision;
    new.owner = None;
    new.created_by_overlay = Some(overlay);
    new.metadata = json!({"created_by_overlay": overlay, "overlay_name": "writer", "tags": ["a", 1]})
        .as_object()
        .unwrap()
        .clone();
    let stored = db.repo.insert_capsule(new.clone(), None).await.unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(
        (stored.content.as_str(), stored.capsule_type),
        ("Decisions are recorded.", CapsuleType::Decision)
    );
    assert_eq!((stored.trust_level, stored.owner.as_deref()), (TrustLevel::Sandbox, None));
    assert_eq!((stored.created_by_overlay, &stored.metadata), (Some(overlay), &new.metadata));
    assert_eq!(db.repo.get_capsule(stored.id).await.unwrap(), Some(stored));
    assert_eq!(db.repo.get_capsule(Uuid::now_v7()).await.unwrap(), None);
}

pub async fn search_ranks_by_relevance_and_stems(db: &Db) {
    let strong = db.repo.insert_capsule(
        capsule("Overlay quarantine: quarantine rules for overlays.", TrustLevel::Standard),
        None,
    );
    let strong = strong.await.unwrap();
    let weak = db.repo.insert_capsule(capsule(
        "The release notes mention quarantine once among many other words about builds, caches and deployments.",
        TrustLevel::Standard,
    ), None);
    let weak = weak.await.unwrap();
    db.repo.insert_capsule(capsule("Nothing relevant here.", TrustLevel::Standard), None).await.unwrap();

    let hits = db.repo.search_capsules("quarantine", 10, TrustLevel::Core).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.capsule.id).collect::<Vec<_>>(), [strong.id, weak.id]);
    assert!(hits[0].score > hits[1].score && hits[1].score > 0.0, "{hits:?}");
    assert_eq!(ids(db, "overlay rules", TrustLevel::Core).await, [strong.id], "every word must match");
    assert_eq!(ids(db, "QUARANTINED", TrustLevel::Core).await.len(), 2, "stemmed and case-blind");
    assert_eq!(ids(db, "quarantine", TrustLevel::Core).await.len(), 2);
    assert!(ids(db, "absent", TrustLevel::Core).await.is_empty());
    let limited = db.repo.search_capsules("quarantine", 1, TrustLevel::Core).await.unwrap();
    assert_eq!(limited.iter().map(|h| h.capsule.id).collect::<Vec<_>>(), [strong.id]);
}

pub async fn search_filters_by_trust(db: &Db) {
    let mut by_level = Vec::new();
    for &level in TrustLevel::ALL {
        let stored =
            db.repo.insert_capsule(capsule(&format!("secret plan at {level}"), level), None).await.unwrap();
        by_level.push((level, stored.id));
    }
    for &max in TrustLevel::ALL {
        let mut found = ids(db, "secret plan", max).await;
        found.sort();
        let mut expected: Vec<_> =
            by_level.iter().filter(|(l, _)| max.can_access(*l)).map(|(_, id)| *id).collect();
        expected.sort();
        assert_eq!(found, expected, "max trust {max}");
    }
}

pub async fn search_returns_previews(db: &Db) {
    let long = format!("needle {}", "é".repeat(2000));
    let stored = db.repo.insert_capsule(capsule(&long, TrustLevel::Standard), None).await.unwrap();
    let hits = db.repo.search_capsules("needle", 10, TrustLevel::Standard).await.unwrap();
    let preview = &hits[0].capsule;
    assert_eq!(preview.id, stored.id);
    assert_eq!(preview.content.chars().count(), CapsuleHit::CONTENT_PREVIEW_CHARS);
    assert!(long.starts_with(&preview.content));
    assert_eq!((preview.capsule_type, preview.trust_level), (CapsuleType::Knowledge, TrustLevel::Standard));
    assert_eq!(
        db.repo.get_capsule(stored.id).await.unwrap().unwrap().content,
        long,
        "only the preview is cut"
    );
}

pub async fn hostile_queries_are_plain_words(db: &Db) {
    let stored = db
        .repo
        .insert_capsule(capsule("near the sandbox: NOT a drill, OR is it?", TrustLevel::Standard), None);
    let stored = stored.await.unwrap();
    for query in [
        "\"",
        "\"sandbox",
        "sandbox\"",
        "*",
        "sandbox*",
        "NEAR(sandbox drill)",
        "content:sandbox",
        "^sandbox",
        "sandbox AND",
        "OR",
        "NOT sandbox",
        "-sandbox",
        "(sandbox",
        "sandbox)",
        "'; DROP TABLE capsules; --",
        "sandbox & drill | x",
        "!!",
        "\\",
        "\u{0}",
        "💥 sandbox",
        "sandbox:*",
        "{sandbox}",
        "sandbox -- drill",
        "sand\u{0}box",
    ] {
        db.repo
            .search_capsules(query, 10, TrustLevel::Core)
            .await
            .unwrap_or_else(|e| panic!("`{query}`: {e}"));
    }
    assert_eq!(ids(db, "\"sandbox\"", TrustLevel::Core).await, [stored.id], "quotes are not syntax");
    assert_eq!(ids(db, "sandbox)", TrustLevel::Core).await, [stored.id]);
    assert_eq!(ids(db, "drill*", TrustLevel::Core).await, [stored.id], "no prefix operator, but a word");
    assert!(db.repo.get_capsule(stored.id).await.unwrap().is_some());
}

pub async fn queries_without_words_find_nothing(db: &Db) {
    db.repo.insert_capsule(capsule("anything at all", TrustLevel::Standard), None).await.unwrap();
    for query in ["", "   ", "\t\n", "-- ** \"\""] {
        assert!(db.repo.search_capsules(query, 10, TrustLevel::Core).await.unwrap().is_empty(), "`{query}`");
    }
    assert!(db.repo.search_capsules("anything", 0, TrustLevel::Core).await.unwrap().is_empty(), "limit 0");
}

pub async fn nul_characters_are_replaced_alike(db: &Db) {
    let mut new = capsule("alpha\u{0}omega", TrustLevel::Standard);
    new.metadata.insert("note\u{0}".into(), json!(["x\u{0}y"]));
    let stored = db.repo.insert_capsule(new, None).await.unwrap();
    assert_eq!(stored.content, "alpha\u{FFFD}omega");
    assert_eq!(stored.metadata["note\u{FFFD}"], json!(["x\u{FFFD}y"]));
    assert_eq!(ids(db, "omega", TrustLevel::Core).await, [stored.id]);
}

/// The audit event of a capsule deleted by overlay `overlay_id`.
fn deleted_by(overlay_id: Uuid, capsule: Uuid) -> NewAuditEvent {
    NewAuditEvent {
        overlay_id,
        actor: "cleaner".into(),
        action: AuditAction::DeleteCapsule,
        from_state: None,
        to_state: None,
        reason: None,
        details: json!({ "capsule_id": capsule }).as_object().unwrap().clone(),
    }
}

pub async fn delete_respects_trust_and_records_the_event(db: &Db) {
    let overlay_id = Uuid::now_v7();
    let event = |capsule: Uuid| deleted_by(overlay_id, capsule);
    let core = db.repo.insert_capsule(capsule("core secret", TrustLevel::Core), None).await.unwrap();
    let open = db.repo.insert_capsule(capsule("open note", TrustLevel::Standard), None).await.unwrap();
    let missing = Uuid::now_v7();

    assert!(!db.repo.delete_capsule(core.id, TrustLevel::Standard, event(core.id), None).await.unwrap());
    assert!(!db.repo.delete_capsule(missing, TrustLevel::Standard, event(missing), None).await.unwrap());
    assert!(db.repo.get_capsule(core.id).await.unwrap().is_some(), "a capsule above the trust stays");
    assert!(db.repo.delete_capsule(open.id, TrustLevel::Standard, event(open.id), None).await.unwrap());
    assert_eq!(db.repo.get_capsule(open.id).await.unwrap(), None);
    assert_eq!(ids(db, "note", TrustLevel::Core).await, Vec::<Uuid>::new(), "gone from search too");

    let events = db.repo.list_events(overlay_id, PageRequest::default()).await.unwrap().items;
    assert_eq!(events.len(), 1, "only the delete that happened is recorded");
    assert_eq!((events[0].action, events[0].actor.as_str()), (AuditAction::DeleteCapsule, "cleaner"));
    assert_eq!(events[0].details["capsule_id"], json!(open.id));
}

/// A host call's write that reaches its commit after the call's deadline rolls back: its guest was
/// told the call failed, so nothing may change behind its back.
pub async fn capsule_writes_past_their_deadline_roll_back(db: &Db) {
    let passed = Some(Instant::now());
    let late = db.repo.insert_capsule(capsule("written too late", TrustLevel::Standard), passed).await;
    assert!(matches!(late, Err(StorageError::Unavailable(_))), "{late:?}");
    assert_eq!(ids(db, "late", TrustLevel::Core).await, Vec::<Uuid>::new(), "the late capsule is not stored");

    let in_time = Some(Instant::now() + Duration::from_secs(60));
    let kept = db.repo.insert_capsule(capsule("kept in time", TrustLevel::Standard), in_time).await.unwrap();
    let overlay_id = Uuid::now_v7();
    let late =
        db.repo.delete_capsule(kept.id, TrustLevel::Core, deleted_by(overlay_id, kept.id), passed).await;
    assert!(matches!(late, Err(StorageError::Unavailable(_))), "{late:?}");
    assert_eq!(db.repo.get_capsule(kept.id).await.unwrap(), Some(kept.clone()), "the late delete is undone");
    let events = db.repo.list_events(overlay_id, PageRequest::default()).await.unwrap().items;
    assert_eq!(events, vec![], "and so is its audit event");
    assert!(
        db.repo
            .delete_capsule(kept.id, TrustLevel::Core, deleted_by(overlay_id, kept.id), in_time)
            .await
            .unwrap()
    );
}
