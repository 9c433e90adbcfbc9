//! One invocation: a fresh store and instance, the ABI's calling sequence, and the classification of
//! everything that can go wrong into an [`OverlayResult`].

use crate::files::CallFiles;
use crate::log::{CallLog, SharedLog};
use crate::prepared::PreparedOverlay;
use crate::state::{Abort, CallLimits, CallState, OverlayIdentity, write_to_guest};
use forge_model::invocation::messages;
use forge_model::{ErrorKind, OverlayResult};
use serde_json::{Map, Value};
use std::time::Instant;
use wasmtime::{Extern, Store, Trap, UpdateDeadline};

/// What one call produced: its result and its log.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    pub result: OverlayResult,
    pub log: CallLog,
}

/// How one call is set up.
pub(crate) struct CallPlan<'a> {
    pub prepared: &'a PreparedOverlay,
    pub entry_point: &'a wasmtime::ModuleExport,
    pub input: &'a [u8],
    pub timeout_ms: u32,
    pub limits: CallLimits,
    pub identity: &'a OverlayIdentity,
}

/// Runs one call in a fresh store. Never panics on guest behaviour; every failure is a result.
///
/// The guest runs on a fiber and yields to the executor at every epoch tick, so a long call never
/// holds a thread; at each tick past its deadline it is stopped instead.
pub(crate) async fn run(engine: &wasmtime::Engine, plan: CallPlan<'_>) -> CallOutcome {
    let started = Instant::now();
    let prepared = plan.prepared;
    let log = SharedLog::new(plan.limits.max_log_bytes);
    let elapsed_ms = || started.elapsed().as_secs_f64() * 1e3;
    // File mounts are preopened only for modules that import WASI, the only way to reach them.
    let mounts = if prepared.uses_wasi() { prepared.mounts() } else { &[] };
    let files_and_wasi = CallFiles::open(mounts).and_then(|files| {
        let wasi = prepared.uses_wasi().then(|| log.wasi_context(files.preopens())).transpose()?;
        Ok((files, wasi))
    });
    let (files, wasi) = match files_and_wasi {
        Ok(opened) => opened,
        Err(error) => {
            tracing::warn!(%error, "cannot open the file mounts of a call");
            let message = format!("host error: cannot open the file mounts: {error}");
            let result = OverlayResult::failed(ErrorKind::HostError, message, elapsed_ms(), 0);
            return CallOutcome { result, log: log.finish() };
        }
    };
    let deadline = started + std::time::Duration::from_millis(u64::from(plan.timeout_ms));
    let state = CallState::new(
        plan.limits,
        log.clone(),
        deadline,
        plan.timeout_ms,
        plan.identity.clone(),
        (prepared.max_memory_mb() as usize) << 20,
        wasi,
    );
    let mut store = Store::new(engine, state);
    store.limiter(|state| state);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
    });
    let max_fuel = prepared.max_fuel();
    let outcome = match store.set_fuel(max_fuel) {
        Ok(()) => {
            execute(&mut store, prepared, plan.entry_point, plan.input, plan.limits.max_output_bytes).await
        }
        Err(error) => Err(error),
    };
    let fuel_consumed = max_fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    drop(store);
    // What a successful call wrote is kept only now; a failed call's writes are dropped.
    let outcome = match outcome {
        Ok(Ok(result)) => Ok(files.commit(plan.limits.write_quota).map(|()| result)),
        other => other,
    };
    let elapsed_ms = elapsed_ms();
    let result = match outcome {
        Ok(Ok(result)) => OverlayResult::ok(result, elapsed_ms, fuel_consumed),
        Ok(Err(abort)) => OverlayResult::failed(abort.kind, abort.message, elapsed_ms, fuel_consumed),
        Err(error) => {
            let (kind, message) = classify(&error, plan.timeout_ms);
            OverlayResult::failed(kind, message, elapsed_ms, fuel_consumed)
        }
    };
    CallOutcome { result, log: log.finish() }
}

