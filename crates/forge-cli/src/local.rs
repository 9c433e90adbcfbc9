//! Local commands: an overlay on this machine, no server. In-memory capsules; `http_request` through
//! the server's own client and checks (the manifest's patterns, private and loopback addresses
//! only when a pattern names them literally), so an author can try `network:http` before
//! registering; file mounts given with `--mount`.

use crate::input;
use clap::Args;
use forge_model::{ForgeError, OverlayInvocation, OverlayManifest, TrustLevel};
use forge_runtime::{
    HostServices, InMemoryCapsules, Mount, OverlayIdentity, PreparedOverlay, Runtime, RuntimeConfig,
};
use forge_service::OutboundHttp;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// Exit status when the module or manifest was rejected before anything ran.
const REJECTED: u8 = 2;

#[derive(Args)]
pub struct ModuleArgs {
    /// The module: a `.wasm` binary or `.wat` text. Default: the one the manifest's `[build].wasm`
    /// names.
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// The manifest (`overlay.toml`, or JSON). Default: `./overlay.toml` when --wasm is not given
    /// either; with --wasm alone, defaults apply with `entry_points = [FUNCTION]`, no capabilities.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// A directory for the manifest's `file:read` / `file:write` mounts, as `NAME=DIR` (read-only)
    /// or `NAME=DIR:rw` (writable); repeat for more. Checked as `serve` checks its mounts.
    #[arg(long = "mount", value_name = "NAME=DIR[:ro|rw]")]
    mounts: Vec<Mount>,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    module: ModuleArgs,
    /// The entry point to call. Default: the manifest's first.
    #[arg(long)]
    function: Option<String>,
    /// The invocation's args, a JSON object.
    #[arg(long, default_value = "{}", value_parser = input::json_object)]
    args: Map<String, Value>,
    /// Wall-clock limit of the call (100..=30000), below the manifest's max_execution_ms.
    #[arg(long)]
    timeout_ms: Option<u32>,
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    module: ModuleArgs,
    /// The entry point to call. Default: the manifest's first.
    #[arg(long)]
    function: Option<String>,
    /// The invocation's args, a JSON object.
    #[arg(long, default_value = "{}", value_parser = input::json_object)]
    args: Map<String, Value>,
    /// Calls in total.
    #[arg(long, default_value_t = 20_000)]
    iterations: u64,
    /// Threads calling at once.
    #[arg(long, default_value_t = 1)]
    concurrency: u64,
}

/// A checked module, ready to call.
struct Loaded {
    runtime: Runtime,
    prepared: PreparedOverlay,
    identity: OverlayIdentity,
    /// The entry point to call: the one asked for, or the manifest's first.
    function: String,
}

/// Reads and checks the module, or says why not (exit 2).
fn load(module: &ModuleArgs, function: Option<&str>) -> Result<Loaded, ForgeError> {
    let (manifest, wasm_path) = match (&module.wasm, &module.manifest) {
        (Some(wasm), Some(path)) => {
            (OverlayManifest::parse(&input::read_text(path).map_err(ForgeError::validation)?)?, wasm.clone())
        }
        (Some(wasm), None) => {
            let function = function.unwrap_or(forge_model::manifest::limits::ENTRY_POINT_DEFAULT);
            (OverlayManifest::with_defaults(&default_name(wasm), function)?, wasm.clone())
        }
        (None, path) => crate::project::built_module(path.as_deref())?,
    };
    let function = function.map_or_else(|| manifest.entry_points[0].clone(), str::to_owned);
    if let Some(mount) = module.mounts.iter().find(|m| !m.dir.is_dir()) {
        return Err(ForgeError::validation(format!(
            "mount `{}`: {} is not a directory",
            mount.name,
            mount.dir.display()
        )));
    }
    let services = HostServices {
        capsules: Arc::new(InMemoryCapsules::default()),
        http: Arc::new(OutboundHttp::new()?),
    };
    let config = RuntimeConfig { mounts: module.mounts.clone(), ..RuntimeConfig::default() };
    let runtime = Runtime::new(config, services)?;
    let wasm = input::read(&wasm_path).map_err(ForgeError::validation)?;
    runtime.check_module_size(wasm.len())?;
    let wasm = forge_runtime::wasm_from_binary_or_text(&wasm)?;
    let prepared = runtime.prepare(&manifest, &wasm)?;
    let identity =
        OverlayIdentity { id: None, name: manifest.name.as_str().into(), trust_level: TrustLevel::Sandbox };
    Ok(Loaded { runtime, prepared, identity, function })
}

