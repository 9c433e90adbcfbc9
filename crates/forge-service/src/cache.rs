//! The overlays this process has seen: their latest records, pre-linked modules and counters.
//!
//! The invocation path reads records from here, not from the database; a record is re-read once it
//! is older than [`ServiceConfig::record_refresh`](crate::ServiceConfig::record_refresh). Writes made
//! through this process (lifecycle, trust, deletion) and every health batch's outcome update it at
//! once. It holds at most [`ServiceConfig::overlay_cache_entries`](crate::ServiceConfig) overlays.

use crate::metrics::{OverlaySeries, ServiceMetrics, label};
use forge_model::Overlay;
use forge_runtime::PreparedOverlay;
use forge_storage::HealthOutcome;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Overlays by id, and the newest active version of each name asked for by name.
pub(crate) struct OverlayCache {
    entries: RwLock<HashMap<Uuid, Arc<Entry>>>,
    newest_active: RwLock<HashMap<String, (Uuid, Instant)>>,
    /// Most entries kept (and most names in `newest_active`).
    capacity: usize,
    /// How long a record read from the database is used before it is read again.
    refresh: Duration,
    /// Zero of the entries' `last_used` clocks.
    started: Instant,
}

/// One overlay: its latest known record, its pre-linked module and its counters.
pub(crate) struct Entry {
    snapshot: RwLock<Snapshot>,
    /// Milliseconds since the cache started when a call last found this entry: eviction takes the
    /// least recently used.
    last_used: AtomicU64,
    pub(crate) prepared: tokio::sync::OnceCell<Arc<PreparedOverlay>>,
    /// Invocations of this overlay running now; an entry with any is never evicted.
    pub(crate) in_flight: AtomicUsize,
    pub(crate) series: OverlaySeries,
    /// `name@version`, for metrics and logs.
    pub(crate) label: Arc<str>,
    /// The manifest's name: the identity host functions act under.
    pub(crate) overlay_name: Arc<str>,
}

#[derive(Clone)]
struct Snapshot {
    overlay: Arc<Overlay>,
    read_at: Instant,
}

impl Entry {
    fn snapshot(&self) -> Snapshot {
        self.snapshot.read().clone()
    }

    /// The latest known record.
    pub(crate) fn overlay(&self) -> Arc<Overlay> {
        self.snapshot.read().overlay.clone()
    }

    /// Marks the entry used at `ms`. Calls to a busy overlay share this word, so it is written at
    /// most once per millisecond rather than by every call.
    fn touch(&self, ms: u64) {
        if self.last_used.load(Ordering::Relaxed) != ms {
            self.last_used.store(ms, Ordering::Relaxed);
        }
    }

    fn replace(&self, overlay: Arc<Overlay>) {
        *self.snapshot.write() = Snapshot { overlay, read_at: Instant::now() };
    }
}

impl OverlayCache {
    pub(crate) fn new(capacity: usize, refresh: Duration) -> Self {
        OverlayCache {
            entries: RwLock::default(),
            newest_active: RwLock::default(),
            capacity: capacity.max(1),
            refresh,
            started: Instant::now(),
        }
    }

    /// The entry of overlay `id` and its record, if cached and read within `refresh`.
    pub(crate) fn fresh(&self, id: Uuid) -> Option<(Arc<Entry>, Arc<Overlay>)> {
        let entry = self.entries.read().get(&id).cloned()?;
        let snapshot = entry.snapshot();
        let now = Instant::now();
        if now.saturating_duration_since(snapshot.read_at) >= self.refresh {
            return None;
        }
        entry.touch(self.ms_at(now));
        Some((entry, snapshot.overlay))
    }

