//! Registration, reads, lifecycle transitions, trust and deletion, each with its audit event.

use crate::OverlayService;
use crate::access::{Operation, require, require_trust, sees_details};
use bytes::Bytes;
use chrono::Utc;
use forge_model::{
    AuditAction, AuditEvent, CapabilityName, ForgeError, LifecycleAction, NewAuditEvent, Overlay,
    OverlayFilter, OverlayHealth, OverlayManifest, OverlayState, Page, PageRequest, Principal,
    QuarantinePolicy, Role, TrustLevel,
};
use forge_storage::StorageError;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What an author submits: the manifest, the module (binary or text) and optionally the hash of the
/// source it was built from.
#[derive(Debug, Clone)]
pub struct Registration {
    pub manifest: OverlayManifest,
    pub wasm: Bytes,
    pub source_hash: Option<String>,
}

/// Seconds a client refused a compiler turn is asked to wait.
const COMPILE_RETRY_AFTER_SECS: u64 = 1;

/// Each user's registrations, as token buckets holding `per_minute` tokens refilled evenly over a
/// minute: a burst of `per_minute` registrations, then one every `60 / per_minute` seconds.
///
/// Kept as the generic cell rate algorithm: per user, only the time at which the bucket would be
/// empty with every token taken so far (`drained_at`), exact in integer time.
pub(crate) struct RegistrationLimiter {
    /// Time for one token to come back.
    interval: Duration,
    /// How far ahead of now `drained_at` may be: the burst beyond the first token.
    burst: Duration,
    drained_at: Mutex<HashMap<String, Instant>>,
}

impl RegistrationLimiter {
    /// Users remembered before those with full buckets are forgotten.
    const PRUNE_AT: usize = 1024;

    pub(crate) fn new(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        let interval = Duration::from_secs(60) / per_minute;
        RegistrationLimiter { interval, burst: interval * (per_minute - 1), drained_at: Mutex::default() }
    }

    /// Takes one of `user`'s tokens, or says in how many seconds (rounded up) the next one comes.
    fn take(&self, user: &str, now: Instant) -> Result<(), u64> {
        let mut drained_at = self.drained_at.lock();
        if drained_at.len() >= Self::PRUNE_AT {
            // A user whose bucket has refilled is as good as one never seen.
            drained_at.retain(|_, at| *at > now);
        }
        let drained = drained_at.get(user).map_or(now, |&at| at.max(now));
        if drained <= now + self.burst {
            drained_at.insert(user.to_owned(), drained + self.interval);
            Ok(())
        } else {
            let wait = drained - (now + self.burst);
            Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        }
    }
}

/// Longest reason kept in the audit trail.
const REASON_MAX_CHARS: usize = 1000;

fn event(
    overlay_id: Uuid,
    actor: &Principal,
    action: AuditAction,
    from: Option<OverlayState>,
    to: Option<OverlayState>,
) -> NewAuditEvent {
    NewAuditEvent {
        overlay_id,
        actor: actor.name.clone(),
        action,
        from_state: from,
        to_state: to,
        reason: None,
        details: Map::new(),
    }
}

/// The event of an automatic quarantine, with the numbers of the window that triggered it
/// (`probation_failed` when the overlay failed its first window after a release); storage records
/// it in the transaction that quarantines.
pub(crate) fn auto_quarantine_event(
    overlay_id: Uuid,
    health: &OverlayHealth,
    policy: QuarantinePolicy,
) -> NewAuditEvent {
    let window = &health.recent;
    let rate = window.failure_rate();
    let numbers = format!(
        "failure rate {:.1}% over its last {} counted invocations is above {:.1}%",
        rate * 100.0,
        window.calls(),
        policy.max_failure_rate * 100.0
    );
    let (action, reason) = if health.on_probation {
        (
            AuditAction::ProbationFailed,
            format!("failed its probation after a release from quarantine: {numbers}"),
        )
    } else {
        (AuditAction::AutoQuarantine, numbers)
    };
    NewAuditEvent {
        overlay_id,
        actor: "system".into(),
        action,
        from_state: Some(OverlayState::Active),
        to_state: Some(OverlayState::Quarantined),
        reason: Some(reason),
        details: details(json!({
            "failure_rate": rate,
            "window_invocation_count": window.calls(),
            "window_failure_count": window.failures(),
            "window_calls": policy.window_calls,
            "invocation_count": health.invocation_count,
            "failure_count": health.failure_count,
            "host_failure_count": health.host_failure_count,
            "caller_failure_count": health.caller_failure_count,
        })),
    }
}

