//! The invocation pipeline and the in-memory view of overlays it runs on.
//!
//! The hot path touches no database: overlay records are cached (re-read after
//! [`ServiceConfig::record_refresh`](crate::ServiceConfig::record_refresh)), binaries are fetched,
//! verified and pre-linked once per overlay, and metrics are recorded behind the call. Guests run
//! on the caller's task (on a fiber, yielding at every epoch tick), so no thread is handed over.

use crate::OverlayService;
use crate::access::{Operation, require};
use crate::metrics::{OverlaySeries, label};
use forge_model::{
    ForgeError, HealthReport, Overlay, OverlayInvocation, OverlayResult, OverlayState, Principal,
};
use forge_runtime::{OverlayIdentity, PreparedOverlay};
use forge_storage::HealthOutcome;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use uuid::Uuid;

/// Seconds a refused client is asked to wait before retrying.
const RETRY_AFTER_SECS: u64 = 1;

/// Overlays this process has seen, by id, and the newest active version of each name.
#[derive(Default)]
pub(crate) struct OverlayCache {
    entries: RwLock<HashMap<Uuid, Arc<Entry>>>,
    newest_active: RwLock<HashMap<String, (Uuid, Instant)>>,
    /// Invocations running now, over all overlays.
    in_flight: AtomicUsize,
}

/// One overlay: its latest known record, its pre-linked module and its counters.
pub(crate) struct Entry {
    snapshot: RwLock<Snapshot>,
    prepared: tokio::sync::OnceCell<Arc<PreparedOverlay>>,
    in_flight: AtomicUsize,
    series: OverlaySeries,
    /// `name@version`, for metrics and logs.
    label: Arc<str>,
    /// The manifest's name: the identity host functions act under.
    overlay_name: Arc<str>,
}

#[derive(Clone)]
struct Snapshot {
    overlay: Arc<Overlay>,
    read_at: Instant,
}

impl Entry {
    fn snapshot(&self) -> Snapshot {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, overlay: Arc<Overlay>) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) =
            Snapshot { overlay, read_at: Instant::now() };
    }
}

