//! The engine, its epoch ticker, the module cache, and the entry points `prepare` and `invoke`.

use crate::abi;
use crate::call::{self, CallOutcome, CallPlan};
use crate::config::RuntimeConfig;
use crate::host::HostServices;
use crate::prepared::PreparedOverlay;
use crate::state::{CallLimits, MAX_TABLE_ELEMENTS, OverlayIdentity, WriteQuota};
use forge_model::{ErrorCode, ForgeError, OverlayInvocation, OverlayManifest, sha256_hex};
use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig};

/// Runs overlays. One per process: it owns the engine, the instance pool and the epoch ticker.
/// Cheap to clone; safe to share across threads.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    config: RuntimeConfig,
    modules: Mutex<lru::LruCache<String, Module>>,
    services: HostServices,
    ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine with fuel, epoch interruption and the pooling allocator, and starts the ticker.
    pub fn new(config: RuntimeConfig, services: HostServices) -> Result<Runtime, ForgeError> {
        let engine = Engine::new(&engine_config(&config))
            .map_err(|e| ForgeError::internal(format!("cannot start the WebAssembly engine: {e:#}")))?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick);
        let entries = NonZeroUsize::new(config.module_cache_entries).unwrap_or(NonZeroUsize::MIN);
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                modules: Mutex::new(lru::LruCache::new(entries)),
                services,
                ticker,
                config,
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Refuses a module larger than `max_module_bytes` (413 naming the limit); call it before parsing.
    pub fn check_module_size(&self, bytes: usize) -> Result<(), ForgeError> {
        let max = self.inner.config.max_module_bytes;
        if bytes <= max {
            return Ok(());
        }
        Err(ForgeError::new(
            ErrorCode::PayloadTooLarge,
            format!("a module of {bytes} bytes exceeds the limit of {max} bytes (max_module_bytes)"),
        )
        .with_detail("limit", "max_module_bytes")
        .with_detail("max_bytes", max))
    }

    /// The compiled module: from the memory cache, else from the on-disk cache, else compiled
    /// (malformed input is a validation error), and whether it was compiled just now. Caches
    /// nothing: see [`Self::remember`].
    fn compile(&self, hash: &str, wasm: &[u8]) -> Result<(Module, bool), ForgeError> {
        if let Some(module) = self.inner.modules.lock().get(hash) {
            return Ok((module.clone(), false));
        }
        if let Some(module) = self.compiled_on_disk(hash) {
            return Ok((module, false));
        }
        let engine = &self.inner.engine;
        let compiled = engine
            .precompile_module(wasm)
            .map_err(|e| ForgeError::validation(format!("the module does not compile: {e:#}")))?;
        // SAFETY: the bytes were produced just now by this engine.
        let module = unsafe { Module::deserialize(engine, &compiled) }
            .map_err(|e| ForgeError::internal(format!("loading compiled code: {e:#}")))?;
        Ok((module, true))
    }

    /// A module compiled by an earlier run, if the on-disk cache has a compatible one.
    fn compiled_on_disk(&self, hash: &str) -> Option<Module> {
        let path = self.inner.config.compiled_cache_dir.as_ref()?.join(hash);
        if !path.exists() {
            return None;
        }
        // SAFETY: only this process writes the directory (see `RuntimeConfig::compiled_cache_dir`),
        // and Wasmtime refuses a file compiled by an incompatible engine.
        match unsafe { Module::deserialize_file(&self.inner.engine, &path) } {
            Ok(module) => Some(module),
            Err(error) => {
                tracing::info!(path = %path.display(), %error, "compiled module not reusable; compiling again");
                None
            }
        }
    }

    /// Keeps a module that passed every check in memory and, if configured and `compiled_now`, on
    /// disk (replacing a file this engine could not load).
    fn remember(&self, hash: String, module: &Module, compiled_now: bool) {
        if compiled_now
            && let Some(dir) = &self.inner.config.compiled_cache_dir
            && let Err(error) = write_compiled(dir, &hash, module)
        {
            tracing::warn!(dir = %dir.display(), %error, "could not keep compiled code on disk");
        }
        self.inner.modules.lock().put(hash, module.clone());
    }

    /// Checks a module and pre-links it for its manifest's grants, ready for any number of calls.
    /// Only a module that passes enters the compiled-module caches.
    ///
    /// The size cap is for uploads ([`Self::check_module_size`], before parsing): a module stored
    /// under a larger `max_module_bytes` still loads after the cap is lowered.
    pub fn prepare(&self, manifest: &OverlayManifest, wasm: &[u8]) -> Result<PreparedOverlay, ForgeError> {
        let hash = sha256_hex(wasm);
        let (module, compiled_now) = self.compile(&hash, wasm)?;
        let info = abi::check_module(&module, manifest)?;
        let mounts = crate::files::resolve(manifest, &self.inner.config.mounts)?;
        let prepared =
            PreparedOverlay::link(&self.inner.engine, &module, manifest, info, &self.inner.services, mounts)?;
        self.remember(hash, &module, compiled_now);
        Ok(prepared)
    }

    /// Runs one invocation in a fresh instance. `Err` means it was refused before running (invalid
    /// invocation, unknown entry point, input too large); every failure of the guest is an `Ok`
    /// outcome with `success == false`.
    ///
    /// The future completes within about one epoch tick of the call's deadline; the guest yields to
    /// the executor at every tick, so it never holds a thread. Must be polled inside a Tokio runtime
    /// (host functions use its timers).
    pub async fn invoke(
        &self,
        prepared: &PreparedOverlay,
        identity: &OverlayIdentity,
        invocation: &OverlayInvocation,
    ) -> Result<CallOutcome, ForgeError> {
        invocation.validate()?;
        let entry_point = prepared
            .entry_point(&invocation.function)
            .ok_or_else(|| invocation.unknown_entry_point("this overlay", prepared.entry_points()))?;
        // Room for typical args up front: growing the buffer would copy them.
        let mut input = Vec::with_capacity(512);
        serde_json::to_writer(&mut input, &invocation.args)
            .map_err(|e| ForgeError::validation(e.to_string()))?;
        let config = &self.inner.config;
        if input.len() > config.max_input_bytes {
            return Err(ForgeError::new(
                ErrorCode::PayloadTooLarge,
                format!("args of {} bytes exceed the limit of {} bytes", input.len(), config.max_input_bytes),
            ));
        }
        let timeout_ms = invocation.effective_timeout_ms(prepared.max_execution_ms());
        let plan = CallPlan {
            prepared,
            entry_point,
            input: &input,
            timeout_ms,
            limits: CallLimits {
                max_input_bytes: config.max_input_bytes,
                max_output_bytes: config.max_output_bytes,
                max_log_bytes: config.max_log_bytes,
                max_host_calls: config.max_host_calls,
                max_host_call_bytes: config.max_host_call_bytes,
                max_http_requests: config.max_http_requests,
                max_http_response_bytes: config.max_http_response_bytes,
                write_quota: WriteQuota {
                    max_bytes: config.max_file_write_bytes,
                    max_files: config.max_files_written,
                },
            },
            identity,
        };
        let _ticking = self.inner.ticker.keep_ticking();
        Ok(call::run(&self.inner.engine, plan).await)
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(config.max_instances)
        .total_memories(config.max_instances)
        .total_tables(config.max_instances)
        .max_memory_size((config.max_memory_mb as usize) << 20)
        .table_elements(MAX_TABLE_ELEMENTS)
        .linear_memory_keep_resident(config.memory_keep_resident)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    let mut wasm = Config::new();
    wasm.consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(config.max_wasm_stack)
        .wasm_component_model(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    wasm
}

/// Writes a module's compiled code as `dir/{hash}`, through a temporary file renamed into place so
/// that a reader never loads half a file. A failed write (a full disk) removes the temporary file,
/// which would otherwise hold the space nobody had.
fn write_compiled(dir: &Path, hash: &str, module: &Module) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let code = module.serialize()?;
    let staging = dir.join(format!("{hash}.{}.tmp", std::process::id()));
    let written = std::fs::write(&staging, code).and_then(|()| std::fs::rename(&staging, dir.join(hash)));
    if written.is_err() {
        std::fs::remove_file(&staging).ok();
    }
    Ok(written?)
}