    /// Takes a record just read from the database: updates its entry, or makes one (evicting the
    /// least recently used idle entry when full).
    pub(crate) fn insert(&self, overlay: Arc<Overlay>, metrics: &ServiceMetrics) -> Arc<Entry> {
        let mut entries = self.entries.write();
        if let Some(entry) = entries.get(&overlay.id) {
            entry.replace(overlay);
            entry.touch(self.ms_at(Instant::now()));
            return entry.clone();
        }
        if entries.len() >= self.capacity {
            Self::evict_one(&mut entries);
        }
        let label = label(&overlay.manifest.name, &overlay.manifest.version);
        let entry = Arc::new(Entry {
            series: metrics.series(&label),
            label: label.into(),
            overlay_name: overlay.manifest.name.as_str().into(),
            prepared: tokio::sync::OnceCell::new(),
            in_flight: AtomicUsize::new(0),
            last_used: AtomicU64::new(self.ms_at(Instant::now())),
            snapshot: RwLock::new(Snapshot { overlay: overlay.clone(), read_at: Instant::now() }),
        });
        entries.insert(overlay.id, entry.clone());
        entry
    }

    /// Drops the least recently used entry with no call in flight. When every entry is busy, none
    /// goes: the cache then outgrows its capacity by the overlays running at once, at most.
    fn evict_one(entries: &mut HashMap<Uuid, Arc<Entry>>) {
        let idle = entries
            .iter()
            .filter(|(_, entry)| entry.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, entry)| entry.last_used.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        if let Some(id) = idle {
            entries.remove(&id);
        }
    }

    /// Takes a record this process just wrote as the current one (if the overlay is cached).
    pub(crate) fn remember(&self, overlay: &Overlay) {
        self.forget_name(&overlay.manifest.name);
        if let Some(entry) = self.entries.read().get(&overlay.id) {
            entry.replace(Arc::new(overlay.clone()));
        }
    }

    /// Drops overlay `id` (deleted, or found missing).
    pub(crate) fn forget(&self, id: Uuid) {
        let removed = self.entries.write().remove(&id);
        if let Some(entry) = removed {
            self.forget_name(&entry.overlay().manifest.name);
        }
    }

    fn forget_name(&self, name: &str) {
        self.newest_active.write().remove(name);
    }

    /// Brings a health batch's view of an overlay (state, trust, health) into its entry; returns
    /// the entry, if the overlay is cached.
    pub(crate) fn apply(&self, outcome: HealthOutcome) -> Option<Arc<Entry>> {
        let entry = self.entries.read().get(&outcome.overlay_id).cloned()?;
        let mut overlay = (*entry.overlay()).clone();
        if outcome.quarantined {
            self.forget_name(&overlay.manifest.name);
        }
        overlay.state = outcome.state;
        overlay.trust_level = outcome.trust_level;
        overlay.health = outcome.health;
        entry.replace(Arc::new(overlay));
        Some(entry)
    }

    /// The newest active version of `name`, if looked up within `refresh`.
    pub(crate) fn newest_active(&self, name: &str) -> Option<Uuid> {
        let (id, read_at) = self.newest_active.read().get(name).copied()?;
        (read_at.elapsed() < self.refresh).then_some(id)
    }

    /// Remembers the newest active version of `name`; when full, stale names go first.
    pub(crate) fn set_newest_active(&self, name: &str, id: Uuid) {
        let mut names = self.newest_active.write();
        if names.len() >= self.capacity {
            names.retain(|_, (_, read_at)| read_at.elapsed() < self.refresh);
        }
        names.insert(name.to_owned(), (id, Instant::now()));
    }

    /// Milliseconds from the cache's start to `at`: the entries' `last_used` clock.
    fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use forge_model::{OverlayHealth, OverlayManifest, OverlayState, TrustLevel};

