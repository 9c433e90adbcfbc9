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
use uuid::Uuid;
use wasmtime::{Caller, Linker};

pub use capsules::{CapsuleStore, InMemoryCapsules};
pub use http::{HttpClient, HttpRequest, HttpResponse, NoNetwork};

/// The backends host functions reach, shared by every call. Their futures run inside the call's
/// own future, bounded by its deadline.
#[derive(Clone)]
pub struct HostServices {
    pub capsules: Arc<dyn CapsuleStore>,
    pub http: Arc<dyn HttpClient>,
}

impl Default for HostServices {
    /// In-memory capsules and no network: enough to run overlays locally.
    fn default() -> Self {
        HostServices { capsules: Arc::new(InMemoryCapsules::default()), http: Arc::new(NoNetwork) }
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
    let module = crate::abi::FORGE_MODULE;
    for function in granted {
        let name = function.name();
        match function {
            HostFunction::LogInfo => linker
                .func_wrap(module, name, |c: Caller<'_, CallState>, p: i32, l: i32| {
                    log(c, crate::log::LogLevel::Info, p, l)
                })
                .map(drop)?,
            HostFunction::LogError => linker
                .func_wrap(module, name, |c: Caller<'_, CallState>, p: i32, l: i32| {
                    log(c, crate::log::LogLevel::Error, p, l)
                })
                .map(drop)?,
            HostFunction::Fail => linker.func_wrap(module, name, fail).map(drop)?,
            HostFunction::CapsuleRead => link_request(linker, name, capsules::read)?,
            HostFunction::CapsuleSearch => link_request(linker, name, capsules::search)?,
            HostFunction::CapsuleCreate => link_request(linker, name, capsules::create)?,
            HostFunction::HttpRequest => link_request(linker, name, http::request)?,
        }
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
type Handler = fn(&RequestContext, Value) -> Result<HandlerFuture, Abort>;

fn link_request(linker: &mut Linker<CallState>, name: &str, handler: Handler) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        crate::abi::FORGE_MODULE,
        name,
        move |caller: Caller<'_, CallState>, (ptr, len): (i32, i32)| {
            Box::new(respond(caller, ptr, len, handler))
        },
    )?;
    Ok(())
}

/// Runs one request / response host function: reads the request JSON, awaits the handler under the
/// call's deadline, writes `{"ok": ...}` / `{"error": ...}` into memory from `forge_alloc`.
async fn respond(
    mut caller: Caller<'_, CallState>,
    ptr: i32,
    len: i32,
    handler: Handler,
) -> wasmtime::Result<i64> {
    let state = caller.data();
    let request = state.guest_bytes(&caller, ptr, len, state.limits.max_input_bytes)?;
    let answer = match serde_json::from_slice::<Value>(request) {
        Err(e) => Err(HostCallError::invalid_request(e)),
        Ok(request) => {
            let future = handler(state.request_context(), request)?;
            let deadline = tokio::time::Instant::from_std(state.deadline);
            let timeout_ms = state.timeout_ms;
            tokio::time::timeout_at(deadline, future).await.map_err(|_| {
                Abort::new(ErrorKind::Timeout, forge_model::invocation::messages::timed_out(timeout_ms))
            })?
        }
    };
    let response = match answer {
        Ok(value) => json!({ "ok": value }),
        Err(HostCallError::Refused { code, message }) => json!({"error": {"code": code, "message": message}}),
        Err(HostCallError::Fault(message)) => return Err(Abort::new(ErrorKind::HostError, message).into()),
    };
    let bytes = serde_json::to_vec(&response)?;
    crate::call::write_to_guest(&mut caller, &bytes).await
}

/// Parses a request object, mapping shape errors to `invalid_request` for the guest.
pub(crate) fn parse_request<T: serde::de::DeserializeOwned>(request: Value) -> Result<T, HostCallError> {
    serde_json::from_value(request).map_err(HostCallError::invalid_request)
}

/// Serialises a backend answer for the guest.
pub(crate) fn to_answer<T: Serialize>(value: T) -> Result<Value, HostCallError> {
    serde_json::to_value(value).map_err(|e| HostCallError::Fault(format!("cannot encode answer: {e}")))
}
