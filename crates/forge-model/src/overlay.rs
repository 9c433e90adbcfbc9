//! The registered overlay, its health and the read models around it.

use crate::capability::CapabilityName;
use crate::manifest::OverlayManifest;
use crate::state::OverlayState;
use crate::trust::TrustLevel;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An overlay as the registry knows it: its manifest plus lifecycle, provenance and health.
/// On the wire the manifest's fields sit at the top level beside the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Overlay {
    pub id: Uuid,
    /// Read as registered, not checked again: a rule tightened later must not make an overlay
    /// registered before unreadable.
    #[serde(flatten, deserialize_with = "OverlayManifest::deserialize_stored")]
    pub manifest: OverlayManifest,
    pub state: OverlayState,
    pub trust_level: TrustLevel,
    /// Object-store key of the binary: `overlays/{name}/{version}/{sha256}.wasm`.
    pub wasm_key: String,
    /// Hex SHA-256 of the binary; every load is checked against it.
    pub wasm_hash: String,
    /// Hash of the source the author says the binary was built from, if given.
    pub source_hash: Option<String>,
    /// Who registered it.
    pub submitted_by: String,
    /// True while privileged capabilities await an admin's activation.
    pub requires_approval: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub health: OverlayHealth,
}

impl Overlay {
    /// Object-store key for a binary, content-addressed by its hash.
    pub fn wasm_key_for(name: &str, version: &str, sha256_hex: &str) -> String {
        format!("overlays/{name}/{version}/{sha256_hex}.wasm")
    }

    pub fn has_capability(&self, name: CapabilityName) -> bool {
        self.manifest.has_capability(name)
    }
}

/// Running health counters of one overlay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OverlayHealth {
    pub invocation_count: u64,
    /// Failures that count against the overlay (everything but host faults).
    pub failure_count: u64,
    /// Failures the host caused; counted apart, never held against the overlay.
    pub host_failure_count: u64,
    pub avg_execution_ms: f64,
    pub last_invoked_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

impl OverlayHealth {
    /// Share of counted invocations that failed (host faults excluded from both sides).
    pub fn failure_rate(&self) -> f64 {
        let counted = self.invocation_count.saturating_sub(self.host_failure_count);
        if counted == 0 { 0.0 } else { self.failure_count as f64 / counted as f64 }
    }
}

/// Latency histogram with fixed bucket bounds, cheap to keep as counters in a database row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// `counts[i]` counts durations <= `BOUNDS_MS[i]` (and above the previous bound); the last bucket is
    /// everything slower than the last bound.
    pub counts: Vec<u64>,
}

impl LatencyHistogram {
    pub const BOUNDS_MS: [f64; 16] =
        [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0, 30000.0];
    pub const BUCKETS: usize = Self::BOUNDS_MS.len() + 1;

    /// The bucket a duration falls into.
    pub fn bucket_of(ms: f64) -> usize {
        Self::BOUNDS_MS.iter().position(|bound| ms <= *bound).unwrap_or(Self::BOUNDS_MS.len())
    }

    /// Estimated `q`-quantile (0..=1) in ms, interpolated inside its bucket; None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            if (seen + count) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { Self::BOUNDS_MS[i - 1] };
                let upper = Self::BOUNDS_MS.get(i).copied().unwrap_or(lower * 2.0);
                let within = (rank - seen as f64) / *count as f64;
                return Some(lower + (upper - lower) * within);
            }
            seen += count;
        }
        None
    }
}

/// What `GET /overlays/{id}/health` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthReport {
    pub overlay_id: Uuid,
    pub name: String,
    pub version: String,
    pub state: OverlayState,
    pub trust_level: TrustLevel,
    pub invocation_count: u64,
    pub failure_count: u64,
    pub host_failure_count: u64,
    pub failure_rate: f64,
    pub avg_execution_ms: f64,
    pub p50_execution_ms: Option<f64>,
    pub p95_execution_ms: Option<f64>,
    pub last_invoked_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

impl HealthReport {
    pub fn new(overlay: &Overlay, latency: &LatencyHistogram) -> Self {
        let h = &overlay.health;
        HealthReport {
            overlay_id: overlay.id,
            name: overlay.manifest.name.clone(),
            version: overlay.manifest.version.clone(),
            state: overlay.state,
            trust_level: overlay.trust_level,
            invocation_count: h.invocation_count,
            failure_count: h.failure_count,
            host_failure_count: h.host_failure_count,
            failure_rate: h.failure_rate(),
            avg_execution_ms: h.avg_execution_ms,
            p50_execution_ms: latency.quantile(0.5),
            p95_execution_ms: latency.quantile(0.95),
            last_invoked_at: h.last_invoked_at,
            last_error: h.last_error.clone(),
        }
    }
}

/// The original Forge rule: quarantine once at least `min_invocations` ran and more than
/// `max_failure_rate` of them failed. Core overlays are never quarantined automatically.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuarantinePolicy {
    pub min_invocations: u64,
    pub max_failure_rate: f64,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        QuarantinePolicy { min_invocations: 10, max_failure_rate: 0.5 }
    }
}

impl QuarantinePolicy {
    pub fn should_quarantine(&self, trust: TrustLevel, health: &OverlayHealth) -> bool {
        trust != TrustLevel::Core
            && health.invocation_count >= self.min_invocations
            && health.failure_rate() > self.max_failure_rate
    }
}

