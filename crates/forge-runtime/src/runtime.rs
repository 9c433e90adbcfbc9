//! The engine, its epoch ticker, the module cache, and the entry points `prepare` and `invoke`.

use crate::abi::{self, ModuleInfo};
use crate::call::{self, CallLimits, CallOutcome, CallPlan, CallState};
use crate::config::RuntimeConfig;
use crate::host::{self, HostServices, OverlayIdentity, RequestContext};
use crate::log::{LogLevel, SharedLog, wasi_stream::LogStream};
use forge_model::{CapabilityName, ErrorCode, ForgeError, OverlayInvocation, OverlayManifest};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, ModuleExport,
    PoolingAllocationConfig, Store,
};

/// Hex SHA-256 of a binary: its identity in the module cache and the object store.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

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
    pub fn compile(&self, wasm: &[u8]) -> Result<Module, ForgeError> {
        let hash = sha256_hex(wasm);
        if let Some(module) = self.lock_modules().get(&hash) {
            return Ok(module.clone());
        }
        let module = Module::from_binary(&self.inner.engine, wasm)
            .map_err(|e| ForgeError::validation(format!("the module does not compile: {e:#}")))?;
        self.lock_modules().put(hash, module.clone());
        Ok(module)
    }

    fn lock_modules(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, Module>> {
        self.inner.modules.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The registration checks of the ABI, without linking: compile and check against the manifest.
    pub fn check(&self, manifest: &OverlayManifest, wasm: &[u8]) -> Result<ModuleInfo, ForgeError> {
        abi::check_module(&self.compile(wasm)?, manifest)
    }

    /// Checks a module and pre-links it for its manifest's grants, ready for any number of calls.
    pub fn prepare(&self, manifest: &OverlayManifest, wasm: &[u8]) -> Result<PreparedOverlay, ForgeError> {
        let module = self.compile(wasm)?;
        let info = abi::check_module(&module, manifest)?;
        let link_error =
            |e: wasmtime::Error| ForgeError::validation(format!("the module cannot be linked: {e:#}"));
        let mut linker = Linker::<CallState>::new(&self.inner.engine);
        host::link(&mut linker, &info.host_imports).map_err(link_error)?;
        if info.uses_wasi {
            link_wasi(&mut linker).map_err(link_error)?;
        }
        let pre = linker.instantiate_pre(&module).map_err(link_error)?;
        let export = |name: &str| module.get_export_index(name).expect("checked by check_module");
        let exports = Exports {
            memory: export(abi::MEMORY_EXPORT),
            alloc: export(abi::ALLOC_EXPORT),
            initialize: info.has_initialize.then(|| export(abi::INITIALIZE_EXPORT)),
            entry_points: manifest.entry_points.iter().map(|name| (name.clone(), export(name))).collect(),
        };
        let http_hosts = manifest
            .capability(CapabilityName::NetworkHttp)
            .and_then(|c| c.constraints.as_ref())
            .and_then(|c| c.get("hosts"))
            .and_then(|hosts| serde_json::from_value::<Vec<String>>(hosts.clone()).ok())
            .unwrap_or_default();
        Ok(PreparedOverlay {
            pre,
            exports,
            needs_request_context: info.host_imports.iter().any(|f| f.returns_response()),
            info,
            grants: Arc::new(Grants { http_hosts }),
            max_fuel: manifest.max_fuel,
            max_memory_mb: manifest.max_memory_mb,
            max_execution_ms: manifest.max_execution_ms,
        })
    }

    /// Runs one invocation in a fresh instance. `Err` means it was refused before running (invalid
    /// invocation, unknown entry point, input too large); every failure of the guest is an `Ok`
    /// outcome with `success == false`.
    ///
    /// Blocks the calling thread for up to the call's deadline: run it on a blocking thread.
    pub fn invoke(
        &self,
        prepared: &PreparedOverlay,
        identity: &OverlayIdentity,
        invocation: &OverlayInvocation,
    ) -> Result<CallOutcome, ForgeError> {
        invocation.validate()?;
        let entry_point = prepared.entry_point(&invocation.function)?;
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
        let timeout_ms = invocation.effective_timeout_ms(prepared.max_execution_ms);
        let request = prepared.needs_request_context.then(|| RequestContext {
            services: self.inner.services.clone(),
            identity: identity.clone(),
            grants: prepared.grants.clone(),
        });
        let plan = CallPlan {
            prepared,
            entry_point,
            input: &input,
            timeout_ms,
            epoch: &self.inner.ticker,
            limits: CallLimits {
                max_input_bytes: config.max_input_bytes,
                max_output_bytes: config.max_output_bytes,
                max_log_bytes: config.max_log_bytes,
            },
            request,
        };
        Ok(call::run(&self.inner.engine, plan))
    }
}

fn engine_config(config: &RuntimeConfig) -> Result<Config, ForgeError> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(config.max_instances)
        .total_memories(config.max_instances)
        .total_tables(config.max_instances)
        .max_memory_size((config.max_memory_mb as usize) << 20)
        .table_elements(call::MAX_TABLE_ELEMENTS)
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

/// WASI preview 1, locked down: no args, no env, no preopens, no sockets; stdout / stderr to the log.
fn link_wasi(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p1::add_to_linker_sync(linker, CallState::wasi)?;
    // Waiting in `poll_oneoff` would hold the thread beyond the call's deadline, where no epoch check
    // can stop it; guests get ENOTSUP (58) instead of sleeping.
    linker.allow_shadowing(true);
    linker.func_wrap(abi::WASI_MODULE, "poll_oneoff", |_: i32, _: i32, _: i32, _: i32| -> i32 { 58 })?;
    linker.allow_shadowing(false);
    Ok(())
}

pub(crate) fn wasi_context(log: &SharedLog) -> wasmtime_wasi::p1::WasiP1Ctx {
    wasmtime_wasi::WasiCtxBuilder::new()
        .stdout(LogStream { log: log.clone(), level: LogLevel::Info })
        .stderr(LogStream { log: log.clone(), level: LogLevel::Error })
        .build_p1()
}

/// What each call of an overlay may reach beyond the always-granted functions.
pub(crate) struct Grants {
    /// Hosts `http_request` may reach (`constraints.hosts` of `network:http`).
    pub http_hosts: Vec<String>,
}

pub(crate) struct Exports {
    pub memory: ModuleExport,
    pub alloc: ModuleExport,
    pub initialize: Option<ModuleExport>,
    pub entry_points: Vec<(String, ModuleExport)>,
}

/// A checked, pre-linked overlay: instantiating it per call costs no lookups by name.
pub struct PreparedOverlay {
    pre: InstancePre<CallState>,
    exports: Exports,
    info: ModuleInfo,
    grants: Arc<Grants>,
    needs_request_context: bool,
    max_fuel: u64,
    max_memory_mb: u32,
    max_execution_ms: u32,
}

impl PreparedOverlay {
    /// What the registration checks learnt about the module.
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    pub fn entry_points(&self) -> impl Iterator<Item = &str> {
        self.exports.entry_points.iter().map(|(name, _)| name.as_str())
    }

    fn entry_point(&self, function: &str) -> Result<&ModuleExport, ForgeError> {
        self.exports
            .entry_points
            .iter()
            .find(|(name, _)| name == function)
            .map(|(_, export)| export)
            .ok_or_else(|| {
                let available: Vec<&str> = self.entry_points().collect();
                ForgeError::validation(format!(
                    "`{function}` is not an entry point of this overlay (available: {})",
                    available.join(", ")
                ))
                .with_detail("available", available)
            })
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<CallState> {
        &self.pre
    }
    pub(crate) fn exports(&self) -> &Exports {
        &self.exports
    }
    pub(crate) fn uses_wasi(&self) -> bool {
        self.info.uses_wasi
    }
    pub(crate) fn max_fuel(&self) -> u64 {
        self.max_fuel
    }
    pub(crate) fn max_memory_mb(&self) -> u32 {
        self.max_memory_mb
    }
}

/// Drives the engine's epoch so that a deadline counted in epoch ticks is a deadline in wall-clock
/// time, waking only when some call's deadline is due.
///
/// Tick `k` stands for the instant `start + k * period`. The engine's epoch never runs ahead of
/// the wall clock (it is at most the number of periods elapsed), and whenever the deadline tick of
/// a call in flight comes, the ticker wakes and brings the epoch up to date, which stops that call
/// at its next epoch check. A fixed-period ticker would wake 1000 times a second even when nothing
/// is due: on a 2-core VM that took about 3% of a core and preempted the calling threads hundreds
/// of times a second. Here a steady stream of calls with the same timeout never wakes the ticker
/// at all: a new call registers a deadline later than the one already planned.
///
/// One ticker serves every call; the epoch only ever tracks the clock, so cancelling one call
/// never touches it.
pub(crate) struct EpochTicker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

struct TickerShared {
    engine: Engine,
    start: Instant,
    period: Duration,
    schedule: Mutex<Schedule>,
    wake: Condvar,
}

struct Schedule {
    /// Increments done so far: the engine's epoch (only this ticker increments it).
    ticks: u64,
    /// Deadline tick -> calls in flight with that deadline.
    deadlines: BTreeMap<u64, usize>,
    /// The tick the ticker sleeps until (`None`: until a call arrives).
    wake_at: Option<u64>,
    stop: bool,
}

impl TickerShared {
    fn schedule(&self) -> MutexGuard<'_, Schedule> {
        // The lock guards plain counters that no panic can leave inconsistent.
        self.schedule.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ticks whole periods elapsed between `start` and `at`.
    fn tick_at(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.start).as_nanos() / self.period.as_nanos()) as u64
    }

    fn run(&self) {
        let mut schedule = self.schedule();
        while !schedule.stop {
            // Catch up with the clock, letting callers in between chunks (after a long sleep
            // this is thousands of increments).
            let now = self.tick_at(Instant::now());
            while schedule.ticks < now {
                for _ in 0..(now - schedule.ticks).min(1024) {
                    self.engine.increment_epoch();
                    schedule.ticks += 1;
                }
                drop(schedule);
                schedule = self.schedule();
            }
            // Deadlines at or below `ticks` have been reached; sleep until the next one.
            let next = schedule.deadlines.range(schedule.ticks + 1..).next().map(|(&tick, _)| tick);
            schedule.wake_at = next;
            schedule = match next {
                None => self.wake.wait(schedule).unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(tick) => {
                    let due = self.start + Duration::from_nanos(self.period.as_nanos() as u64 * tick);
                    let wait = due.saturating_duration_since(Instant::now());
                    self.wake.wait_timeout(schedule, wait).unwrap_or_else(|poisoned| poisoned.into_inner()).0
                }
            };
        }
    }
}

