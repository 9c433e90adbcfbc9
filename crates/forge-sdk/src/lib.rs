//! Write Forge overlays in Rust.
//!
//! An overlay is a WebAssembly module the Forge runtime calls with JSON arguments and that answers
//! with a JSON object (docs/abi.md, "Overlay ABI v1"). This crate does the ABI for you: write a
//! function over serde types and export it with [`entry_point!`].
//!
//! ```
//! use forge_sdk::Error;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Args {
//!     text: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Output {
//!     shouted: String,
//! }
//!
//! fn process(args: Args) -> Result<Output, Error> {
//!     if args.text.is_empty() {
//!         return Err(Error::new("nothing to shout"));
//!     }
//!     forge_sdk::log::info("shouting");
//!     Ok(Output { shouted: args.text.to_uppercase() })
//! }
//!
//! forge_sdk::entry_point!(process);
//! # let out = forge_sdk::handle(br#"{"text": "hi"}"#, process).unwrap().unwrap();
//! # assert_eq!(out, br#"{"shouted":"HI"}"#);
//! ```
//!
//! Build it as a `cdylib` with `cargo build --profile wasm --target wasm32-unknown-unknown` (or
//! `wasm32-wasip1`). The module then exports:
//!
//! - `process(ptr, len) -> i64`, from the macro: it reads the arguments, calls your function and
//!   returns its result;
//! - `forge_alloc(size) -> i32`, from this crate, with nothing to write: the host asks it for the
//!   memory it writes arguments and host answers into;
//! - `memory`, as every Rust cdylib does.
//!
//! What happens on each path:
//!
//! | situation | the call's result |
//! |---|---|
//! | arguments do not deserialise into your type | failure (`invalid_input`, the caller's fault), "invalid arguments: ..." |
//! | your function returns `Err(Error::invalid_input(..))` | failure (`invalid_input`), via `forge.reject_input` |
//! | your function returns `Err(e)` | failure (`overlay_error`) with `e`'s message, via `forge.fail` |
//! | `Ok(v)`, `v` serialises to a JSON object | success, result `v` |
//! | `Ok(v)`, `v` serialises to `null` (`None`, `()`) | success, result `null` |
//! | `Ok(v)`, `v` is anything else (array, number, ...) | failure: the ABI allows only objects |
//! | your function panics | trap (`error_kind = "trap"`) |
//!
//! Host functions have typed wrappers: [`log`], [`capsules`], [`http`]. A module imports a host
//! function only if it calls its wrapper, and the host rejects modules that import a function
//! whose capability the manifest does not request, so an overlay needs capabilities for exactly
//! what it calls. Outside a wasm guest (unit tests, doc-tests) logging goes to stderr and every
//! other host function answers [`HostErrorCode::Unavailable`].

#[macro_use]
mod text_enum;

#[cfg(all(target_arch = "wasm32", target_os = "unknown", feature = "allocator"))]
mod allocator;
/// Small calls allocate without growing memory (see `allocator.rs`); `default-features = false`
/// to bring your own.
#[cfg(all(target_arch = "wasm32", target_os = "unknown", feature = "allocator"))]
#[global_allocator]
static ALLOCATOR: allocator::TailFirst = allocator::TailFirst;

pub mod capsules;
mod host;
pub mod http;
pub mod log;
mod memory;

pub use host::{HostError, HostErrorCode};
/// Re-exported for [`serde_json::Value`], [`serde_json::Map`] and [`serde_json::json!`].
pub use serde_json;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

/// Why an entry point failed: its message becomes the failed call's `error`.
///
/// `?` converts any [`std::error::Error`] into it (a [`HostError`], a `serde_json::Error`, a
/// parse error, ...), keeping its message; [`Error::new`] makes one from text. Such failures are
/// the overlay's (`overlay_error`); [`Error::invalid_input`] says the caller's input was wrong
/// instead (`invalid_input`), which never counts toward the overlay's quarantine.
///
/// ```
/// use forge_sdk::Error;
///
/// fn parse(n: &str) -> Result<u32, Error> {
///     Ok(n.parse::<u32>()?)
/// }
/// assert_eq!(parse("12").unwrap(), 12);
/// assert_eq!(parse("x").unwrap_err().message(), "invalid digit found in string");
/// assert_eq!(Error::new(format!("bad {}", 1)).to_string(), "bad 1");
/// ```
// Like anyhow's error, it deliberately does not implement std::error::Error itself: that is what
// makes the blanket `From` possible.
pub struct Error {
    message: String,
    invalid_input: bool,
}

