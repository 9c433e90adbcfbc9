//! Client commands: `overlay ...`, `capsule ...` and `user create` against a running server.
//!
//! Each command is one request (two when an overlay is named `NAME@VERSION` and the endpoint wants
//! its id). Human output by default; `--json` prints the response's `data` for scripts.

pub mod api;
pub mod render;

use api::{Api, EXIT_REFUSED, Failure, OverlayRef, Reply};
use clap::{Args, Subcommand};
use forge_model::manifest::limits::ENTRY_POINT_DEFAULT;
use forge_model::{
    AuditEvent, CapabilityName, CapsuleHit, CapsuleType, LifecycleAction, Overlay, OverlayFilter,
    OverlayInvocation, OverlayResult, OverlayState, Role, TrustLevel, User,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
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
    #[arg(long, default_value = "{}", value_parser = json_object)]
    args: Map<String, Value>,
    /// Wall-clock limit of this call in ms (100..=30000), below the manifest's max_execution_ms.
    #[arg(long)]
    timeout_ms: Option<u32>,
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
        #[arg(long, value_parser = json_object)]
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
}

pub fn overlay(args: OverlayArgs) -> ExitCode {
    run(&args.connection, |api, out| overlay_command(api, out, args.command))
}

pub fn capsule(args: CapsuleArgs) -> ExitCode {
    run(&args.connection, |api, out| capsule_command(api, out, args.command))
}

pub fn user(args: UserArgs) -> ExitCode {
    run(&args.connection, |api, out| user_command(api, out, args.command))
}

fn run(connection: &Connection, command: impl FnOnce(&Api, Output) -> Result<ExitCode, Failure>) -> ExitCode {
    Api::new(&connection.url, connection.token.clone())
        .and_then(|api| command(&api, Output { json: connection.json }))
        .unwrap_or_else(|failure| failure.report())
}

/// How answers are printed.
#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    /// Prints the answer's data as JSON, or as `T` through its human renderer.
    fn show<T: DeserializeOwned>(
        self,
        reply: &Reply,
        render: impl FnOnce(&T) -> String,
    ) -> Result<(), Failure> {
        if self.json {
            if !reply.data.is_null() {
                println!("{}", serde_json::to_string_pretty(&reply.data).expect("JSON values serialise"));
            }
        } else {
            print!("{}", render(&reply.parse()?));
        }
        Ok(())
    }
}

fn overlay_command(api: &Api, out: Output, command: OverlayCommand) -> Result<ExitCode, Failure> {
    use LifecycleAction as A;
    use OverlayCommand as C;
    match command {
        C::Register { wasm, manifest, source_hash } => {
            let manifest = String::from_utf8(read(&manifest)?)
                .map_err(|_| Failure::Usage(format!("{} is not UTF-8 text", manifest.display())))?;
            out.show(&api.register(manifest, read(&wasm)?, source_hash)?, render::overlay)
        }
        C::List { state, submitter, name, capability, paging } => {
            let filter = OverlayFilter { state, submitter, name, capability };
            let reply = api.list_overlays(&filter, &paging)?;
            out.show(&reply, |items: &Vec<Overlay>| render::overlays(items, reply.meta.as_ref()))
        }
        C::Show { overlay, name, version } => {
            let overlay = match (overlay, name, version) {
                (Some(overlay), _, _) => overlay,
                (None, Some(name), Some(version)) => OverlayRef::Version { name, version },
                _ => unreachable!("clap requires an overlay or both --name and --version"),
            };
            out.show(&api.overlay(&overlay)?, render::overlay)
        }
        C::Activate(args) => transition(api, out, A::Activate, args),
        C::Suspend(args) => transition(api, out, A::Suspend, args),
        C::Resume(args) => transition(api, out, A::Resume, args),
        C::Quarantine(args) => transition(api, out, A::Quarantine, args),
        C::Release(args) => transition(api, out, A::Release, args),
        C::Deprecate(args) => transition(api, out, A::Deprecate, args),
        C::Delete(args) => {
            let id = api.resolve(&args.overlay)?;
            api.delete(id, args.reason.as_deref())?;
            if !out.json {
                println!("Deleted overlay {id}; its audit trail stays.");
            }
            Ok(())
        }
        C::Invoke(args) => return invoke(api, out, args),
        C::Health { overlay } => out.show(&api.health(api.resolve(&overlay)?)?, render::health),
        C::Events { overlay, paging } => {
            let reply = api.events(api.resolve(&overlay)?, &paging)?;
            out.show(&reply, |items: &Vec<AuditEvent>| render::events(items, reply.meta.as_ref()))
        }
        C::Trust { overlay, level, reason } => {
            let reply = api.set_trust_level(api.resolve(&overlay)?, level, reason.as_deref())?;
            out.show(&reply, |o: &Overlay| {
                format!("{}@{} now has trust level {}.\n", o.manifest.name, o.manifest.version, o.trust_level)
            })
        }
    }?;
    Ok(ExitCode::SUCCESS)
}

fn transition(api: &Api, out: Output, action: LifecycleAction, args: ActionArgs) -> Result<(), Failure> {
    let reply = api.transition(api.resolve(&args.overlay)?, action, args.reason.as_deref())?;
    out.show(&reply, |o: &Overlay| {
        format!("{}@{} ({}) is now {}.\n", o.manifest.name, o.manifest.version, o.id, o.state)
    })
}

/// Prints the result whether or not the overlay succeeded; a failed overlay exits 1.
fn invoke(api: &Api, out: Output, args: InvokeArgs) -> Result<ExitCode, Failure> {
    let invocation =
        OverlayInvocation { function: args.function, args: args.args, timeout_ms: args.timeout_ms };
    let reply = match (&args.overlay, &args.name) {
        (Some(overlay), _) => api.invoke(api.resolve(overlay)?, &invocation)?,
        (None, Some(name)) => api.invoke_by_name(name, &invocation)?,
        (None, None) => unreachable!("clap requires an overlay or --name"),
    };
    let result: OverlayResult = reply.parse()?;
    out.show(&reply, render::result)?;
    Ok(if result.success { ExitCode::SUCCESS } else { ExitCode::from(EXIT_REFUSED) })
}

fn capsule_command(api: &Api, out: Output, command: CapsuleCommand) -> Result<ExitCode, Failure> {
    match command {
        CapsuleCommand::Add { content, capsule_type, trust_level, metadata } => {
            let content = if content == "-" { read_stdin()? } else { content };
            let reply = api.add_capsule(&content, capsule_type, trust_level, metadata.as_ref())?;
            out.show(&reply, render::capsule)?;
        }
        CapsuleCommand::Get { id } => out.show(&api.capsule(id)?, render::capsule)?,
        CapsuleCommand::Search { query, limit } => {
            out.show(&api.search_capsules(&query, limit)?, |hits: &Vec<CapsuleHit>| render::hits(hits))?
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn user_command(api: &Api, out: Output, command: UserCommand) -> Result<ExitCode, Failure> {
    let UserCommand::Create { name, roles, trust_level } = command;
    #[derive(Deserialize)]
    struct Created {
        user: User,
        token: String,
    }
    out.show(&api.create_user(&name, &roles, trust_level)?, |c: &Created| {
        render::created_user(&c.user, &c.token)
    })?;
    Ok(ExitCode::SUCCESS)
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))
}

fn read_stdin() -> Result<String, Failure> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Failure::Usage(format!("cannot read standard input: {e}")))?;
    Ok(text)
}

/// Parses a flag's value as a JSON object (`--args`, `--metadata`).
fn json_object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(r#"must be a JSON object, e.g. '{"text": "hello"}'"#.into()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}