impl EpochTicker {
    fn start(engine: Engine, period: Duration) -> Self {
        let shared = Arc::new(TickerShared {
            engine,
            start: Instant::now(),
            period: period.max(Duration::from_micros(100)),
            schedule: Mutex::new(Schedule {
                ticks: 0,
                deadlines: BTreeMap::new(),
                wake_at: None,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let ticking = shared.clone();
        let thread = std::thread::Builder::new()
            .name("forge-epoch".into())
            .spawn(move || ticking.run())
            .expect("cannot start the epoch ticker thread");
        EpochTicker { shared, thread: Some(thread) }
    }

    /// Arms `store` to be interrupted at the first tick after `started + timeout` (never early, at
    /// most one period plus the ticker's wake-up latency late) and keeps that deadline scheduled
    /// until the returned guard drops, which must be after the store is done running.
    pub(crate) fn arm<T>(
        &self,
        store: &mut Store<T>,
        started: Instant,
        timeout: Duration,
    ) -> ArmedDeadline<'_> {
        let shared = &*self.shared;
        let tick = shared.tick_at(started + timeout) + 1;
        let mut schedule = shared.schedule();
        // Under the lock the engine's epoch is exactly `ticks` (< `tick`, as the ticker never runs
        // ahead of the clock), so the store's deadline lands on `tick` exactly.
        store.set_epoch_deadline(tick.saturating_sub(schedule.ticks).max(1));
        *schedule.deadlines.entry(tick).or_insert(0) += 1;
        if schedule.wake_at.is_none_or(|planned| tick < planned) {
            schedule.wake_at = Some(tick);
            shared.wake.notify_one();
        }
        ArmedDeadline { shared, tick }
    }
}

/// A call's deadline, scheduled on the ticker until dropped.
pub(crate) struct ArmedDeadline<'a> {
    shared: &'a TickerShared,
    tick: u64,
}

impl Drop for ArmedDeadline<'_> {
    fn drop(&mut self) {
        let mut schedule = self.shared.schedule();
        if let std::collections::btree_map::Entry::Occupied(mut calls) = schedule.deadlines.entry(self.tick) {
            *calls.get_mut() -= 1;
            if *calls.get() == 0 {
                calls.remove();
            }
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.schedule().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts WebAssembly binary or text (`.wat`), returning the binary.
pub fn wasm_from_binary_or_text(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, ForgeError> {
    wat::parse_bytes(bytes)
        .map_err(|e| ForgeError::validation(format!("not WebAssembly binary or text: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs an endless loop in a store armed with `timeout`; returns how long it took to stop.
    fn spin_until_stopped(ticker: &EpochTicker, engine: &Engine, timeout: Duration) -> Duration {
        let wasm = wat::parse_str(r#"(module (func (export "spin") (loop $l (br $l))))"#).unwrap();
        let module = Module::new(engine, wasm).unwrap();
        let mut store = Store::new(engine, ());
        let started = Instant::now();
        let armed = ticker.arm(&mut store, started, timeout);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance.get_typed_func::<(), ()>(&mut store, "spin").unwrap();
        let error = spin.call(&mut store, ()).unwrap_err();
        let elapsed = started.elapsed();
        drop(armed);
        assert_eq!(error.downcast_ref::<wasmtime::Trap>(), Some(&wasmtime::Trap::Interrupt));
        elapsed
    }

    fn engine() -> Engine {
        Engine::new(Config::new().epoch_interruption(true)).unwrap()
    }

    #[test]
    fn the_ticker_sleeps_while_no_deadline_is_due() {
        let engine = engine();
        let ticker = EpochTicker::start(engine.clone(), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(ticker.shared.schedule().ticks, 0, "ticked with no call in flight");
        // Arming wakes the ticker once, to plan for the new deadline (and catch up meanwhile).
        let mut store = Store::new(&engine, ());
        let armed = ticker.arm(&mut store, Instant::now(), Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(5));
        let planned = ticker.shared.schedule().ticks;
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(ticker.shared.schedule().ticks, planned, "ticked with no deadline due");
        drop(armed);
        assert!(ticker.shared.schedule().deadlines.is_empty());
    }

    #[test]
    fn deadlines_stop_guests_after_the_deadline_never_before() {
        let engine = engine();
        let ticker = EpochTicker::start(engine.clone(), Duration::from_millis(1));
        for _ in 0..3 {
            let elapsed = spin_until_stopped(&ticker, &engine, Duration::from_millis(30));
            assert!(elapsed >= Duration::from_millis(30), "stopped early: {elapsed:?}");
            assert!(elapsed < Duration::from_millis(40), "stopped late: {elapsed:?}");
        }
    }

    #[test]
    fn an_earlier_deadline_wakes_a_ticker_planning_a_later_one() {
        let engine = engine();
        let ticker = EpochTicker::start(engine.clone(), Duration::from_millis(1));
        let mut patient = Store::new(&engine, ());
        let _later = ticker.arm(&mut patient, Instant::now(), Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(5));
        let elapsed = spin_until_stopped(&ticker, &engine, Duration::from_millis(30));
        assert!((Duration::from_millis(30)..Duration::from_millis(40)).contains(&elapsed), "{elapsed:?}");
    }
}
