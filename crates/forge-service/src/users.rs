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
use std::net::IpAddr;
use std::time::{Duration, Instant};
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

/// Tokens looked up recently, by hash, so most requests need no database read: the principal of a
/// live token, or `None` for a token the database did not know (so a client retrying a bad token
/// costs one lookup per `token_cache_ttl`, not one per request).
#[derive(Default)]
pub(crate) struct TokenCache {
    looked_up: Mutex<LookedUp>,
}

#[derive(Default)]
struct LookedUp {
    entries: HashMap<String, (Option<Principal>, Instant)>,
    /// Counts forgettings (revocations, disablings, new tokens), so that a lookup whose database
    /// read came before one does not cache its (by then stale) answer.
    generation: u64,
}

/// Entries past which the token cache drops its stale ones.
const TOKEN_CACHE_ENTRIES: usize = 10_000;

impl TokenCache {
    /// What a lookup within `ttl` found (`None` inside for a token known to be unknown), or, when
    /// there was none, the generation to [`remember`](Self::remember) the coming lookup under.
    fn fresh(&self, hash: &str, ttl: Duration) -> Result<Option<Principal>, u64> {
        let looked_up = self.looked_up.lock();
        match looked_up.entries.get(hash) {
            Some((principal, at)) if at.elapsed() < ttl => Ok(principal.clone()),
            _ => Err(looked_up.generation),
        }
    }

    /// Keeps a lookup's answer, unless something was forgotten since it started.
    fn remember(&self, hash: String, principal: Option<Principal>, ttl: Duration, generation: u64) {
        let mut looked_up = self.looked_up.lock();
        if looked_up.generation != generation {
            return;
        }
        // Bounded: stale entries go whenever the cache grows past what a busy server sees; a flood of
        // fresh unknown tokens past that drops the refusals first.
        if looked_up.entries.len() >= TOKEN_CACHE_ENTRIES {
            looked_up.entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if looked_up.entries.len() >= TOKEN_CACHE_ENTRIES {
                looked_up.entries.retain(|_, (principal, _)| principal.is_some());
            }
        }
        looked_up.entries.insert(hash, (principal, Instant::now()));
    }

    /// Drops the cached tokens `which` picks (by hash, and principal if live), so that their next
    /// request reads the database, and keeps lookups already under way from caching them again.
    fn forget(&self, which: impl Fn(&str, Option<&Principal>) -> bool) {
        let mut looked_up = self.looked_up.lock();
        looked_up.generation += 1;
        looked_up.entries.retain(|hash, (principal, _)| !which(hash, principal.as_ref()));
    }

    /// Drops what is known of a user's tokens: its live ones, and every unknown one (a disabled
    /// user's tokens are looked up as unknown, and must work again once it is enabled).
    fn forget_user(&self, name: &str) {
        self.forget(|_, principal| principal.is_none_or(|p| p.name == name));
    }

    /// Drops what is known of one token: it was just revoked, or just stored.
    fn forget_token(&self, token_hash: &str) {
        self.forget(|hash, _| hash == token_hash);
    }
}

/// Unknown tokens looked up per client address within its current minute. Past the limit, the
/// client's lookups are refused (429) until its minute is over, so guessing tokens costs the
/// database at most `limit` lookups per client per minute.
pub(crate) struct AuthFailures {
    limit: u32,
    clients: Mutex<lru::LruCache<IpAddr, (Instant, u32)>>,
}

/// How long a client's failures are counted together.
const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Client addresses whose failures are remembered; the least recently failing go first.
const AUTH_FAILURE_CLIENTS: usize = 65_536;

impl AuthFailures {
    pub(crate) fn new(limit: u32) -> Self {
        let capacity = std::num::NonZeroUsize::new(AUTH_FAILURE_CLIENTS).expect("non-zero");
        AuthFailures { limit, clients: Mutex::new(lru::LruCache::new(capacity)) }
    }

    /// How long `client` must wait, if it used up its failures.
    fn blocked(&self, client: IpAddr) -> Option<Duration> {
        let clients = self.clients.lock();
        let (start, failures) = *clients.peek(&client)?;
        let left = AUTH_FAILURE_WINDOW.checked_sub(start.elapsed())?;
        (failures >= self.limit).then_some(left)
    }

    fn record(&self, client: IpAddr) {
        let mut clients = self.clients.lock();
        match clients.get_mut(&client) {
            Some((start, failures)) if start.elapsed() < AUTH_FAILURE_WINDOW => *failures += 1,
            _ => {
                clients.put(client, (Instant::now(), 1));
            }
        }
    }
}

fn unknown_token() -> ForgeError {
    ForgeError::authentication("invalid or revoked token")
}

impl OverlayService {
    /// The principal a bearer token belongs to; 401 if it is unknown or revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, ForgeError> {
        let hash = token_hash(token);
        let principal = match self.inner.tokens.fresh(&hash, self.inner.config.token_cache_ttl) {
            Ok(known) => known,
            Err(generation) => self.look_up_token(hash, generation).await?,
        };
        principal.ok_or_else(unknown_token)
    }

    /// [`authenticate`](Self::authenticate) for a request from `client`, which may make at most
    /// `failed_auth_per_minute` database lookups of unknown tokens a minute: past that, 429 without
    /// a lookup (tokens it used recently still work from the cache).
    pub async fn authenticate_client(&self, token: &str, client: IpAddr) -> Result<Principal, ForgeError> {
        let hash = token_hash(token);
        let generation = match self.inner.tokens.fresh(&hash, self.inner.config.token_cache_ttl) {
            Ok(known) => return known.ok_or_else(unknown_token),
            Err(generation) => generation,
        };
        if let Some(wait) = self.inner.auth_failures.blocked(client) {
            self.inner.metrics.refused("failed_auth_limit");
            return Err(ForgeError::rate_limited(
                "too many failed authentications from this address; retry later",
                wait.as_secs().max(1),
            ));
        }
        let principal = self.look_up_token(hash, generation).await?;
        if principal.is_none() {
            self.inner.auth_failures.record(client);
        }
        principal.ok_or_else(unknown_token)
    }

    /// The principal of a token, from the database; remembered either way.
    async fn look_up_token(&self, hash: String, generation: u64) -> Result<Option<Principal>, ForgeError> {
        let user = self.inner.repo.user_by_token_hash(&hash).await?;
        let principal = user.as_ref().map(Principal::from);
        self.inner.metrics.token_looked_up(principal.is_some());
        let ttl = self.inner.config.token_cache_ttl;
        self.inner.tokens.remember(hash, principal.clone(), ttl, generation);
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
        self.inner.tokens.forget_token(&hash);
        Ok(user)
    }

    /// Installs `FORGE_ADMIN_TOKEN` at start as the bootstrap token of the admin `name` (created at
    /// core trust if missing). A token different from the last start's replaces it: the previous
    /// one is revoked, and only that one. A token revoked through the API stays revoked: the server
    /// starts, with a warning, rather than bring a revoked secret back to life. Processes starting
    /// at once on one database all succeed.
    pub async fn install_admin_token(&self, name: &str, token: &str) -> Result<BootstrapToken, ForgeError> {
        let admin = self.user_with_role(name, Role::Admin, TrustLevel::Core).await?;
        let hash = token_hash(token);
        let installed = self.inner.repo.install_bootstrap_token(admin.id, &hash).await;
        self.inner.tokens.forget_token(&hash);
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
        self.inner.tokens.forget_token(&hash);
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
        self.inner.tokens.forget_user(name);
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
        self.inner.tokens.forget_user(name);
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
