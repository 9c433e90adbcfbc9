//! The raw host imports (module `forge`) and the request / response protocol over them.
//!
//! Each import is declared only on `wasm32` and called from exactly one wrapper, so a module imports
//! a host function only if its code calls that wrapper: the linker drops unused imports, and the
//! host rejects a module importing a capability-gated function its manifest does not request. On
//! native targets (tests, clippy, docs) the wrappers answer [`HostErrorCode::Unavailable`].

use crate::memory;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "forge")]
    unsafe extern "C" {
        pub fn log_info(ptr: i32, len: i32);
        pub fn log_error(ptr: i32, len: i32);
        pub fn fail(ptr: i32, len: i32);
        pub fn reject_input(ptr: i32, len: i32);
        pub fn capsule_read(req_ptr: i32, req_len: i32) -> i64;
        pub fn capsule_search(req_ptr: i32, req_len: i32) -> i64;
        pub fn capsule_create(req_ptr: i32, req_len: i32) -> i64;
        pub fn capsule_delete(req_ptr: i32, req_len: i32) -> i64;
        pub fn http_request(req_ptr: i32, req_len: i32) -> i64;
    }
}

/// `(ptr, len)` of a byte slice as the ABI passes it. Slices on wasm32 are below 2 GiB, so both fit.
#[cfg(target_arch = "wasm32")]
fn raw(bytes: &[u8]) -> (i32, i32) {
    (bytes.as_ptr().addr() as i32, bytes.len() as i32)
}