/// Advances the engine's epoch every period while any call is in flight, and sleeps otherwise.
///
/// Each call's store counts one tick at a time: at every tick its deadline callback either yields
/// to the executor (so a long call shares its thread) or, once the call's wall-clock deadline has
/// passed, stops it. One ticker serves every call, and cancelling a call never touches the epoch
/// (bumping a shared epoch to stop one call would stop them all).
pub(crate) struct EpochTicker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

struct TickerShared {
    calls_in_flight: AtomicUsize,
    stop: AtomicBool,
}

impl EpochTicker {
    fn start(engine: Engine, period: Duration) -> Self {
        let shared =
            Arc::new(TickerShared { calls_in_flight: AtomicUsize::new(0), stop: AtomicBool::new(false) });
        let ticking = shared.clone();
        let thread = std::thread::Builder::new()
            .name("forge-epoch".into())
            .spawn(move || {
                while !ticking.stop.load(Ordering::Acquire) {
                    if ticking.calls_in_flight.load(Ordering::Acquire) == 0 {
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(period);
                    engine.increment_epoch();
                }
            })
            .expect("cannot start the epoch ticker thread");
        EpochTicker { shared, thread: Some(thread) }
    }

    /// Keeps the ticker running until the returned guard drops.
    pub(crate) fn keep_ticking(&self) -> Ticking<'_> {
        if self.shared.calls_in_flight.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(thread) = &self.thread
        {
            thread.thread().unpark();
        }
        Ticking { shared: &self.shared }
    }
}