impl Error {
    pub fn new(message: impl fmt::Display) -> Self {
        Error { message: message.to_string(), invalid_input: false }
    }

    /// The caller's arguments are not what the entry point accepts: the call fails as
    /// `invalid_input` (through `forge.reject_input`), which is not held against the overlay.
    ///
    /// ```
    /// let err = forge_sdk::Error::invalid_input("`n` must be positive");
    /// assert!(err.is_invalid_input());
    /// assert!(!forge_sdk::Error::new("disk full").is_invalid_input());
    /// ```
    pub fn invalid_input(message: impl fmt::Display) -> Self {
        Error { message: message.to_string(), invalid_input: true }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn is_invalid_input(&self) -> bool {
        self.invalid_input
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        Error::new(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?})", self.message)
    }
}

/// Ends the call at once as a failure with `message` (`forge.fail`); nothing after it runs.
///
/// Returning `Err(Error)` from an entry point does the same and is usually clearer; this is for
/// deep inside code that cannot return an error. On native targets it panics with the message.
pub fn fail(message: &str) -> ! {
    host::fail(message)
}

/// Ends the call at once as an `invalid_input` failure (`forge.reject_input`): the caller's input
/// is wrong, which is not held against the overlay. Returning `Err(Error::invalid_input(..))` does
/// the same. On native targets it panics with the message.
pub fn reject_input(message: &str) -> ! {
    host::reject_input(message)
}

/// Runs `handler` on the JSON `input` exactly as an exported entry point does, without the ABI:
/// `Ok(Some(json))` for an object result, `Ok(None)` for `null`, `Err` for what would fail the call.
///
/// Use it to test an entry point's JSON contract natively.
///
/// ```
/// use forge_sdk::{Error, handle, serde_json::{Map, Value}};
///
/// fn keys(args: Map<String, Value>) -> Result<Option<Map<String, Value>>, Error> {
///     Ok(if args.is_empty() { None } else { Some(args) })
/// }
///
/// assert_eq!(handle(br#"{"a":1}"#, keys).unwrap().unwrap(), br#"{"a":1}"#);
/// assert_eq!(handle(b"{}", keys).unwrap(), None);
/// let err = handle(b"[1]", keys).unwrap_err();
/// assert!(err.message().starts_with("invalid arguments:"), "{err}");
///
/// fn list(_: Value) -> Result<Vec<u8>, Error> {
///     Ok(vec![1])
/// }
/// assert!(handle(b"{}", list).unwrap_err().message().contains("JSON object"));
/// ```
pub fn handle<A, O, E, F>(input: &[u8], handler: F) -> Result<Option<Vec<u8>>, Error>
where
    A: DeserializeOwned,
    O: Serialize,
    E: Into<Error>,
    F: FnOnce(A) -> Result<O, E>,
{
    let args: A =
        serde_json::from_slice(input).map_err(|e| Error::invalid_input(format!("invalid arguments: {e}")))?;
    let output = handler(args).map_err(Into::into)?;
    let json = serde_json::to_vec(&output)
        .map_err(|e| Error::new(format!("the result could not be serialised: {e}")))?;
    // serde_json writes no leading whitespace, so the first byte tells the JSON kind.
    match json.first() {
        Some(b'{') => Ok(Some(json)),
        Some(b'n') => Ok(None),
        first => {
            let kind = match first {
                Some(b'[') => "an array",
                Some(b'"') => "a string",
                Some(b't' | b'f') => "a boolean",
                _ => "a number",
            };
            Err(Error::new(format!("the result must be a JSON object (or null), not {kind}")))
        }
    }
}

