//! Host functions of module `forge`, each capability behind one small trait.
//!
//! A function is linked into an overlay's instances only if the overlay's manifest grants its
//! capability (see [`crate::abi::check_module`]). Backends are shared by every call; what a call may
//! see (its overlay's trust level, its allowed hosts) travels with the call.

mod capsules;
mod file_quota;
mod http;

use crate::abi::{self, GuestErrorCode, HostFunction, ModuleInfo};
use crate::state::{Abort, CallLimits, CallState, HostCallMeter, OverlayIdentity, write_to_guest};
use forge_model::LogLevel;
use forge_model::network::HostPattern;
use forge_model::{ErrorKind, OverlayManifest};
use serde::Serialize;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use wasmtime::{Caller, Linker};

pub use capsules::{CapsuleStore, InMemoryCapsules, MAX_SEARCH_LIMIT};
pub use http::{
    FORBIDDEN_HEADERS, HttpClient, HttpRequest, HttpResponse, METHODS, NoNetwork, OutboundRequest,
    target_allowed,
};

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

/// What one overlay's request / response host functions reach: the shared backends, and what its
/// manifest grants beyond the always-granted functions. Built once, when the overlay is linked.
pub(crate) struct Grants {
    pub services: HostServices,
    /// Where `http_request` may go (`constraints.hosts` of `network:http`), parsed once.
    pub http_hosts: Arc<[HostPattern]>,
}

impl Grants {
    pub(crate) fn of(manifest: &OverlayManifest, services: &HostServices) -> Grants {
        Grants { services: services.clone(), http_hosts: manifest.http_host_patterns().into() }
    }
}

/// How a backend answers a host function call that it could not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostCallError {
    /// An answer for the guest, `{"error": {code, message}}`: the guest decides what to do.
    #[error("{code}: {message}")]
    Refused { code: GuestErrorCode, message: String },
    /// The host failed (database down...): ends the call as `host_error`, not held against the overlay.
    #[error("{0}")]
    Fault(String),
}

impl HostCallError {
    pub fn refused(code: GuestErrorCode, message: impl Into<String>) -> Self {
        HostCallError::Refused { code, message: message.into() }
    }
    fn invalid_request(message: impl std::fmt::Display) -> Self {
        Self::refused(GuestErrorCode::InvalidRequest, format!("invalid request: {message}"))
    }
}

/// Adds every function the module imports (checked against its grants) to the linker, and a
/// locked-down WASI if it imports WASI. Functions not granted stay unlinked, so a module importing
/// them cannot even be instantiated.
pub(crate) fn link(
    linker: &mut Linker<CallState>,
    info: &ModuleInfo,
    grants: &Arc<Grants>,
) -> wasmtime::Result<()> {
    use Answerer::{Platform, Remote};
    let module = abi::FORGE_MODULE;
    for function in &info.host_imports {
        let name = function.name();
        match function {
            HostFunction::LogInfo => linker
                .func_wrap(module, name, |c: Caller<'_, CallState>, p: i32, l: i32| {
                    log(c, LogLevel::Info, p, l)
                })
                .map(drop)?,
            HostFunction::LogError => linker
                .func_wrap(module, name, |c: Caller<'_, CallState>, p: i32, l: i32| {
                    log(c, LogLevel::Error, p, l)
                })
                .map(drop)?,
            HostFunction::Fail => linker
                .func_wrap(module, name, |c: Caller<'_, CallState>, p: i32, l: i32| {
                    fail(c, ErrorKind::OverlayError, p, l)
                })
                .map(drop)?,
            HostFunction::RejectInput => linker
                .func_wrap(module, name, |c: Caller<'_, CallState>, p: i32, l: i32| {
                    fail(c, ErrorKind::InvalidInput, p, l)
                })
                .map(drop)?,
            HostFunction::CapsuleRead => link_request(linker, name, (capsules::read, Platform), grants)?,
            HostFunction::CapsuleSearch => link_request(linker, name, (capsules::search, Platform), grants)?,
            HostFunction::CapsuleCreate => link_request(linker, name, (capsules::create, Platform), grants)?,
            HostFunction::CapsuleDelete => link_request(linker, name, (capsules::delete, Platform), grants)?,
            HostFunction::HttpRequest => link_request(linker, name, (http::request, Remote), grants)?,
        }
    }
    if info.uses_wasi {
        link_wasi(linker)?;
    }
    Ok(())
}