/// Filters for listing overlays; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OverlayFilter {
    pub state: Option<OverlayState>,
    pub submitter: Option<String>,
    /// Substring of the name.
    pub name: Option<String>,
    pub capability: Option<CapabilityName>,
}

/// One page of a listing request, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    pub page: u32,
    pub per_page: u32,
}

impl PageRequest {
    pub const DEFAULT_PER_PAGE: u32 = 20;
    pub const MAX_PER_PAGE: u32 = 100;

    /// A page request with out-of-range values brought into range (page >= 1, 1 <= per_page <= 100).
    pub fn new(page: Option<u32>, per_page: Option<u32>) -> Self {
        PageRequest {
            page: page.unwrap_or(1).max(1),
            per_page: per_page.unwrap_or(Self::DEFAULT_PER_PAGE).clamp(1, Self::MAX_PER_PAGE),
        }
    }

    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.per_page)
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::new(None, None)
    }
}

/// A page of results with the numbers a client needs to walk the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
    pub pages: u32,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, total: u64, request: PageRequest) -> Self {
        let pages = total.div_ceil(u64::from(request.per_page)) as u32;
        Page { items, total, page: request.page, per_page: request.per_page, pages }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Overlay {
        let now = Utc::now();
        Overlay {
            id: Uuid::now_v7(),
            manifest: OverlayManifest::parse("name = \"echo\"\nversion = \"1.0.0\"").unwrap(),
            state: OverlayState::Pending,
            trust_level: TrustLevel::Sandbox,
            wasm_key: Overlay::wasm_key_for("echo", "1.0.0", "ab"),
            wasm_hash: "ab".into(),
            source_hash: None,
            submitted_by: "alice".into(),
            requires_approval: false,
            created_at: now,
            updated_at: now,
            health: OverlayHealth::default(),
        }
    }

    #[test]
    fn overlay_is_flat_on_the_wire_and_round_trips() {
        let overlay = sample();
        let value = serde_json::to_value(&overlay).unwrap();
        assert_eq!(value["name"], "echo");
        assert_eq!(value["state"], "pending");
        assert_eq!(value["max_memory_mb"], 64);
        assert_eq!(value["wasm_key"], "overlays/echo/1.0.0/ab.wasm");
        assert_eq!(value["health"]["invocation_count"], 0);
        let back: Overlay = serde_json::from_value(value).unwrap();
        assert_eq!(back, overlay);
    }

    #[test]
    fn a_record_whose_manifest_breaks_newer_rules_is_still_read() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["description"] = json!("d".repeat(crate::manifest::limits::DESCRIPTION_MAX_CHARS + 1));
        value["max_memory_mb"] = json!(4096);
        let read: Overlay = serde_json::from_value(value).unwrap();
        assert_eq!(read.manifest.max_memory_mb, 4096);
        let mut minimal = serde_json::to_value(sample()).unwrap();
        minimal.as_object_mut().unwrap().remove("max_fuel");
        let read: Overlay = serde_json::from_value(minimal.clone()).unwrap();
        assert_eq!(read.manifest.max_fuel, crate::manifest::limits::FUEL_DEFAULT, "defaults as documented");
        minimal.as_object_mut().unwrap().remove("name");
        assert!(serde_json::from_value::<Overlay>(minimal).is_err(), "what is not a manifest still is not");
    }

    #[test]
    fn quarantine_rule() {
        let policy = QuarantinePolicy::default();
        let health = |n, f| OverlayHealth { invocation_count: n, failure_count: f, ..Default::default() };
        assert!(!policy.should_quarantine(TrustLevel::Sandbox, &health(9, 9)), "needs 10 invocations");
        assert!(!policy.should_quarantine(TrustLevel::Sandbox, &health(10, 5)), "0.5 is not above 0.5");
        assert!(policy.should_quarantine(TrustLevel::Sandbox, &health(10, 6)));
        assert!(!policy.should_quarantine(TrustLevel::Core, &health(100, 100)), "core is never quarantined");
        let with_host_faults = OverlayHealth {
            invocation_count: 20,
            failure_count: 6,
            host_failure_count: 10,
            ..Default::default()
        };
        assert!((with_host_faults.failure_rate() - 0.6).abs() < 1e-9);
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = LatencyHistogram { counts: vec![0; LatencyHistogram::BUCKETS] };
        assert_eq!(h.quantile(0.5), None);
        for ms in [0.3, 0.4, 0.45, 0.3, 7.0] {
            h.counts[LatencyHistogram::bucket_of(ms)] += 1;
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((0.25..=0.5).contains(&p50), "{p50}");
        let p95 = h.quantile(0.95).unwrap();
        assert!((5.0..=10.0).contains(&p95), "{p95}");
        assert_eq!(LatencyHistogram::bucket_of(1e9), LatencyHistogram::BUCKETS - 1);
    }

    #[test]
    fn pages() {
        let req = PageRequest::new(Some(0), Some(1000));
        assert_eq!((req.page, req.per_page), (1, 100));
        let page = Page::new(vec![1, 2], 201, PageRequest::new(Some(3), Some(50)));
        assert_eq!((page.pages, page.page), (5, 3));
        assert_eq!(PageRequest::new(Some(3), Some(50)).offset(), 100);
        assert_eq!(serde_json::to_value(Page::<u8>::new(vec![], 0, req)).unwrap()["pages"], json!(0));
    }
}
