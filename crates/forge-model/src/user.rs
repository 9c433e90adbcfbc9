//! Users, roles and the authenticated principal behind a request.

use crate::trust::TrustLevel;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Approves, activates, deletes, sets trust, manages users.
    Admin,
    /// Keeps overlays healthy: suspends and quarantines.
    Operator,
    /// Registers and invokes overlays.
    User,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::User => "user",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Role::Admin, Role::Operator, Role::User]
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (expected admin, operator or user)"))
    }
}

/// A user of the service, as stored (its token is kept only as a hash, elsewhere).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub roles: Vec<Role>,
    pub trust_level: TrustLevel,
    pub created_at: DateTime<Utc>,
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
