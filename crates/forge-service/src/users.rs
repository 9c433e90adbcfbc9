//! Users and API tokens: random bearer tokens, stored only as SHA-256 hashes, revocable.

use crate::OverlayService;
use crate::access::{Operation, require, require_trust};
use base64::Engine;
use chrono::Utc;
use forge_model::api::TokenInfo;
use forge_model::{ForgeError, NewUser, Page, PageRequest, Principal, Role, TrustLevel, User};
use forge_storage::{BootstrapToken, StorageError};
use parking_lot::Mutex;
use rand::RngCore;
use std::collections::HashMap;
use std::time::Instant;
use uuid::Uuid;

/// Prefix of every token, so a leaked one is easy to recognise (and to scan for).
const TOKEN_PREFIX: &str = "fgo_";

/// A fresh random token: 256 bits from the OS generator.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What the database keeps of a token: the hash of the token as trimmed, the same wherever it comes
/// from (a header is trimmed; a stray space in `FORGE_ADMIN_TOKEN` must not lock the admin out).
pub fn token_hash(token: &str) -> String {
    forge_model::sha256_hex(token.trim().as_bytes())
}

/// Tokens verified recently, by hash, so most requests need no database read.
#[derive(Default)]
pub(crate) struct TokenCache {
    verified: Mutex<Verified>,
}

#[derive(Default)]
struct Verified {
    principals: HashMap<String, (Principal, Instant)>,
    /// Counts revocations and disablings, so that a verification whose database read came before
    /// one does not cache its (by then stale) answer.
    generation: u64,
}

