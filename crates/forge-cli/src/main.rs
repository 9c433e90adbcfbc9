//! `forge-overlay`: the one binary of the Forge overlay runtime.
//!
//! - authoring: `new` writes a project, `build` runs its manifest's build command;
//! - local, no server: `run`, `bench`, `validate` (in a project, of its manifest and module);
//! - the server: `serve`, and `token create` to mint a token offline;
//! - a client of a running server: `overlay ...`, `capsule ...`, `user ...`;
//! - `demo`: a newcomer's first five minutes against the embedded default.

mod client;
mod demo;
mod input;
mod local;
mod project;
mod serve;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "forge-overlay",
    version,
    about = "The Forge overlay runtime: run, serve and operate overlays"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new overlay project in ./NAME that builds, validates and runs as it is.
    New(project::NewArgs),
    /// Run the `[build]` command of ./overlay.toml (or --manifest) and check its module exists.
    Build(project::BuildArgs),
    /// Validate a module and run one invocation locally; prints the OverlayResult as one JSON line.
    Run(local::RunArgs),
    /// Invoke one entry point many times, a fresh instance per call; prints throughput and latency.
    Bench(local::BenchArgs),
    /// Run the registration checks alone (by default on ./overlay.toml and its [build] module).
    Validate(local::ModuleArgs),
    /// Run the HTTP service.
    Serve(serve::SettingsArgs),
    /// Manage API tokens offline, against the service's database.
    #[command(subcommand)]
    Token(serve::TokenCommand),
    /// Overlays on a running server.
    Overlay(client::OverlayArgs),
    /// Capsules on a running server.
    Capsule(client::CapsuleArgs),
    /// Users on a running server.
    User(client::UserArgs),
    /// Register the examples, invoke them, drive a failing overlay into quarantine, and tell the story.
    Demo(demo::DemoArgs),
}

/// The matches of the innermost subcommand given (`serve`, `token create`): where the settings are.
fn innermost(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => innermost(sub),
        None => matches,
    }
}

fn main() -> ExitCode {
    // The matches are kept beside the parsed command: settings need to know where each value came from.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `serve` sets up its own logging, in the format and at the level its configuration names.
    if !matches!(cli.command, Command::Serve(_)) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("FORGE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    match cli.command {
        Command::New(args) => project::new(args),
        Command::Build(args) => project::build(args),
        Command::Run(args) => local::run(args),
        Command::Bench(args) => local::bench(args),
        Command::Validate(args) => local::validate(args),
        Command::Serve(args) => serve::serve(args, innermost(&matches)),
        Command::Token(command) => serve::token(command, innermost(&matches)),
        Command::Overlay(command) => client::overlay(command),
        Command::Capsule(command) => client::capsule(command),
        Command::User(command) => client::user(command),
        Command::Demo(args) => demo::demo(args),
    }
}
