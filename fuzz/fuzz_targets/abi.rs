//! The ABI boundary under a hostile guest: a module built from the fuzzer's input whose
//! `forge_alloc` returns a fuzz-chosen pointer, whose entry point returns a fuzz-chosen
//! `(ptr << 32) | len` (or the raw response of its last host call), and which calls `forge`
//! host functions with fuzz-chosen pointers, lengths and request bytes (held in a data segment).
//! Run through `Runtime::invoke` with in-memory capsules and no network: the call must end within
//! its deadline and fuel, without panicking, with a well-formed `OverlayResult`.
#![no_main]

use arbitrary::Arbitrary;
use forge_model::{OverlayInvocation, OverlayManifest, TrustLevel};
use forge_runtime::{HostServices, OverlayIdentity, Runtime, RuntimeConfig};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Where the data segment starts; the bytes before it stay zero.
const DATA_AT: u32 = 64;
const MAX_DATA: usize = 4096;
const MAX_CALLS: usize = 6;
/// The call's deadline (the manifest's minimum `max_execution_ms`) and fuel.
const DEADLINE_MS: u32 = 100;
const FUEL: u64 = 200_000;

#[derive(Arbitrary, Debug)]
enum Pointer {
    /// Into the data segment, at this offset (modulo its length).
    Data(u16),
    /// Anywhere, out of bounds included.
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Length {
    /// The rest of the data segment from the pointer.
    Rest,
    Short(u8),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Output {
    /// Returns `pack(ptr, len)`.
    Packed(Pointer, Length),
    /// Returns this i64 as it is.
    Raw(u64),
    /// Returns the i64 the last request / response host call returned (its response, packed).
    LastResponse,
    /// Traps.
    Unreachable,
    /// Spins until the deadline or the fuel stops it.
    Spin,
}

#[derive(Arbitrary, Debug)]
struct HostCall {
    function: u8,
    ptr: Pointer,
    len: Length,
}

#[derive(Arbitrary, Debug)]
struct Guest {
    memory_pages: u8,
    alloc: Option<Pointer>,
    calls: Vec<HostCall>,
    output: Output,
    data: Vec<u8>,
}

const FUNCTIONS: [&str; 5] = ["log_info", "log_error", "capsule_read", "capsule_search", "http_request"];

impl Guest {
    fn pointer(&self, p: &Pointer) -> u32 {
        match *p {
            Pointer::Data(offset) if self.data.is_empty() => DATA_AT + u32::from(offset),
            Pointer::Data(offset) => DATA_AT + u32::from(offset) % self.data.len() as u32,
            Pointer::Raw(raw) => raw,
        }
    }

    fn length(&self, ptr: u32, l: &Length) -> u32 {
        match *l {
            Length::Rest => (DATA_AT + self.data.len() as u32).saturating_sub(ptr),
            Length::Short(n) => u32::from(n),
            Length::Raw(raw) => raw,
        }
    }

    fn wat(&self) -> String {
        let data: String = self.data.iter().take(MAX_DATA).map(|b| format!("\\{b:02x}")).collect();
        let pages = 1 + u32::from(self.memory_pages % 3);
        let alloc = match &self.alloc {
            // A bump allocator past the data segment.
            None => "(local.set $p (global.get $next)) \
                     (global.set $next (i32.add (global.get $next) (local.get $size))) (local.get $p)"
                .to_owned(),
            Some(p) => format!("(i32.const {})", self.pointer(p) as i32),
        };
        let mut body = String::new();
        for call in self.calls.iter().take(MAX_CALLS) {
            let function = FUNCTIONS[usize::from(call.function) % FUNCTIONS.len()];
            let ptr = self.pointer(&call.ptr);
            let len = self.length(ptr, &call.len);
            let invoke = format!("(call ${function} (i32.const {}) (i32.const {}))", ptr as i32, len as i32);
            if function.starts_with("log_") {
                body.push_str(&invoke);
            } else {
                body.push_str(&format!("(local.set $last {invoke})"));
            }
            body.push('\n');
        }
        let result = match &self.output {
            Output::Packed(p, l) => {
                let ptr = self.pointer(p);
                let len = self.length(ptr, l);
                format!("(i64.const {})", ((u64::from(ptr) << 32) | u64::from(len)) as i64)
            }
            Output::Raw(raw) => format!("(i64.const {})", *raw as i64),
            Output::LastResponse => "(local.get $last)".to_owned(),
            Output::Unreachable => "(unreachable)".to_owned(),
            Output::Spin => "(loop $l (br $l)) (i64.const 0)".to_owned(),
        };
        format!(
            r#"(module
  (import "forge" "log_info" (func $log_info (param i32 i32)))
  (import "forge" "log_error" (func $log_error (param i32 i32)))
  (import "forge" "capsule_read" (func $capsule_read (param i32 i32) (result i64)))
  (import "forge" "capsule_search" (func $capsule_search (param i32 i32) (result i64)))
  (import "forge" "http_request" (func $http_request (param i32 i32) (result i64)))
  (memory (export "memory") {pages})
  (global $next (mut i32) (i32.const {next}))
  (data (i32.const {DATA_AT}) "{data}")
  (func (export "forge_alloc") (param $size i32) (result i32) (local $p i32) {alloc})
  (func (export "process") (param i32 i32) (result i64) (local $last i64)
    {body}
    {result}))"#,
            next = DATA_AT + MAX_DATA as u32,
        )
    }
}

struct World {
    runtime: Runtime,
    manifest: OverlayManifest,
    identity: OverlayIdentity,
    io: tokio::runtime::Runtime,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let config = RuntimeConfig { max_instances: 4, module_cache_entries: 1, ..RuntimeConfig::default() };
        let runtime = Runtime::new(config, HostServices::default()).expect("runtime starts");
        let manifest = OverlayManifest::parse(&format!(
            "name = \"fuzz\"\nversion = \"1.0.0\"\nmax_memory_mb = 1\nmax_execution_ms = {DEADLINE_MS}\n\
             max_fuel = {FUEL}\ncapabilities = [\"capsule:read\", \
             {{ name = \"network:http\", constraints = {{ hosts = [\"api.example.com\"] }} }}]"
        ))
        .expect("manifest");
        let identity =
            OverlayIdentity { id: None, name: Arc::from("fuzz"), trust_level: TrustLevel::Standard };
        let io = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
        World { runtime, manifest, identity, io }
    })
}

