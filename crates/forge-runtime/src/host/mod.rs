//! Host functions of module `forge`, each capability behind one small trait.
//!
//! A function is linked into an overlay's instances only if the overlay's manifest grants its
//! capability (see [`crate::abi::check_module`]). Backends are shared by every call; what a call may
//! see (its overlay's trust level, its allowed hosts) travels with the call.

pub mod capsules;
pub mod http;

use crate::abi::HostFunction;
use crate::call::{Abort, CallState};
use forge_model::{ErrorKind, TrustLevel};
use serde::Serialize;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;
use wasmtime::{Caller, Linker};

pub use capsules::{CapsuleStore, InMemoryCapsules};
pub use http::{HttpClient, HttpRequest, HttpResponse, NoNetwork};

/// The backends host functions reach, shared by every call.
#[derive(Clone)]
pub struct HostServices {
    pub capsules: Arc<dyn CapsuleStore>,
    pub http: Arc<dyn HttpClient>,
    /// Where host functions run their asynchronous backends. Defaults to the Tokio runtime current when
    /// the [`crate::Runtime`] is built. Invocations must run outside its worker threads (for example
    /// in `spawn_blocking`), since they wait for the backend synchronously.
    pub io: Option<tokio::runtime::Handle>,
}

impl HostServices {
    pub fn new(capsules: Arc<dyn CapsuleStore>, http: Arc<dyn HttpClient>) -> Self {
        HostServices { capsules, http, io: tokio::runtime::Handle::try_current().ok() }
    }
}

impl Default for HostServices {
    /// In-memory capsules and no network: enough to run overlays locally.
    fn default() -> Self {
        HostServices::new(Arc::new(InMemoryCapsules::default()), Arc::new(NoNetwork))
    }
}

/// Which overlay a call runs as: host functions act with its identity and trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayIdentity {
    /// Registry id; None for a module run locally without registration.
    pub id: Option<Uuid>,
    pub name: Arc<str>,
    pub trust_level: TrustLevel,
}

/// How a backend answers a host function call that it could not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostCallError {
    /// An answer for the guest, `{"error": {code, message}}`: the guest decides what to do.
    #[error("{code}: {message}")]
    Refused { code: &'static str, message: String },
    /// The host failed (database down...): ends the call as `host_error`, not held against the overlay.
    #[error("{0}")]
    Fault(String),
}

impl HostCallError {
    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        HostCallError::Refused { code, message: message.into() }
    }
    fn invalid_request(message: impl std::fmt::Display) -> Self {
        Self::refused("invalid_request", format!("invalid request: {message}"))
    }
}

/// Adds every function `granted` to the linker (functions not granted stay unlinked, so a module
/// importing them cannot even be instantiated).
pub(crate) fn link(linker: &mut Linker<CallState>, granted: &[HostFunction]) -> wasmtime::Result<()> {
    for function in granted {
        let module = crate::abi::FORGE_MODULE;
        match function {
            HostFunction::LogInfo => {
                linker.func_wrap(module, function.name(), |c: Caller<'_, CallState>, p: i32, l: i32| {
                    log(c, crate::log::LogLevel::Info, p, l)
                })?
            }
            HostFunction::LogError => {
                linker.func_wrap(module, function.name(), |c: Caller<'_, CallState>, p: i32, l: i32| {
                    log(c, crate::log::LogLevel::Error, p, l)
                })?
            }
            HostFunction::Fail => linker.func_wrap(module, function.name(), fail)?,
            HostFunction::CapsuleRead => {
                linker.func_wrap(module, function.name(), |c: Caller<'_, CallState>, p: i32, l: i32| {
                    respond(c, p, l, capsules::read)
                })?
            }
            HostFunction::CapsuleSearch => {
                linker.func_wrap(module, function.name(), |c: Caller<'_, CallState>, p: i32, l: i32| {
                    respond(c, p, l, capsules::search)
                })?
            }
            HostFunction::CapsuleCreate => {
                linker.func_wrap(module, function.name(), |c: Caller<'_, CallState>, p: i32, l: i32| {
                    respond(c, p, l, capsules::create)
                })?
            }
            HostFunction::HttpRequest => {
                linker.func_wrap(module, function.name(), |c: Caller<'_, CallState>, p: i32, l: i32| {
                    respond(c, p, l, http::request)
                })?
            }
        };
    }
    Ok(())
}

