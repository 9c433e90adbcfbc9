//! Every knob of the runtime, with its default and what it trades.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::str::FromStr;
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

    /// Request / response host function calls (`capsule_read`, `capsule_search`, `capsule_create`,
    /// `capsule_delete`, `http_request`) one call may make. Default: 1000.
    ///
    /// Each costs the host a database query or a request; past the limit the guest is answered
    /// `limit_exceeded` without any work done (docs/abi.md), so a guest looping on them costs at most
    /// this many per call.
    pub max_host_calls: u32,

    /// Request and response bytes those host calls may move in one call. Default: 16 MiB.
    ///
    /// Once it is reached every later host call is answered `limit_exceeded` (the answer that
    /// crosses it is still delivered, so one call can exceed it by one answer).
    pub max_host_call_bytes: usize,

    /// `http_request` calls one call may send (a share of `max_host_calls`). Default: 16.
    ///
    /// Each holds a connection to another host for up to the call's deadline; later ones are
    /// answered `network_denied` without a request sent.
    pub max_http_requests: u32,

    /// Largest `http_request` response body, in bytes. Default: 1 MiB.
    ///
    /// Read as it arrives and cut off past the limit (answered `network_denied`), never buffered
    /// whole; larger lets overlays fetch more at the cost of that much host memory per request.
    pub max_http_response_bytes: usize,

    /// Largest module accepted, in bytes, checked before any parsing (of WebAssembly text too).
    /// Default: 16 MiB.
    ///
    /// Compiling costs time and memory roughly in proportion to the module's size; real overlays
    /// are well under 1 MiB. Larger modules are refused with 413 naming this limit.
    pub max_module_bytes: usize,

    /// Compiled modules kept in memory, keyed by SHA-256. Default: 256.
    ///
    /// Compilation costs milliseconds to seconds; a hit costs a hash lookup.
    pub module_cache_entries: usize,

    /// Directory of compiled code kept on disk, one file per module named by its SHA-256, so a
    /// restart does not recompile. Default: none (compile on first use after start).
    ///
    /// A module is written there (and kept in memory) only once it passed every registration
    /// check, so a refused upload leaves nothing behind. A file Wasmtime finds incompatible (another
    /// engine version or configuration) is compiled again and replaced. The directory must be
    /// writable by this process only: its files are loaded as machine code.
    pub compiled_cache_dir: Option<PathBuf>,

    /// Directories offered to overlays under a name (`file:read` / `file:write`, docs/abi.md).
    /// Default: none.
    ///
    /// A manifest names a mount and the guest path it appears at, never a host path; registration
    /// refuses unknown mounts and write access to a read-only one.
    pub mounts: Vec<Mount>,

    /// Bytes one call may write into file mounts. Default: 16 MiB.
    ///
    /// Writes are staged per call (in the system's temporary directory) and moved into the mount
    /// only when the call succeeds within this and `max_files_written`; a call over either fails
    /// and keeps nothing. The staging area can hold this much per call in flight for the call's
    /// duration, so higher lets overlays write more at the cost of temporary disk.
    pub max_file_write_bytes: u64,

    /// Files one call may write into file mounts. Default: 64.
    ///
    /// Each committed file costs a copy and a rename into the mount at the end of the call.
    pub max_files_written: u32,

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
            max_module_bytes: 16 << 20,
            max_host_calls: 1000,
            max_host_call_bytes: 16 << 20,
            max_http_requests: 16,
            max_http_response_bytes: 1 << 20,
            max_log_bytes: 64 << 10,
            module_cache_entries: 256,
            compiled_cache_dir: None,
            max_wasm_stack: 512 << 10,
            mounts: Vec::new(),
            max_file_write_bytes: 16 << 20,
            max_files_written: 64,
        }
    }
}

/// A directory the operator offers to overlays under a name, read-only unless `writable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    pub name: String,
    pub dir: PathBuf,
    #[serde(default)]
    pub writable: bool,
}

impl FromStr for Mount {
    type Err = String;

    /// `NAME=DIR[:ro|rw]`, read-only by default.
    fn from_str(text: &str) -> Result<Mount, String> {
        let (name, rest) = text.split_once('=').ok_or_else(|| format!("`{text}` is not NAME=DIR[:ro|rw]"))?;
        let (dir, writable) = match rest.rsplit_once(':') {
            Some((dir, "rw")) => (dir, true),
            Some((dir, "ro")) => (dir, false),
            _ => (rest, false),
        };
        if !forge_model::manifest::is_valid_mount_name(name) {
            return Err(format!(
                "mount name `{name}` must be lowercase letters, digits, `-` and `_` (1-64 characters)"
            ));
        }
        if dir.is_empty() {
            return Err(format!("mount `{name}` names no directory"));
        }
        Ok(Mount { name: name.to_owned(), dir: PathBuf::from(dir), writable })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_from_flags() {
        let docs: Mount = "docs=/srv/docs".parse().unwrap();
        assert_eq!(docs, Mount { name: "docs".into(), dir: "/srv/docs".into(), writable: false });
        let out: Mount = "out=/srv/out:rw".parse().unwrap();
        assert!(out.writable);
        assert!(!"ro=/a:b:ro".parse::<Mount>().unwrap().writable);
        assert_eq!("x=/a:b".parse::<Mount>().unwrap().dir, PathBuf::from("/a:b"));
        for bad in ["docs", "Docs=/srv", "docs=", "docs=:rw"] {
            assert!(bad.parse::<Mount>().is_err(), "{bad}");
        }
    }
}
