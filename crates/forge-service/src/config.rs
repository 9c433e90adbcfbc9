//! Service settings, each with its default and what it trades.

use forge_model::network::HostPattern;
use forge_model::{LogRetention, QuarantinePolicy};
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

    /// Sum of the `max_memory_mb` of the invocations running at once, in MiB. Past it, 429 with
    /// `retry_after`. Default: half of the machine's physical memory, read once at start
    /// ([`half_of_physical_memory_mb`]).
    ///
    /// A call may grow its memory up to its manifest's `max_memory_mb` (at most 512), so without a
    /// budget `max_in_flight` calls could claim 256 x 512 MiB. Higher admits more large-memory calls
    /// at once at the risk of the kernel's OOM killer; lower refuses them sooner.
    pub memory_budget_mb: u64,

    /// Module compilations (at registration, and when an overlay is first invoked in this process)
    /// running at once. Default: the number of CPU cores.
    ///
    /// Each compilation occupies a core for up to seconds; more at once would only slow each other
    /// and the calls in flight.
    pub max_concurrent_compilations: usize,

    /// How long a compilation waits for its turn before the request is refused with 429.
    /// Default: 2 s.
    ///
    /// Longer rides out short bursts of registrations; shorter frees callers (and their
    /// connections) sooner when the service is flooded with modules.
    pub compile_wait: Duration,

    /// Registrations one user may make per minute (a token bucket holding this many, refilled
    /// evenly over the minute). Past it, 429 with `retry_after`. Admins are not limited. Default: 10.
    ///
    /// Every registration costs a compilation; this keeps one user from taking every compiler slot.
    pub registrations_per_minute: u32,

    /// Database operations of host calls (`capsule_read`, `capsule_search`, `capsule_create`,
    /// `capsule_delete`) running at once, over all calls. Default: 2, half of SQLite's read connections
    /// (`forge_storage::SQLITE_READERS`) and a fifth of PostgreSQL's pool.
    ///
    /// The rest of the pool stays free for authentication, lifecycle and reads, however many
    /// guests loop on host calls; guests wait for a turn within their own deadline. Higher serves
    /// capsule-heavy overlays faster at the expense of everything else that needs the database.
    pub host_call_db_operations: usize,

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

    /// The `network:http` targets any manifest may ask for: a registration whose patterns are not
    /// each inside one of these is refused, naming them. Default: none (no overlay may use the
    /// network).
    ///
    /// The operator's cap on egress, whoever registers; each pattern a manifest lists must fit in one
    /// of these (scheme equal, host and ports within). Wider lists let authors reach more without
    /// asking; the address checks (no private or loopback address unless named literally) hold
    /// either way.
    pub http_allowed_hosts: Vec<HostPattern>,

    /// How much of each overlay's log is kept in the database, the newest entries (lines and the
    /// failures of its invocations) within both bounds. Default: 1 000 entries and 1 MiB of
    /// messages, whichever is reached first.
    ///
    /// Every process serves the same kept log. More keeps a longer story per overlay at the cost of
    /// database space (up to this per overlay, plus a tenth before a trim) and of longer reads;
    /// entries waiting to be written are held to the same bounds per overlay, so a database outage
    /// costs at most this much memory per logging overlay.
    pub log_retention: LogRetention,

    /// How long the log writer gathers entries after the first of an idle period before it writes
    /// them, one row per overlay. Default: 100 ms.
    ///
    /// Longer writes fewer, larger rows (less work per line for the database); shorter shows lines
    /// to readers on other processes sooner. A reader on the process that ran the call sees its
    /// lines at once, and a graceful shutdown writes everything; SIGKILL loses what is gathering.
    pub log_batch_window: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            runtime: RuntimeConfig::default(),
            quarantine: QuarantinePolicy::default(),
            record_refresh: Duration::from_secs(1),
            max_in_flight: 256,
            max_in_flight_per_overlay: 64,
            memory_budget_mb: half_of_physical_memory_mb(),
            max_concurrent_compilations: std::thread::available_parallelism().map_or(1, usize::from),
            compile_wait: Duration::from_secs(2),
            registrations_per_minute: 10,
            host_call_db_operations: 2,
            overlay_cache_entries: 10_000,
            health_batch_window: Duration::from_millis(5),
            token_cache_ttl: Duration::from_secs(5),
            failed_auth_per_minute: 60,
            http_allowed_hosts: Vec::new(),
            log_retention: LogRetention { max_entries: 1000, max_bytes: 1 << 20 },
            log_batch_window: Duration::from_millis(100),
        }
    }
}

/// Assumed physical memory where `/proc/meminfo` cannot be read (not Linux): 8 GiB.
const ASSUMED_MEMORY_MB: u64 = 8 << 10;

/// Half of the machine's physical memory in MiB (`MemTotal` of `/proc/meminfo`, else
/// [`ASSUMED_MEMORY_MB`]), read once per process: the default memory budget of calls in flight.
pub fn half_of_physical_memory_mb() -> u64 {
    static HALF: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        let total_mb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                let line = info.lines().find(|line| line.starts_with("MemTotal:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .map_or(ASSUMED_MEMORY_MB, |kib| kib >> 10);
        (total_mb / 2).max(1)
    });
    *HALF
}
