//! Rows into model types; a value the model refuses is reported as corruption, never guessed.

use super::backend::Row;
use crate::error::StorageError;
use crate::repository::Result;
use forge_model::api::TokenInfo;
use forge_model::{
    AuditEvent, Capsule, CapsulePreview, Overlay, OverlayHealth, OverlayManifest, OverlayState, RecentCalls,
    TrustLevel, User,
};
use serde_json::{Map, Value};

pub(super) fn trust_from(row: &Row) -> Result<TrustLevel> {
    let value = row.int("trust_level")?;
    TrustLevel::from_value(value).ok_or_else(|| StorageError::Corrupt(format!("trust_level: {value}")))
}

pub(super) fn health_from(row: &Row) -> Result<OverlayHealth> {
    let invocation_count = row.count("invocation_count")?;
    let total_ms = row.real("total_execution_ms")?;
    Ok(OverlayHealth {
        invocation_count,
        failure_count: row.count("failure_count")?,
        host_failure_count: row.count("host_failure_count")?,
        caller_failure_count: row.count("caller_failure_count")?,
        avg_execution_ms: if invocation_count == 0 { 0.0 } else { total_ms / invocation_count as f64 },
        last_invoked_at: row.opt_time("last_invoked_at")?,
        last_error: row.opt_text("last_error")?,
        recent: RecentCalls::parse(&row.text("recent_calls")?).map_err(StorageError::Corrupt)?,
        on_probation: row.bool("on_probation")?,
    })
}

pub(super) fn overlay_from(row: &Row) -> Result<Overlay> {
    let id = row.uuid("id")?;
    // Decoded, not validated: registration checked it against the rules of its day.
    let manifest = OverlayManifest::from_stored(row.json("manifest")?)
        .map_err(|e| StorageError::Corrupt(format!("overlay {id}: stored manifest: {e}")))?;
    Ok(Overlay {
        id,
        manifest,
        state: row.parsed("state")?,
        trust_level: trust_from(row)?,
        wasm_key: row.text("wasm_key")?,
        wasm_hash: row.text("wasm_hash")?,
        source_hash: row.opt_text("source_hash")?,
        submitted_by: row.text("submitted_by")?,
        requires_approval: row.bool("requires_approval")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        health: health_from(row)?,
    })
}

pub(super) fn overlays_from(rows: Vec<Row>) -> Result<Vec<Overlay>> {
    rows.iter().map(overlay_from).collect()
}

fn opt_state(row: &Row, column: &str) -> Result<Option<OverlayState>> {
    row.opt_text(column)?
        .map(|s| s.parse().map_err(|e| StorageError::Corrupt(format!("{column}: {e}"))))
        .transpose()
}

fn json_object(row: &Row, column: &str) -> Result<Map<String, Value>> {
    match row.json(column)? {
        Value::Object(map) => Ok(map),
        other => Err(StorageError::Corrupt(format!("{column} is not an object: {other}"))),
    }
}

pub(super) fn event_from(row: &Row) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: row.int("id")?,
        overlay_id: row.uuid("overlay_id")?,
        actor: row.text("actor")?,
        action: row.parsed("action")?,
        from_state: opt_state(row, "from_state")?,
        to_state: opt_state(row, "to_state")?,
        reason: row.opt_text("reason")?,
        details: json_object(row, "details")?,
        created_at: row.time("created_at")?,
    })
}

pub(super) fn user_from(row: &Row) -> Result<User> {
    let roles = serde_json::from_value(row.json("roles")?)
        .map_err(|e| StorageError::Corrupt(format!("roles: {e}")))?;
    Ok(User {
        id: row.uuid("id")?,
        name: row.text("name")?,
        roles,
        trust_level: trust_from(row)?,
        created_at: row.time("created_at")?,
        disabled: row.opt_time("disabled_at")?.is_some(),
    })
}

pub(super) fn token_from(row: &Row) -> Result<TokenInfo> {
    Ok(TokenInfo {
        id: row.text("id")?,
        created_at: row.time("created_at")?,
        revoked_at: row.opt_time("revoked_at")?,
        bootstrap: row.bool("bootstrap")?,
    })
}

/// A search hit's capsule, from the columns the search selects: content already cut, no metadata.
pub(super) fn preview_from(row: &Row) -> Result<CapsulePreview> {
    Ok(CapsulePreview {
        id: row.uuid("id")?,
        content: row.text("content")?,
        capsule_type: row.parsed("capsule_type")?,
        trust_level: trust_from(row)?,
    })
}

pub(super) fn capsule_from(row: &Row) -> Result<Capsule> {
    let version = row.int("version")?;
    Ok(Capsule {
        id: row.uuid("id")?,
        content: row.text("content")?,
        capsule_type: row.parsed("capsule_type")?,
        trust_level: trust_from(row)?,
        version: u32::try_from(version).map_err(|_| StorageError::Corrupt(format!("version: {version}")))?,
        metadata: json_object(row, "metadata")?,
        owner: row.opt_text("owner")?,
        created_by_overlay: row.opt_uuid("created_by_overlay")?,
        created_at: row.time("created_at")?,
    })
}
