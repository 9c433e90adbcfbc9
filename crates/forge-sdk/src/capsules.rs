//! Capsules, the platform's units of knowledge: read one, search them, create new ones, delete one.
//!
//! [`read`] and [`search`] need the capability `capsule:read`, [`create`] needs `capsule:write`,
//! [`delete`] needs `capsule:delete` (privileged: an admin approves it at activation). A
//! module imports the matching host function only if it calls the wrapper, so an overlay that never
//! calls [`create`] does not need `capsule:write`.
//!
//! Visibility follows trust: an overlay sees only capsules at or below its own trust level. A
//! capsule it cannot see answers [`HostErrorCode::NotFound`](crate::HostErrorCode::NotFound),
//! exactly like a missing one, and search leaves it out.
//!
//! These are the SDK's own small wire types, independent of the host's crates: ids and timestamps
//! stay strings, and unknown capsule types or trust levels are kept as `Other`.

use crate::host::{self, HostError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

text_enum! {
    /// What kind of knowledge a capsule holds.
    pub enum CapsuleType {
        Knowledge = "knowledge",
        Code = "code",
        Decision = "decision",
        Insight = "insight",
        Config = "config",
        Policy = "policy",
    }
}

text_enum! {
    /// Trust levels, lowest first. An overlay sees capsules at or below its own level, and capsules
    /// it creates get its level.
    pub enum TrustLevel {
        Quarantine = "quarantine",
        Sandbox = "sandbox",
        Standard = "standard",
        Trusted = "trusted",
        Core = "core",
    }
}

/// A stored capsule, as [`read`] and [`create`] return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capsule {
    /// A UUID.
    pub id: String,
    pub content: String,
    #[serde(rename = "type")]
    pub capsule_type: CapsuleType,
    pub trust_level: TrustLevel,
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// The user who created it, if a user did.
    #[serde(default)]
    pub owner: Option<String>,
    /// The id of the overlay that created it, if one did.
    #[serde(default)]
    pub created_by_overlay: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: String,
}

/// A capsule as a search hit carries it: `content` cut to 500 characters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapsulePreview {
    pub id: String,
    pub content: String,
    #[serde(rename = "type")]
    pub capsule_type: CapsuleType,
    pub trust_level: TrustLevel,
}

/// One search result. Results come best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub capsule: CapsulePreview,
    /// Relevance; higher is better. Compare scores within one search only.
    pub score: f64,
}

/// A capsule to create. The host sets its trust level (the overlay's) and adds
/// `created_by_overlay` and `overlay_name` to its metadata.
///
/// ```
/// use forge_sdk::capsules::{CapsuleType, NewCapsule};
///
/// let capsule = NewCapsule::new(CapsuleType::Insight, "Deploys fail on Fridays")
///     .with_metadata("source_capsule_ids", vec!["a", "b"]);
/// assert_eq!(
///     serde_json::to_value(&capsule).unwrap(),
///     serde_json::json!({
///         "content": "Deploys fail on Fridays",
///         "type": "insight",
///         "metadata": {"source_capsule_ids": ["a", "b"]}
///     })
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewCapsule {
    /// Must not be blank; at most 1 MiB.
    pub content: String,
    #[serde(rename = "type")]
    pub capsule_type: CapsuleType,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl NewCapsule {
    pub fn new(capsule_type: CapsuleType, content: impl Into<String>) -> Self {
        NewCapsule { content: content.into(), capsule_type, metadata: Map::new() }
    }

    /// Adds one metadata entry (replacing an earlier one with the same key).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// Reads the capsule with id `id` (`capsule:read`).
///
/// Fails with `not_found` if there is none, or none this overlay may see.
pub fn read(id: &str) -> Result<Capsule, HostError> {
    #[derive(Serialize)]
    struct Request<'a> {
        id: &'a str,
    }
    host::call("capsule_read", host::raw_calls::capsule_read, &Request { id })
}

/// Searches capsules for `query`, best first, at most `limit` of them (`capsule:read`).
///
/// ```
/// # fn main() -> Result<(), forge_sdk::Error> {
/// # if cfg!(target_arch = "wasm32") {
/// for hit in forge_sdk::capsules::search("deploy failures", 5)? {
///     forge_sdk::log::info(&format!("{} ({:.2})", hit.capsule.id, hit.score));
/// }
/// # }
/// # Ok(())
/// # }
/// ```
pub fn search(query: &str, limit: u32) -> Result<Vec<SearchHit>, HostError> {
    #[derive(Serialize)]
    struct Request<'a> {
        query: &'a str,
        limit: u32,
    }
    host::call("capsule_search", host::raw_calls::capsule_search, &Request { query, limit })
}

/// Creates a capsule and returns it as stored (`capsule:write`).
pub fn create(capsule: &NewCapsule) -> Result<Capsule, HostError> {
    host::call("capsule_create", host::raw_calls::capsule_create, capsule)
}

/// Deletes the capsule with id `id` (`capsule:delete`); the host records this overlay as the one
/// that deleted it.
///
/// Fails with `not_found` if there is none, or none this overlay may see (its trust level is below
/// the capsule's): such a capsule is left alone.
pub fn delete(id: &str) -> Result<(), HostError> {
    #[derive(Serialize)]
    struct Request<'a> {
        id: &'a str,
    }
    host::call::<_, serde::de::IgnoredAny>("capsule_delete", host::raw_calls::capsule_delete, &Request { id })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostErrorCode;
    use serde_json::json;

    #[test]
    fn a_full_capsule_parses() {
        let capsule: Capsule = serde_json::from_value(json!({
            "id": "0190c1d2-0000-7000-8000-000000000001",
            "content": "hello",
            "type": "knowledge",
            "trust_level": "standard",
            "version": 3,
            "metadata": {"overlay_name": "x"},
            "owner": null,
            "created_by_overlay": "0190c1d2-0000-7000-8000-000000000002",
            "created_at": "2025-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(capsule.capsule_type, CapsuleType::Knowledge);
        assert_eq!(capsule.trust_level, TrustLevel::Standard);
        assert_eq!(capsule.version, 3);
        assert_eq!(capsule.metadata["overlay_name"], "x");
    }

    #[test]
    fn search_hits_parse_and_unknown_values_survive() {
        let hits: Vec<SearchHit> = serde_json::from_value(json!([
            {"capsule": {"id": "a", "content": "c", "type": "runbook", "trust_level": "sandbox"}, "score": 1.5}
        ]))
        .unwrap();
        assert_eq!(hits[0].capsule.capsule_type, CapsuleType::Other("runbook".into()));
        assert_eq!(hits[0].capsule.trust_level, TrustLevel::Sandbox);
        assert_eq!(serde_json::to_value(&hits[0]).unwrap()["capsule"]["type"], "runbook");
    }

    #[test]
    fn text_enums_convert_both_ways() {
        assert_eq!(CapsuleType::from("policy"), CapsuleType::Policy);
        assert_eq!(String::from(CapsuleType::Insight), "insight");
        assert_eq!(TrustLevel::Core.to_string(), "core");
        assert_eq!(TrustLevel::from("gold".to_owned()).as_str(), "gold");
    }

    #[test]
    fn host_functions_are_unavailable_natively() {
        assert_eq!(read("x").unwrap_err().code, HostErrorCode::Unavailable);
        assert_eq!(search("x", 1).unwrap_err().code, HostErrorCode::Unavailable);
        let err = create(&NewCapsule::new(CapsuleType::Insight, "x")).unwrap_err();
        assert_eq!(err.code, HostErrorCode::Unavailable);
        assert!(err.message.contains("capsule_create"));
    }
}
