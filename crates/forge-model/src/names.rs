//! The wire names of the model's enums, declared once per enum.
//!
//! Each enum derives `strum::Display`, `strum::IntoStaticStr` and `strum::VariantArray` with its wire
//! names (the ones serde writes), and [`wire_names!`] adds `ALL`, `as_str` and a `FromStr` whose
//! error lists every accepted name.

/// `ALL`, `as_str` and `FromStr` for an enum deriving `IntoStaticStr` and `VariantArray`.
/// `or_else` parses what is not a name (e.g. a trust level's number).
macro_rules! wire_names {
    ($type:ident, $what:literal $(, or_else = $fallback:expr)?) => {
        impl $type {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$type] = <$type as strum::VariantArray>::VARIANTS;

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }

        impl std::str::FromStr for $type {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|variant| variant.as_str() == s)
                    $(.or_else(|| ($fallback)(s)))?
                    .ok_or_else(|| $crate::names::unknown($what, s, Self::ALL.iter().map(|v| v.as_str())))
            }
        }
    };
}

pub(crate) use wire_names;

/// "unknown {what} `{given}` (expected a, b or c)".
pub(crate) fn unknown<'a>(what: &str, given: &str, names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    let expected = match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    format!("unknown {what} `{given}` (expected {expected})")
}

#[cfg(test)]
mod tests {
    use crate::{CapabilityName, OverlayState, Role, TrustLevel};

    #[test]
    fn names_round_trip_and_unknown_names_list_the_accepted_ones() {
        for &state in OverlayState::ALL {
            assert_eq!(state.as_str().parse::<OverlayState>().unwrap(), state);
            assert_eq!(state.to_string(), state.as_str());
        }
        assert_eq!(
            "root".parse::<Role>().unwrap_err(),
            "unknown role `root` (expected admin, operator or user)"
        );
        assert_eq!(CapabilityName::NetworkHttp.as_str(), "network:http");
        assert_eq!("60".parse::<TrustLevel>().unwrap(), TrustLevel::Standard);
        assert!("50".parse::<TrustLevel>().unwrap_err().contains("expected quarantine, sandbox, standard"));
    }
}
