//! Users, roles and the authenticated principal behind a request.

use crate::error::{FieldError, ForgeError};
use crate::names::wire_names;
use crate::trust::TrustLevel;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
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
pub enum Role {
    /// Approves, activates, deletes, sets trust, manages users.
    Admin,
    /// Keeps overlays healthy: suspends and quarantines.
    Operator,
    /// Registers and invokes overlays.
    User,
}

wire_names!(Role, "role");

/// A user of the service, as stored (its token is kept only as a hash, elsewhere).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub roles: Vec<Role>,
    pub trust_level: TrustLevel,
    pub created_at: DateTime<Utc>,
    /// A disabled user's tokens all fail authentication (an admin disables and re-enables).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = false, default = false))]
    pub disabled: bool,
}

/// A user to create (by an admin, no more trusted than that admin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 1-100 letters, digits, `.`, `_`, `-` or `@`.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9._@-]{1,100}$"))]
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub roles: Vec<Role>,
    #[serde(default = "default_user_trust")]
    #[cfg_attr(feature = "openapi", schema(required = false, default = default_user_trust))]
    pub trust_level: TrustLevel,
}

fn default_user_trust() -> TrustLevel {
    TrustLevel::Standard
}

impl NewUser {
    pub fn validate(&self) -> Result<(), ForgeError> {
        let mut errors = Vec::new();
        let name_ok = (1..=100).contains(&self.name.chars().count())
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
        if !name_ok {
            errors.push(FieldError::new(
                "name",
                "must be 1-100 characters of letters, digits, `.`, `_`, `-` or `@`",
            ));
        } else if self.name == Principal::system().name {
            errors.push(FieldError::new("name", "`system` is reserved for the service's own actions"));
        }
        if self.roles.is_empty() {
            errors.push(FieldError::new("roles", "must name at least one of admin, operator, user"));
        }
        if errors.is_empty() { Ok(()) } else { Err(ForgeError::invalid_fields("user", errors)) }
    }
}

/// Who is acting: the authenticated user of a request, or the system itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub name: String,
    pub roles: Vec<Role>,
    pub trust_level: TrustLevel,
}

impl Principal {
    /// The service acting on its own (automatic quarantine, demo, local runs).
    pub fn system() -> Self {
        Principal { name: "system".into(), roles: vec![Role::Admin], trust_level: TrustLevel::Core }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// True if the principal holds any of `roles`.
    pub fn has_any_role(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.has_role(*r))
    }
}

impl From<&User> for Principal {
    fn from(user: &User) -> Self {
        Principal { name: user.name.clone(), roles: user.roles.clone(), trust_level: user.trust_level }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_validation() {
        let ok = NewUser {
            name: "ops.bot-1".into(),
            roles: vec![Role::Operator],
            trust_level: TrustLevel::Standard,
        };
        assert!(ok.validate().is_ok());
        let bad = NewUser { name: "has space".into(), roles: vec![], trust_level: TrustLevel::Standard };
        let err = bad.validate().unwrap_err();
        assert!(err.message.contains("name") && err.message.contains("roles"));
        let impostor = NewUser { name: "system".into(), ..ok };
        assert!(impostor.validate().unwrap_err().message.contains("reserved"));
    }
}
