//! `serve`: the HTTP service; `token create`: a token minted offline, against the same storage.
//!
//! Flags and their `FORGE_*` variables (clap takes a flag over its variable) override the TOML file
//! (`--config`), which overrides the defaults documented on [`ServerConfig`] and in
//! docs/configuration.md.

use clap::{Args, Subcommand};
use forge_model::{Role, TrustLevel};
use forge_server::{LogFormat, Server, ServerConfig};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the service keeps its data; shared by `serve` and `token create`.
#[derive(Args, Serialize)]
pub struct StorageArgs {
    /// TOML file of settings (keys as in docs/configuration.md), below variables and flags.
    #[arg(long, env = "FORGE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Directory of the embedded SQLite database and object store [default: ./data].
    #[arg(long, env = "FORGE_DATA_DIR", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://...` [default: SQLite at DATA_DIR/forge.db].
    #[arg(long, env = "FORGE_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
    /// `file:///dir`, a directory, or `s3://bucket[/prefix]` (endpoint and credentials from AWS_*)
    /// [default: DATA_DIR/blobs].
    #[arg(long, env = "FORGE_OBJECT_STORE", value_name = "LOCATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    object_store: Option<String>,
}

#[derive(Args, Serialize)]
pub struct ServeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    storage: StorageArgs,
    /// Address to listen on; port 0 takes a free one [default: 127.0.0.1:8000].
    #[arg(long, env = "FORGE_BIND", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    bind: Option<String>,
    /// Make this bearer token an admin's at start (idempotent).
    #[arg(long, env = "FORGE_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_token: Option<String>,
    /// Largest request body, in bytes [default: 52428800].
    #[arg(long, env = "FORGE_MAX_BODY_BYTES", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_body_bytes: Option<usize>,
    /// Invocations in flight over all overlays before 429 [default: 256].
    #[arg(long, env = "FORGE_MAX_IN_FLIGHT", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_in_flight: Option<usize>,
    /// Invocations in flight of one overlay before 429 [default: 64].
    #[arg(long, env = "FORGE_MAX_IN_FLIGHT_PER_OVERLAY", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_in_flight_per_overlay: Option<usize>,
    /// Log format on stderr: text or json [default: text].
    #[arg(long, env = "FORGE_LOG_FORMAT", value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `warn,forge_service=debug` [default: info].
    #[arg(long, env = "FORGE_LOG", value_name = "FILTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,
    /// Seconds to let requests in flight finish after SIGTERM/SIGINT [default: 30].
    #[arg(long, env = "FORGE_SHUTDOWN_GRACE_SECS", value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    shutdown_grace_secs: Option<u64>,
    /// Keep compiled overlays in `{data_dir}/compiled` across restarts [default: true].
    #[arg(long, env = "FORGE_COMPILED_CACHE", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    compiled_cache: Option<bool>,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint a token offline (no server needed) and print it. Creates the user if missing.
    Create(TokenCreateArgs),
}

#[derive(Args)]
pub struct TokenCreateArgs {
    /// Role of the token's user: admin, operator or user.
    #[arg(long)]
    role: Role,
    /// Name of the token's user [default: the role's name].
    #[arg(long)]
    name: Option<String>,
    /// Trust level of the user if it is created [default: core for admin, standard otherwise].
    #[arg(long)]
    trust: Option<TrustLevel>,
    #[command(flatten)]
    storage: StorageArgs,
}

/// Loads the configuration: defaults, then the TOML file, then `overrides` (flags and variables).
fn load(config_file: Option<&PathBuf>, overrides: &impl Serialize) -> Result<ServerConfig, ExitCode> {
    ServerConfig::load(config_file.map(PathBuf::as_path), overrides).map_err(|e| fail(&e))
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| fail(&e))
}

pub fn serve(args: ServeArgs) -> ExitCode {
    match try_serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn try_serve(args: ServeArgs) -> Result<(), ExitCode> {
    let config = load(args.storage.config.as_ref(), &args)?;
    forge_server::init_logging(config.log_format, &config.log).map_err(|e| fail(&format!("{e:#}")))?;
    runtime()?.block_on(async {
        let shutdown = forge_server::shutdown_signal().map_err(|e| fail(&e))?;
        let server = Server::start(&config).await.map_err(|e| fail(&format!("{e:#}")))?;
        let address = server.local_addr().map_err(|e| fail(&e))?;
        tracing::info!(%address, "listening");
        // The one line on stdout; `demo` and the tests read the address from it.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{address}")
            .and_then(|()| stdout.flush())
            .map_err(|e| fail(&e))?;
        drop(stdout);
        server.run(shutdown).await.map_err(|e| fail(&format!("{e:#}")))
    })
}

pub fn token(command: TokenCommand) -> ExitCode {
    let TokenCommand::Create(args) = command;
    match try_create_token(args) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn try_create_token(args: TokenCreateArgs) -> Result<String, ExitCode> {
    let config = load(args.storage.config.as_ref(), &args.storage)?;
    let name = args.name.unwrap_or_else(|| args.role.as_str().to_owned());
    let trust =
        args.trust.unwrap_or(if args.role == Role::Admin { TrustLevel::Core } else { TrustLevel::Standard });
    runtime()?
        .block_on(forge_server::mint_token(&config, &name, args.role, trust))
        .map_err(|e| fail(&format!("{e:#}")))
}
