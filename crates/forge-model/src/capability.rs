//! Capabilities an overlay may request in its manifest.

use crate::names::wire_names;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A named permission to use some host functionality, named `area:action` on the wire.
// Serialized through its strum names, so the schema names each variant again (forge-server's OpenAPI
// tests hold the two together).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "String", into = "String")]
pub enum CapabilityName {
    #[strum(serialize = "capsule:read")]
    #[cfg_attr(feature = "openapi", schema(rename = "capsule:read"))]
    CapsuleRead,
    #[strum(serialize = "capsule:write")]
    #[cfg_attr(feature = "openapi", schema(rename = "capsule:write"))]
    CapsuleWrite,
    #[strum(serialize = "capsule:delete")]
    #[cfg_attr(feature = "openapi", schema(rename = "capsule:delete"))]
    CapsuleDelete,
    #[strum(serialize = "network:http")]
    #[cfg_attr(feature = "openapi", schema(rename = "network:http"))]
    NetworkHttp,
    #[strum(serialize = "file:read")]
    #[cfg_attr(feature = "openapi", schema(rename = "file:read"))]
    FileRead,
    #[strum(serialize = "file:write")]
    #[cfg_attr(feature = "openapi", schema(rename = "file:write"))]
    FileWrite,
    #[strum(serialize = "governance:vote")]
    #[cfg_attr(feature = "openapi", schema(rename = "governance:vote"))]
    GovernanceVote,
    #[strum(serialize = "system:config")]
    #[cfg_attr(feature = "openapi", schema(rename = "system:config"))]
    SystemConfig,
}

impl CapabilityName {
    /// Privileged capabilities change shared state or reach outside the host; an overlay holding one
    /// needs an admin's approval (activation is admin-only) before it runs.
    pub const fn is_privileged(self) -> bool {
        matches!(
            self,
            CapabilityName::CapsuleWrite
                | CapabilityName::CapsuleDelete
                | CapabilityName::NetworkHttp
                | CapabilityName::FileWrite
                | CapabilityName::GovernanceVote
                | CapabilityName::SystemConfig
        )
    }
}

wire_names!(CapabilityName, "capability");

impl TryFrom<String> for CapabilityName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CapabilityName> for String {
    fn from(c: CapabilityName) -> String {
        c.as_str().to_owned()
    }
}

/// A requested capability with optional constraints (for example the hosts `network:http` may reach:
/// `{"hosts": ["api.example.com"]}`). Constraints narrow a capability; they never widen it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capability {
    pub name: CapabilityName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Map<String, Value>>,
}

impl Capability {
    pub fn new(name: CapabilityName) -> Self {
        Capability { name, constraints: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_rejected() {
        for &c in CapabilityName::ALL {
            assert_eq!(c.as_str().parse::<CapabilityName>().unwrap(), c);
        }
        let err = "capsule:eat".parse::<CapabilityName>().unwrap_err();
        assert!(err.contains("capsule:eat") && err.contains("capsule:read"));
    }

    #[test]
    fn privileged_set() {
        let privileged: Vec<&str> =
            CapabilityName::ALL.iter().filter(|c| c.is_privileged()).map(|c| c.as_str()).collect();
        assert_eq!(
            privileged,
            [
                "capsule:write",
                "capsule:delete",
                "network:http",
                "file:write",
                "governance:vote",
                "system:config"
            ]
        );
    }
}