/// A place among the invocations in flight, given back when dropped.
struct Admission<'a> {
    global: &'a AtomicUsize,
    overlay: &'a AtomicUsize,
    gauge: &'a prometheus::IntGauge,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.global.fetch_sub(1, Ordering::AcqRel);
        self.overlay.fetch_sub(1, Ordering::AcqRel);
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
    /// point (422), there is room (429), the binary loads and verifies (503); then it runs, its metrics
    /// are recorded and its health checked. A guest failure is an `Ok` result with `success: false`.
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
        if !caller.trust_level.can_access(overlay.trust_level) {
            return Err(ForgeError::authorization(format!(
                "trust level {} cannot invoke an overlay of trust level {}",
                caller.trust_level, overlay.trust_level
            )));
        }
        let entry_points = &overlay.manifest.entry_points;
        if !entry_points.contains(&invocation.function) {
            return Err(invocation.unknown_entry_point(&entry.label, entry_points.iter().map(String::as_str)));
        }
        invocation.validate()?;
        let _admission = self.admit(&entry)?;
        let prepared = self.prepared(&entry, &overlay).await?;
        let identity = OverlayIdentity {
            id: Some(id),
            name: entry.overlay_name.clone(),
            trust_level: overlay.trust_level,
        };
        let outcome = self.inner.runtime.invoke(&prepared, &identity, &invocation).await?;
        self.inner.recorder.record(id, &outcome.result);
        entry.series.observe(&outcome.result);
        for line in &outcome.log.lines {
            tracing::debug!(overlay = %entry.label, level = ?line.level, "{}", line.message);
        }
        Ok(outcome.result)
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
        if let Err(error) = self.flush_metrics().await {
            tracing::warn!(%error, "health read without this process's latest metrics");
        }
        let overlay = self.get(caller, id).await?;
        let latency = self.inner.repo.latency_histogram(id).await?;
        Ok(HealthReport::new(&overlay, &latency))
    }

    fn admit<'a>(&'a self, entry: &'a Entry) -> Result<Admission<'a>, ForgeError> {
        let config = &self.inner.config;
        if !take_slot(&self.inner.overlays.in_flight, config.max_in_flight) {
            self.inner.metrics.refused("global_limit");
            return Err(ForgeError::rate_limited(
                format!("too many invocations in flight (limit {}); retry later", config.max_in_flight),
                RETRY_AFTER_SECS,
            ));
        }
        if !take_slot(&entry.in_flight, config.max_in_flight_per_overlay) {
            self.inner.overlays.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.inner.metrics.refused("overlay_limit");
            return Err(ForgeError::rate_limited(
                format!(
                    "too many invocations of {} in flight (limit {}); retry later",
                    entry.label, config.max_in_flight_per_overlay
                ),
                RETRY_AFTER_SECS,
            ));
        }
        self.inner.metrics.in_flight.inc();
        Ok(Admission {
            global: &self.inner.overlays.in_flight,
            overlay: &entry.in_flight,
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
                let prepared = tokio::task::spawn_blocking(move || runtime.prepare(&manifest, &wasm))
                    .await
                    .map_err(|e| ForgeError::internal(format!("preparing the overlay failed: {e}")))?
                    .map_err(|error| {
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
        let cached = self.inner.overlays.entries.read().unwrap_or_else(|p| p.into_inner()).get(&id).cloned();
        if let Some(entry) = cached.as_ref() {
            let snapshot = entry.snapshot();
            if snapshot.read_at.elapsed() < self.inner.config.record_refresh {
                return Ok((entry.clone(), snapshot.overlay));
            }
        }
        let Some(overlay) = self.inner.repo.get_overlay(id).await? else {
            self.forget(id);
            return Err(ForgeError::not_found(format!("overlay {id} not found")));
        };
        let overlay = Arc::new(overlay);
        let entry = match cached {
            Some(entry) => {
                entry.replace(overlay.clone());
                entry
            }
            None => self.cache(overlay.clone()),
        };
        Ok((entry, overlay))
    }

    fn cache(&self, overlay: Arc<Overlay>) -> Arc<Entry> {
        let mut entries = self.inner.overlays.entries.write().unwrap_or_else(|p| p.into_inner());
        entries
            .entry(overlay.id)
            .or_insert_with(|| {
                let label = label(&overlay.manifest.name, &overlay.manifest.version);
                Arc::new(Entry {
                    series: self.inner.metrics.series(&label),
                    label: label.into(),
                    overlay_name: overlay.manifest.name.as_str().into(),
                    prepared: tokio::sync::OnceCell::new(),
                    in_flight: AtomicUsize::new(0),
                    snapshot: RwLock::new(Snapshot { overlay, read_at: Instant::now() }),
                })
            })
            .clone()
    }

    /// Takes a record this process just wrote as the current one.
    pub(crate) fn remember(&self, overlay: &Overlay) {
        self.forget_name(&overlay.manifest.name);
        let entry =
            self.inner.overlays.entries.read().unwrap_or_else(|p| p.into_inner()).get(&overlay.id).cloned();
        if let Some(entry) = entry {
            entry.replace(Arc::new(overlay.clone()));
        }
    }

    pub(crate) fn forget(&self, id: Uuid) {
        let removed = self.inner.overlays.entries.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
        if let Some(entry) = removed {
            let overlay = entry.snapshot().overlay;
            self.forget_name(&overlay.manifest.name);
        }
    }

    fn forget_name(&self, name: &str) {
        self.inner.overlays.newest_active.write().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// Brings a metrics batch's view of an overlay (state, trust, health) into the cache.
    pub(crate) fn apply_metrics_outcome(&self, outcome: HealthOutcome) {
        let entry = self
            .inner
            .overlays
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&outcome.overlay_id)
            .cloned();
        let Some(entry) = entry else { return };
        let mut overlay = (*entry.snapshot().overlay).clone();
        if outcome.quarantined {
            tracing::warn!(overlay = %entry.label, failure_rate = outcome.health.failure_rate(), "overlay quarantined automatically");
            self.inner.metrics.quarantined(&entry.label, true);
            self.forget_name(&overlay.manifest.name);
        }
        overlay.state = outcome.state;
        overlay.trust_level = outcome.trust_level;
        overlay.health = outcome.health;
        entry.replace(Arc::new(overlay));
    }

    async fn newest_active(&self, name: &str) -> Result<Uuid, ForgeError> {
        let cached =
            self.inner.overlays.newest_active.read().unwrap_or_else(|p| p.into_inner()).get(name).copied();
        if let Some((id, read_at)) = cached
            && read_at.elapsed() < self.inner.config.record_refresh
        {
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
        self.inner
            .overlays
            .newest_active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), (id, Instant::now()));
        self.cache(Arc::new(newest));
        Ok(id)
    }
}