/// A call in flight, as far as the ticker is concerned.
pub(crate) struct Ticking<'a> {
    shared: &'a TickerShared,
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.shared.calls_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Accepts WebAssembly binary or text (`.wat`), returning the binary.
pub fn wasm_from_binary_or_text(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, ForgeError> {
    wat::parse_bytes(bytes).map_err(|e| {
        // The parser quotes the offending source line, which in a file that is neither binary nor
        // text can be the whole upload: keep each line short.
        const MAX_LINE_CHARS: usize = 120;
        let quoted: Vec<String> =
            e.to_string().lines().map(|line| forge_model::abbreviated(line, MAX_LINE_CHARS)).collect();
        ForgeError::validation(format!("not WebAssembly binary or text: {}", quoted.join("\n")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> OverlayManifest {
        OverlayManifest::parse("name = \"cached\"\nversion = \"1.0.0\"").unwrap()
    }

    /// A module that passes the checks, told apart by `n`.
    fn valid_module(n: u32) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module (memory (export "memory") 1)
                 (func (export "forge_alloc") (param i32) (result i32) (i32.const {n}))
                 (func (export "process") (param i32 i32) (result i64) (i64.const 0)))"#
        ))
        .unwrap()
    }

    fn cached(runtime: &Runtime, wasm: &[u8]) -> Option<Module> {
        runtime.inner.modules.lock().peek(&sha256_hex(wasm)).cloned()
    }

    #[test]
    fn compiled_modules_are_cached_by_hash() {
        let runtime = Runtime::new(
            RuntimeConfig { max_instances: 2, ..RuntimeConfig::default() },
            HostServices::default(),
        )
        .unwrap();
        runtime.prepare(&manifest(), &valid_module(1)).unwrap();
        let first = cached(&runtime, &valid_module(1)).expect("kept after passing the checks");
        runtime.prepare(&manifest(), &valid_module(1)).unwrap();
        let again = cached(&runtime, &valid_module(1)).unwrap();
        assert!(Module::same(&first, &again), "the second preparation must be a cache hit");
        runtime.prepare(&manifest(), &valid_module(2)).unwrap();
        assert!(!Module::same(&first, &cached(&runtime, &valid_module(2)).unwrap()));
    }

    #[test]
    fn a_module_refused_by_the_checks_is_cached_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(
            RuntimeConfig {
                max_instances: 2,
                compiled_cache_dir: Some(dir.path().to_owned()),
                ..RuntimeConfig::default()
            },
            HostServices::default(),
        )
        .unwrap();
        // Compiles, but exports no `forge_alloc`.
        let refused = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
        let err = runtime.prepare(&manifest(), &refused).err().expect("refused");
        assert_eq!(err.code, ErrorCode::ValidationError, "{}", err.message);
        assert!(cached(&runtime, &refused).is_none(), "kept in memory");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "kept on disk");
        runtime.prepare(&manifest(), &valid_module(3)).unwrap();
        assert!(dir.path().join(sha256_hex(&valid_module(3))).is_file(), "a passing module is kept");
    }

    #[test]
    fn an_unloadable_compiled_file_is_compiled_again_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let config = RuntimeConfig {
            max_instances: 2,
            compiled_cache_dir: Some(dir.path().to_owned()),
            ..RuntimeConfig::default()
        };
        let file = dir.path().join(sha256_hex(&valid_module(4)));
        std::fs::write(&file, b"not compiled code").unwrap();
        let runtime = Runtime::new(config, HostServices::default()).unwrap();
        runtime.prepare(&manifest(), &valid_module(4)).unwrap();
        assert_ne!(std::fs::read(&file).unwrap(), b"not compiled code", "replaced");
        let restarted = Runtime::new(runtime.config().clone(), HostServices::default()).unwrap();
        assert!(restarted.compiled_on_disk(&sha256_hex(&valid_module(4))).is_some(), "loadable now");
    }

    #[test]
    fn a_compiled_file_that_cannot_be_written_leaves_no_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        let module = Module::new(&Engine::default(), valid_module(5)).unwrap();
        let hash = sha256_hex(&valid_module(5));
        // A non-empty directory where the file goes: the rename into place fails.
        std::fs::create_dir_all(dir.path().join(&hash).join("occupied")).unwrap();
        assert!(write_compiled(dir.path(), &hash, &module).is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from(&hash)], "only the obstacle is left");
    }

    #[test]
    fn oversized_uploads_are_refused_and_stored_modules_still_load() {
        let runtime = Runtime::new(
            RuntimeConfig { max_instances: 2, max_module_bytes: 64, ..RuntimeConfig::default() },
            HostServices::default(),
        )
        .unwrap();
        let err = runtime.check_module_size(65).expect_err("refused");
        assert_eq!(
            (err.code, err.details["limit"].as_str()),
            (ErrorCode::PayloadTooLarge, Some("max_module_bytes"))
        );
        assert_eq!(err.details["max_bytes"], 64);
        assert!(runtime.check_module_size(64).is_ok());
        let stored = valid_module(8);
        assert!(stored.len() > 64);
        assert!(
            runtime.prepare(&manifest(), &stored).is_ok(),
            "a module stored under a larger cap still loads"
        );
    }

    #[test]
    fn a_refused_upload_is_not_quoted_whole() {
        let err = wasm_from_binary_or_text(&vec![b'0'; 1 << 20]).unwrap_err();
        assert!(err.message.starts_with("not WebAssembly binary or text"), "{}", err.message);
        assert!(err.message.len() < 1024, "{} bytes of error", err.message.len());
    }
}
