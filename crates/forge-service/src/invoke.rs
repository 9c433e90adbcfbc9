//! The invocation pipeline.
//!
//! The hot path touches no database: overlay records come from the [`OverlayCache`](crate::cache::OverlayCache),
//! binaries are fetched, verified and pre-linked once per overlay, and health counts are recorded
//! behind the call. Guests run on the caller's task (on a fiber, yielding at every epoch tick), so no
//! thread is handed over.

use crate::OverlayService;
use crate::access::{Operation, require, require_log_access, require_trust};
use crate::cache::Entry;
use forge_model::{
    ForgeError, HealthReport, Overlay, OverlayInvocation, OverlayResult, OverlayState, Principal,
};
use forge_runtime::{OverlayIdentity, PreparedOverlay};
use forge_storage::HealthOutcome;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tracing::Instrument;
use uuid::Uuid;

/// Seconds a refused client is asked to wait before retrying.
const RETRY_AFTER_SECS: u64 = 1;

/// A place among the invocations in flight, and its share of the memory budget, given back when
/// dropped.
struct Admission<'a> {
    global: &'a AtomicUsize,
    overlay: &'a AtomicUsize,
    memory_mb: &'a AtomicU64,
    claimed_mb: u64,
    gauge: &'a prometheus::IntGauge,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.global.fetch_sub(1, Ordering::AcqRel);
        self.overlay.fetch_sub(1, Ordering::AcqRel);
        self.memory_mb.fetch_sub(self.claimed_mb, Ordering::AcqRel);
        self.gauge.dec();
    }
}

/// Takes a slot under `limit`, or gives it back and says no.
fn take_slot(counter: &AtomicUsize, limit: usize) -> bool {
    if counter.fetch_add(1, Ordering::AcqRel) < limit {
        true
    } else {
        counter.fetch_sub(1, Ordering::AcqRel);
        false
    }
}

impl OverlayService {
    /// Runs one invocation of overlay `id` for `caller`, in the original Forge order: the overlay
    /// exists (404), is active (422), the caller's trust can access it (403), the function is an entry
    /// point (422), there is room (429), the binary loads and verifies (503); then it runs and its
    /// health counts are recorded. A guest failure is an `Ok` result with `success: false`.
    pub async fn invoke(
        &self,
        caller: &Principal,
        id: Uuid,
        invocation: OverlayInvocation,
    ) -> Result<OverlayResult, ForgeError> {
        require(caller, Operation::Invoke)?;
        let (entry, overlay) = self.entry(id).await?;
        if overlay.state != OverlayState::Active {
            return Err(ForgeError::validation(format!(
                "overlay {}@{} is {}, not active",
                overlay.manifest.name, overlay.manifest.version, overlay.state
            ))
            .with_detail("state", overlay.state.as_str()));
        }
        require_trust(caller, overlay.trust_level, "invoke an overlay of")?;
        let entry_points = &overlay.manifest.entry_points;
        if !entry_points.contains(&invocation.function) {
            return Err(invocation.unknown_entry_point(&entry.label, entry_points.iter().map(String::as_str)));
        }
        invocation.validate()?;
        if invocation.include_logs {
            require_log_access(caller, &overlay.submitted_by)?;
        }
        let _admission = self.admit(&entry, overlay.manifest.max_memory_mb)?;
        let prepared = self.prepared(&entry, &overlay).await?;
        let identity = OverlayIdentity {
            id: Some(id),
            name: entry.overlay_name.clone(),
            trust_level: overlay.trust_level,
        };
        let invocation_id = Uuid::now_v7();
        let span = tracing::info_span!("invocation", id = %invocation_id, overlay = %entry.label);
        let outcome =
            self.inner.runtime.invoke(&prepared, &identity, &invocation).instrument(span.clone()).await?;
        let (mut result, log) = (outcome.result, outcome.log);
        let deadline_shortened = invocation.shortens_deadline(overlay.manifest.max_execution_ms);
        self.inner.recorder.record(id, &result, deadline_shortened);
        entry.series.observe(&result, &log);
        span.in_scope(|| {
            for line in &log.lines {
                tracing::debug!(level = %line.level, "{}", line.message);
            }
        });
        result.invocation_id = Some(invocation_id);
        if invocation.include_logs {
            result.logs = Some(log.lines.clone());
            result.logs_dropped = Some(log.dropped_lines);
        }
        self.inner.logs.record(id, invocation_id, log.lines, &result);
        Ok(result)
    }

    /// Invokes the newest active version (by semver) of the overlay named `name`.
    pub async fn invoke_by_name(
        &self,
        caller: &Principal,
        name: &str,
        invocation: OverlayInvocation,
    ) -> Result<OverlayResult, ForgeError> {
        let id = self.newest_active(name).await?;
        self.invoke(caller, id, invocation).await
    }

    /// Health counters (including everything this process recorded so far), failure rate and latency
    /// percentiles.
    pub async fn health(&self, caller: &Principal, id: Uuid) -> Result<HealthReport, ForgeError> {
        require(caller, Operation::Read)?;
        if let Err(error) = self.flush_health().await {
            tracing::warn!(%error, "health read without this process's latest counts");
        }
        let overlay = self.get(caller, id).await?;
        let latency = self.inner.repo.latency_histogram(id).await?;
        Ok(HealthReport::new(&overlay, &latency))
    }

