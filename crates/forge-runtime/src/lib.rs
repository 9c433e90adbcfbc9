//! Sandboxed execution of Forge overlays.
//!
//! An overlay is a core WebAssembly module speaking the Overlay ABI v1 (`docs/abi.md`). The
//! [`Runtime`] checks it against its manifest, pre-links it with exactly the host functions its
//! capabilities grant, and runs every invocation in a fresh instance with fuel, a wall-clock deadline
//! and a memory limit that hold.
//!
//! ```
//! use forge_model::{OverlayInvocation, OverlayManifest, TrustLevel};
//! use forge_runtime::{HostServices, OverlayIdentity, Runtime, RuntimeConfig};
//!
//! let wasm = wat::parse_str(r#"
//!   (module
//!     (memory (export "memory") 1)
//!     (global $next (mut i32) (i32.const 1024))
//!     (func (export "forge_alloc") (param $size i32) (result i32)
//!       (local $ptr i32)
//!       (local.set $ptr (global.get $next))
//!       (global.set $next (i32.add (global.get $next) (local.get $size)))
//!       (local.get $ptr))
//!     ;; Returns its input unchanged: {"n": 1} in, {"n": 1} out.
//!     (func (export "process") (param $ptr i32) (param $len i32) (result i64)
//!       (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
//!               (i64.extend_i32_u (local.get $len)))))
//! "#).unwrap();
//! let runtime = Runtime::new(RuntimeConfig::default(), HostServices::default()).unwrap();
//! let manifest = OverlayManifest::parse("name = \"mirror\"\nversion = \"1.0.0\"").unwrap();
//! let overlay = runtime.prepare(&manifest, &wasm).unwrap();
//! let me = OverlayIdentity { id: None, name: "mirror".into(), trust_level: TrustLevel::Sandbox };
//! let args = serde_json::json!({"n": 1}).as_object().unwrap().clone();
//! let invocation = OverlayInvocation::new("process", args);
//! let call = runtime.invoke(&overlay, &me, &invocation);
//! let outcome = tokio::runtime::Runtime::new().unwrap().block_on(call).unwrap();
//! assert!(outcome.result.success);
//! assert_eq!(outcome.result.result.unwrap()["n"], 1);
//! assert!(outcome.result.fuel_consumed > 0);
//! ```

// Layers, leaf first; a module imports only from layers before its own:
// log, config, abi -> state -> files, host -> prepared -> call -> runtime.
mod abi;
mod call;
mod config;
mod files;
mod host;
mod log;
mod prepared;
mod runtime;
mod state;

pub use abi::{GuestErrorCode, HostFunction, ModuleInfo};
pub use call::CallOutcome;
pub use config::{Mount, RuntimeConfig};
pub use host::{
    CapsuleStore, FORBIDDEN_HEADERS, HostCallError, HostServices, HttpClient, HttpRequest, HttpResponse,
    InMemoryCapsules, MAX_SEARCH_LIMIT, METHODS, NoNetwork, OutboundRequest, target_allowed,
};
pub use log::{CallLog, LOG_LINE_OVERHEAD_BYTES, MAX_LOG_LINES};
pub use prepared::PreparedOverlay;
pub use runtime::{Runtime, wasm_from_binary_or_text};
pub use state::OverlayIdentity;