/// `overlay` without its last error unless `caller` may see it: error text can quote other users'
/// input.
fn shown_to(caller: &Principal, mut overlay: Overlay) -> Overlay {
    if !sees_details(caller, Some(&overlay.submitted_by)) {
        overlay.health.last_error = None;
    }
    overlay
}

fn details(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A reason, trimmed; required ones must not be empty.
fn reason(action: &str, reason: Option<String>, required: bool) -> Result<Option<String>, ForgeError> {
    let reason = reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    match &reason {
        None if required => {
            Err(ForgeError::validation(format!("a reason is required to {action} an overlay"))
                .with_detail("field", "reason"))
        }
        Some(r) if r.chars().count() > REASON_MAX_CHARS => {
            Err(ForgeError::validation(format!("reason must be at most {REASON_MAX_CHARS} characters")))
        }
        _ => Ok(reason),
    }
}

impl OverlayService {
    /// Checks and stores a new overlay: binary first (content-addressed), then the record with its
    /// `register` event, so a record never points at a missing binary. It starts pending, at sandbox
    /// trust; privileged capabilities are flagged for an admin's approval (activation).
    pub async fn register(
        &self,
        actor: &Principal,
        registration: Registration,
    ) -> Result<Overlay, ForgeError> {
        require(actor, Operation::Register)?;
        if !actor.has_role(Role::Admin)
            && let Err(retry_after) = self.inner.registrations.take(&actor.name, Instant::now())
        {
            return Err(ForgeError::rate_limited(
                format!(
                    "{} registers at most {} overlays per minute; retry in {retry_after} s",
                    actor.name, self.inner.config.registrations_per_minute
                ),
                retry_after,
            ));
        }
        let Registration { manifest, wasm, source_hash } = registration;
        self.inner.runtime.check_module_size(wasm.len())?;
        self.check_http_hosts(&manifest)?;
        if let Some(hash) = &source_hash
            && (hash.is_empty() || hash.len() > 128 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(ForgeError::validation("source_hash must be a hex digest (at most 128 characters)"));
        }
        let (name, version) = (&manifest.name, &manifest.version);
        if self.inner.repo.get_overlay_by_name_version(name, version).await?.is_some() {
            return Err(ForgeError::conflict(format!("overlay {name}@{version} is already registered")));
        }
        // A name belongs to whoever first registered it (and to admins), so that nobody can take over
        // invoke-by-name with a newer version of someone else's overlay.
        let submitters = self.inner.repo.name_submitters(name).await?;
        if !submitters.is_empty() && !submitters.contains(&actor.name) && !actor.has_role(Role::Admin) {
            return Err(ForgeError::authorization(format!(
                "the overlay name `{name}` belongs to another user; choose another name"
            )));
        }
        let runtime = self.inner.runtime.clone();
        let checked_manifest = manifest.clone();
        let wasm: Bytes = self
            .compiling(move || {
                let binary = forge_runtime::wasm_from_binary_or_text(&wasm)?.into_owned();
                // Linked as the first call will link it, so a module that passes cannot fail every call.
                runtime.prepare(&checked_manifest, &binary)?;
                Ok(Bytes::from(binary))
            })
            .await?;

        let wasm_hash = forge_model::sha256_hex(&wasm);
        let wasm_key = Overlay::wasm_key_for(&manifest.name, &manifest.version, &wasm_hash);
        self.inner.blobs.put(&wasm_key, wasm).await?;

        let now = Utc::now();
        let privileged = manifest.privileged_capabilities();
        let overlay = Overlay {
            id: Uuid::now_v7(),
            state: OverlayState::Pending,
            trust_level: TrustLevel::Sandbox,
            requires_approval: !privileged.is_empty(),
            submitted_by: actor.name.clone(),
            created_at: now,
            updated_at: now,
            health: OverlayHealth::default(),
            source_hash,
            wasm_hash,
            wasm_key,
            manifest,
        };
        let mut register = event(overlay.id, actor, AuditAction::Register, None, Some(OverlayState::Pending));
        register.details = details(json!({
            "wasm_hash": overlay.wasm_hash,
            "requires_approval": overlay.requires_approval,
            "privileged_capabilities": privileged,
        }));
        match self.inner.repo.insert_overlay(&overlay, register).await {
            Ok(stored) => Ok(stored),
            Err(error) => {
                // Lost a race for the name+version, or could not write: drop our binary unless a
                // record (the race's winner, with the same binary) uses it.
                self.delete_unreferenced_binary(&overlay).await;
                Err(match error {
                    StorageError::Conflict(_) => ForgeError::conflict(format!(
                        "overlay {}@{} is already registered",
                        overlay.manifest.name, overlay.manifest.version
                    )),
                    other => other.into(),
                })
            }
        }
    }

    /// Runs a module compilation (`work`) on the blocking pool once one of the
    /// `max_concurrent_compilations` turns is free, waiting at most `compile_wait` for it (then 429).
    /// Refuses a manifest asking for `network:http` targets outside the operator's
    /// `http_allowed_hosts`, naming each.
    fn check_http_hosts(&self, manifest: &OverlayManifest) -> Result<(), ForgeError> {
        let allow_list = &self.inner.config.http_allowed_hosts;
        let outside: Vec<String> = manifest
            .http_host_patterns()
            .iter()
            .filter(|pattern| !allow_list.iter().any(|allowed| allowed.permits(pattern)))
            .map(ToString::to_string)
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        Err(ForgeError::validation(format!(
            "network:http hosts {} are not permitted by this server's http_allowed_hosts",
            outside.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
        ))
        .with_detail("hosts", json!(outside)))
    }

    pub(crate) async fn compiling<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ForgeError> + Send + 'static,
    ) -> Result<T, ForgeError> {
        let config = &self.inner.config;
        let turn = self.inner.compilations.clone().acquire_owned();
        let Ok(Ok(turn)) = tokio::time::timeout(config.compile_wait, turn).await else {
            self.inner.metrics.refused("compile_limit");
            return Err(ForgeError::rate_limited(
                format!(
                    "too many modules being compiled (limit {}); retry later",
                    config.max_concurrent_compilations
                ),
                COMPILE_RETRY_AFTER_SECS,
            ));
        };
        tokio::task::spawn_blocking(move || {
            // Held until the compilation ends, even if the request that asked for it is gone.
            let _turn = turn;
            work()
        })
        .await
        .map_err(|e| ForgeError::internal(format!("module compilation failed: {e}")))?
    }

    /// Removes the binary of a registration that was not recorded, unless the record now holding
    /// its name and version has the same binary (and so the same key). When that cannot be read,
    /// the binary stays: an unreferenced blob is better than a record without its binary.
    async fn delete_unreferenced_binary(&self, overlay: &Overlay) {
        let manifest = &overlay.manifest;
        match self.inner.repo.get_overlay_by_name_version(&manifest.name, &manifest.version).await {
            Ok(holder) if holder.as_ref().is_none_or(|h| h.wasm_key != overlay.wasm_key) => {
                self.delete_binary(&overlay.wasm_key).await.ok();
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, key = overlay.wasm_key, "unrecorded overlay binary left in place");
            }
        }
    }

    async fn delete_binary(&self, key: &str) -> Result<(), ForgeError> {
        self.inner.blobs.delete(key).await.map_err(|error| {
            tracing::warn!(%error, key, "could not remove an overlay binary");
            ForgeError::from(error)
        })
    }

    /// The overlay as `caller` may see it (see [`shown_to`]).
    pub async fn get(&self, caller: &Principal, id: Uuid) -> Result<Overlay, ForgeError> {
        require(caller, Operation::Read)?;
        let overlay = self.inner.repo.get_overlay(id).await?;
        Ok(shown_to(caller, overlay.ok_or_else(|| ForgeError::not_found(format!("overlay {id} not found")))?))
    }

    pub async fn get_by_name_version(
        &self,
        caller: &Principal,
        name: &str,
        version: &str,
    ) -> Result<Overlay, ForgeError> {
        require(caller, Operation::Read)?;
        let overlay = self.inner.repo.get_overlay_by_name_version(name, version).await?;
        let overlay =
            overlay.ok_or_else(|| ForgeError::not_found(format!("overlay {name}@{version} not found")))?;
        Ok(shown_to(caller, overlay))
    }

    /// Overlays matching `filter`: by state (e.g. the quarantined ones), submitter, name substring or
    /// a capability they hold.
    pub async fn list(
        &self,
        caller: &Principal,
        filter: &OverlayFilter,
        page: PageRequest,
    ) -> Result<Page<Overlay>, ForgeError> {
        require(caller, Operation::Read)?;
        let mut page = self.inner.repo.list_overlays(filter, page).await?;
        page.items = page.items.into_iter().map(|overlay| shown_to(caller, overlay)).collect();
        Ok(page)
    }

    pub async fn list_quarantined(
        &self,
        caller: &Principal,
        page: PageRequest,
    ) -> Result<Page<Overlay>, ForgeError> {
        let filter = OverlayFilter { state: Some(OverlayState::Quarantined), ..OverlayFilter::default() };
        self.list(caller, &filter, page).await
    }

    /// Which overlays hold `capability`.
    pub async fn holders_of(
        &self,
        caller: &Principal,
        capability: CapabilityName,
        page: PageRequest,
    ) -> Result<Page<Overlay>, ForgeError> {
        let filter = OverlayFilter { capability: Some(capability), ..OverlayFilter::default() };
        self.list(caller, &filter, page).await
    }

    /// An overlay's audit trail, oldest first. Reasons are left out for callers who may not see
    /// them (see [`sees_details`]); the submitter of a deleted overlay is unknown, so only admins
    /// and operators see its reasons.
    pub async fn events(
        &self,
        caller: &Principal,
        id: Uuid,
        page: PageRequest,
    ) -> Result<Page<AuditEvent>, ForgeError> {
        require(caller, Operation::Read)?;
        let mut page = self.inner.repo.list_events(id, page).await?;
        if !sees_details(caller, None) {
            let submitter = self.inner.repo.get_overlay(id).await?.map(|overlay| overlay.submitted_by);
            if !sees_details(caller, submitter.as_deref()) {
                page.items.iter_mut().for_each(|event| event.reason = None);
            }
        }
        Ok(page)
    }

    /// Applies a lifecycle action if the actor's role and the transition table allow it. Releasing
    /// from quarantine resets the health counters.
    pub async fn transition(
        &self,
        actor: &Principal,
        id: Uuid,
        action: LifecycleAction,
        reason_given: Option<String>,
    ) -> Result<Overlay, ForgeError> {
        require(actor, Operation::Lifecycle(action))?;
        let reason = reason(action.as_str(), reason_given, action.requires_reason())?;
        let current = self.get(actor, id).await?;
        require_trust(actor, current.trust_level, &format!("{action} an overlay of"))?;
        let Some(to) = current.state.apply(action) else {
            return Err(ForgeError::validation(format!(
                "cannot {action} overlay {}@{}: it is {}",
                current.manifest.name, current.manifest.version, current.state
            ))
            .with_detail("state", current.state.as_str()));
        };
        let mut record = event(id, actor, action.into(), Some(current.state), Some(to));
        record.reason = reason;
        let reset_health = action == LifecycleAction::Release;
        let updated =
            self.inner.repo.transition(id, current.state, to, reset_health, record).await?.ok_or_else(
                || ForgeError::conflict(format!("overlay {id} changed while it was being updated; retry")),
            )?;
        if action == LifecycleAction::Quarantine {
            self.inner.metrics.quarantined(
                &crate::metrics::label(&updated.manifest.name, &updated.manifest.version),
                false,
            );
        }
        self.inner.overlays.remember(&updated);
        Ok(updated)
    }

    /// Sets an overlay's trust level; an admin cannot grant more trust than it holds, nor change an
    /// overlay trusted more than itself (nor, below, move one through its lifecycle or delete it).
    pub async fn set_trust_level(
        &self,
        actor: &Principal,
        id: Uuid,
        trust_level: TrustLevel,
        reason_given: Option<String>,
    ) -> Result<Overlay, ForgeError> {
        require(actor, Operation::SetTrustLevel)?;
        require_trust(actor, trust_level, "grant")?;
        let reason = reason("set the trust level of", reason_given, false)?;
        let current = self.get(actor, id).await?;
        require_trust(actor, current.trust_level, "change the trust of an overlay of")?;
        let mut record = event(id, actor, AuditAction::SetTrustLevel, None, None);
        record.reason = reason;
        record.details = details(json!({"from": current.trust_level, "to": trust_level}));
        let updated = self
            .inner
            .repo
            .set_trust_level(id, trust_level, record)
            .await?
            .ok_or_else(|| ForgeError::not_found(format!("overlay {id} not found")))?;
        self.inner.overlays.remember(&updated);
        Ok(updated)
    }

    /// Deletes the binary, then the record (its audit trail stays).
    pub async fn delete(
        &self,
        actor: &Principal,
        id: Uuid,
        reason_given: Option<String>,
    ) -> Result<(), ForgeError> {
        require(actor, Operation::Delete)?;
        let reason = reason("delete", reason_given, false)?;
        let current = self.get(actor, id).await?;
        require_trust(actor, current.trust_level, "delete an overlay of")?;
        let mut record = event(id, actor, AuditAction::Delete, Some(current.state), None);
        record.reason = reason;
        // The binary goes first: while the record exists its name and version cannot be registered
        // again, so a re-registration of the same binary (the same key) stores it only after this
        // delete, never before it. A delete that fails after this point leaves a record without
        // its binary (503 on invocation), which the retried delete removes.
        self.delete_binary(&current.wasm_key).await?;
        if !self.inner.repo.delete_overlay(id, record).await? {
            return Err(ForgeError::not_found(format!("overlay {id} not found")));
        }
        self.inner.overlays.forget(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_gets_a_burst_then_one_registration_per_refill() {
        let limiter = RegistrationLimiter::new(2);
        let start = Instant::now();
        assert_eq!(limiter.take("ursula", start), Ok(()));
        assert_eq!(limiter.take("ursula", start), Ok(()));
        assert_eq!(limiter.take("ursula", start), Err(30), "two a minute: one every 30 s");
        assert_eq!(limiter.take("olga", start), Ok(()), "buckets are per user");
        assert_eq!(limiter.take("ursula", start + Duration::from_secs(20)), Err(10));
        assert_eq!(limiter.take("ursula", start + Duration::from_secs(30)), Ok(()));
        assert_eq!(limiter.take("ursula", start + Duration::from_secs(30)), Err(30));
        let later = start + Duration::from_secs(3600);
        assert_eq!((limiter.take("ursula", later), limiter.take("ursula", later)), (Ok(()), Ok(())));
        assert!(limiter.take("ursula", later).is_err(), "a long pause refills no more than the burst");

        for n in 0..RegistrationLimiter::PRUNE_AT {
            limiter.take(&format!("user-{n}"), later).unwrap();
        }
        let much_later = later + Duration::from_secs(3600);
        limiter.take("ursula", much_later).unwrap();
        assert_eq!(limiter.drained_at.lock().len(), 1, "users with full buckets are forgotten");
    }
}
