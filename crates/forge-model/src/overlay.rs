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
    /// Failures that count against the overlay (neither the host's nor the caller's).
    pub failure_count: u64,
    /// Failures the host caused; counted apart, never held against the overlay.
    pub host_failure_count: u64,
    /// Failures the caller caused (invalid input, a timeout under a deadline it shortened below
    /// the manifest's); counted apart, never held against the overlay.
    pub caller_failure_count: u64,
    pub avg_execution_ms: f64,
    pub last_invoked_at: Option<DateTime<Utc>>,
    /// The latest error's text, which may quote callers' input: shown to admins, operators and the
    /// overlay's submitter only, null for other callers.
    pub last_error: Option<String>,
    /// The most recent calls that count, which the quarantine rule judges; the health report
    /// shows its numbers.
    #[serde(skip)]
    pub recent: RecentCalls,
    /// Released from quarantine and not yet through its first window: failing that window
    /// quarantines it again at once.
    pub on_probation: bool,
}

impl OverlayHealth {
    /// Share of counted invocations that failed, over the overlay's life (host and caller faults
    /// excluded from both sides).
    pub fn failure_rate(&self) -> f64 {
        let counted = self
            .invocation_count
            .saturating_sub(self.host_failure_count)
            .saturating_sub(self.caller_failure_count);
        if counted == 0 { 0.0 } else { self.failure_count as f64 / counted as f64 }
    }
}

/// An overlay's most recent calls that count toward quarantine (host and caller faults are left
/// out), oldest first, one character each: `+` a success, `-` a failure. Kept as this short text
/// in the overlay's health row, so the rule judges the same window whichever process writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentCalls(String);

impl RecentCalls {
    /// The most calls a window holds (the `quarantine_window_calls` setting's upper bound).
    pub const MAX_CALLS: u32 = 10_000;
    pub const SUCCESS: char = '+';
    pub const FAILURE: char = '-';

    /// A stored window; `Err` names the first character that is neither `+` nor `-`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.chars().find(|c| *c != Self::SUCCESS && *c != Self::FAILURE) {
            Some(bad) => Err(format!("unexpected {bad:?} in a window of recent calls")),
            None => Ok(RecentCalls(text.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Adds one call, dropping the oldest beyond [`Self::MAX_CALLS`].
    pub fn push(&mut self, failed: bool) {
        self.0.push(if failed { Self::FAILURE } else { Self::SUCCESS });
        self.keep_last(Self::MAX_CALLS as usize);
    }

    /// Appends calls made after these, dropping the oldest beyond [`Self::MAX_CALLS`].
    pub fn append(&mut self, later: &RecentCalls) {
        self.0.push_str(&later.0);
        self.keep_last(Self::MAX_CALLS as usize);
    }

    /// Drops all but the `calls` most recent calls.
    pub fn keep_last(&mut self, calls: usize) {
        // One ASCII byte per call, so any byte index is a character boundary.
        let excess = self.0.len().saturating_sub(calls);
        self.0.drain(..excess);
    }

    pub fn calls(&self) -> u64 {
        self.0.len() as u64
    }

    pub fn failures(&self) -> u64 {
        self.0.bytes().filter(|b| *b == Self::FAILURE as u8).count() as u64
    }

    /// Share of the window's calls that failed; 0 when empty.
    pub fn failure_rate(&self) -> f64 {
        if self.0.is_empty() { 0.0 } else { self.failures() as f64 / self.calls() as f64 }
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
    pub caller_failure_count: u64,
    /// Over the overlay's life (since its last release from quarantine).
    pub failure_rate: f64,
    /// Calls in the window the quarantine rule judges (the most recent ones that count).
    pub window_invocation_count: u64,
    pub window_failure_count: u64,
    pub window_failure_rate: f64,
    /// Released from quarantine and not yet through its first window.
    pub on_probation: bool,
    pub avg_execution_ms: f64,
    pub p50_execution_ms: Option<f64>,
    pub p95_execution_ms: Option<f64>,
    pub last_invoked_at: Option<DateTime<Utc>>,
    /// The latest error's text, which may quote callers' input: shown to admins, operators and the
    /// overlay's submitter only, null for other callers.
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
            caller_failure_count: h.caller_failure_count,
            failure_rate: h.failure_rate(),
            window_invocation_count: h.recent.calls(),
            window_failure_count: h.recent.failures(),
            window_failure_rate: h.recent.failure_rate(),
            on_probation: h.on_probation,
            avg_execution_ms: h.avg_execution_ms,
            p50_execution_ms: latency.quantile(0.5),
            p95_execution_ms: latency.quantile(0.95),
            last_invoked_at: h.last_invoked_at,
            last_error: h.last_error.clone(),
        }
    }
}

/// Forge's rule, over a sliding window: quarantine once the window of the overlay's most recent
/// counted calls holds at least `min_invocations` and more than `max_failure_rate` of them failed.
/// Judging recent calls rather than the whole life means an overlay with a long good past that
/// starts failing every call is quarantined within one window. Core overlays are never
/// quarantined automatically.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuarantinePolicy {
    pub min_invocations: u64,
    pub max_failure_rate: f64,
    /// How many of the most recent counted calls the rule judges.
    pub window_calls: u32,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        QuarantinePolicy { min_invocations: 10, max_failure_rate: 0.5, window_calls: 100 }
    }
}