impl OverlayService {
    /// The principal a bearer token belongs to; 401 if it is unknown or revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, ForgeError> {
        let hash = token_hash(token);
        let ttl = self.inner.config.token_cache_ttl;
        let generation = {
            let verified = self.inner.tokens.verified.lock();
            if let Some((principal, at)) = verified.principals.get(&hash)
                && at.elapsed() < ttl
            {
                return Ok(principal.clone());
            }
            verified.generation
        };
        let user = self.inner.repo.user_by_token_hash(&hash).await?.ok_or_else(|| {
            self.inner.tokens.verified.lock().principals.remove(&hash);
            ForgeError::authentication("invalid or revoked token")
        })?;
        let principal = Principal::from(&user);
        let mut verified = self.inner.tokens.verified.lock();
        if verified.generation == generation {
            // Bounded: stale entries go whenever the cache grows past what a busy server sees.
            if verified.principals.len() >= 10_000 {
                verified.principals.retain(|_, (_, at)| at.elapsed() < ttl);
            }
            verified.principals.insert(hash, (principal.clone(), Instant::now()));
        }
        Ok(principal)
    }

    /// Creates a user with a first token, returned this once. An admin cannot create a user more
    /// trusted than itself.
    pub async fn create_user(
        &self,
        actor: &Principal,
        new_user: NewUser,
    ) -> Result<(User, String), ForgeError> {
        require(actor, Operation::CreateUser)?;
        new_user.validate()?;
        require_trust(actor, new_user.trust_level, "create a user of")?;
        // Each role once, wherever its repeats stand, in the order first given.
        let mut roles: Vec<Role> = Vec::with_capacity(new_user.roles.len());
        for role in new_user.roles {
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        let user = User {
            id: Uuid::now_v7(),
            name: new_user.name,
            roles,
            trust_level: new_user.trust_level,
            created_at: Utc::now(),
            disabled: false,
        };
        let user = self.inner.repo.insert_user(&user).await.map_err(|e| match e {
            StorageError::Conflict(_) => ForgeError::conflict(format!("user `{}` already exists", user.name)),
            other => other.into(),
        })?;
        let token = generate_token();
        self.inner.repo.add_token(user.id, &token_hash(&token)).await?;
        Ok((user, token))
    }

    /// Makes `token` a valid token of the user `name` holding `role`, creating the user (at `trust`)
    /// if there is none. Idempotent: for minting tokens offline. Fails if an existing user of that
    /// name lacks the role.
    pub async fn ensure_token(
        &self,
        name: &str,
        role: Role,
        trust: TrustLevel,
        token: &str,
    ) -> Result<User, ForgeError> {
        let hash = token_hash(token);
        if let Some(user) = self.inner.repo.user_by_token_hash(&hash).await? {
            return Ok(user);
        }
        let user = self.user_with_role(name, role, trust).await?;
        self.inner.repo.add_token(user.id, &hash).await?;
        Ok(user)
    }

    /// Installs `FORGE_ADMIN_TOKEN` at start as the bootstrap token of the admin `name` (created at
    /// core trust if missing). A token different from the last start's replaces it: the previous
    /// one is revoked, and only that one. A token revoked through the API stays revoked: the server
    /// starts, with a warning, rather than bring a revoked secret back to life. Processes starting
    /// at once on one database all succeed.
    pub async fn install_admin_token(&self, name: &str, token: &str) -> Result<BootstrapToken, ForgeError> {
        let admin = self.user_with_role(name, Role::Admin, TrustLevel::Core).await?;
        let installed = self.inner.repo.install_bootstrap_token(admin.id, &token_hash(token)).await;
        let outcome = installed.map_err(|e| match e {
            StorageError::Conflict(_) => ForgeError::conflict("the admin token is another user's token"),
            other => other.into(),
        })?;
        match outcome {
            BootstrapToken::Installed { replaced } if replaced > 0 => {
                tracing::info!(replaced, "a new admin token: the previous one is revoked");
            }
            BootstrapToken::Revoked => tracing::warn!(
                "the admin token was revoked and stays revoked: it does not authenticate; \
                 set a new FORGE_ADMIN_TOKEN to get a working one"
            ),
            BootstrapToken::Installed { .. } | BootstrapToken::Kept => {}
        }
        Ok(outcome)
    }

    /// The user `name`, created with `role` at `trust` if there is none; a conflict if it exists
    /// without the role. A concurrent creation (processes starting at once) is taken, not refused.
    async fn user_with_role(&self, name: &str, role: Role, trust: TrustLevel) -> Result<User, ForgeError> {
        let user = match self.inner.repo.get_user_by_name(name).await? {
            Some(user) => user,
            None => {
                let new_user = NewUser { name: name.into(), roles: vec![role], trust_level: trust };
                new_user.validate()?;
                let user = User {
                    id: Uuid::now_v7(),
                    name: new_user.name,
                    roles: new_user.roles,
                    trust_level: trust,
                    created_at: Utc::now(),
                    disabled: false,
                };
                match self.inner.repo.insert_user(&user).await {
                    Ok(user) => user,
                    Err(StorageError::Conflict(_)) => {
                        self.inner.repo.get_user_by_name(name).await?.ok_or_else(|| {
                            ForgeError::conflict(format!("user `{name}` was created and removed"))
                        })?
                    }
                    Err(other) => return Err(other.into()),
                }
            }
        };
        if !user.roles.contains(&role) {
            return Err(ForgeError::conflict(format!("user `{name}` exists without role {role}")));
        }
        Ok(user)
    }

    /// Revokes a token: its owner or an admin may. Applies at once in this process.
    pub async fn revoke_token(&self, actor: &Principal, token: &str) -> Result<(), ForgeError> {
        let hash = token_hash(token);
        let owner = self.inner.repo.user_by_token_hash(&hash).await?;
        match owner {
            Some(owner) if owner.name == actor.name || actor.has_role(Role::Admin) => {}
            // The same answer whether the token is someone else's or unknown: tokens are not probed.
            _ => return Err(ForgeError::not_found("no such live token of yours")),
        }
        self.inner.repo.revoke_token(&hash).await?;
        self.inner.tokens.forget(|cached_hash, _| cached_hash == hash);
        Ok(())
    }

    /// A user's tokens, revoked ones too (admin): metadata only, never a token or its hash.
    pub async fn user_tokens(
        &self,
        actor: &Principal,
        name: &str,
        page: PageRequest,
    ) -> Result<Page<TokenInfo>, ForgeError> {
        let user = self.managed_user(actor, name).await?;
        Ok(self.inner.repo.list_tokens(user.id, page).await?)
    }

    /// Revokes every live token of a user (admin); returns how many. Applies at once in this
    /// process, within `token_cache_ttl` in others.
    pub async fn revoke_user_tokens(&self, actor: &Principal, name: &str) -> Result<u64, ForgeError> {
        let user = self.managed_user(actor, name).await?;
        let revoked = self.inner.repo.revoke_user_tokens(user.id).await?;
        self.inner.tokens.forget(|_, principal| principal.name == name);
        Ok(revoked)
    }

    /// Disables a user, so that none of its tokens authenticates, or enables it again (admin). An
    /// admin cannot disable itself (it would lock itself out). Applies at once in this process,
    /// within `token_cache_ttl` in others.
    pub async fn set_user_disabled(
        &self,
        actor: &Principal,
        name: &str,
        disabled: bool,
    ) -> Result<User, ForgeError> {
        self.managed_user(actor, name).await?;
        if disabled && actor.name == name {
            return Err(ForgeError::validation("an admin cannot disable itself"));
        }
        let user = self.inner.repo.set_user_disabled(name, disabled).await?;
        self.inner.tokens.forget(|_, principal| principal.name == name);
        user.ok_or_else(|| unknown_user(name))
    }

    /// The user `name`, if `actor` may manage it: an admin, at least as trusted as the user.
    async fn managed_user(&self, actor: &Principal, name: &str) -> Result<User, ForgeError> {
        require(actor, Operation::ManageUsers)?;
        let user = self.inner.repo.get_user_by_name(name).await?.ok_or_else(|| unknown_user(name))?;
        require_trust(actor, user.trust_level, "manage a user of")?;
        Ok(user)
    }
}

fn unknown_user(name: &str) -> ForgeError {
    ForgeError::not_found(format!("user `{name}` not found"))
}

impl TokenCache {
    /// Drops the cached tokens `which` picks (by hash and principal), so that their next request
    /// reads the database, and keeps verifications already under way from caching them again.
    fn forget(&self, which: impl Fn(&str, &Principal) -> bool) {
        let mut verified = self.verified.lock();
        verified.generation += 1;
        verified.principals.retain(|hash, (principal, _)| !which(hash, principal));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 43);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), token_hash(&b));
        assert_eq!(token_hash(&format!(" {a}\n")), token_hash(&a), "hashed as trimmed");
    }
}