/// A manifest name from a file name: `My_Overlay.wasm` -> `my-overlay`.
fn default_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("overlay");
    let name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(100)
        .collect();
    if name.is_empty() { "overlay".into() } else { name }
}

fn rejected(error: &ForgeError) -> ExitCode {
    eprintln!("rejected: {}", error.message);
    ExitCode::from(REJECTED)
}

pub fn run(args: RunArgs) -> ExitCode {
    let Loaded { runtime, prepared, identity, function } = match load(&args.module, args.function.as_deref())
    {
        Ok(loaded) => loaded,
        Err(e) => return rejected(&e),
    };
    let invocation =
        OverlayInvocation { timeout_ms: args.timeout_ms, ..OverlayInvocation::new(&function, args.args) };
    let outcome = match executor(1).block_on(runtime.invoke(&prepared, &identity, &invocation)) {
        Ok(outcome) => outcome,
        Err(e) => return rejected(&e),
    };
    for line in &outcome.log.lines {
        eprintln!("[{}] {}", line.level, line.message);
    }
    if outcome.log.dropped_lines > 0 {
        eprintln!(
            "[log] {} lines ({} bytes) dropped over the log limit",
            outcome.log.dropped_lines, outcome.log.dropped_bytes
        );
    }
    println!("{}", serde_json::to_string(&outcome.result).expect("a result always serialises"));
    if outcome.result.success { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

pub fn validate(module: ModuleArgs) -> ExitCode {
    match load(&module, None) {
        Ok(Loaded { prepared, .. }) => {
            let info = prepared.info();
            let report = serde_json::json!({
                "valid": true,
                "entry_points": prepared.entry_points().collect::<Vec<_>>(),
                "host_imports": info.host_imports.iter().map(|f| f.name()).collect::<Vec<_>>(),
                "uses_wasi": info.uses_wasi,
                "initial_memory_bytes": info.initial_memory_bytes,
            });
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => rejected(&e),
    }
}

/// A Tokio runtime with `threads` workers (the current thread alone for one) to run invocations on.
fn executor(threads: usize) -> tokio::runtime::Runtime {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build().expect("cannot start the Tokio runtime")
}

pub fn bench(args: BenchArgs) -> ExitCode {
    let Loaded { runtime, prepared, identity, function } = match load(&args.module, args.function.as_deref())
    {
        Ok(loaded) => loaded,
        Err(e) => return rejected(&e),
    };
    let invocation = OverlayInvocation::new(&function, args.args);
    let threads = args.concurrency.max(1) as usize;
    let executor = executor(threads);
    match executor.block_on(runtime.invoke(&prepared, &identity, &invocation)) {
        Ok(outcome) if outcome.result.success => {}
        Ok(outcome) => {
            eprintln!("the overlay fails: {}", outcome.result.error.unwrap_or_default());
            return ExitCode::FAILURE;
        }
        Err(e) => return rejected(&e),
    }
    let call = Arc::new((runtime, prepared, identity, invocation));
    // Each task makes `calls` invocations in a row; one clock read per call, so each latency runs
    // from the end of the previous call.
    let run = |calls: u64| {
        let call = call.clone();
        async move {
            let (runtime, prepared, identity, invocation) = &*call;
            let mut latencies = Vec::with_capacity(calls as usize);
            let mut last = Instant::now();
            for _ in 0..calls {
                let outcome = runtime.invoke(prepared, identity, invocation).await;
                assert!(outcome.is_ok_and(|o| o.result.success), "a benchmark call failed");
                let now = Instant::now();
                latencies.push((now - last).as_nanos() as u64);
                last = now;
            }
            latencies
        }
    };
    // Warm the pool slots and caches the measured calls will use.
    executor.block_on(run(args.iterations.min(1000)));
    let per_task = args.iterations.div_ceil(threads as u64);
    let started = Instant::now();
    let mut latencies_ns: Vec<u64> = executor.block_on(async {
        let tasks: Vec<_> = (0..threads).map(|_| tokio::spawn(run(per_task))).collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("benchmark task panicked"));
        }
        all
    });
    let seconds = started.elapsed().as_secs_f64();
    latencies_ns.sort_unstable();
    let percentile = |q: f64| latencies_ns[((latencies_ns.len() - 1) as f64 * q) as usize] as f64 / 1e3;
    let calls = latencies_ns.len();
    let report = serde_json::json!({
        "calls": calls,
        "seconds": seconds,
        "calls_per_sec": calls as f64 / seconds,
        "p50_us": percentile(0.50),
        "p99_us": percentile(0.99),
    });
    println!("{report}");
    ExitCode::SUCCESS
}
