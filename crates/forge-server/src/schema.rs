//! OpenAPI schemas of the domain types on the wire.
//!
//! forge-model stays free of documentation dependencies, so these types mirror its wire shapes for
//! utoipa alone: they are never built, only described. The tests at the bottom hold each mirror to
//! what the real type serializes (every field, every enum value), so the document cannot drift.
#![allow(dead_code)] // Built by no one: their schemas are all they are for.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// A JSON object.
type Object = Map<String, Value>;

/// Lifecycle state.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OverlayState {
    Pending,
    Active,
    Suspended,
    Quarantined,
    Deprecated,
}

/// Trust level, from least to most trusted (Forge's values 0, 40, 60, 80, 100 are accepted in
/// requests too). A subject can reach what is trusted no more than itself.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrustLevel {
    Quarantine,
    Sandbox,
    Standard,
    Trusted,
    Core,
}

/// A lifecycle action (the path segment of `POST /overlays/{id}/{action}`).
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleAction {
    /// admin; pending -> active
    Activate,
    /// admin or operator, reason required; active -> suspended
    Suspend,
    /// admin; suspended -> active
    Resume,
    /// admin or operator, reason required; active or suspended -> quarantined
    Quarantine,
    /// admin; quarantined -> active, health counters reset
    Release,
    /// admin; any but deprecated -> deprecated (terminal)
    Deprecate,
}

#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    User,
}

#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CapsuleType {
    Knowledge,
    Code,
    Decision,
    Insight,
    Config,
    Policy,
}

/// Why an invocation failed.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    FuelExhausted,
    Timeout,
    MemoryLimit,
    Trap,
    InvalidOutput,
    OverlayError,
    CapabilityDenied,
    HostError,
}

#[derive(ToSchema)]
pub enum CapabilityName {
    #[serde(rename = "capsule:read")]
    CapsuleRead,
    #[serde(rename = "capsule:write")]
    CapsuleWrite,
    #[serde(rename = "capsule:delete")]
    CapsuleDelete,
    #[serde(rename = "network:http")]
    NetworkHttp,
    #[serde(rename = "file:read")]
    FileRead,
    #[serde(rename = "file:write")]
    FileWrite,
    #[serde(rename = "governance:vote")]
    GovernanceVote,
    #[serde(rename = "system:config")]
    SystemConfig,
}

/// A requested capability with optional constraints (e.g. `{"hosts": [...]}` for `network:http`).
#[derive(ToSchema)]
pub struct Capability {
    name: CapabilityName,
    constraints: Option<Object>,
}

/// The overlay manifest (`overlay.toml` as a JSON object). Only `name` and `version` are required.
#[derive(ToSchema)]
pub struct OverlayManifest {
    /// `^[a-z0-9-]+$`, 1-100 characters.
    name: String,
    /// `MAJOR.MINOR.PATCH`.
    version: String,
    /// Default: empty; at most 1000 characters.
    description: Option<String>,
    /// Default: empty; at most 100 characters.
    author: Option<String>,
    /// Default: none.
    capabilities: Option<Vec<Capability>>,
    /// Default: 64; 1..=512.
    max_memory_mb: Option<u32>,
    /// Default: 5000; 100..=30000.
    max_execution_ms: Option<u32>,
    /// Default: 1000000.
    max_fuel: Option<u64>,
    /// Default: `["process"]`.
    entry_points: Option<Vec<String>>,
}