/// WASI preview 1, locked down: no args, no env, no preopens, no sockets; stdout / stderr to the log
/// (see `SharedLog::wasi_context`).
fn link_wasi(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p1::add_to_linker_async(linker, CallState::wasi)?;
    // Waiting in `poll_oneoff` would outlast the call's deadline, since epoch checks only happen
    // while the guest runs; guests get ENOTSUP (58) instead of sleeping.
    linker.allow_shadowing(true);
    linker.func_wrap(abi::WASI_MODULE, "poll_oneoff", |_: i32, _: i32, _: i32, _: i32| -> i32 { 58 })?;
    file_quota::link(linker)?;
    linker.allow_shadowing(false);
    Ok(())
}

fn log(caller: Caller<'_, CallState>, level: LogLevel, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let state = caller.data();
    let bytes = state.guest_bytes(&caller, ptr, len, state.limits.max_log_bytes)?;
    state.log.push(level, bytes);
    Ok(())
}

/// `fail` (`overlay_error`) and `reject_input` (`invalid_input`): end the call with the guest's
/// message.
fn fail(caller: Caller<'_, CallState>, kind: ErrorKind, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let state = caller.data();
    let bytes = state.guest_bytes(&caller, ptr, len, state.limits.max_log_bytes)?;
    Err(Abort::new(kind, String::from_utf8_lossy(bytes)).into())
}

/// What a request / response host function sees of its call.
pub(crate) struct RequestContext<'a> {
    pub grants: &'a Grants,
    pub identity: &'a OverlayIdentity,
    pub limits: &'a CallLimits,
    pub meter: &'a mut HostCallMeter,
    pub deadline: std::time::Instant,
}

type HandlerFuture = std::pin::Pin<Box<dyn Future<Output = Result<Value, HostCallError>> + Send>>;
type Handler = fn(&mut RequestContext<'_>, Value) -> Result<HandlerFuture, Abort>;

/// Who answers a request / response host function, which decides whose fault it is when the call's
/// deadline passes while the guest waits for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answerer {
    /// The platform's capsule store: a wait there is the host's doing.
    Platform,
    /// A server the overlay chose to call (`http_request`): waiting on it is the overlay's choice.
    Remote,
}

fn link_request(
    linker: &mut Linker<CallState>,
    name: &'static str,
    (handler, answerer): (Handler, Answerer),
    grants: &Arc<Grants>,
) -> wasmtime::Result<()> {
    let grants = grants.clone();
    linker.func_wrap_async(
        abi::FORGE_MODULE,
        name,
        move |caller: Caller<'_, CallState>, (ptr, len): (i32, i32)| {
            Box::new(respond(caller, ptr, len, (name, handler, answerer), grants.clone()))
        },
    )?;
    Ok(())
}