    fn overlay(name: &str) -> Arc<Overlay> {
        let manifest = OverlayManifest::parse(&format!("name = \"{name}\"\nversion = \"1.0.0\"")).unwrap();
        let now = chrono::Utc::now();
        Arc::new(Overlay {
            id: Uuid::now_v7(),
            wasm_key: Overlay::wasm_key_for(name, "1.0.0", "00"),
            wasm_hash: "00".into(),
            requires_approval: false,
            manifest,
            state: OverlayState::Active,
            trust_level: TrustLevel::Sandbox,
            source_hash: None,
            submitted_by: "test".into(),
            created_at: now,
            updated_at: now,
            health: OverlayHealth::default(),
        })
    }

    fn cache(capacity: usize) -> (OverlayCache, ServiceMetrics) {
        (OverlayCache::new(capacity, Duration::from_secs(60)), ServiceMetrics::new())
    }

    #[test]
    fn a_full_cache_evicts_the_least_recently_used_idle_entry() {
        let (cache, metrics) = cache(2);
        let (a, b, c) = (overlay("a"), overlay("b"), overlay("c"));
        cache.insert(a.clone(), &metrics);
        std::thread::sleep(Duration::from_millis(2));
        cache.insert(b.clone(), &metrics);
        std::thread::sleep(Duration::from_millis(2));
        assert!(cache.fresh(a.id).is_some(), "a is now used more recently than b");
        cache.insert(c.clone(), &metrics);
        assert_eq!(cache.len(), 2);
        assert!(cache.fresh(b.id).is_none(), "b was the least recently used");
        assert!(cache.fresh(a.id).is_some() && cache.fresh(c.id).is_some());
    }

    #[test]
    fn entries_with_calls_in_flight_are_not_evicted() {
        let (cache, metrics) = cache(1);
        let busy = overlay("busy");
        let entry = cache.insert(busy.clone(), &metrics);
        entry.in_flight.fetch_add(1, Ordering::AcqRel);
        let other = overlay("other");
        cache.insert(other.clone(), &metrics);
        assert!(cache.fresh(busy.id).is_some(), "a busy entry stays");
        assert_eq!(cache.len(), 2, "over capacity by the busy entries, no more");
        entry.in_flight.fetch_sub(1, Ordering::AcqRel);
        cache.insert(overlay("third"), &metrics);
        assert_eq!(cache.len(), 2, "an idle entry went to make room");
    }

    #[test]
    fn records_are_re_read_after_refresh() {
        let cache = OverlayCache::new(10, Duration::from_millis(20));
        let metrics = ServiceMetrics::new();
        let a = overlay("a");
        cache.insert(a.clone(), &metrics);
        assert!(cache.fresh(a.id).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache.fresh(a.id).is_none(), "stale records are read again");
    }

    #[test]
    fn writes_forgets_and_health_outcomes_invalidate() {
        let (cache, metrics) = cache(10);
        let a = overlay("a");
        cache.insert(a.clone(), &metrics);
        cache.set_newest_active("a", a.id);
        assert_eq!(cache.newest_active("a"), Some(a.id));

        let mut suspended = (*a).clone();
        suspended.state = OverlayState::Suspended;
        cache.remember(&suspended);
        assert_eq!(cache.fresh(a.id).unwrap().1.state, OverlayState::Suspended);
        assert_eq!(cache.newest_active("a"), None, "a write invalidates the name");

        cache.set_newest_active("a", a.id);
        let outcome = HealthOutcome {
            overlay_id: a.id,
            state: OverlayState::Quarantined,
            trust_level: TrustLevel::Sandbox,
            health: OverlayHealth { invocation_count: 10, failure_count: 9, ..OverlayHealth::default() },
            quarantined: true,
        };
        assert!(cache.apply(outcome.clone()).is_some());
        let (_, record) = cache.fresh(a.id).unwrap();
        assert_eq!((record.state, record.health.failure_count), (OverlayState::Quarantined, 9));
        assert_eq!(cache.newest_active("a"), None, "a quarantine invalidates the name");

        cache.forget(a.id);
        assert!(cache.fresh(a.id).is_none());
        assert!(cache.apply(outcome).is_none(), "outcomes of uncached overlays are ignored");
    }
}
