//! The audit trail: who did what to which overlay, and why.

use crate::names::wire_names;
use crate::state::{LifecycleAction, OverlayState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// What an audit event records. Snake case on the wire; the lifecycle actions keep their own names.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AuditAction {
    Register,
    Activate,
    Suspend,
    Resume,
    Quarantine,
    Release,
    Deprecate,
    /// Quarantined by the service because it failed too often.
    AutoQuarantine,
    /// Quarantined by the service because it failed too often in its first window after a release
    /// from quarantine (its probation).
    ProbationFailed,
    SetTrustLevel,
    Delete,
    /// The overlay deleted a capsule through `capsule_delete`; `details` name the capsule, and the
    /// actor is the overlay itself.
    DeleteCapsule,
}

wire_names!(AuditAction, "audit action");

impl From<LifecycleAction> for AuditAction {
    fn from(action: LifecycleAction) -> Self {
        match action {
            LifecycleAction::Activate => AuditAction::Activate,
            LifecycleAction::Suspend => AuditAction::Suspend,
            LifecycleAction::Resume => AuditAction::Resume,
            LifecycleAction::Quarantine => AuditAction::Quarantine,
            LifecycleAction::Release => AuditAction::Release,
            LifecycleAction::Deprecate => AuditAction::Deprecate,
        }
    }
}

/// One recorded action on an overlay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    pub id: i64,
    pub overlay_id: Uuid,
    /// The principal's name, or `system` for automatic actions.
    pub actor: String,
    pub action: AuditAction,
    pub from_state: Option<OverlayState>,
    pub to_state: Option<OverlayState>,
    /// Free text given by the actor: shown to admins, operators and the overlay's submitter only,
    /// null for other callers.
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
    pub action: AuditAction,
    pub from_state: Option<OverlayState>,
    pub to_state: Option<OverlayState>,
    pub reason: Option<String>,
    pub details: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_actions_keep_their_names_in_the_audit_trail() {
        for &action in LifecycleAction::ALL {
            assert_eq!(AuditAction::from(action).as_str(), action.as_str());
        }
        assert_eq!(serde_json::to_string(&AuditAction::AutoQuarantine).unwrap(), "\"auto_quarantine\"");
        assert_eq!("set_trust_level".parse::<AuditAction>().unwrap(), AuditAction::SetTrustLevel);
    }
}
