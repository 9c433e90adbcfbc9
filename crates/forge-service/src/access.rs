//! Who may do what: one table of operations and the roles that may perform them.

use forge_model::{ForgeError, LifecycleAction, Principal, Role, TrustLevel, abbreviated};

/// Every operation that needs a particular role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Register,
    Read,
    Invoke,
    Lifecycle(LifecycleAction),
    SetTrustLevel,
    Delete,
    CreateUser,
    ManageUsers,
    WriteCapsule,
}

impl Operation {
    /// The roles allowed to perform the operation.
    pub const fn roles(self) -> &'static [Role] {
        use LifecycleAction as A;
        const ANYONE: &[Role] = &[Role::Admin, Role::Operator, Role::User];
        const ADMIN: &[Role] = &[Role::Admin];
        const OPERATIONS: &[Role] = &[Role::Admin, Role::Operator];
        match self {
            Operation::Register | Operation::Read | Operation::Invoke | Operation::WriteCapsule => ANYONE,
            Operation::Lifecycle(A::Suspend | A::Quarantine) => OPERATIONS,
            Operation::Lifecycle(A::Activate | A::Resume | A::Release | A::Deprecate) => ADMIN,
            Operation::SetTrustLevel | Operation::Delete | Operation::CreateUser | Operation::ManageUsers => {
                ADMIN
            }
        }
    }

    fn describe(self) -> String {
        match self {
            Operation::Register => "register overlays".into(),
            Operation::Read => "read".into(),
            Operation::Invoke => "invoke overlays".into(),
            Operation::Lifecycle(action) => format!("{action} overlays"),
            Operation::SetTrustLevel => "set trust levels".into(),
            Operation::Delete => "delete overlays".into(),
            Operation::CreateUser => "create users".into(),
            Operation::ManageUsers => "manage users and their tokens".into(),
            Operation::WriteCapsule => "create capsules".into(),
        }
    }
}

/// 403 unless `actor` holds one of the operation's roles.
pub fn require(actor: &Principal, operation: Operation) -> Result<(), ForgeError> {
    let roles = operation.roles();
    if actor.has_any_role(roles) {
        return Ok(());
    }
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Err(ForgeError::authorization(format!("only {} may {}", names.join(" or "), operation.describe()))
        .with_detail("required_roles", names))
}

/// Whether `caller` may read text about an overlay that can quote other users' input (its last
/// error, audit reasons): admins, operators and the overlay's submitter may.
pub(crate) fn sees_details(caller: &Principal, submitter: Option<&str>) -> bool {
    caller.has_any_role(&[Role::Admin, Role::Operator]) || submitter == Some(caller.name.as_str())
}

/// 403 unless `caller` may read the logs of an overlay `submitter` registered: logs quote the
/// overlay's input, so only those who see its other details (see [`sees_details`]) may.
pub(crate) fn require_log_access(caller: &Principal, submitter: &str) -> Result<(), ForgeError> {
    if sees_details(caller, Some(submitter)) {
        return Ok(());
    }
    Err(ForgeError::authorization(format!(
        "only admins, operators and the overlay's submitter (`{}`) may read its logs",
        abbreviated(submitter, 64)
    )))
}

/// 403 unless `actor`'s trust reaches `level`: no one acts on, or hands out, more trust than it
/// holds. `doing` completes the refusal, "trust level {actor's} cannot {doing} trust level {level}".
pub(crate) fn require_trust(actor: &Principal, level: TrustLevel, doing: &str) -> Result<(), ForgeError> {
    if actor.trust_level.can_access(level) {
        return Ok(());
    }
    Err(ForgeError::authorization(format!(
        "trust level {} cannot {doing} trust level {level}",
        actor.trust_level
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(roles: &[Role]) -> Principal {
        Principal { name: "p".into(), roles: roles.to_vec(), trust_level: TrustLevel::Standard }
    }

    #[test]
    fn role_table() {
        let user = principal(&[Role::User]);
        let operator = principal(&[Role::Operator]);
        let admin = principal(&[Role::Admin]);
        assert!(require(&user, Operation::Register).is_ok());
        assert!(require(&user, Operation::Lifecycle(LifecycleAction::Suspend)).is_err());
        assert!(require(&operator, Operation::Lifecycle(LifecycleAction::Suspend)).is_ok());
        assert!(require(&operator, Operation::Lifecycle(LifecycleAction::Quarantine)).is_ok());
        assert!(require(&operator, Operation::Lifecycle(LifecycleAction::Activate)).is_err());
        assert!(require(&operator, Operation::Delete).is_err());
        for op in [
            Operation::Lifecycle(LifecycleAction::Release),
            Operation::SetTrustLevel,
            Operation::CreateUser,
            Operation::ManageUsers,
        ] {
            assert!(require(&admin, op).is_ok());
        }
        assert!(require(&operator, Operation::ManageUsers).is_err());
        let err = require(&user, Operation::Delete).unwrap_err();
        assert_eq!(err.code.http_status(), 403);
        assert_eq!(err.message, "only admin may delete overlays");
    }

    #[test]
    fn details_are_for_operations_and_the_submitter() {
        let user = Principal { name: "ursula".into(), ..principal(&[Role::User]) };
        assert!(sees_details(&user, Some("ursula")));
        assert!(!sees_details(&user, Some("other")));
        assert!(!sees_details(&user, None), "a deleted overlay's submitter is unknown");
        assert!(sees_details(&principal(&[Role::Operator]), Some("other")));
        assert!(sees_details(&principal(&[Role::Admin]), None));
    }

    #[test]
    fn trust_refusal() {
        let standard = principal(&[Role::User]);
        assert!(require_trust(&standard, TrustLevel::Standard, "grant").is_ok());
        assert!(require_trust(&standard, TrustLevel::Sandbox, "grant").is_ok());
        let err = require_trust(&standard, TrustLevel::Trusted, "invoke an overlay of").unwrap_err();
        assert_eq!(err.code.http_status(), 403);
        assert_eq!(err.message, "trust level standard cannot invoke an overlay of trust level trusted");
    }
}