/// Running health counters.
#[derive(ToSchema)]
pub struct OverlayHealth {
    invocation_count: u64,
    /// Failures counted against the overlay (all but host faults).
    failure_count: u64,
    /// Failures the host caused, never held against the overlay.
    host_failure_count: u64,
    avg_execution_ms: f64,
    last_invoked_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

/// A registered overlay: its manifest's fields, lifecycle, provenance and health.
#[derive(ToSchema)]
pub struct Overlay {
    id: Uuid,
    name: String,
    version: String,
    description: String,
    author: String,
    capabilities: Vec<Capability>,
    max_memory_mb: u32,
    max_execution_ms: u32,
    max_fuel: u64,
    entry_points: Vec<String>,
    state: OverlayState,
    trust_level: TrustLevel,
    /// Object-store key: `overlays/{name}/{version}/{sha256}.wasm`.
    wasm_key: String,
    /// Hex SHA-256 of the binary, checked on every load.
    wasm_hash: String,
    source_hash: Option<String>,
    submitted_by: String,
    /// True while privileged capabilities await an admin's activation.
    requires_approval: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    health: OverlayHealth,
}

/// Health of one overlay.
#[derive(ToSchema)]
pub struct HealthReport {
    overlay_id: Uuid,
    name: String,
    version: String,
    state: OverlayState,
    trust_level: TrustLevel,
    invocation_count: u64,
    failure_count: u64,
    host_failure_count: u64,
    failure_rate: f64,
    avg_execution_ms: f64,
    p50_execution_ms: Option<f64>,
    p95_execution_ms: Option<f64>,
    last_invoked_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

/// One entry of an overlay's audit trail.
#[derive(ToSchema)]
pub struct AuditEvent {
    id: i64,
    overlay_id: Uuid,
    /// A user's name, or `system`.
    actor: String,
    /// `register`, a lifecycle action, `auto_quarantine`, `set_trust_level` or `delete`.
    action: String,
    from_state: Option<OverlayState>,
    to_state: Option<OverlayState>,
    reason: Option<String>,
    details: Object,
    created_at: DateTime<Utc>,
}

/// A request to run one entry point.
#[derive(ToSchema)]
pub struct OverlayInvocation {
    /// The entry point.
    function: String,
    /// Passed to the guest as JSON. Default: `{}`.
    args: Option<Object>,
    /// Caps the call below the manifest's `max_execution_ms`; 100..=30000.
    timeout_ms: Option<u32>,
}

/// The outcome of an invocation, successful or not.
#[derive(ToSchema)]
pub struct OverlayResult {
    success: bool,
    result: Option<Object>,
    error: Option<String>,
    error_kind: Option<ErrorKind>,
    execution_time_ms: f64,
    fuel_consumed: u64,
}

#[derive(ToSchema)]
pub struct Capsule {
    id: Uuid,
    content: String,
    #[serde(rename = "type")]
    capsule_type: CapsuleType,
    trust_level: TrustLevel,
    version: u32,
    metadata: Object,
    owner: Option<String>,
    created_by_overlay: Option<Uuid>,
    created_at: DateTime<Utc>,
}

/// A capsule to create; it is owned by the caller and at most as trusted.
#[derive(ToSchema)]
pub struct NewCapsule {
    content: String,
    #[serde(rename = "type")]
    capsule_type: CapsuleType,
    /// Default: `standard`.
    trust_level: Option<TrustLevel>,
    /// Default: `{}`.
    metadata: Option<Object>,
}

/// A capsule in search results, its content cut to 500 characters.
#[derive(ToSchema)]
pub struct CapsulePreview {
    id: Uuid,
    content: String,
    #[serde(rename = "type")]
    capsule_type: CapsuleType,
    trust_level: TrustLevel,
}

#[derive(ToSchema)]
pub struct CapsuleHit {
    capsule: CapsulePreview,
    /// Higher is more relevant.
    score: f64,
}

#[derive(ToSchema)]
pub struct User {
    id: Uuid,
    name: String,
    roles: Vec<Role>,
    trust_level: TrustLevel,
    created_at: DateTime<Utc>,
}

/// A user to create (admin only; no more trusted than the admin).
#[derive(ToSchema)]
pub struct NewUser {
    /// 1-100 letters, digits, `.`, `_`, `-` or `@`.
    name: String,
    roles: Vec<Role>,
    /// Default: `standard`.
    trust_level: Option<TrustLevel>,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ValidationError,
    AuthenticationError,
    AuthorizationError,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimitExceeded,
    ServiceUnavailable,
    InternalError,
}

/// Every refusal: 401 authentication_error, 403 authorization_error, 404 not_found, 405, 409
/// conflict, 413 payload_too_large, 415, 422 validation_error (`details.errors` lists field errors),
/// 429 rate_limit_exceeded (`details.retry_after` seconds, also the `Retry-After` header),
/// 503 service_unavailable, 500 internal_error.
#[derive(ToSchema)]
pub struct ErrorBody {
    code: ErrorCode,
    message: String,
    details: Object,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use forge_model as model;
    use serde::Serialize;
    use serde_json::json;
    use std::collections::BTreeSet;
    use utoipa::PartialSchema;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;

    fn object_of<T: PartialSchema>() -> utoipa::openapi::schema::Object {
        match T::schema() {
            RefOr::T(Schema::Object(object)) => object,
            other => panic!("not an object schema: {}", serde_json::to_string(&other).unwrap()),
        }
    }

    /// Asserts the mirror's properties are the model value's keys, and its required ones are those
    /// the model always writes and always needs.
    fn same_fields<T: PartialSchema>(model_value: impl Serialize) {
        let schema = object_of::<T>();
        let documented: BTreeSet<String> = schema.properties.keys().cloned().collect();
        let Value::Object(wire) = serde_json::to_value(model_value).unwrap() else { panic!("not an object") };
        let actual: BTreeSet<String> = wire.keys().cloned().collect();
        assert_eq!(documented, actual, "{}", std::any::type_name::<T>());
    }

