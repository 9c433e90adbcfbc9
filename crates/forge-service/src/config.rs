//! Service settings, each with its default and what it trades.

use forge_model::QuarantinePolicy;
use forge_runtime::RuntimeConfig;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub runtime: RuntimeConfig,

    /// When an overlay is quarantined automatically. Default: Forge's rule, at least 10 invocations
    /// and a failure rate above 0.5, judged over the overlay's last 100 counted calls.
    ///
    /// A smaller window reacts faster to an overlay that starts failing but judges on fewer calls;
    /// a larger one is steadier but lets a failing overlay with a good past run longer (up to about
    /// half a window of failures) and costs a byte per call in its database row.
    pub quarantine: QuarantinePolicy,

    /// How long an overlay record read from the database is used before it is read again.
    /// Default: 1 s.
    ///
    /// Changes made through this process apply at once; a change made by another server process
    /// sharing the database (a suspension, say) is seen within this time, or sooner when the overlay
    /// is busy (every health batch brings back its current state). Shorter costs a database read per
    /// overlay per period.
    pub record_refresh: Duration,

    /// Invocations running at once in this process, over all overlays. Past it, 429 with
    /// `retry_after`. Default: 256 (keep it below `runtime.max_instances`).
    pub max_in_flight: usize,

    /// Invocations of one overlay running at once. Default: 64, so that one busy overlay cannot take
    /// every slot.
    pub max_in_flight_per_overlay: usize,

    /// Overlays whose records and pre-linked modules this process keeps in memory. Default: 10 000.
    ///
    /// When full, an overlay seen for the first time evicts the least recently invoked one that has
    /// no call in flight (so the cache outgrows this only by overlays running at once). An evicted
    /// overlay costs a database read and a fetch, verification and link of its binary (milliseconds)
    /// on its next call; each kept one costs its record, its pre-linked module (the compiled code is
    /// shared with the runtime's module cache) and its Prometheus series.
    pub overlay_cache_entries: usize,

    /// How long the health writer waits after the first invocation of an idle period before it
    /// writes the batch. Default: 5 ms.
    ///
    /// Health counts are written behind the invocations, in batches (one transaction per batch, one
    /// row update per overlay), so persistence costs little per call; the price is that a process
    /// killed with SIGKILL loses at most the batch being gathered (counts never go backwards).
    /// Graceful shutdown writes everything.
    pub health_batch_window: Duration,

    /// How long a verified API token is trusted before it is looked up again. Default: 5 s.
    ///
    /// Revoking through this process applies at once; through another process, within this time.
    pub token_cache_ttl: Duration,

    /// Unknown tokens one client address may have looked up per minute; past it, its requests with
    /// tokens not verified recently get 429 (`retry_after`: the rest of its minute) without a
    /// database lookup. Default: 60.
    ///
    /// Unknown tokens are also remembered for `token_cache_ttl`, so one bad token retried costs one
    /// lookup; this limit is what bounds the database reads of a client guessing fresh tokens. Clients
    /// behind one proxy address share it; tokens they used recently keep working.
    pub failed_auth_per_minute: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            runtime: RuntimeConfig::default(),
            quarantine: QuarantinePolicy::default(),
            record_refresh: Duration::from_secs(1),
            max_in_flight: 256,
            max_in_flight_per_overlay: 64,
            overlay_cache_entries: 10_000,
            health_batch_window: Duration::from_millis(5),
            token_cache_ttl: Duration::from_secs(5),
            failed_auth_per_minute: 60,
        }
    }
}
