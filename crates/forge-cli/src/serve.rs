//! `serve`: the HTTP service; `token create`: a token minted offline, against the same storage.
//!
//! Both take every setting of [`ServerConfig`], where each is declared once: flags and their
//! `FORGE_*` variables (clap takes a flag over its variable) override the TOML file (`--config`),
//! which overrides the defaults.

use clap::{ArgMatches, Args, Subcommand};
use forge_model::{Role, TrustLevel};
use forge_server::{Server, ServerConfig};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The settings, and the file that may hold some of them; shared by `serve` and `token create`.
#[derive(Args)]
pub struct SettingsArgs {
    /// TOML file of settings (keys as in docs/configuration.md), below variables and flags.
    #[arg(long, env = "FORGE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: ServerConfig,
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
    settings: SettingsArgs,
}

/// Loads the configuration: defaults, then the TOML file, then variables and flags (`matches`: the
/// subcommand's, which know where each value came from).
fn load(args: &SettingsArgs, matches: &ArgMatches) -> Result<ServerConfig, ExitCode> {
    args.settings.clone().resolve(args.config.as_deref(), matches).map_err(|e| fail(&e))
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| fail(&e))
}

pub fn serve(args: SettingsArgs, matches: &ArgMatches) -> ExitCode {
    match try_serve(&args, matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn try_serve(args: &SettingsArgs, matches: &ArgMatches) -> Result<(), ExitCode> {
    let config = load(args, matches)?;
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

pub fn token(command: TokenCommand, matches: &ArgMatches) -> ExitCode {
    let TokenCommand::Create(args) = command;
    match try_create_token(args, matches) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn try_create_token(args: TokenCreateArgs, matches: &ArgMatches) -> Result<String, ExitCode> {
    let config = load(&args.settings, matches)?;
    let name = args.name.unwrap_or_else(|| args.role.as_str().to_owned());
    let trust =
        args.trust.unwrap_or(if args.role == Role::Admin { TrustLevel::Core } else { TrustLevel::Standard });
    runtime()?
        .block_on(forge_server::mint_token(&config, &name, args.role, trust))
        .map_err(|e| fail(&format!("{e:#}")))
}