/// Exports a function as an entry point of the overlay.
///
/// The function takes one argument that implements [`serde::de::DeserializeOwned`] (the call's
/// arguments) and returns `Result<T, E>` with `T: Serialize` (a struct or map, or an `Option` of
/// one for a possibly-`null` result) and `E: Into<forge_sdk::Error>`.
///
/// - `entry_point!(process);` exports `process` under its own name.
/// - `entry_point!("fail" => always_fail);` exports `always_fail` as `fail`.
///
/// Each use expands to a `(ptr: i32, len: i32) -> i64` function with `#[unsafe(export_name)]`,
/// wrapped in `const _: () = { ... };` so any number of entry points can live in one crate. The
/// name must be a valid ABI entry point (`[A-Za-z_][A-Za-z0-9_]*`, not `memory`, `forge_alloc`,
/// `_initialize` or `_start`); an invalid one fails to compile. List every exported name in the
/// manifest's `entry_points`.
///
/// ```
/// use forge_sdk::{Error, serde_json::{Map, Value, json}};
///
/// fn process(args: Map<String, Value>) -> Result<Value, Error> {
///     Ok(json!({ "echo": args }))
/// }
///
/// fn always_fail(_: Value) -> Result<(), Error> {
///     Err(Error::new("failing on purpose"))
/// }
///
/// forge_sdk::entry_point!(process);
/// forge_sdk::entry_point!("fail" => always_fail);
/// # assert!(forge_sdk::handle(b"{}", always_fail).is_err());
/// ```
///
/// ```compile_fail
/// fn f(_: forge_sdk::serde_json::Value) -> Result<(), forge_sdk::Error> { Ok(()) }
/// forge_sdk::entry_point!("forge_alloc" => f); // reserved by the ABI
/// ```
#[macro_export]
macro_rules! entry_point {
    ($handler:ident) => {
        $crate::entry_point!(::core::stringify!($handler) => $handler);
    };
    ($name:expr => $handler:expr) => {
        const _: () = {
            ::core::assert!(
                $crate::__private::is_valid_entry_point($name),
                "invalid entry point name: use [A-Za-z_][A-Za-z0-9_]*, not an ABI export such as forge_alloc"
            );

            #[unsafe(export_name = $name)]
            extern "C" fn __forge_entry_point(ptr: i32, len: i32) -> i64 {
                $crate::__private::run_entry_point($name, ptr, len, $handler)
            }
        };
    };
}

