//! Trust levels shared with the rest of Forge.

use crate::names::wire_names;
use serde::{Deserialize, Serialize};

/// How far Forge trusts an overlay, a user or a capsule.
///
/// The numeric values are Forge's shared definitions; on the wire a level is its lower-case name
/// (`"standard"`), and the number (`60`) is accepted too when reading.
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
#[serde(rename_all = "lowercase", try_from = "TrustLevelRepr")]
#[strum(serialize_all = "lowercase")]
pub enum TrustLevel {
    Quarantine,
    Sandbox,
    Standard,
    Trusted,
    Core,
}

impl TrustLevel {
    /// Forge's numeric value of this level.
    pub const fn value(self) -> u8 {
        match self {
            TrustLevel::Quarantine => 0,
            TrustLevel::Sandbox => 40,
            TrustLevel::Standard => 60,
            TrustLevel::Trusted => 80,
            TrustLevel::Core => 100,
        }
    }

    /// The level with this numeric value, if it is one of Forge's.
    pub fn from_value(value: i64) -> Option<TrustLevel> {
        Self::ALL.iter().copied().find(|level| i64::from(level.value()) == value)
    }

    /// `a.can_access(b)` iff a >= b: a subject may reach what is trusted no more than itself.
    pub fn can_access(self, other: TrustLevel) -> bool {
        self.value() >= other.value()
    }
}

wire_names!(TrustLevel, "trust level", or_else = |s: &str| s.parse().ok().and_then(TrustLevel::from_value));

#[derive(Deserialize)]
#[serde(untagged)]
enum TrustLevelRepr {
    Name(String),
    Value(i64),
}

impl TryFrom<TrustLevelRepr> for TrustLevel {
    type Error = String;

    fn try_from(repr: TrustLevelRepr) -> Result<Self, Self::Error> {
        match repr {
            TrustLevelRepr::Name(name) => name.parse(),
            TrustLevelRepr::Value(value) => {
                Self::from_value(value).ok_or_else(|| format!("unknown trust level value {value}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_forge() {
        let values: Vec<u8> = TrustLevel::ALL.iter().map(|l| l.value()).collect();
        assert_eq!(values, [0, 40, 60, 80, 100]);
    }

    #[test]
    fn can_access_is_greater_or_equal() {
        for &a in TrustLevel::ALL {
            for &b in TrustLevel::ALL {
                assert_eq!(a.can_access(b), a.value() >= b.value(), "{a} vs {b}");
            }
        }
        assert!(TrustLevel::Core.can_access(TrustLevel::Sandbox));
        assert!(!TrustLevel::Sandbox.can_access(TrustLevel::Standard));
    }

    #[test]
    fn wire_format_is_lower_case_name_and_accepts_numbers() {
        assert_eq!(serde_json::to_string(&TrustLevel::Trusted).unwrap(), "\"trusted\"");
        let parsed: TrustLevel = serde_json::from_str("\"sandbox\"").unwrap();
        assert_eq!(parsed, TrustLevel::Sandbox);
        let parsed: TrustLevel = serde_json::from_str("80").unwrap();
        assert_eq!(parsed, TrustLevel::Trusted);
        assert!(serde_json::from_str::<TrustLevel>("\"root\"").is_err());
        assert!(serde_json::from_str::<TrustLevel>("50").is_err());
    }
}
