//! Forge overlay domain model: the types every other crate of the runtime shares.
//!
//! Pure data and rules, no I/O: manifests and their validation, overlays and their lifecycle,
//! trust levels, invocations, their results and logs, capsules, users and the audit trail, and the one error
//! type with Forge's wire body.

pub mod api;
pub mod audit;
pub mod capability;
pub mod capsule;
pub mod error;
pub mod invocation;
pub mod logs;
pub mod manifest;
mod names;
pub mod network;
pub mod overlay;
pub mod state;
pub mod trust;
pub mod user;

pub use audit::{AuditAction, AuditEvent, NewAuditEvent};
pub use capability::{Capability, CapabilityName};
pub use capsule::{Capsule, CapsuleHit, CapsulePreview, CapsuleType, NewCapsule};
pub use error::{ErrorCode, FieldError, ForgeError, UNAVAILABLE_RETRY_AFTER_SECS, abbreviated};
pub use invocation::{Blame, ErrorKind, OverlayInvocation, OverlayResult};
pub use logs::{LogEntry, LogLevel, LogLine, LogQuery, LogRetention, log_time};
pub use manifest::{BuildSpec, MountGrant, OverlayManifest};
pub use overlay::{
    HealthReport, LatencyHistogram, Overlay, OverlayFilter, OverlayHealth, Page, PageRequest,
    QuarantinePolicy, RecentCalls,
};
pub use state::{LifecycleAction, OverlayState};
pub use trust::TrustLevel;
pub use user::{NewUser, Principal, Role, User};

/// Hex SHA-256 of some bytes: how overlay binaries (and API tokens) are identified everywhere.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
