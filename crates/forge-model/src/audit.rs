//! The audit trail: who did what to which overlay, and why.

use crate::state::OverlayState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// One recorded action on an overlay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    pub id: i64,
    pub overlay_id: Uuid,
    /// The principal's name, or `system` for automatic actions.
    pub actor: String,
    /// `register`, a lifecycle action (`activate`, `suspend`, ...), `auto_quarantine`, `set_trust_level`,
    /// `delete`.
    pub action: String,
    pub from_state: Option<OverlayState>,
    pub to_state: Option<OverlayState>,
    pub reason: Option<String>,
    /// Action-specific facts, e.g. the failure rate behind an automatic quarantine.
    pub details: Map<String, Value>,
    pub created_at: DateTime<Utc>,
}

/// An event about to be recorded (the store assigns id and timestamp).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    pub overlay_id: Uuid,
    pub actor: String,
    pub action: String,
    pub from_state: Option<OverlayState>,
    pub to_state: Option<OverlayState>,
    pub reason: Option<String>,
    pub details: Map<String, Value>,
}