    fn same_values<T: PartialSchema>(names: impl IntoIterator<Item = &'static str>) {
        let documented: BTreeSet<String> = object_of::<T>()
            .enum_values
            .expect("an enum schema")
            .into_iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let actual: BTreeSet<String> = names.into_iter().map(str::to_owned).collect();
        assert_eq!(documented, actual, "{}", std::any::type_name::<T>());
    }

    #[test]
    fn enums_match_the_model() {
        same_values::<OverlayState>(model::OverlayState::ALL.map(|s| s.as_str()));
        same_values::<TrustLevel>(model::TrustLevel::ALL.map(|s| s.as_str()));
        same_values::<LifecycleAction>(model::LifecycleAction::ALL.map(|s| s.as_str()));
        same_values::<Role>(
            [model::Role::Admin, model::Role::Operator, model::Role::User].map(|r| r.as_str()),
        );
        same_values::<CapsuleType>(model::CapsuleType::ALL.map(|s| s.as_str()));
        same_values::<ErrorKind>(model::ErrorKind::ALL.map(|s| s.as_str()));
        same_values::<CapabilityName>(model::CapabilityName::ALL.map(|s| s.as_str()));
        let codes = object_of::<ErrorCode>().enum_values.unwrap();
        for value in codes {
            let code: model::ErrorCode = serde_json::from_value(value.clone()).expect("a model error code");
            assert_eq!(value, json!(code.as_str()));
        }
    }

    #[test]
    fn structs_match_the_model() {
        let now = Utc::now();
        let manifest = model::OverlayManifest::parse(
            r#"name = "echo"
               version = "1.0.0"
               capabilities = [{ name = "network:http", constraints = { hosts = ["example.com"] } }]"#,
        )
        .unwrap();
        same_fields::<OverlayManifest>(&manifest);
        same_fields::<Capability>(&manifest.capabilities[0]);
        let health = model::OverlayHealth::default();
        same_fields::<OverlayHealth>(&health);
        let overlay = model::Overlay {
            id: Uuid::nil(),
            manifest,
            state: model::OverlayState::Active,
            trust_level: model::TrustLevel::Sandbox,
            wasm_key: "k".into(),
            wasm_hash: "h".into(),
            source_hash: None,
            submitted_by: "u".into(),
            requires_approval: false,
            created_at: now,
            updated_at: now,
            health,
        };
        same_fields::<Overlay>(&overlay);
        same_fields::<HealthReport>(model::HealthReport::new(&overlay, &model::LatencyHistogram::default()));
        same_fields::<AuditEvent>(model::AuditEvent {
            id: 1,
            overlay_id: Uuid::nil(),
            actor: "a".into(),
            action: "register".into(),
            from_state: None,
            to_state: None,
            reason: None,
            details: Map::new(),
            created_at: now,
        });
        same_fields::<OverlayInvocation>(model::OverlayInvocation {
            timeout_ms: Some(100),
            ..model::OverlayInvocation::new("process", Map::new())
        });
        same_fields::<OverlayResult>(model::OverlayResult::ok(None, 0.1, 1));
        let capsule = model::Capsule {
            id: Uuid::nil(),
            content: "c".into(),
            capsule_type: model::CapsuleType::Insight,
            trust_level: model::TrustLevel::Standard,
            version: 1,
            metadata: Map::new(),
            owner: None,
            created_by_overlay: None,
            created_at: now,
        };
        same_fields::<Capsule>(&capsule);
        let preview = model::CapsulePreview::of(&capsule);
        same_fields::<CapsulePreview>(&preview);
        same_fields::<CapsuleHit>(model::CapsuleHit { capsule: preview, score: 1.0 });
        same_fields::<NewCapsule>(model::NewCapsule {
            content: "c".into(),
            capsule_type: model::CapsuleType::Code,
            trust_level: model::TrustLevel::Core,
            metadata: Map::new(),
            owner: None,
            created_by_overlay: None,
        });
        same_fields::<User>(model::User {
            id: Uuid::nil(),
            name: "u".into(),
            roles: vec![model::Role::User],
            trust_level: model::TrustLevel::Standard,
            created_at: now,
        });
        same_fields::<NewUser>(forge_service::NewUser {
            name: "u".into(),
            roles: vec![model::Role::User],
            trust_level: model::TrustLevel::Standard,
        });
        same_fields::<ErrorBody>(model::ForgeError::not_found("x"));
    }
}
