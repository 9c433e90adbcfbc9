//! Capsules: the units of institutional knowledge that overlays read and write.

use crate::error::{FieldError, ForgeError};
use crate::names::wire_names;
use crate::trust::TrustLevel;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

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
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum CapsuleType {
    Knowledge,
    Code,
    Decision,
    Insight,
    Config,
    Policy,
}

wire_names!(CapsuleType, "capsule type");

/// A stored capsule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capsule {
    pub id: Uuid,
    pub content: String,
    #[serde(rename = "type")]
    pub capsule_type: CapsuleType,
    pub trust_level: TrustLevel,
    pub version: u32,
    pub metadata: Map<String, Value>,
    /// The user who created it, if a user did.
    pub owner: Option<String>,
    /// The overlay that created it, if an overlay did (also in `metadata.created_by_overlay`).
    pub created_by_overlay: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// A capsule to be created; it is owned by its creator and at most as trusted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewCapsule {
    pub content: String,
    #[serde(rename = "type")]
    pub capsule_type: CapsuleType,
    #[serde(default = "default_capsule_trust")]
    #[cfg_attr(feature = "openapi", schema(default = default_capsule_trust))]
    pub trust_level: TrustLevel,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(default = json!({})))]
    pub metadata: Map<String, Value>,
    #[serde(skip)]
    pub owner: Option<String>,
    #[serde(skip)]
    pub created_by_overlay: Option<Uuid>,
}

fn default_capsule_trust() -> TrustLevel {
    TrustLevel::Standard
}

impl NewCapsule {
    pub const MAX_CONTENT_BYTES: usize = 1 << 20;

    pub fn validate(&self) -> Result<(), ForgeError> {
        let mut errors = Vec::new();
        if self.content.trim().is_empty() {
            errors.push(FieldError::new("content", "must not be empty"));
        }
        if self.content.len() > Self::MAX_CONTENT_BYTES {
            errors.push(FieldError::new(
                "content",
                format!("must be at most {} bytes", Self::MAX_CONTENT_BYTES),
            ));
        }
        if errors.is_empty() { Ok(()) } else { Err(ForgeError::invalid_fields("capsule", errors)) }
    }
}

/// One search hit: the capsule (content cut to [`CapsuleHit::CONTENT_PREVIEW_CHARS`]) and its relevance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CapsuleHit {
    pub capsule: CapsulePreview,
    /// Higher is more relevant.
    pub score: f64,
}

impl CapsuleHit {
    pub const CONTENT_PREVIEW_CHARS: usize = 500;
}

/// A capsule in search results, its content cut to `CapsuleHit::CONTENT_PREVIEW_CHARS` (500)
/// characters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CapsulePreview {
    pub id: Uuid,
    pub content: String,
    #[serde(rename = "type")]
    pub capsule_type: CapsuleType,
    pub trust_level: TrustLevel,
}

impl CapsulePreview {
    pub fn of(capsule: &Capsule) -> Self {
        CapsulePreview {
            id: capsule.id,
            content: capsule.content.chars().take(CapsuleHit::CONTENT_PREVIEW_CHARS).collect(),
            capsule_type: capsule.capsule_type,
            trust_level: capsule.trust_level,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_capsule_wire_and_validation() {
        let c: NewCapsule = serde_json::from_value(json!({"content": "hi", "type": "insight"})).unwrap();
        assert_eq!(c.trust_level, TrustLevel::Standard);
        assert!(c.validate().is_ok());
        assert!(serde_json::from_value::<NewCapsule>(json!({"content": "hi", "type": "rumour"})).is_err());
        let empty = NewCapsule { content: " ".into(), ..c };
        assert!(empty.validate().is_err());
    }

    #[test]
    fn preview_cuts_on_characters() {
        let capsule = Capsule {
            id: Uuid::nil(),
            content: "é".repeat(600),
            capsule_type: CapsuleType::Knowledge,
            trust_level: TrustLevel::Sandbox,
            version: 1,
            metadata: Map::new(),
            owner: None,
            created_by_overlay: None,
            created_at: Utc::now(),
        };
        assert_eq!(CapsulePreview::of(&capsule).content.chars().count(), 500);
    }
}
