//! The engine, its epoch ticker, the module cache, and the entry points `prepare` and `invoke`.

use crate::abi;
use crate::call::{self, CallOutcome, CallPlan};
use crate::config::RuntimeConfig;
use crate::host::HostServices;
use crate::prepared::PreparedOverlay;
use crate::state::{CallLimits, MAX_TABLE_ELEMENTS, OverlayIdentity};
use forge_model::{ErrorCode, ForgeError, OverlayInvocation, OverlayManifest, sha256_hex};
use parking_lot::Mutex;
use std::num::NonZeroUsize;
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
        let engine = Engine::new(&engine_config(&config)?)
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

    /// Compiles a binary, or takes it from the cache by SHA-256 (malformed input is a validation error).
    fn compile(&self, wasm: &[u8]) -> Result<Module, ForgeError> {
        let hash = sha256_hex(wasm);
        if let Some(module) = self.inner.modules.lock().get(&hash) {
            return Ok(module.clone());
        }
        let module = Module::from_binary(&self.inner.engine, wasm)
            .map_err(|e| ForgeError::validation(format!("the module does not compile: {e:#}")))?;
        self.inner.modules.lock().put(hash, module.clone());
        Ok(module)
    }

    /// Checks a module and pre-links it for its manifest's grants, ready for any number of calls.
    pub fn prepare(&self, manifest: &OverlayManifest, wasm: &[u8]) -> Result<PreparedOverlay, ForgeError> {
        let module = self.compile(wasm)?;
        let info = abi::check_module(&module, manifest)?;
        PreparedOverlay::link(&self.inner.engine, &module, manifest, info, &self.inner.services)
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
            },
            identity,
        };
        let _ticking = self.inner.ticker.keep_ticking();
        Ok(call::run(&self.inner.engine, plan).await)
    }
}

fn engine_config(config: &RuntimeConfig) -> Result<Config, ForgeError> {
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
    if let Some(dir) = &config.compiled_cache_dir {
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(dir);
        let cache = wasmtime::Cache::new(cache).map_err(|e| {
            ForgeError::internal(format!("compiled-module cache at {}: {e:#}", dir.display()))
        })?;
        wasm.cache(Some(cache));
    }
    Ok(wasm)
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

    #[test]
    fn compiled_modules_are_cached_by_hash() {
        let runtime = Runtime::new(
            RuntimeConfig { max_instances: 2, ..RuntimeConfig::default() },
            HostServices::default(),
        )
        .unwrap();
        let module = |n: u32| wat::parse_str(format!("(module (func (export \"f{n}\")))")).unwrap();
        let first = runtime.compile(&module(1)).unwrap();
        let again = runtime.compile(&module(1)).unwrap();
        assert!(Module::same(&first, &again), "the second compile must be a cache hit");
        let other = runtime.compile(&module(2)).unwrap();
        assert!(!Module::same(&first, &other));
    }

    #[test]
    fn a_refused_upload_is_not_quoted_whole() {
        let err = wasm_from_binary_or_text(&vec![b'0'; 1 << 20]).unwrap_err();
        assert!(err.message.starts_with("not WebAssembly binary or text"), "{}", err.message);
        assert!(err.message.len() < 1024, "{} bytes of error", err.message.len());
    }
}
