//! Users and API tokens: random bearer tokens, stored only as SHA-256 hashes, revocable.

use crate::OverlayService;
use crate::access::{Operation, require, require_trust};
use base64::Engine;
use chrono::Utc;
use forge_model::{ForgeError, NewUser, Principal, Role, TrustLevel, User};
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
    verified: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl OverlayService {
    /// The principal a bearer token belongs to; 401 if it is unknown or revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, ForgeError> {
        let hash = token_hash(token);
        let ttl = self.inner.config.token_cache_ttl;
        if let Some((principal, at)) = self.inner.tokens.verified.lock().get(&hash)
            && at.elapsed() < ttl
        {
            return Ok(principal.clone());
        }
        let user = self.inner.repo.user_by_token_hash(&hash).await?.ok_or_else(|| {
            self.inner.tokens.verified.lock().remove(&hash);
            ForgeError::authentication("invalid or revoked token")
        })?;
        let principal = Principal::from(&user);
        let mut tokens = self.inner.tokens.verified.lock();
        // Bounded: stale entries go whenever the cache grows past what a busy server sees.
        if tokens.len() >= 10_000 {
            tokens.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        tokens.insert(hash, (principal.clone(), Instant::now()));
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
        };
        let user = self.inner.repo.insert_user(&user).await.map_err(|e| match e {
            forge_storage::StorageError::Conflict(_) => {
                ForgeError::conflict(format!("user `{}` already exists", user.name))
            }
            other => other.into(),
        })?;
        let token = generate_token();
        self.inner.repo.add_token(user.id, &token_hash(&token)).await?;
        Ok((user, token))
    }

    /// Makes `token` a valid token of the user `name` holding `role`, creating the user (at `trust`)
    /// if there is none. Idempotent: for bootstrapping from `FORGE_ADMIN_TOKEN` and for minting tokens
    /// offline. Fails if an existing user of that name lacks the role.
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
        let user = match self.inner.repo.get_user_by_name(name).await? {
            Some(user) if user.roles.contains(&role) => user,
            Some(_) => return Err(ForgeError::conflict(format!("user `{name}` exists without role {role}"))),
            None => {
                let new_user = NewUser { name: name.into(), roles: vec![role], trust_level: trust };
                new_user.validate()?;
                let user = User {
                    id: Uuid::now_v7(),
                    name: new_user.name,
                    roles: new_user.roles,
                    trust_level: trust,
                    created_at: Utc::now(),
                };
                self.inner.repo.insert_user(&user).await?
            }
        };
        self.inner.repo.add_token(user.id, &hash).await?;
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
        self.inner.tokens.verified.lock().remove(&hash);
        Ok(())
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
