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
    /// Not only white space; at most 1 MiB of UTF-8.
    #[cfg_attr(feature = "openapi", schema(pattern = r"\S"))]
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
    /// Metadata is for labels and provenance, not a second content field: 64 KiB as JSON.
    pub const MAX_METADATA_BYTES: usize = 64 << 10;
    /// Metadata keys the service writes itself to say which overlay made a capsule; a caller setting
    /// them could pass its own capsule off as an overlay's.
    pub const PROVENANCE_KEYS: [&str; 2] = ["created_by_overlay", "overlay_name"];

    /// Checks a capsule submitted through the API: [`NewCapsule::validate`], and no provenance keys.
    pub fn validate_submitted(&self) -> Result<(), ForgeError> {
        let mut errors = self.violations();
        for key in Self::PROVENANCE_KEYS.into_iter().filter(|key| self.metadata.contains_key(*key)) {
            errors.push(FieldError::new(format!("metadata.{key}"), "is set by the service, not by callers"));
        }
        if errors.is_empty() { Ok(()) } else { Err(ForgeError::invalid_fields("capsule", errors)) }
    }

    pub fn validate(&self) -> Result<(), ForgeError> {
        let errors = self.violations();
        if errors.is_empty() { Ok(()) } else { Err(ForgeError::invalid_fields("capsule", errors)) }
    }

    fn violations(&self) -> Vec<FieldError> {
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
        let metadata_bytes = serde_json::to_vec(&self.metadata).map_or(usize::MAX, |json| json.len());
        if metadata_bytes > Self::MAX_METADATA_BYTES {
            errors.push(FieldError::new(
                "metadata",
                format!("must be at most {} bytes as JSON", Self::MAX_METADATA_BYTES),
            ));
        }
        errors
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
    fn metadata_is_capped_and_provenance_is_the_service_s() {
        let capsule = |metadata: Value| {
            serde_json::from_value::<NewCapsule>(
                json!({"content": "hi", "type": "insight", "metadata": metadata}),
            )
            .unwrap()
        };
        let fields = |err: ForgeError| err.details["errors"][0]["field"].as_str().unwrap().to_owned();
        let at_cap = capsule(json!({"k": "x".repeat(NewCapsule::MAX_METADATA_BYTES - 8)}));
        assert!(at_cap.validate_submitted().is_ok());
        let over = capsule(json!({"k": "x".repeat(NewCapsule::MAX_METADATA_BYTES - 7)}));
        assert_eq!(fields(over.validate().unwrap_err()), "metadata");
        for key in NewCapsule::PROVENANCE_KEYS {
            let forged = capsule(json!({ key: "someone" }));
            assert!(forged.validate().is_ok(), "the service itself may write {key}");
            assert_eq!(fields(forged.validate_submitted().unwrap_err()), format!("metadata.{key}"));
        }
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