/// Runs one request / response host function: reads the request JSON, counts it against the call's
/// host-call limits, awaits the handler under the call's deadline, writes `{"ok": ...}` /
/// `{"error": ...}` into memory from `forge_alloc`.
async fn respond(
    mut caller: Caller<'_, CallState>,
    ptr: i32,
    len: i32,
    (name, handler, answerer): (&'static str, Handler, Answerer),
    grants: Arc<Grants>,
) -> wasmtime::Result<i64> {
    let state = caller.data();
    let request = state.guest_bytes(&caller, ptr, len, state.limits.max_input_bytes)?;
    let request_len = request.len();
    let request = serde_json::from_slice::<Value>(request);
    let answer = match (meter(caller.data_mut(), request_len), request) {
        (Err(refusal), _) => Err(refusal),
        (Ok(()), Err(e)) => Err(HostCallError::invalid_request(e)),
        (Ok(()), Ok(request)) => {
            let state = caller.data_mut();
            let future = handler(
                &mut RequestContext {
                    grants: &grants,
                    identity: &state.identity,
                    limits: &state.limits,
                    meter: &mut state.host_calls,
                    deadline: state.deadline,
                },
                request,
            )?;
            let deadline = tokio::time::Instant::from_std(state.deadline);
            let timeout_ms = state.timeout_ms;
            let asked = std::time::Instant::now();
            tokio::time::timeout_at(deadline, future)
                .await
                .map_err(|_| deadline_passed(name, answerer, asked.elapsed(), timeout_ms))?
        }
    };
    let response = match answer {
        Ok(value) => json!({ "ok": value }),
        Err(HostCallError::Refused { code, message }) => {
            json!({"error": {"code": code.as_str(), "message": message}})
        }
        Err(HostCallError::Fault(message)) => return Err(Abort::new(ErrorKind::HostError, message).into()),
    };
    let bytes = serde_json::to_vec(&response)?;
    caller.data_mut().host_calls.bytes += bytes.len();
    write_to_guest(&mut caller, &bytes).await
}

/// How a call ends when its deadline passes while the guest waits for host function `name`: a
/// timeout, unless the platform's own store held the guest for half the call's time or more. Then
/// the store stalled (a healthy one answers in milliseconds) and the call ends as `host_error`, not
/// held against the overlay's health, so that a stalled store cannot quarantine healthy overlays.
/// An overlay that spends its time in many quick host calls still times out.
fn deadline_passed(name: &str, answerer: Answerer, waited: std::time::Duration, timeout_ms: u32) -> Abort {
    let waited_ms = waited.as_millis();
    if answerer == Answerer::Platform && waited_ms * 2 >= u128::from(timeout_ms) {
        tracing::warn!(
            host_function = name,
            waited_ms,
            timeout_ms,
            "the capsule store stalled a call past its deadline"
        );
        return Abort::new(
            ErrorKind::HostError,
            format!(
                "the capsule store did not answer `{name}` within the call's deadline ({waited_ms} of \
                 {timeout_ms} ms spent waiting for it); not the overlay's fault, retry later"
            ),
        );
    }
    Abort::new(ErrorKind::Timeout, forge_model::invocation::messages::timed_out(timeout_ms))
}

/// Counts one host call of `request_len` bytes, or refuses it (`limit_exceeded`) once the call has
/// used up its host calls or their bytes.
fn meter(state: &mut CallState, request_len: usize) -> Result<(), HostCallError> {
    let (limits, used) = (state.limits, &mut state.host_calls);
    if used.calls >= limits.max_host_calls {
        return Err(HostCallError::refused(
            GuestErrorCode::LimitExceeded,
            format!("this call made its {} host calls (max_host_calls)", limits.max_host_calls),
        ));
    }
    if used.bytes >= limits.max_host_call_bytes {
        return Err(HostCallError::refused(
            GuestErrorCode::LimitExceeded,
            format!(
                "this call's host calls moved {} bytes, the limit is {} (max_host_call_bytes)",
                used.bytes, limits.max_host_call_bytes
            ),
        ));
    }
    used.calls += 1;
    used.bytes += request_len;
    Ok(())
}

/// Parses a request object, mapping shape errors to `invalid_request` for the guest.
pub(crate) fn parse_request<T: serde::de::DeserializeOwned>(request: Value) -> Result<T, HostCallError> {
    serde_json::from_value(request).map_err(HostCallError::invalid_request)
}

/// Serialises a backend answer for the guest.
pub(crate) fn to_answer<T: Serialize>(value: T) -> Result<Value, HostCallError> {
    serde_json::to_value(value).map_err(|e| HostCallError::Fault(format!("cannot encode answer: {e}")))
}