    /// Takes a place for a call that may grow to `memory_mb`, under the limits on calls in flight
    /// (all overlays, this overlay) and on the sum of their memory (`memory_budget_mb`); 429 past any.
    fn admit<'a>(&'a self, entry: &'a Entry, memory_mb: u32) -> Result<Admission<'a>, ForgeError> {
        let config = &self.inner.config;
        if !take_slot(&self.inner.in_flight, config.max_in_flight) {
            self.inner.metrics.refused("global_limit");
            return Err(ForgeError::rate_limited(
                format!("too many invocations in flight (limit {}); retry later", config.max_in_flight),
                RETRY_AFTER_SECS,
            ));
        }
        if !take_slot(&entry.in_flight, config.max_in_flight_per_overlay) {
            self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.inner.metrics.refused("overlay_limit");
            return Err(ForgeError::rate_limited(
                format!(
                    "too many invocations of {} in flight (limit {}); retry later",
                    entry.label, config.max_in_flight_per_overlay
                ),
                RETRY_AFTER_SECS,
            ));
        }
        let claimed_mb = u64::from(memory_mb);
        let memory = &self.inner.memory_in_flight_mb;
        if memory.fetch_add(claimed_mb, Ordering::AcqRel) + claimed_mb > config.memory_budget_mb {
            memory.fetch_sub(claimed_mb, Ordering::AcqRel);
            self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            entry.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.inner.metrics.refused("memory_budget");
            return Err(ForgeError::rate_limited(
                format!(
                    "the memory of the invocations in flight would exceed the budget of {} MiB \
                     ({} needs up to {memory_mb} MiB); retry later",
                    config.memory_budget_mb, entry.label
                ),
                RETRY_AFTER_SECS,
            ));
        }
        self.inner.metrics.in_flight.inc();
        Ok(Admission {
            global: &self.inner.in_flight,
            overlay: &entry.in_flight,
            memory_mb: memory,
            claimed_mb,
            gauge: &self.inner.metrics.in_flight,
        })
    }

    /// The overlay's pre-linked module: fetched, verified against its hash and linked on first use.
    async fn prepared(&self, entry: &Entry, overlay: &Overlay) -> Result<Arc<PreparedOverlay>, ForgeError> {
        entry
            .prepared
            .get_or_try_init(|| async {
                let wasm = self.inner.blobs.get_verified(&overlay.wasm_key, &overlay.wasm_hash).await?;
                let runtime = self.inner.runtime.clone();
                let manifest = overlay.manifest.clone();
                // A refused turn is the caller's 429; a binary that no longer loads is logged.
                let prepared = self.compiling(move || Ok(runtime.prepare(&manifest, &wasm))).await?;
                let prepared = prepared.map_err(|error| {
                    tracing::error!(overlay = %entry.label, %error.message, "stored overlay no longer loads");
                    ForgeError::unavailable("overlay binary cannot be loaded")
                })?;
                Ok(Arc::new(prepared))
            })
            .await
            .cloned()
    }

    /// The cached entry of overlay `id` and its current record, re-read when older than
    /// `record_refresh`; 404 if none.
    async fn entry(&self, id: Uuid) -> Result<(Arc<Entry>, Arc<Overlay>), ForgeError> {
        let overlays = &self.inner.overlays;
        if let Some(fresh) = overlays.fresh(id) {
            return Ok(fresh);
        }
        let Some(overlay) = self.inner.repo.get_overlay(id).await? else {
            overlays.forget(id);
            return Err(ForgeError::not_found(format!("overlay {id} not found")));
        };
        let overlay = Arc::new(overlay);
        Ok((overlays.insert(overlay.clone(), &self.inner.metrics), overlay))
    }

    /// Brings a health batch's view of an overlay into the cache, and reports a quarantine it made.
    pub(crate) fn apply_health_outcome(&self, outcome: HealthOutcome) {
        let (quarantined, failure_rate) = (outcome.quarantined, outcome.health.recent.failure_rate());
        let Some(entry) = self.inner.overlays.apply(outcome) else { return };
        if quarantined {
            tracing::warn!(overlay = %entry.label, failure_rate, "overlay quarantined automatically");
            self.inner.metrics.quarantined(&entry.label, true);
        }
    }

    async fn newest_active(&self, name: &str) -> Result<Uuid, ForgeError> {
        if let Some(id) = self.inner.overlays.newest_active(name) {
            return Ok(id);
        }
        let newest = self
            .inner
            .repo
            .active_overlays_named(name)
            .await?
            .into_iter()
            .filter_map(|o| semver::Version::parse(&o.manifest.version).ok().map(|v| (v, o)))
            .max_by(|(a, _), (b, _)| a.cmp(b))
            .map(|(_, overlay)| overlay)
            .ok_or_else(|| ForgeError::not_found(format!("no active overlay named `{name}`")))?;
        let id = newest.id;
        self.inner.overlays.set_newest_active(name, id);
        self.inner.overlays.insert(Arc::new(newest), &self.inner.metrics);
        Ok(id)
    }
}
