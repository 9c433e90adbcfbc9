//! Every knob of the runtime, with its default and what it trades.

use std::path::PathBuf;
use std::time::Duration;

/// How the runtime is set up. `RuntimeConfig::default()` is what the service runs with.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Instances that can be alive at once (one per invocation in flight). Default: 1000.
    ///
    /// Every slot of the pooling allocator reserves address space (not memory) up front, so this
    /// bounds concurrency, not RSS. An invocation beyond it fails as a `host_error`; the service's
    /// in-flight limits are meant to stay below it.
    pub max_instances: u32,

    /// Largest linear memory any overlay may have, in MiB. Default: 512 (the manifest's upper bound).
    ///
    /// Each manifest's own `max_memory_mb` is enforced below this on every grow.
    pub max_memory_mb: u32,

    /// Bytes of each linear memory kept resident and reset with `memset` (guided by `PAGEMAP_SCAN`
    /// where the kernel has it, 6.7+) instead of `madvise` when a slot is reused. Default: 2 MiB.
    ///
    /// Larger keeps more RSS per warm slot but saves page faults and TLB shootdowns on every call;
    /// small overlays touch far less than 2 MiB per call.
    pub memory_keep_resident: usize,

    /// Period of the engine-wide epoch ticker. Default: 2 ms.
    ///
    /// At every tick a running guest either yields to the executor (so long calls share threads
    /// fairly) or, past its deadline, is stopped: a guest stops at most about one period after its
    /// deadline. Shorter periods stop guests more promptly and share threads more finely, at the
    /// cost of the ticker thread waking more often while calls are in flight (it sleeps when none
    /// are).
    pub epoch_tick: Duration,

    /// Largest invocation input (the `args` JSON) accepted, in bytes. Default: 1 MiB.
    pub max_input_bytes: usize,

    /// Largest result JSON accepted from a guest, in bytes. Default: 1 MiB.
    pub max_output_bytes: usize,

    /// Log bytes kept per call (`log_info`, `log_error`, WASI stdout/stderr), each line costing
    /// [`LOG_LINE_OVERHEAD_BYTES`](crate::LOG_LINE_OVERHEAD_BYTES) besides its text, and at most
    /// [`MAX_LOG_LINES`](crate::MAX_LOG_LINES) lines; the rest is dropped and counted. Default: 64 KiB.
    pub max_log_bytes: usize,

    /// Compiled modules kept in memory, keyed by SHA-256. Default: 256.
    ///
    /// Compilation costs milliseconds to seconds; a hit costs a hash lookup.
    pub module_cache_entries: usize,

    /// Directory for Wasmtime's on-disk cache of compiled code, keyed by the engine's compatibility
    /// hash, so a restart does not recompile. Default: none (compile on first use after start).
    pub compiled_cache_dir: Option<PathBuf>,

    /// Wasm stack available to a guest, in bytes. Default: 512 KiB (Wasmtime's).
    ///
    /// Deeper recursion traps with a stack overflow, which fails only that call.
    pub max_wasm_stack: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 1000,
            max_memory_mb: 512,
            memory_keep_resident: 2 << 20,
            epoch_tick: Duration::from_millis(2),
            max_input_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            max_log_bytes: 64 << 10,
            module_cache_entries: 256,
            compiled_cache_dir: None,
            max_wasm_stack: 512 << 10,
        }
    }
}
