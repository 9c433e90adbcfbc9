//! Sample records for the suite; databases come from `forge_storage::testing`.

use chrono::Utc;
use forge_model::{
    NewAuditEvent, Overlay, OverlayHealth, OverlayManifest, OverlayState, QuarantinePolicy, TrustLevel,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub use forge_storage::testing::{Db, postgres, sqlite};

/// A pending sandbox overlay as registration makes it.
pub fn overlay(name: &str, version: &str, capabilities: &[&str]) -> Overlay {
    let manifest = OverlayManifest::from_value(json!({
        "name": name,
        "version": version,
        "capabilities": capabilities,
        "max_fuel": u64::MAX,
    }))
    .expect("valid manifest");
    let now = Utc::now();
    let hash = format!("{:064x}", Uuid::new_v4().as_u128());
    Overlay {
        id: Uuid::now_v7(),
        wasm_key: Overlay::wasm_key_for(name, version, &hash),
        wasm_hash: hash,
        requires_approval: !manifest.privileged_capabilities().is_empty(),
        manifest,
        state: OverlayState::Pending,
        trust_level: TrustLevel::Sandbox,
        source_hash: None,
        submitted_by: "alice".into(),
        created_at: now,
        updated_at: now,
        health: OverlayHealth::default(),
    }
}

pub fn event(
    overlay_id: Uuid,
    action: &str,
    from: Option<OverlayState>,
    to: Option<OverlayState>,
) -> NewAuditEvent {
    NewAuditEvent {
        overlay_id,
        actor: "admin".into(),
        action: action.parse().expect("an audit action"),
        from_state: from,
        to_state: to,
        reason: Some(format!("{action} for the test")),
        details: Map::new(),
    }
}

/// The caller's wording of an automatic quarantine, with the numbers it was handed: storage must
/// pass the health as it stands after the batch (still on probation if it was).
pub fn quarantine_event(overlay_id: Uuid, health: &OverlayHealth, _: QuarantinePolicy) -> NewAuditEvent {
    let mut details = Map::new();
    details.insert("failure_rate".into(), json!(health.failure_rate()));
    details.insert("invocation_count".into(), json!(health.invocation_count));
    details.insert("failure_count".into(), json!(health.failure_count));
    details.insert("window_failure_count".into(), json!(health.recent.failures()));
    let action = if health.on_probation {
        forge_model::AuditAction::ProbationFailed
    } else {
        forge_model::AuditAction::AutoQuarantine
    };
    NewAuditEvent {
        overlay_id,
        actor: "system".into(),
        action,
        from_state: Some(OverlayState::Active),
        to_state: Some(OverlayState::Quarantined),
        reason: Some("quarantined for the test".into()),
        details,
    }
}

/// Registers a sample overlay.
pub async fn register(db: &Db, name: &str, version: &str) -> Overlay {
    let overlay = overlay(name, version, &[]);
    let register = event(overlay.id, "register", None, Some(OverlayState::Pending));
    db.repo.insert_overlay(&overlay, register).await.expect("insert overlay")
}

/// Registers a sample overlay, sets its trust and activates it.
pub async fn active(db: &Db, name: &str, trust: TrustLevel) -> Overlay {
    let overlay = register(db, name, "1.0.0").await;
    let id = overlay.id;
    db.repo.set_trust_level(id, trust, event(id, "set_trust_level", None, None)).await.unwrap();
    let activate = event(id, "activate", Some(OverlayState::Pending), Some(OverlayState::Active));
    db.repo
        .transition(id, OverlayState::Pending, OverlayState::Active, false, activate)
        .await
        .unwrap()
        .unwrap()
}

/// Replaces the stored manifest of overlay `name` behind the repository's back, as a release with
/// other rules could have written it.
pub async fn rewrite_manifest(db: &Db, name: &str, manifest: &Value) {
    let quoted = |text: &str| format!("'{}'", text.replace('\'', "''"));
    let sql = format!(
        "UPDATE overlays SET manifest = {} WHERE name = {}",
        quoted(&manifest.to_string()),
        quoted(name)
    );
    db.execute(&sql).await;
}