impl QuarantinePolicy {
    /// Allowed window sizes: no smaller than the default `min_invocations` (a smaller window could
    /// never hold enough calls), no larger than a window can hold.
    pub const WINDOW_CALLS_RANGE: std::ops::RangeInclusive<u32> = 10..=RecentCalls::MAX_CALLS;

    pub fn should_quarantine(&self, trust: TrustLevel, health: &OverlayHealth) -> bool {
        trust != TrustLevel::Core
            && health.recent.calls() >= self.min_invocations
            && health.recent.failure_rate() > self.max_failure_rate
    }

    /// Whether an overlay on probation has come through its first full window since its release.
    pub fn ends_probation(&self, health: &OverlayHealth) -> bool {
        health.on_probation && health.recent.calls() >= u64::from(self.window_calls)
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

    fn window(calls: &str) -> RecentCalls {
        RecentCalls::parse(calls).unwrap()
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
    fn quarantine_rule_judges_the_window() {
        let policy = QuarantinePolicy::default();
        let health = |recent: &str| OverlayHealth { recent: window(recent), ..Default::default() };
        let failing = |n| "-".repeat(n);
        assert!(!policy.should_quarantine(TrustLevel::Sandbox, &health(&failing(9))), "needs 10 calls");
        assert!(
            !policy.should_quarantine(TrustLevel::Sandbox, &health("+++++-----")),
            "0.5 is not above 0.5"
        );
        assert!(policy.should_quarantine(TrustLevel::Sandbox, &health("++++------")));
        assert!(
            !policy.should_quarantine(TrustLevel::Core, &health(&failing(100))),
            "core is never quarantined"
        );
        let long_good_past = OverlayHealth {
            invocation_count: 1_000_000,
            failure_count: 60,
            recent: window(&format!("{}{}", "+".repeat(49), failing(51))),
            ..Default::default()
        };
        assert!(long_good_past.failure_rate() < 0.001);
        assert!(
            policy.should_quarantine(TrustLevel::Sandbox, &long_good_past),
            "the past does not shield it"
        );
        let with_other_faults = OverlayHealth {
            invocation_count: 30,
            failure_count: 6,
            host_failure_count: 10,
            caller_failure_count: 10,
            ..Default::default()
        };
        assert!((with_other_faults.failure_rate() - 0.6).abs() < 1e-9);
    }

    #[test]
    fn window_slides_and_parses() {
        let mut recent = RecentCalls::default();
        assert_eq!((recent.calls(), recent.failure_rate()), (0, 0.0));
        recent.push(true);
        recent.push(false);
        recent.append(&window("--+"));
        assert_eq!(recent.as_str(), "-+--+");
        recent.keep_last(3);
        assert_eq!((recent.as_str(), recent.calls(), recent.failures()), ("--+", 3, 2));
        for _ in 0..RecentCalls::MAX_CALLS {
            recent.push(false);
        }
        assert_eq!(
            (recent.calls(), recent.failures()),
            (u64::from(RecentCalls::MAX_CALLS), 0),
            "the oldest fell out"
        );
        assert!(RecentCalls::parse("+-x").unwrap_err().contains("'x'"));
    }

    #[test]
    fn probation_ends_with_a_full_window() {
        let policy = QuarantinePolicy { window_calls: 20, ..Default::default() };
        let on_probation = |calls: usize| OverlayHealth {
            recent: window(&"+".repeat(calls)),
            on_probation: true,
            ..Default::default()
        };
        assert!(!policy.ends_probation(&on_probation(19)));
        assert!(policy.ends_probation(&on_probation(20)));
        assert!(!policy.ends_probation(&OverlayHealth { on_probation: false, ..on_probation(20) }));
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
