//! What a store holds for one call, and the guest-memory access every host function shares.
//!
//! The leaf of the crate: host functions, the call sequence and the runtime build on it.

use crate::log::SharedLog;
use forge_model::{ErrorKind, TrustLevel};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;
use wasmtime::{AsContext, AsContextMut, Memory, ResourceLimiter, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;

/// Which overlay a call runs as: host functions act with its identity and trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayIdentity {
    /// Registry id; None for a module run locally without registration.
    pub id: Option<Uuid>,
    pub name: Arc<str>,
    pub trust_level: TrustLevel,
}

/// Ends a call from inside a host function or the memory limiter, with the failure it should report.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Abort {
    pub kind: ErrorKind,
    pub message: String,
}

impl Abort {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Abort { kind, message: message.into() }
    }

    fn not_ready() -> Self {
        Abort::new(ErrorKind::OverlayError, "host function called before the instance was ready")
    }
}

/// Limits of one call, copied from the runtime's config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallLimits {
    pub max_input_bytes: usize,
    pub max_output_bytes: usize,
    pub max_log_bytes: usize,
    pub max_host_calls: u32,
    pub max_host_call_bytes: usize,
    pub max_http_requests: u32,
    pub max_http_response_bytes: usize,
    pub write_quota: WriteQuota,
}

/// The most one call may write into file mounts; past either, the call fails and nothing it
/// wrote is kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteQuota {
    pub max_bytes: u64,
    pub max_files: u32,
}

/// What a call has asked WASI to write to files so far (counted before the write happens, so a
/// refused or partial write still counts).
#[derive(Debug, Default)]
pub(crate) struct FileWriteMeter {
    pub bytes: u64,
    /// Opens with `O_CREAT`, whether or not the file existed.
    pub files: u32,
}

/// What a call's request / response host functions have used so far.
#[derive(Debug, Default)]
pub(crate) struct HostCallMeter {
    pub calls: u32,
    /// Request and response bytes.
    pub bytes: usize,
    /// `http_request` calls sent.
    pub http_requests: u32,
}

/// Largest table a guest may grow to.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Everything a store holds for one call.
pub(crate) struct CallState {
    pub limits: CallLimits,
    pub log: SharedLog,
    pub deadline: Instant,
    pub timeout_ms: u32,
    pub identity: OverlayIdentity,
    pub host_calls: HostCallMeter,
    pub file_writes: FileWriteMeter,
    memory_limit_bytes: usize,
    memory: Option<Memory>,
    alloc: Option<TypedFunc<i32, i32>>,
    wasi: Option<WasiP1Ctx>,
}

impl CallState {
    /// A call's state before its instance exists; `wasi` only for modules that import WASI.
    pub(crate) fn new(
        limits: CallLimits,
        log: SharedLog,
        deadline: Instant,
        timeout_ms: u32,
        identity: OverlayIdentity,
        memory_limit_bytes: usize,
        wasi: Option<WasiP1Ctx>,
    ) -> Self {
        CallState {
            limits,
            log,
            deadline,
            timeout_ms,
            identity,
            host_calls: HostCallMeter::default(),
            file_writes: FileWriteMeter::default(),
            memory_limit_bytes,
            memory: None,
            alloc: None,
            wasi,
        }
    }

    /// Records the fresh instance's memory and allocator, which host functions use from then on.
    pub(crate) fn attach_instance(&mut self, memory: Memory, alloc: TypedFunc<i32, i32>) {
        self.memory = Some(memory);
        self.alloc = Some(alloc);
    }

    pub(crate) fn wasi(&mut self) -> &mut WasiP1Ctx {
        self.wasi.as_mut().expect("WASI is linked only for overlays given a WASI context")
    }

    /// `len` bytes of guest memory at `ptr`, refused past `max` or outside memory.
    pub(crate) fn guest_bytes<'a>(
        &self,
        store: &'a impl AsContext,
        ptr: i32,
        len: i32,
        max: usize,
    ) -> Result<&'a [u8], Abort> {
        let memory = self.memory.ok_or_else(Abort::not_ready)?;
        let (start, len) = (ptr as u32 as usize, len as u32 as usize);
        if len > max {
            return Err(Abort::new(
                ErrorKind::OverlayError,
                format!("host call argument of {len} bytes exceeds {max}"),
            ));
        }
        memory.data(store).get(start..start + len).ok_or_else(|| {
            Abort::new(ErrorKind::OverlayError, "host call argument lies outside guest memory")
        })
    }
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit_bytes {
            return Err(Abort::new(
                ErrorKind::MemoryLimit,
                format!(
                    "memory limit exceeded: growing to {desired} bytes is over max_memory_mb = {}",
                    self.memory_limit_bytes >> 20
                ),
            )
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables cost host memory too; the pool's per-table bound applies beneath this.
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Copies `bytes` into memory the guest allocates with `forge_alloc`; returns `(ptr << 32) | len`.
pub(crate) async fn write_to_guest(
    mut store: impl AsContextMut<Data = CallState>,
    bytes: &[u8],
) -> wasmtime::Result<i64> {
    let state = store.as_context().data();
    let (Some(alloc), Some(memory)) = (state.alloc.clone(), state.memory) else {
        return Err(Abort::not_ready().into());
    };
    let len =
        i32::try_from(bytes.len()).map_err(|_| Abort::new(ErrorKind::HostError, "response too large"))?;
    let ptr = alloc.call_async(&mut store, len).await?;
    if ptr == 0 && len > 0 {
        return Err(Abort::new(ErrorKind::OverlayError, format!("forge_alloc({len}) returned 0")).into());
    }
    memory.write(&mut store, ptr as u32 as usize, bytes).map_err(|_| {
        Abort::new(ErrorKind::OverlayError, format!("forge_alloc({len}) returned an address outside memory"))
    })?;
    Ok((i64::from(ptr as u32) << 32) | i64::from(len))
}