fuzz_target!(|guest: Guest| {
    let world = world();
    let wasm = wat::parse_str(guest.wat()).expect("the generated guest is valid WAT");
    let prepared = world.runtime.prepare(&world.manifest, &wasm).expect("the generated guest registers");
    let args = serde_json::Map::from_iter([("q".to_owned(), serde_json::Value::from("fuzz"))]);
    let invocation = OverlayInvocation::new("process", args);
    let started = Instant::now();
    let outcome = world
        .io
        .block_on(world.runtime.invoke(&prepared, &world.identity, &invocation))
        .expect("the invocation is accepted");
    let elapsed = started.elapsed();
    // The call ends: well within a second past its deadline of DEADLINE_MS.
    assert!(elapsed < Duration::from_millis(u64::from(DEADLINE_MS) + 2_000), "call took {elapsed:?}");
    let result = outcome.result;
    assert!(result.fuel_consumed <= FUEL, "fuel {} over the limit {FUEL}", result.fuel_consumed);
    assert!(result.execution_time_ms >= 0.0 && result.execution_time_ms.is_finite());
    if result.success {
        assert!(result.error.is_none() && result.error_kind.is_none(), "success with an error: {result:?}");
    } else {
        assert!(result.error.is_some() && result.error_kind.is_some(), "failure without a kind: {result:?}");
        assert!(result.result.is_none(), "failure with a result: {result:?}");
    }
    // It serializes to JSON, and reads back as the same result.
    let json = serde_json::to_string(&result).expect("the result serializes");
    let back: forge_model::OverlayResult = serde_json::from_str(&json).expect("the result reads back");
    assert_eq!(back.success, result.success);
    assert_eq!(back.error, result.error);
});
