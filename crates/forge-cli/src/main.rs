//! `forge-overlay`: the one binary of the Forge overlay runtime.

mod local;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "forge-overlay", version, about = "Run, benchmark and validate Forge overlays")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a module and run one invocation locally; prints the OverlayResult as one JSON line.
    Run(local::RunArgs),
    /// Invoke one entry point many times, a fresh instance per call; prints throughput and latency.
    Bench(local::BenchArgs),
    /// Run the registration checks alone.
    Validate(local::ValidateArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("FORGE_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => local::run(args),
        Command::Bench(args) => local::bench(args),
        Command::Validate(args) => local::validate(args),
    }
}
