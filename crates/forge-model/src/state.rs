//! Overlay lifecycle: states and the one table of allowed transitions.

use crate::names::wire_names;
use serde::{Deserialize, Serialize};

/// Where an overlay is in its lifecycle. Lower-case on the wire.
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
pub enum OverlayState {
    /// Registered, waiting for an admin to activate it.
    Pending,
    /// Invocable.
    Active,
    /// Stopped by an admin or operator; an admin may resume it.
    Suspended,
    /// Stopped because it failed too often (or by hand); an admin may release it.
    Quarantined,
    /// Retired for good; kept for its history.
    Deprecated,
}

impl OverlayState {
    /// The state `action` leads to from this one, if the transition table allows it.
    pub fn apply(self, action: LifecycleAction) -> Option<OverlayState> {
        TRANSITIONS.iter().find(|(from, act, _)| *from == self && *act == action).map(|(_, _, to)| *to)
    }
}

wire_names!(OverlayState, "overlay state");

/// Something that moves an overlay from one state to another.
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
pub enum LifecycleAction {
    Activate,
    Suspend,
    Resume,
    Quarantine,
    Release,
    Deprecate,
}

impl LifecycleAction {
    /// Whether the actor must give a reason (recorded in the audit trail).
    pub const fn requires_reason(self) -> bool {
        matches!(self, LifecycleAction::Suspend | LifecycleAction::Quarantine)
    }
}

wire_names!(LifecycleAction, "lifecycle action");

/// Every allowed transition: (from, action, to). Anything not listed is refused.
///
/// Deprecated is terminal. Quarantine (by hand or automatic) can stop an overlay that is active or
/// suspended; release puts it back to active with fresh health counters.
pub const TRANSITIONS: &[(OverlayState, LifecycleAction, OverlayState)] = {
    use LifecycleAction as A;
    use OverlayState as S;
    &[
        (S::Pending, A::Activate, S::Active),
        (S::Pending, A::Deprecate, S::Deprecated),
        (S::Active, A::Suspend, S::Suspended),
        (S::Active, A::Quarantine, S::Quarantined),
        (S::Active, A::Deprecate, S::Deprecated),
        (S::Suspended, A::Resume, S::Active),
        (S::Suspended, A::Quarantine, S::Quarantined),
        (S::Suspended, A::Deprecate, S::Deprecated),
        (S::Quarantined, A::Release, S::Active),
        (S::Quarantined, A::Deprecate, S::Deprecated),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_a_function_of_state_and_action() {
        for (i, (from, action, _)) in TRANSITIONS.iter().enumerate() {
            let later = TRANSITIONS[i + 1..].iter().filter(|(f, a, _)| f == from && a == action);
            assert_eq!(later.count(), 0, "{from} --{action}--> listed twice");
        }
    }

    #[test]
    fn lifecycle_paths() {
        use LifecycleAction as A;
        use OverlayState as S;
        assert_eq!(S::Pending.apply(A::Activate), Some(S::Active));
        assert_eq!(S::Active.apply(A::Activate), None);
        assert_eq!(S::Active.apply(A::Suspend), Some(S::Suspended));
        assert_eq!(S::Suspended.apply(A::Resume), Some(S::Active));
        assert_eq!(S::Pending.apply(A::Resume), None);
        assert_eq!(S::Quarantined.apply(A::Release), Some(S::Active));
        assert_eq!(S::Active.apply(A::Release), None);
        for &action in LifecycleAction::ALL {
            assert_eq!(S::Deprecated.apply(action), None, "deprecated is terminal");
        }
    }

    #[test]
    fn states_are_lower_case_on_the_wire() {
        for &state in OverlayState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(state.as_str().parse::<OverlayState>().unwrap(), state);
        }
    }
}
