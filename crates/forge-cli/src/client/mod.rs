//! Client commands: `overlay ...`, `capsule ...` and `user ...` against a running server.
//!
//! Each command is one request (two when an overlay is named `NAME@VERSION` and the endpoint wants
//! its id). Human output by default; `--json` prints the response's `data` for scripts.

mod failure;
pub mod render;

pub use failure::Failure;

use crate::input;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use failure::EXIT_REFUSED;
use forge_client::Client;
use forge_model::api::{ListQuery, LogsQuery, PageQuery, SearchQuery, TrustLevelBody};
use forge_model::manifest::limits::ENTRY_POINT_DEFAULT;
use forge_model::{
    CapabilityName, CapsuleType, LifecycleAction, LogLevel, LogQuery, NewCapsule, NewUser, Overlay,
    OverlayFilter, OverlayInvocation, OverlayState, Role, TrustLevel,
};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

const EXIT_CODES: &str = "\
Exit status:
  0  done
  1  the server refused the request (its message and error code are printed), or the invoked
     overlay failed (its result is printed)
  2  usage error, or the server could not be reached or did not answer with Forge's API";

/// Where the server is, who is asking and how to print; shared by every client subcommand.
#[derive(Args)]
#[command(next_help_heading = "Server")]
pub struct Connection {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "FORGE_URL",
        default_value = "http://127.0.0.1:8000",
        hide_env_values = true
    )]
    url: String,
    /// API token, sent as `Authorization: Bearer`.
    #[arg(long, global = true, env = "FORGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the response's data as JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Args)]
#[command(after_help = EXIT_CODES, mut_subcommands = |c: clap::Command| c.after_help(EXIT_CODES))]
pub struct OverlayArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: OverlayCommand,
}

#[derive(Args)]
#[command(after_help = EXIT_CODES, mut_subcommands = |c: clap::Command| c.after_help(EXIT_CODES))]
pub struct CapsuleArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: CapsuleCommand,
}

#[derive(Args)]
#[command(after_help = EXIT_CODES, mut_subcommands = |c: clap::Command| c.after_help(EXIT_CODES))]
pub struct UserArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: UserCommand,
}

/// Which page of a list to fetch; the server's defaults apply when absent (page 1, 20 per page).
#[derive(Args, Debug, Default)]
pub struct Paging {
    #[arg(long)]
    pub page: Option<u32>,
    /// Items per page (at most 100).
    #[arg(long)]
    pub per_page: Option<u32>,
}

impl Paging {
    pub fn query(&self) -> PageQuery {
        PageQuery { page: self.page, per_page: self.per_page }
    }
}

/// An overlay named on the command line: its id, or `NAME@VERSION`.
#[derive(Debug, Clone)]
pub enum OverlayRef {
    Id(Uuid),
    Version { name: String, version: String },
}

impl FromStr for OverlayRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(id) = s.parse() {
            return Ok(OverlayRef::Id(id));
        }
        match s.rsplit_once('@') {
            Some((name, version)) if !name.is_empty() && !version.is_empty() => {
                Ok(OverlayRef::Version { name: name.into(), version: version.into() })
            }
            _ => Err(format!("`{s}` is neither an overlay id (UUID) nor NAME@VERSION")),
        }
    }
}

impl OverlayRef {
    fn fetch(&self, client: &Client) -> Result<Overlay, Failure> {
        Ok(match self {
            OverlayRef::Id(id) => client.overlay(*id)?,
            OverlayRef::Version { name, version } => client.overlay_by_name_version(name, version)?,
        })
    }

    /// The overlay's id (one request for `NAME@VERSION`).
    fn resolve(&self, client: &Client) -> Result<Uuid, Failure> {
        match self {
            OverlayRef::Id(id) => Ok(*id),
            named => Ok(named.fetch(client)?.id),
        }
    }
}