/// What [`entry_point!`] expands to. Not public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// Exports the ABI itself defines (docs/abi.md); entry points cannot use these names.
    const RESERVED: [&str; 4] = ["memory", "forge_alloc", "_initialize", "_start"];

    /// The manifest's entry point rule, at compile time.
    pub const fn is_valid_entry_point(name: &str) -> bool {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > 128 || bytes[0].is_ascii_digit() {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            if !(bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                return false;
            }
            i += 1;
        }
        let mut r = 0;
        while r < RESERVED.len() {
            if bytes_eq(bytes, RESERVED[r].as_bytes()) {
                return false;
            }
            r += 1;
        }
        true
    }

    const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    /// One call of an exported entry point: `(ptr, len)` must be a buffer `forge_alloc` handed out
    /// and the host filled (ABI step 2); anything else fails the call without reading memory.
    pub fn run_entry_point<A, O, E, F>(name: &str, ptr: i32, len: i32, handler: F) -> i64
    where
        A: DeserializeOwned,
        O: Serialize,
        E: Into<Error>,
        F: FnOnce(A) -> Result<O, E>,
    {
        // i32 is the ABI's spelling of wasm32 addresses and lengths, which are unsigned.
        let Some(input) = memory::take(ptr as u32 as usize, len as u32 as usize) else {
            fail(&format!("entry point `{name}` was called with memory that forge_alloc did not hand out"))
        };
        let result = handle(&input, handler);
        drop(input);
        match result {
            Ok(Some(json)) => memory::leak_packed(json),
            Ok(None) => 0,
            Err(error) if error.is_invalid_input() => reject_input(error.message()),
            Err(error) => fail(error.message()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::{Value, json};

    #[derive(Deserialize)]
    struct Args {
        n: u32,
    }

    #[derive(Serialize)]
    struct Out {
        double: u32,
    }

    fn double(args: Args) -> Result<Out, Error> {
        if args.n > 1000 {
            return Err(Error::new("too big"));
        }
        Ok(Out { double: args.n * 2 })
    }

    #[test]
    fn handle_runs_the_handler_on_json() {
        assert_eq!(handle(br#"{"n": 21}"#, double).unwrap().unwrap(), br#"{"double":42}"#);
    }

    #[test]
    fn handler_errors_keep_their_message() {
        assert_eq!(handle(br#"{"n": 5000}"#, double).unwrap_err().message(), "too big");
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let err = handle(br#"{"m": 1}"#, double).unwrap_err();
        assert!(err.message().starts_with("invalid arguments: missing field `n`"), "{err}");
        assert!(err.is_invalid_input(), "the caller's fault");
        let err = handle(b"not json", double).unwrap_err();
        assert!(err.message().starts_with("invalid arguments:") && err.is_invalid_input(), "{err}");
        assert!(!handle(br#"{"n": 5000}"#, double).unwrap_err().is_invalid_input(), "the overlay's own");
    }

    #[test]
    fn only_objects_and_null_are_results() {
        fn give(v: Value) -> Result<Value, Error> {
            Ok(v["give"].clone())
        }
        assert_eq!(handle(br#"{"give": {"a": 1}}"#, give).unwrap().unwrap(), br#"{"a":1}"#);
        assert_eq!(handle(br#"{"give": null}"#, give).unwrap(), None);
        assert_eq!(handle(br#"{}"#, give).unwrap(), None);
        for (input, kind) in [
            (json!({"give": [1]}), "an array"),
            (json!({"give": "s"}), "a string"),
            (json!({"give": true}), "a boolean"),
            (json!({"give": -1.5}), "a number"),
        ] {
            let err = handle(input.to_string().as_bytes(), give).unwrap_err();
            assert!(err.message().ends_with(kind), "{err}");
        }
    }

    #[test]
    fn unit_results_are_null() {
        fn nothing(_: Value) -> Result<(), Error> {
            Ok(())
        }
        assert_eq!(handle(b"{}", nothing).unwrap(), None);
    }

    #[test]
    fn host_errors_convert_with_question_mark() {
        fn lookup(_: Value) -> Result<Value, Error> {
            Ok(serde_json::to_value(capsules::read("x")?)?)
        }
        let err = handle(b"{}", lookup).unwrap_err();
        assert!(err.message().starts_with("unavailable: host function `capsule_read`"), "{err}");
    }

    #[test]
    fn handlers_may_return_any_error_type() {
        fn parse(v: Value) -> Result<Value, std::num::ParseIntError> {
            v["n"].as_str().unwrap_or("").parse::<u8>().map(|n| json!({ "n": n }))
        }
        assert_eq!(handle(br#"{"n": "7"}"#, parse).unwrap().unwrap(), br#"{"n":7}"#);
        assert!(handle(br#"{"n": "x"}"#, parse).is_err());
    }

    #[test]
    fn entry_point_names_follow_the_manifest_rule() {
        use __private::is_valid_entry_point as ok;
        assert!(ok("process") && ok("_x1") && ok("count_vowels") && ok("fail"));
        for bad in ["", "9x", "with-dash", "memory", "forge_alloc", "_initialize", "_start", "héllo"] {
            assert!(!ok(bad), "{bad}");
        }
        assert!(!ok(&"a".repeat(129)));
    }

    #[test]
    #[should_panic(expected = "overlay failed: stop")]
    fn fail_panics_natively() {
        fail("stop");
    }

    #[test]
    #[should_panic(expected = "invalid input: no such unit")]
    fn reject_input_panics_natively() {
        reject_input("no such unit");
    }

    #[test]
    fn entry_points_refuse_memory_forge_alloc_did_not_hand_out() {
        let result = std::panic::catch_unwind(|| __private::run_entry_point("process", 64, 8, double));
        let panic = result.unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("forge_alloc did not hand out"), "{message}");
    }
}
