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
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// What an author submits: the manifest, the module (binary or text) and optionally the hash of the
/// source it was built from.
#[derive(Debug, Clone)]
pub struct Registration {
    pub manifest: OverlayManifest,
    pub wasm: Bytes,
    pub source_hash: Option<String>,
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
        let Registration { manifest, wasm, source_hash } = registration;
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
        let wasm: Bytes = tokio::task::spawn_blocking(move || {
            let binary = forge_runtime::wasm_from_binary_or_text(&wasm)?.into_owned();
            // Linked as the first call will link it, so a module that passes cannot fail every call.
            runtime.prepare(&checked_manifest, &binary)?;
            Ok::<_, ForgeError>(Bytes::from(binary))
        })
        .await
        .map_err(|e| ForgeError::internal(format!("module check failed: {e}")))??;

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
            Err(StorageError::Conflict(_)) => {
                // Lost a race for the name+version: drop our binary unless the winner stored the same one.
                let winner = self
                    .inner
                    .repo
                    .get_overlay_by_name_version(&overlay.manifest.name, &overlay.manifest.version)
                    .await?;
                if winner.is_none_or(|w| w.wasm_key != overlay.wasm_key) {
                    self.delete_binary(&overlay.wasm_key).await;
                }
                Err(ForgeError::conflict(format!(
                    "overlay {}@{} is already registered",
                    overlay.manifest.name, overlay.manifest.version
                )))
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn delete_binary(&self, key: &str) {
        if let Err(error) = self.inner.blobs.delete(key).await {
            tracing::warn!(%error, key, "could not remove an overlay binary; it is left unreferenced");
        }
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

    /// Deletes the record (its audit trail stays), then the binary.
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
        if !self.inner.repo.delete_overlay(id, record).await? {
            return Err(ForgeError::not_found(format!("overlay {id} not found")));
        }
        self.inner.overlays.forget(id);
        self.delete_binary(&current.wasm_key).await;
        Ok(())
    }
}