/// An overlay (its id or NAME@VERSION) and why an action is taken.
#[derive(Args)]
pub struct ActionArgs {
    /// The overlay: its id, or NAME@VERSION.
    overlay: OverlayRef,
    /// Why; kept in the audit trail. Required to suspend or quarantine.
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Subcommand)]
pub enum OverlayCommand {
    /// Upload a module and its manifest; the overlay starts pending, at sandbox trust.
    Register {
        /// The module: a `.wasm` binary (or `.wat` text).
        #[arg(long)]
        wasm: PathBuf,
        /// The manifest, `overlay.toml` (or JSON).
        #[arg(long)]
        manifest: PathBuf,
        /// Hex hash of the source the module was built from, for provenance.
        #[arg(long)]
        source_hash: Option<String>,
    },
    /// List overlays, optionally filtered.
    List {
        #[arg(long)]
        state: Option<OverlayState>,
        /// Who registered them.
        #[arg(long)]
        submitter: Option<String>,
        /// Part of the name.
        #[arg(long)]
        name: Option<String>,
        /// A capability they hold, e.g. capsule:write.
        #[arg(long)]
        capability: Option<CapabilityName>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show one overlay, by id, NAME@VERSION, or --name and --version.
    Show {
        /// The overlay: its id, or NAME@VERSION.
        #[arg(required_unless_present = "name", conflicts_with = "name")]
        overlay: Option<OverlayRef>,
        #[arg(long, requires = "version")]
        name: Option<String>,
        #[arg(long, requires = "name")]
        version: Option<String>,
    },
    /// Approve a pending overlay so it can be invoked (admin).
    Activate(ActionArgs),
    /// Stop an active overlay for now (admin or operator; needs --reason).
    Suspend(ActionArgs),
    /// Make a suspended overlay active again (admin).
    Resume(ActionArgs),
    /// Stop an overlay as unsafe (admin or operator; needs --reason).
    Quarantine(ActionArgs),
    /// Put a quarantined overlay back to active with fresh health counters (admin).
    Release(ActionArgs),
    /// Retire an overlay for good; its history stays (admin).
    Deprecate(ActionArgs),
    /// Delete an overlay and its module; its audit trail stays (admin).
    Delete(ActionArgs),
    /// Run one entry point of an overlay on the server and print its result.
    Invoke(InvokeArgs),
    /// Health counters, failure rate and latency of an overlay.
    Health {
        /// The overlay: its id, or NAME@VERSION.
        overlay: OverlayRef,
    },
    /// The audit trail of an overlay: who did what, when and why.
    Events {
        /// The overlay: its id, or NAME@VERSION.
        overlay: OverlayRef,
        #[command(flatten)]
        paging: Paging,
    },
    /// What an overlay logged, oldest first: its invocations' lines and failures (its submitter,
    /// admins and operators).
    Logs(LogsArgs),
    /// Set the trust level of an overlay (admin).
    Trust {
        /// The overlay: its id, or NAME@VERSION.
        overlay: OverlayRef,
        /// core, trusted, standard, sandbox or quarantine.
        level: TrustLevel,
        /// Why; kept in the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Args)]
pub struct InvokeArgs {
    /// The overlay: its id, or NAME@VERSION.
    #[arg(required_unless_present = "name", conflicts_with = "name")]
    overlay: Option<OverlayRef>,
    /// Invoke the newest active version of the overlay with this name.
    #[arg(long)]
    name: Option<String>,
    /// The entry point to call.
    #[arg(long, default_value = ENTRY_POINT_DEFAULT)]
    function: String,
    /// The arguments, a JSON object.
    #[arg(long, default_value = "{}", value_parser = input::json_object)]
    args: Map<String, Value>,
    /// Wall-clock limit of this call in ms (100..=30000), below the manifest's max_execution_ms.
    #[arg(long)]
    timeout_ms: Option<u32>,
    /// Print the lines the call logged (its submitter, admins and operators).
    #[arg(long)]
    include_logs: bool,
}

#[derive(Args)]
pub struct LogsArgs {
    /// The overlay: its id, or NAME@VERSION.
    overlay: OverlayRef,
    /// Only entries at least this serious: info (all) or error.
    #[arg(long)]
    level: Option<LogLevel>,
    /// Only the entries of this invocation (its id from the result or `X-Forge-Invocation-Id`):
    /// the whole story of one call, its lines and its failure.
    #[arg(long = "invocation", value_name = "INVOCATION_ID")]
    invocation_id: Option<Uuid>,
    /// Only entries written after this instant (RFC 3339).
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// The newest entries shown (1..=1000; the server's default is 100).
    #[arg(long)]
    limit: Option<u32>,
    /// Keep printing new entries as they arrive, until interrupted.
    #[arg(long, short)]
    follow: bool,
}

#[derive(Subcommand)]
pub enum CapsuleCommand {
    /// Store a capsule.
    Add {
        /// The content; `-` reads it from standard input.
        content: String,
        /// knowledge, code, decision, insight, config or policy.
        #[arg(long = "type", value_name = "TYPE")]
        capsule_type: CapsuleType,
        /// Who may read it (at most your own trust level); the server's default is standard.
        #[arg(long)]
        trust_level: Option<TrustLevel>,
        /// Metadata, a JSON object.
        #[arg(long, value_parser = input::json_object)]
        metadata: Option<Map<String, Value>>,
    },
    /// Show one capsule.
    Get { id: Uuid },
    /// Full-text search among the capsules your trust level can read, best first.
    Search {
        query: String,
        /// Most hits to return.
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user and print its API token, shown this once (admin).
    Create {
        /// Letters, digits, `.`, `_`, `-` or `@`.
        name: String,
        /// admin, operator or user; repeat for several.
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<Role>,
        /// At most your own; the server's default is standard.
        #[arg(long)]
        trust_level: Option<TrustLevel>,
    },
    /// List a user's API tokens, revoked ones too: ids and dates, never the tokens (admin).
    Tokens {
        name: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// Revoke every live token of a user (admin).
    RevokeTokens { name: String },
    /// Disable a user: none of its tokens works until it is enabled again (admin).
    Disable { name: String },
    /// Enable a disabled user again (admin).
    Enable { name: String },
}

pub fn overlay(args: OverlayArgs) -> ExitCode {
    run(&args.connection, |client, out| overlay_command(client, out, args.command))
}

pub fn capsule(args: CapsuleArgs) -> ExitCode {
    run(&args.connection, |client, out| capsule_command(client, out, args.command))
}

pub fn user(args: UserArgs) -> ExitCode {
    run(&args.connection, |client, out| user_command(client, out, args.command))
}

fn run(
    connection: &Connection,
    command: impl FnOnce(&Client, Output) -> Result<ExitCode, Failure>,
) -> ExitCode {
    Client::new(&connection.url, connection.token.clone())
        .map_err(Failure::from)
        .and_then(|client| command(&client, Output { json: connection.json }))
        .unwrap_or_else(|failure| failure.report())
}

/// How answers are printed.
#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    /// Prints the answer's data as JSON, or through its human renderer.
    fn show<T: Serialize + ?Sized>(self, data: &T, render: impl FnOnce(&T) -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(data).expect("model types serialise"));
        } else {
            print!("{}", render(data));
        }
    }
}

fn overlay_command(client: &Client, out: Output, command: OverlayCommand) -> Result<ExitCode, Failure> {
    use LifecycleAction as A;
    use OverlayCommand as C;
    match command {
        C::Register { wasm, manifest, source_hash } => {
            let manifest = input::read_text(&manifest).map_err(Failure::Usage)?;
            let wasm = input::read(&wasm).map_err(Failure::Usage)?;
            out.show(&client.register(manifest, wasm, source_hash)?, render::overlay);
        }
        C::List { state, submitter, name, capability, paging } => {
            let filter = OverlayFilter { state, submitter, name, capability };
            let list = client.list_overlays(&ListQuery::new(filter, paging.query()))?;
            out.show(&list.data[..], |items| render::overlays(items, Some(&list.meta)));
        }
        C::Show { overlay, name, version } => {
            let overlay = match (overlay, name, version) {
                (Some(overlay), _, _) => overlay,
                (None, Some(name), Some(version)) => OverlayRef::Version { name, version },
                _ => unreachable!("clap requires an overlay or both --name and --version"),
            };
            out.show(&overlay.fetch(client)?, render::overlay);
        }
        C::Activate(args) => transition(client, out, A::Activate, args)?,
        C::Suspend(args) => transition(client, out, A::Suspend, args)?,
        C::Resume(args) => transition(client, out, A::Resume, args)?,
        C::Quarantine(args) => transition(client, out, A::Quarantine, args)?,
        C::Release(args) => transition(client, out, A::Release, args)?,
        C::Deprecate(args) => transition(client, out, A::Deprecate, args)?,
        C::Delete(args) => {
            let id = args.overlay.resolve(client)?;
            client.delete_overlay(id, args.reason)?;
            if !out.json {
                println!("Deleted overlay {id}; its audit trail stays.");
            }
        }
        C::Invoke(args) => return invoke(client, out, args),
        C::Health { overlay } => out.show(&client.overlay_health(overlay.resolve(client)?)?, render::health),
        C::Events { overlay, paging } => {
            let list = client.events(overlay.resolve(client)?, paging.query())?;
            out.show(&list.data[..], |items| render::events(items, Some(&list.meta)));
        }
        C::Logs(args) => logs(client, out, args)?,
        C::Trust { overlay, level, reason } => {
            let body = TrustLevelBody { trust_level: level, reason };
            let overlay = client.set_trust_level(overlay.resolve(client)?, &body)?;
            out.show(&overlay, |o| {
                format!("{}@{} now has trust level {}.\n", o.manifest.name, o.manifest.version, o.trust_level)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn transition(
    client: &Client,
    out: Output,
    action: LifecycleAction,
    args: ActionArgs,
) -> Result<(), Failure> {
    let overlay = client.transition(args.overlay.resolve(client)?, action, args.reason)?;
    out.show(&overlay, |o| {
        format!("{}@{} ({}) is now {}.\n", o.manifest.name, o.manifest.version, o.id, o.state)
    });
    Ok(())
}

/// Prints the result whether or not the overlay succeeded; a failed overlay exits 1.
fn invoke(client: &Client, out: Output, args: InvokeArgs) -> Result<ExitCode, Failure> {
    let invocation = OverlayInvocation {
        function: args.function,
        args: args.args,
        timeout_ms: args.timeout_ms,
        include_logs: args.include_logs,
    };
    let result = match (&args.overlay, &args.name) {
        (Some(overlay), _) => client.invoke(overlay.resolve(client)?, &invocation)?,
        (None, Some(name)) => client.invoke_by_name(name, &invocation)?,
        (None, None) => unreachable!("clap requires an overlay or --name"),
    };
    out.show(&result, render::result);
    Ok(if result.success { ExitCode::SUCCESS } else { ExitCode::from(EXIT_REFUSED) })
}

/// How often `logs --follow` asks for new entries.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// How late an entry may reach the server (written behind the calls, by any process) and still be
/// printed by `logs --follow`: each poll asks again for this much before the newest entry seen.
const FOLLOW_LATENESS: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// Prints the matching entries oldest first (as `--json`, the API's newest-first list); with
/// `--follow`, then polls for new ones, printing each once (one JSON object per line as `--json`).
fn logs(client: &Client, out: Output, args: LogsArgs) -> Result<(), Failure> {
    let id = args.overlay.resolve(client)?;
    let mut query = LogsQuery {
        limit: args.limit,
        since: args.since,
        level: args.level,
        invocation_id: args.invocation_id,
    };
    let list = client.overlay_logs(id, &query)?;
    if !args.follow {
        out.show(&list.data[..], |entries| entries.iter().rev().map(render::log_entry).collect());
        return Ok(());
    }
    // Entries already printed, by time: those older than the lateness window are forgotten.
    let mut printed: BTreeSet<(DateTime<Utc>, Uuid, String)> = BTreeSet::new();
    let mut entries = list.data;
    loop {
        for entry in entries.into_iter().rev() {
            if printed.insert((entry.at, entry.invocation_id, entry.message.clone())) {
                if out.json {
                    println!("{}", serde_json::to_string(&entry).expect("model types serialise"));
                } else {
                    print!("{}", render::log_entry(&entry));
                }
            }
        }
        std::io::stdout().flush().map_err(|e| Failure::Usage(format!("cannot write: {e}")))?;
        if let Some((newest, _, _)) = printed.last() {
            let since = *newest - FOLLOW_LATENESS;
            printed = printed.split_off(&(since, Uuid::nil(), String::new()));
            query.since = Some(query.since.map_or(since, |asked| asked.max(since)));
        }
        query.limit = Some(LogQuery::MAX_LIMIT);
        std::thread::sleep(FOLLOW_INTERVAL);
        entries = client.overlay_logs(id, &query)?.data;
    }
}

fn capsule_command(client: &Client, out: Output, command: CapsuleCommand) -> Result<ExitCode, Failure> {
    match command {
        CapsuleCommand::Add { content, capsule_type, trust_level, metadata } => {
            let content = if content == "-" { input::read_stdin().map_err(Failure::Usage)? } else { content };
            let mut capsule = NewCapsule::new(content, capsule_type);
            capsule.trust_level = trust_level.unwrap_or(capsule.trust_level);
            capsule.metadata = metadata.unwrap_or_default();
            out.show(&client.create_capsule(&capsule)?, render::capsule);
        }
        CapsuleCommand::Get { id } => out.show(&client.capsule(id)?, render::capsule),
        CapsuleCommand::Search { query, limit } => {
            let hits = client.search_capsules(&SearchQuery { query, limit })?;
            out.show(&hits.data[..], render::hits);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn user_command(client: &Client, out: Output, command: UserCommand) -> Result<ExitCode, Failure> {
    match command {
        UserCommand::Create { name, roles, trust_level } => {
            let mut user = NewUser::new(name, roles);
            user.trust_level = trust_level.unwrap_or(user.trust_level);
            out.show(&client.create_user(&user)?, |created| {
                render::created_user(&created.user, &created.token)
            });
        }
        UserCommand::Tokens { name, paging } => {
            let list = client.user_tokens(&name, paging.query())?;
            out.show(&list.data[..], |items| render::tokens(items, &list.meta));
        }
        UserCommand::RevokeTokens { name } => {
            let revoked = client.revoke_user_tokens(&name)?;
            out.show(&revoked, |r| format!("Revoked {} tokens of {name}.\n", r.revoked));
        }
        UserCommand::Disable { name } => out.show(&client.disable_user(&name)?, render::user_access),
        UserCommand::Enable { name } => out.show(&client.enable_user(&name)?, render::user_access),
    }
    Ok(ExitCode::SUCCESS)
}