/// Declares one wrapper per fire-and-forget import: on wasm32 it calls the import, elsewhere it
/// runs the native fallback.
macro_rules! one_way {
    ($($(#[$doc:meta])* $name:ident, native: |$text:ident| $native:expr;)*) => {$(
        $(#[$doc])*
        pub(crate) fn $name($text: &str) {
            #[cfg(target_arch = "wasm32")]
            {
                let (ptr, len) = raw($text.as_bytes());
                // SAFETY: (ptr, len) is a live, initialised byte slice of this instance's memory;
                // the host only reads it during the call.
                unsafe { imports::$name(ptr, len) }
            }
            #[cfg(not(target_arch = "wasm32"))]
            $native
        }
    )*};
}

one_way! {
    log_info, native: |line| eprintln!("[forge info] {line}");
    log_error, native: |line| eprintln!("[forge error] {line}");
}

/// Declares one wrapper per import that ends the call: on wasm32 it calls the import, elsewhere it
/// panics with the message after `$prefix`.
macro_rules! ending {
    ($($(#[$doc:meta])* $name:ident, native: $prefix:literal;)*) => {$(
        $(#[$doc])*
        pub(crate) fn $name(message: &str) -> ! {
            #[cfg(target_arch = "wasm32")]
            {
                let (ptr, len) = raw(message.as_bytes());
                // SAFETY: as for the logging imports. The host does not return from this import.
                unsafe { imports::$name(ptr, len) };
                // Should a host ever return, trapping is the only way to honour `!`.
                core::arch::wasm32::unreachable()
            }
            #[cfg(not(target_arch = "wasm32"))]
            panic!(concat!($prefix, ": {}"), message)
        }
    )*};
}

ending! {
    /// Ends the call through `forge.fail` (`overlay_error`).
    fail, native: "overlay failed";
    /// Ends the call through `forge.reject_input` (`invalid_input`).
    reject_input, native: "invalid input";
}

/// Declares one raw request / response wrapper per import: `Some((addr, len))` of the response
/// on wasm32, `None` elsewhere.
macro_rules! request_response {
    ($($name:ident),*) => {$(
        pub(crate) fn $name(request: &[u8]) -> Option<(usize, usize)> {
            #[cfg(target_arch = "wasm32")]
            {
                let (ptr, len) = raw(request);
                // SAFETY: (ptr, len) is a live byte slice the host only reads; the host writes its
                // answer only into memory it gets from our own `forge_alloc`.
                Some(crate::memory::unpack(unsafe { imports::$name(ptr, len) }))
            }
            #[cfg(not(target_arch = "wasm32"))]
            {
                let _ = request;
                None
            }
        }
    )*};
}

/// Raw request / response calls. Each is a separate function so that passing one to [`call`]
/// monomorphises to a direct call of that one import.
pub(crate) mod raw_calls {
    #[cfg(target_arch = "wasm32")]
    use super::{imports, raw};
    request_response!(capsule_read, capsule_search, capsule_create, capsule_delete, http_request);
}

/// Sends `request` as JSON through one host function and reads its `{"ok"}` / `{"error"}` answer.
pub(crate) fn call<Req, Resp>(
    function: &'static str,
    raw_call: impl FnOnce(&[u8]) -> Option<(usize, usize)>,
    request: &Req,
) -> Result<Resp, HostError>
where
    Req: Serialize + ?Sized,
    Resp: DeserializeOwned,
{
    let request = serde_json::to_vec(request)
        .map_err(|e| HostError::new(HostErrorCode::InvalidRequest, format!("{function}: {e}")))?;
    let Some((addr, len)) = raw_call(&request) else {
        return Err(HostError::new(
            HostErrorCode::Unavailable,
            format!("host function `{function}` exists only inside a Forge overlay (wasm32)"),
        ));
    };
    drop(request);
    let Some(response) = memory::take(addr, len) else {
        return Err(HostError::new(
            HostErrorCode::InvalidResponse,
            format!("`{function}` answered with memory that forge_alloc did not hand out"),
        ));
    };
    parse_response(function, &response)
}

/// The host's answer: exactly one of `{"ok": value}` or `{"error": {code, message}}`.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Response<T> {
    Ok(T),
    Error(HostError),
}

pub(crate) fn parse_response<T: DeserializeOwned>(function: &str, bytes: &[u8]) -> Result<T, HostError> {
    match serde_json::from_slice::<Response<T>>(bytes) {
        Ok(Response::Ok(value)) => Ok(value),
        Ok(Response::Error(error)) => Err(error),
        Err(e) => Err(HostError::new(
            HostErrorCode::InvalidResponse,
            format!("could not read the answer of `{function}`: {e}"),
        )),
    }
}

/// A host function's refusal, as the host sent it (`{"error": {"code", "message"}}`), or an SDK-side
/// failure to talk to the host ([`HostErrorCode::InvalidResponse`], [`HostErrorCode::Unavailable`]
/// on native targets).
///
/// It converts into [`crate::Error`] with `?`, so an entry point can simply propagate it:
///
/// ```
/// use forge_sdk::{Error, capsules};
///
/// fn lookup(id: &str) -> Result<String, Error> {
///     Ok(capsules::read(id)?.content)
/// }
/// // Outside a wasm guest every host function is unavailable.
/// let err = lookup("0190c1d2-0000-7000-8000-000000000000").unwrap_err();
/// assert!(err.message().starts_with("unavailable:"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostError {
    pub code: HostErrorCode,
    pub message: String,
}

impl HostError {
    pub fn new(code: HostErrorCode, message: impl Into<String>) -> Self {
        HostError { code, message: message.into() }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for HostError {}

text_enum! {
    /// Why a host function refused. Codes this SDK does not know yet are kept as
    /// [`HostErrorCode::Other`], so an older guest keeps working against a newer host.
    pub enum HostErrorCode {
        /// The request JSON was malformed (or, SDK-side, could not be serialised).
        InvalidRequest = "invalid_request",
        /// No such item, or one this overlay's trust level cannot see (the host does not tell which).
        NotFound = "not_found",
        /// The feature is not configured on this host; also every host function on native targets.
        Unavailable = "unavailable",
        /// This call used up its host calls, or the bytes they may move; later ones fail the same way.
        LimitExceeded = "limit_exceeded",
        /// `http_request` refused a request inside the manifest's patterns: its name resolved to a
        /// private, loopback or other special address no pattern names literally, a redirect left
        /// the patterns or went past 5, the response was too large, or the call sent its quota.
        NetworkDenied = "network_denied",
        /// SDK-side: the host's answer could not be read. A conforming host never causes it.
        InvalidResponse = "invalid_response",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn ok_answers_give_the_value() {
        let v: Value = parse_response("capsule_read", br#"{"ok": {"id": "x"}}"#).unwrap();
        assert_eq!(v, json!({"id": "x"}));
    }

    #[test]
    fn error_answers_give_the_host_error() {
        let err = parse_response::<Value>(
            "capsule_read",
            br#"{"error": {"code": "not_found", "message": "no capsule 1"}}"#,
        )
        .unwrap_err();
        assert_eq!(err, HostError::new(HostErrorCode::NotFound, "no capsule 1"));
        assert_eq!(err.to_string(), "not_found: no capsule 1");
    }

    #[test]
    fn unknown_codes_are_kept() {
        let err = parse_response::<Value>(
            "http_request",
            br#"{"error": {"code": "rate_limited", "message": "slow down"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code, HostErrorCode::Other("rate_limited".into()));
        assert_eq!(serde_json::to_value(&err).unwrap()["code"], "rate_limited");
    }

    #[test]
    fn garbage_is_an_invalid_response() {
        for bad in [&b"not json"[..], br#"{"maybe": 1}"#, br#"{"ok": 1, "error": 2}"#, b""] {
            let err = parse_response::<Value>("capsule_search", bad).unwrap_err();
            assert_eq!(err.code, HostErrorCode::InvalidResponse, "{:?}", String::from_utf8_lossy(bad));
            assert!(err.message.contains("capsule_search"));
        }
    }

    #[test]
    fn a_wrongly_shaped_ok_value_is_an_invalid_response() {
        let err = parse_response::<Vec<u32>>("capsule_search", br#"{"ok": {"not": "a list"}}"#).unwrap_err();
        assert_eq!(err.code, HostErrorCode::InvalidResponse);
    }

    #[test]
    fn native_calls_are_unavailable() {
        let err = call::<_, Value>("capsule_read", raw_calls::capsule_read, &json!({"id": "x"})).unwrap_err();
        assert_eq!(err.code, HostErrorCode::Unavailable);
    }

    #[test]
    fn answers_outside_our_allocations_are_refused() {
        // A (misbehaving) host answering with an address forge_alloc never handed out.
        let err = call::<_, Value>("capsule_read", |_| Some((64, 10)), &json!({})).unwrap_err();
        assert_eq!(err.code, HostErrorCode::InvalidResponse);
    }

    #[test]
    fn answers_in_our_allocations_are_read() {
        let answer = br#"{"ok": [1, 2]}"#;
        let host = |request: &[u8]| {
            assert_eq!(request, br#"{"q":1}"#);
            let ptr = memory::alloc(answer.len()).unwrap();
            // SAFETY: alloc handed out answer.len() writable bytes.
            unsafe { ptr.copy_from_nonoverlapping(answer.as_ptr(), answer.len()) };
            Some((ptr.addr(), answer.len()))
        };
        assert_eq!(call::<_, Vec<u32>>("t", host, &json!({"q": 1})).unwrap(), [1, 2]);
    }
}