fn log(
    caller: Caller<'_, CallState>,
    level: crate::log::LogLevel,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<()> {
    let state = caller.data();
    let bytes = state.guest_bytes(&caller, ptr, len, state.limits.max_log_bytes)?;
    state.log.push(level, bytes);
    Ok(())
}

fn fail(caller: Caller<'_, CallState>, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let state = caller.data();
    let bytes = state.guest_bytes(&caller, ptr, len, state.limits.max_log_bytes)?;
    Err(Abort::new(ErrorKind::OverlayError, String::from_utf8_lossy(bytes)).into())
}

/// What a request / response host function sees of its call.
pub(crate) struct RequestContext {
    pub services: HostServices,
    pub identity: OverlayIdentity,
    pub grants: Arc<crate::runtime::Grants>,
}

type HandlerFuture = std::pin::Pin<Box<dyn Future<Output = Result<Value, HostCallError>> + Send>>;

/// Runs one request / response host function: reads the request JSON, runs the handler's future
/// under the call's deadline, writes `{"ok": ...}` / `{"error": ...}` into memory from `forge_alloc`.
fn respond(
    mut caller: Caller<'_, CallState>,
    ptr: i32,
    len: i32,
    handler: fn(&RequestContext, Value) -> Result<HandlerFuture, Abort>,
) -> wasmtime::Result<i64> {
    let state = caller.data();
    let request = state.guest_bytes(&caller, ptr, len, state.limits.max_input_bytes)?;
    let answer = match serde_json::from_slice::<Value>(request) {
        Err(e) => Err(HostCallError::invalid_request(e)),
        Ok(request) => {
            let context = state.request_context();
            let future = handler(context, request)?;
            wait(context, state.deadline, state.timeout_ms, future)?
        }
    };
    let response = match answer {
        Ok(value) => json!({ "ok": value }),
        Err(HostCallError::Refused { code, message }) => json!({"error": {"code": code, "message": message}}),
        Err(HostCallError::Fault(message)) => return Err(Abort::new(ErrorKind::HostError, message).into()),
    };
    let bytes = serde_json::to_vec(&response)?;
    crate::call::write_to_guest(&mut caller, &bytes)
}

/// Runs a backend future on the I/O runtime and waits for it, at most until the call's deadline.
fn wait(
    context: &RequestContext,
    deadline: Instant,
    timeout_ms: u32,
    future: HandlerFuture,
) -> Result<Result<Value, HostCallError>, Abort> {
    let Some(io) = &context.services.io else {
        return Err(Abort::new(
            ErrorKind::HostError,
            "host functions need a Tokio runtime, and none was configured",
        ));
    };
    let timed_out =
        || Abort::new(ErrorKind::Timeout, forge_model::invocation::messages::timed_out(timeout_ms));
    let remaining = deadline.checked_duration_since(Instant::now()).ok_or_else(timed_out)?;
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let task = io.spawn(async move {
        // The receiver may be gone after a timeout; nothing is left to tell.
        let _ = sender.send(future.await);
    });
    match receiver.recv_timeout(remaining) {
        Ok(answer) => Ok(answer),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            task.abort();
            Err(timed_out())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(Abort::new(ErrorKind::HostError, "host function backend stopped without answering"))
        }
    }
}

/// Parses a request object, mapping shape errors to `invalid_request` for the guest.
pub(crate) fn parse_request<T: serde::de::DeserializeOwned>(request: Value) -> Result<T, HostCallError> {
    serde_json::from_value(request).map_err(HostCallError::invalid_request)
}

/// Serialises a backend answer for the guest.
pub(crate) fn to_answer<T: Serialize>(value: T) -> Result<Value, HostCallError> {
    serde_json::to_value(value).map_err(|e| HostCallError::Fault(format!("cannot encode answer: {e}")))
}