/// The ABI v1 calling sequence. The outer error is anything Wasmtime raised (traps, aborts); the
/// inner one is a result the host rejects.
async fn execute(
    store: &mut Store<CallState>,
    prepared: &PreparedOverlay,
    entry_point: &wasmtime::ModuleExport,
    input: &[u8],
    max_output_bytes: usize,
) -> wasmtime::Result<Result<Option<Map<String, Value>>, Abort>> {
    let instance = prepared.instance_pre().instantiate_async(&mut *store).await.map_err(|error| {
        // A start function's trap is the guest's; anything else here (a full pool) is the host's.
        if error.is::<Trap>() || error.is::<Abort>() || error.is::<wasmtime_wasi::I32Exit>() {
            return error;
        }
        tracing::warn!(error = format!("{error:#}"), "cannot start an instance");
        Abort::new(ErrorKind::HostError, format!("host error: cannot start an instance: {error:#}")).into()
    })?;
    let exports = prepared.exports();
    // Every export below was checked for presence and signature when the overlay was prepared.
    let func = |store: &mut Store<CallState>, export| match instance.get_module_export(store, export) {
        Some(Extern::Func(func)) => Ok(func),
        _ => Err(Abort::new(ErrorKind::OverlayError, "a checked export is missing")),
    };
    let Some(Extern::Memory(memory)) = instance.get_module_export(&mut *store, &exports.memory) else {
        return Ok(Err(Abort::new(ErrorKind::OverlayError, "the module does not export `memory`")));
    };
    let alloc = func(store, &exports.alloc)?.typed::<i32, i32>(&*store)?;
    store.data_mut().attach_instance(memory, alloc);
    if let Some(initialize) = &exports.initialize {
        func(store, initialize)?.typed::<(), ()>(&*store)?.call_async(&mut *store, ()).await?;
    }
    let entry = func(store, entry_point)?.typed::<(i32, i32), i64>(&*store)?;
    let packed = write_to_guest(&mut *store, input).await?;
    let (ptr, len) = ((packed >> 32) as i32, packed as i32);
    let packed = entry.call_async(&mut *store, (ptr, len)).await? as u64;
    Ok(read_result(memory.data(&*store), packed, max_output_bytes))
}

/// Reads the entry point's packed `(ptr << 32) | len` result: a JSON object, or null when len is 0.
fn read_result(
    memory: &[u8],
    packed: u64,
    max_output_bytes: usize,
) -> Result<Option<Map<String, Value>>, Abort> {
    let invalid = |message: String| Abort::new(ErrorKind::InvalidOutput, message);
    let (ptr, len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    if len == 0 {
        return Ok(None);
    }
    if len > max_output_bytes {
        return Err(invalid(format!("result of {len} bytes exceeds the limit of {max_output_bytes} bytes")));
    }
    let bytes = memory.get(ptr..ptr + len).ok_or_else(|| {
        invalid(format!("result at {ptr}..{} lies outside guest memory ({} bytes)", ptr + len, memory.len()))
    })?;
    let text = std::str::from_utf8(bytes).map_err(|e| invalid(format!("result is not UTF-8: {e}")))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(Some(object)),
        Ok(other) => Err(invalid(format!(
            "result must be a JSON object, not {}: return an object such as {{\"value\": ...}} (Rust: \
             a struct deriving Serialize; C: cJSON_CreateObject(); AssemblyScript: a @json class)",
            json_kind(&other)
        ))),
        Err(e) => Err(invalid(format!("result is not valid JSON: {e}"))),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Maps an error Wasmtime raised during a call to the failure it reports.
fn classify(error: &wasmtime::Error, timeout_ms: u32) -> (ErrorKind, String) {
    if let Some(abort) = error.downcast_ref::<Abort>() {
        return (abort.kind, abort.message.clone());
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => (ErrorKind::FuelExhausted, messages::FUEL_EXHAUSTED.to_owned()),
            Trap::Interrupt => (ErrorKind::Timeout, messages::timed_out(timeout_ms)),
            Trap::StackOverflow => (ErrorKind::Trap, "stack overflow: call stack exhausted".to_owned()),
            other => (ErrorKind::Trap, format!("trap: {other}")),
        };
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return (ErrorKind::OverlayError, format!("the overlay called proc_exit({})", exit.0));
    }
    // Our host functions report their own failures as `Abort`, and instantiation failures are
    // mapped before this; what else Wasmtime raises while the guest runs is WASI refusing what the
    // guest asked (`proc_exit` >= 126, `random_get` over its limit): the guest's fault, so that it
    // counts toward quarantine like any trap.
    (ErrorKind::Trap, format!("trap: {error:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(ptr: u64, len: u64) -> u64 {
        (ptr << 32) | len
    }

    #[test]
    fn result_reading() {
        let mut memory = vec![0u8; 64];
        memory[8..19].copy_from_slice(br#"{"a": true}"#);
        memory[30..33].copy_from_slice(&[b'"', 0xff, b'"']);
        memory[40..43].copy_from_slice(b"[1]");
        memory[44..46].copy_from_slice(b"{x");
        assert_eq!(read_result(&memory, pack(8, 11), 100).unwrap().unwrap()["a"], true);
        assert_eq!(read_result(&memory, pack(999, 0), 100).unwrap(), None, "len 0 is null");
        let err = |packed, max| read_result(&memory, packed, max).unwrap_err().message;
        assert!(err(pack(60, 11), 100).contains("outside guest memory"));
        assert!(err(pack(8, 11), 10).contains("exceeds the limit"));
        assert!(err(pack(30, 3), 100).contains("not UTF-8"));
        assert!(err(pack(40, 3), 100).contains("not an array"));
        assert!(err(pack(44, 2), 100).contains("not valid JSON"));
        assert!(err(pack(u32::MAX as u64, u32::MAX as u64), usize::MAX).contains("outside"));
    }
}
