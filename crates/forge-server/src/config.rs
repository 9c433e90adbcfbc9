//! `ServerConfig`: every setting of `forge-overlay serve`, each declared once, on its field: the
//! doc comment is its help, the `arg` attribute its flag, variable and default, the name its TOML key.
//!
//! Settings come from, lowest precedence first: the defaults below, a TOML file (`--config FILE` or
//! `FORGE_CONFIG`), environment variables (`FORGE_` and the field name in upper case, e.g.
//! `FORGE_MAX_BODY_BYTES`), and command-line flags (`--max-body-bytes`). docs/configuration.md has
//! the same table for operators (a test keeps the two in step).

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, Command, FromArgMatches};
use forge_model::network::HostPattern;
use forge_model::{LogRetention, QuarantinePolicy};
use forge_service::ServiceConfig;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Shortest `admin_token` accepted: a guessable admin token would open the whole API.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// How `serve` is set up. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, `HOST:PORT` (the default: this machine only).
    ///
    /// Port 0 takes a free port; the line `listening on http://HOST:PORT` printed at start names it.
    #[arg(long, env = "FORGE_BIND", value_name = "ADDR", default_value = "127.0.0.1:8000")]
    pub bind: String,

    /// Directory of the embedded defaults: the SQLite database `forge.db`, the object store `blobs/`
    /// and the compiled-module cache `compiled/`, created if missing. A relative path is taken from
    /// the working directory at start.
    #[arg(long, env = "FORGE_DATA_DIR", value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// The metadata database: `sqlite://PATH` or `postgres://user:password@host:port/database`.
    /// Default: SQLite at `{data_dir}/forge.db`.
    ///
    /// Several server processes can share one PostgreSQL database (and one S3 bucket); SQLite is for
    /// one process.
    #[arg(long, env = "FORGE_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Where overlay binaries are kept: `file:///abs/dir`, a directory path, or `s3://bucket[/prefix]`.
    /// Default: the directory `{data_dir}/blobs`.
    ///
    /// For S3, endpoint and credentials come from the standard `AWS_*` variables (`AWS_ENDPOINT_URL`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`).
    #[arg(long, env = "FORGE_OBJECT_STORE", value_name = "LOCATION")]
    pub object_store: Option<String>,

    /// A bearer token made an admin's (user `admin`, trust `core`) at start; idempotent, so the same
    /// value can be given at every start. At least 16 characters: it opens everything.
    ///
    /// Without it, mint a token with `forge-overlay token create --role admin`.
    #[arg(long, env = "FORGE_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Largest registration body accepted, in bytes; larger ones get 413 `payload_too_large`.
    /// Default: room for a module of `max_module_bytes` base64-encoded in JSON, and 64 KiB for the
    /// manifest (22,435,160 bytes with the default module cap).
    ///
    /// The other routes have limits of their own, derived from what they carry: an invocation the
    /// runtime's input cap (1 MiB) plus 64 KiB, a capsule twice its content and metadata caps (JSON
    /// escaping) plus 64 KiB, anything else 64 KiB.
    #[arg(long, env = "FORGE_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Request body bytes being received at once, over all requests (each request reserves its
    /// declared length, or its route's limit when it declares none). A request that finds no room
    /// waits up to 5 s, then gets 429 with `Retry-After`.
    ///
    /// Bounds the memory that bodies take while they are read and parsed (a parsed body can take a
    /// few times its size), whatever the number of clients. Default: 256 MiB.
    #[arg(long, env = "FORGE_MAX_BODY_BYTES_IN_FLIGHT", value_name = "BYTES", default_value_t = 256 << 20)]
    pub max_body_bytes_in_flight: usize,

    /// Seconds a request body may take to arrive whole, once it has room in the body budget; a
    /// body still arriving then is refused (422) and its room given back, so clients trickling
    /// bodies cannot hold the budget. Default: 60 (a 22 MB registration at 3 Mbit/s).
    #[arg(long, env = "FORGE_BODY_READ_TIMEOUT_SECS", value_name = "SECS", default_value_t = 60)]
    pub body_read_timeout_secs: u64,

    /// Open connections at once. Past it, new connections wait in the listen backlog until one
    /// closes. Keep it below the process's open-file limit (`ulimit -n`). Default: 1000.
    #[arg(long, env = "FORGE_MAX_CONNECTIONS", value_name = "N", default_value_t = 1000)]
    pub max_connections: usize,

    /// Seconds a client has to send a request's headers, counted from the connection's opening or
    /// from the end of the previous response: it is also how long an idle keep-alive connection
    /// stays open. Slow or silent clients are disconnected. Default: 10.
    #[arg(long, env = "FORGE_HEADER_READ_TIMEOUT_SECS", value_name = "SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// Unknown tokens one client address may have looked up per minute; past it, its requests with
    /// tokens not already verified get 429 until its minute is over, without a database lookup.
    /// Clients behind one proxy address share it.
    #[arg(
        long,
        env = "FORGE_FAILED_AUTH_PER_MINUTE",
        value_name = "N",
        default_value_t = ServiceConfig::default().failed_auth_per_minute
    )]
    pub failed_auth_per_minute: u32,

    /// Invocations running at once in this process, over all overlays; past it, 429 with
    /// `Retry-After`. At most the runtime's instance pool (1000).
    #[arg(
        long,
        env = "FORGE_MAX_IN_FLIGHT",
        value_name = "N",
        default_value_t = ServiceConfig::default().max_in_flight
    )]
    pub max_in_flight: usize,

    /// Invocations of one overlay running at once, so one busy overlay cannot take every slot; past
    /// it, 429.
    #[arg(
        long,
        env = "FORGE_MAX_IN_FLIGHT_PER_OVERLAY",
        value_name = "N",
        default_value_t = ServiceConfig::default().max_in_flight_per_overlay
    )]
    pub max_in_flight_per_overlay: usize,

    /// How many of an overlay's most recent calls the quarantine rule judges (at least 10 of them,
    /// more than half failed: quarantined), between 10 and 10000. Host and caller faults are not
    /// in it.
    ///
    /// Smaller reacts faster to an overlay that starts failing but judges on fewer calls; larger is
    /// steadier but lets a failing overlay run longer after a good past, and costs a byte per call in
    /// its database row.
    #[arg(
        long,
        env = "FORGE_QUARANTINE_WINDOW_CALLS",
        value_name = "N",
        default_value_t = QuarantinePolicy::default().window_calls
    )]
    pub quarantine_window_calls: u32,

    /// Log entries kept per overlay (the newest; lines its calls logged and their failures), in the
    /// database so every process serves them; at least 1.
    ///
    /// More keeps a longer story per overlay, at the cost of database space and slower log reads.
    #[arg(
        long,
        env = "FORGE_LOG_RETENTION_ENTRIES",
        value_name = "N",
        default_value_t = ServiceConfig::default().log_retention.max_entries
    )]
    pub log_retention_entries: u64,

    /// Bytes of log messages kept per overlay, whichever of this and `log_retention_entries` is
    /// reached first; at least 1.
    #[arg(
        long,
        env = "FORGE_LOG_RETENTION_BYTES",
        value_name = "BYTES",
        default_value_t = ServiceConfig::default().log_retention.max_bytes
    )]
    pub log_retention_bytes: u64,

    /// Sum, in MiB, of the `max_memory_mb` of the invocations running at once; past it, 429. Default:
    /// half of the machine's physical memory, read at start.
    #[arg(long, env = "FORGE_MEMORY_BUDGET_MB", value_name = "MIB")]
    pub memory_budget_mb: Option<u64>,

    /// Largest overlay module accepted, in bytes, checked before it is parsed; larger ones get 413
    /// `payload_too_large` naming this limit.
    #[arg(
        long,
        env = "FORGE_MAX_MODULE_BYTES",
        value_name = "BYTES",
        default_value_t = forge_runtime::RuntimeConfig::default().max_module_bytes
    )]
    pub max_module_bytes: usize,

    /// Module compilations (registrations, first calls of an overlay) running at once. Default: the
    /// number of CPU cores.
    #[arg(long, env = "FORGE_MAX_CONCURRENT_COMPILATIONS", value_name = "N")]
    pub max_concurrent_compilations: Option<usize>,

    /// Milliseconds a compilation waits for its turn before the request gets 429 with `Retry-After`.
    #[arg(
        long,
        env = "FORGE_COMPILE_WAIT_MS",
        value_name = "MS",
        default_value_t = ServiceConfig::default().compile_wait.as_millis() as u64
    )]
    pub compile_wait_ms: u64,

    /// Overlays one user (not an admin) may register per minute, as a burst of this many refilled
    /// evenly over the minute; past it, 429 with `Retry-After`.
    #[arg(
        long,
        env = "FORGE_REGISTRATIONS_PER_MINUTE",
        value_name = "N",
        default_value_t = ServiceConfig::default().registrations_per_minute
    )]
    pub registrations_per_minute: u32,

    /// Request / response host calls (`capsule_*`, `http_request`) one invocation may make; later
    /// ones are answered `limit_exceeded` without any work done.
    #[arg(
        long,
        env = "FORGE_MAX_HOST_CALLS",
        value_name = "N",
        default_value_t = forge_runtime::RuntimeConfig::default().max_host_calls
    )]
    pub max_host_calls: u32,

    /// Request and response bytes those host calls may move in one invocation; once reached, later
    /// ones are answered `limit_exceeded`.
    #[arg(
        long,
        env = "FORGE_MAX_HOST_CALL_BYTES",
        value_name = "BYTES",
        default_value_t = forge_runtime::RuntimeConfig::default().max_host_call_bytes
    )]
    pub max_host_call_bytes: usize,

    /// `http_request` calls one invocation may send; later ones are answered `network_denied`.
    #[arg(
        long,
        env = "FORGE_MAX_HTTP_REQUESTS",
        value_name = "N",
        default_value_t = forge_runtime::RuntimeConfig::default().max_http_requests
    )]
    pub max_http_requests: u32,

    /// Largest `http_request` response body, read as it arrives; a larger one is cut off and
    /// answered `network_denied`.
    #[arg(
        long,
        env = "FORGE_MAX_HTTP_RESPONSE_BYTES",
        value_name = "BYTES",
        default_value_t = forge_runtime::RuntimeConfig::default().max_http_response_bytes
    )]
    pub max_http_response_bytes: usize,

    /// The `network:http` targets any manifest may ask for, as host patterns
    /// (`https://*.example.com:*`, `http://10.0.0.0/8:8080`, `https://*:443`); comma-separated in
    /// the variable. Default: none, so no overlay may use the network until the operator allows it.
    ///
    /// A registration whose patterns are not each inside one of these is refused (422, naming them).
    #[arg(long, env = "FORGE_HTTP_ALLOWED_HOSTS", value_name = "PATTERN", value_delimiter = ',')]
    pub http_allowed_hosts: Vec<String>,

    /// A directory offered to overlays for `file:read` / `file:write`, as `NAME=DIR` (read-only) or
    /// `NAME=DIR:rw` (writable); repeat the flag for more (the variable takes a comma-separated
    /// list). In the file: `mounts = [{ name = "docs", dir = "/srv/docs", writable = false }]`.
    ///
    /// Manifests name mounts, never host paths; registration refuses unknown mounts and writes to
    /// read-only ones. Default: none.
    #[arg(
        long = "mount",
        env = "FORGE_MOUNTS",
        value_name = "NAME=DIR[:rw]",
        value_delimiter = ',',
        action = ArgAction::Append
    )]
    pub mounts: Vec<forge_runtime::Mount>,

    /// Bytes one invocation may write into file mounts; a call writing more fails and keeps none
    /// of its writes (they are staged in the system's temporary directory until the call ends).
    #[arg(
        long,
        env = "FORGE_MAX_FILE_WRITE_BYTES",
        value_name = "BYTES",
        default_value_t = forge_runtime::RuntimeConfig::default().max_file_write_bytes
    )]
    pub max_file_write_bytes: u64,

    /// Files one invocation may write into file mounts; a call writing more fails and keeps none.
    #[arg(
        long,
        env = "FORGE_MAX_FILES_WRITTEN",
        value_name = "N",
        default_value_t = forge_runtime::RuntimeConfig::default().max_files_written
    )]
    pub max_files_written: u32,

    /// Database operations of host calls (capsules) running at once, so that guests looping on
    /// them leave the rest of the connection pool to authentication and lifecycle requests.
    #[arg(
        long,
        env = "FORGE_HOST_CALL_DB_OPERATIONS",
        value_name = "N",
        default_value_t = ServiceConfig::default().host_call_db_operations
    )]
    pub host_call_db_operations: usize,

    /// Log line format on stderr: `text`, or `json` (one object per line, for log shippers).
    #[arg(long, env = "FORGE_LOG_FORMAT", value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Which logs to write, as `tracing` filter directives (`info`, `warn,forge_service=debug`).
    ///
    /// `info` logs start, shutdown, refused binaries, automatic quarantines and every outbound
    /// `http_request` of an overlay; nothing per API request.
    #[arg(long, env = "FORGE_LOG", value_name = "FILTER", default_value = "info")]
    pub log: String,

    /// Seconds to wait, after SIGTERM or SIGINT, for requests in flight before the connections still
    /// open are dropped (an invocation runs at most 30 s).
    #[arg(long, env = "FORGE_SHUTDOWN_GRACE_SECS", value_name = "SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Keep compiled overlays on disk in `{data_dir}/compiled`, one file per module that passed the
    /// registration checks, so that a restart (or an upgrade that keeps the engine) does not compile
    /// them again.
    ///
    /// Costs disk space about the size of the binaries' machine code.
    #[arg(
        long,
        env = "FORGE_COMPILED_CACHE",
        value_name = "BOOL",
        default_value_t = true,
        action = ArgAction::Set
    )]
    pub compiled_cache: bool,
}

/// The defaults declared on the fields (no `FORGE_*` variable is read).
impl Default for ServerConfig {
    fn default() -> Self {
        let command = ServerConfig::command().mut_args(|arg| arg.env(None));
        let matches = command.get_matches_from(["serve"]);
        ServerConfig::from_arg_matches(&matches).expect("every setting has a default or is optional")
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ServerConfig {
    /// The settings as clap declares them (flags, variables, defaults, help), in a command of their own.
    pub fn command() -> Command {
        ServerConfig::augment_args(Command::new("serve"))
    }

    /// The settings of one start: these, as clap parsed them from `matches` (flags over variables
    /// over defaults), with the TOML `file`'s values in place of defaults; then checked, and relative
    /// paths made absolute against the working directory.
    pub fn resolve(self, file: Option<&Path>, matches: &ArgMatches) -> Result<Self, ConfigError> {
        let mut table =
            toml::Table::try_from(&self).map_err(|e| ConfigError::Invalid(format!("settings: {e}")))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
            let from_file = toml::from_str::<toml::Table>(&text)
                .map_err(|e| ConfigError::File { path: path.to_owned(), message: e.to_string() })?;
            let given = given_explicitly(matches);
            table.extend(from_file.into_iter().filter(|(key, _)| !given.contains(key)));
        }
        let config: ServerConfig = table.try_into().map_err(|e: toml::de::Error| match file {
            Some(path) => ConfigError::File { path: path.to_owned(), message: e.to_string() },
            None => ConfigError::Invalid(e.to_string()),
        })?;
        config.validate()?;
        config.with_absolute_paths()
    }

    /// The data directory and a plain-path object store, made absolute: the compiled-module cache
    /// accepts only absolute paths, and a log line naming them should not depend on where the
    /// process started.
    fn with_absolute_paths(mut self) -> Result<Self, ConfigError> {
        let absolute = |path: &Path| {
            std::path::absolute(path)
                .map_err(|e| ConfigError::Invalid(format!("cannot resolve {}: {e}", path.display())))
        };
        self.data_dir = absolute(&self.data_dir)?;
        if let Some(dir) = self.object_store.as_deref().filter(|location| !location.contains("://")) {
            self.object_store = Some(absolute(Path::new(dir))?.to_string_lossy().into_owned());
        }
        for mount in &mut self.mounts {
            mount.dir = absolute(&mount.dir)?;
        }
        Ok(self)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let max_instances = forge_runtime::RuntimeConfig::default().max_instances as usize;
        let problems: Vec<String> = [
            (self.max_body_bytes == Some(0)).then(|| "max_body_bytes must be at least 1".to_owned()),
            (self.max_body_bytes_in_flight < self.http_limits().max_body_bytes)
                .then(|| "max_body_bytes_in_flight must be at least max_body_bytes".to_owned()),
            (self.max_connections == 0).then(|| "max_connections must be at least 1".to_owned()),
            (self.body_read_timeout_secs == 0)
                .then(|| "body_read_timeout_secs must be at least 1".to_owned()),
            (self.header_read_timeout_secs == 0)
                .then(|| "header_read_timeout_secs must be at least 1".to_owned()),
            (self.failed_auth_per_minute == 0)
                .then(|| "failed_auth_per_minute must be at least 1".to_owned()),
            self.http_allowed_hosts
                .iter()
                .find_map(|pattern| pattern.parse::<HostPattern>().err().map(|e| (pattern, e)))
                .map(|(pattern, e)| format!("http_allowed_hosts: `{pattern}` is not a host pattern: {e}")),
            (!(1..=max_instances).contains(&self.max_in_flight))
                .then(|| format!("max_in_flight must be between 1 and {max_instances}")),
            (self.max_in_flight_per_overlay == 0)
                .then(|| "max_in_flight_per_overlay must be at least 1".to_owned()),
            (!QuarantinePolicy::WINDOW_CALLS_RANGE.contains(&self.quarantine_window_calls)).then(|| {
                let range = QuarantinePolicy::WINDOW_CALLS_RANGE;
                format!("quarantine_window_calls must be between {} and {}", range.start(), range.end())
            }),
            (self.log_retention_entries == 0).then(|| "log_retention_entries must be at least 1".to_owned()),
            (self.log_retention_bytes == 0).then(|| "log_retention_bytes must be at least 1".to_owned()),
            (self.memory_budget_mb == Some(0)).then(|| "memory_budget_mb must be at least 1".to_owned()),
            (self.max_module_bytes == 0).then(|| "max_module_bytes must be at least 1".to_owned()),
            (self.max_concurrent_compilations == Some(0))
                .then(|| "max_concurrent_compilations must be at least 1".to_owned()),
            (self.registrations_per_minute == 0)
                .then(|| "registrations_per_minute must be at least 1".to_owned()),
            (self.host_call_db_operations == 0)
                .then(|| "host_call_db_operations must be at least 1".to_owned()),
            mount_problems(&self.mounts),
            self.admin_token
                .as_deref()
                .is_some_and(|token| token.trim().len() < MIN_ADMIN_TOKEN_CHARS)
                .then(|| format!("admin_token must be at least {MIN_ADMIN_TOKEN_CHARS} characters")),
            self.database_url
                .as_deref()
                .is_some_and(|url| {
                    !["sqlite:", "postgres:", "postgresql:"].iter().any(|scheme| url.starts_with(scheme))
                })
                .then(|| "database_url must start with sqlite:// or postgres://".to_owned()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems.join("; "))) }
    }

    /// The service's settings: its defaults with this configuration's limits.
    pub fn service_config(&self) -> ServiceConfig {
        let defaults = ServiceConfig::default();
        let compiled_cache_dir = self.compiled_cache.then(|| self.data_dir.join("compiled"));
        ServiceConfig {
            max_in_flight: self.max_in_flight,
            max_in_flight_per_overlay: self.max_in_flight_per_overlay,
            failed_auth_per_minute: self.failed_auth_per_minute,
            quarantine: QuarantinePolicy {
                window_calls: self.quarantine_window_calls,
                ..defaults.quarantine
            },
            log_retention: LogRetention {
                max_entries: self.log_retention_entries,
                max_bytes: self.log_retention_bytes,
            },
            memory_budget_mb: self.memory_budget_mb.unwrap_or(defaults.memory_budget_mb),
            max_concurrent_compilations: self
                .max_concurrent_compilations
                .unwrap_or(defaults.max_concurrent_compilations),
            compile_wait: Duration::from_millis(self.compile_wait_ms),
            registrations_per_minute: self.registrations_per_minute,
            host_call_db_operations: self.host_call_db_operations,
            http_allowed_hosts: self.http_allowed_hosts.iter().filter_map(|p| p.parse().ok()).collect(),
            runtime: forge_runtime::RuntimeConfig {
                compiled_cache_dir,
                max_module_bytes: self.max_module_bytes,
                max_host_calls: self.max_host_calls,
                max_host_call_bytes: self.max_host_call_bytes,
                max_http_requests: self.max_http_requests,
                max_http_response_bytes: self.max_http_response_bytes,
                mounts: self.mounts.clone(),
                max_file_write_bytes: self.max_file_write_bytes,
                max_files_written: self.max_files_written,
                ..defaults.runtime.clone()
            },
            ..defaults
        }
    }

    /// Where the embedded SQLite database lives when no `database_url` is set.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("forge.db")
    }

    /// The object store location in effect.
    pub fn object_store_location(&self) -> String {
        self.object_store
            .clone()
            .unwrap_or_else(|| self.data_dir.join("blobs").to_string_lossy().into_owned())
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn http_limits(&self) -> crate::HttpLimits {
        crate::HttpLimits {
            max_body_bytes: self
                .max_body_bytes
                .unwrap_or_else(|| crate::limits::registration_body_bytes(self.max_module_bytes)),
            max_input_bytes: self.service_config().runtime.max_input_bytes,
            max_body_bytes_in_flight: self.max_body_bytes_in_flight,
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs),
        }
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }
}

/// Mount names must be valid and unique, each naming an existing directory.
fn mount_problems(mounts: &[forge_runtime::Mount]) -> Option<String> {
    let mut seen = HashSet::new();
    let problems: Vec<String> = mounts
        .iter()
        .filter_map(|mount| {
            if !forge_model::manifest::is_valid_mount_name(&mount.name) {
                Some(format!("mount name `{}` must be lowercase letters, digits, `-` and `_`", mount.name))
            } else if !seen.insert(mount.name.as_str()) {
                Some(format!("mount `{}` is defined twice", mount.name))
            } else if !mount.dir.is_dir() {
                Some(format!("mount `{}`: {} is not a directory", mount.name, mount.dir.display()))
            } else {
                None
            }
        })
        .collect();
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// The settings a flag or a variable gave, which a file must not override.
fn given_explicitly(matches: &ArgMatches) -> HashSet<String> {
    ServerConfig::command()
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .filter(|id| {
            matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
        })
        .collect()
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format `{s}` (expected text or json)")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings `serve FLAGS` would run with (no `FORGE_*` variable read) and `file`.
    fn load(file: Option<&Path>, flags: &[&str]) -> Result<ServerConfig, ConfigError> {
        let command = ServerConfig::command().mut_args(|arg| arg.env(None));
        let matches = command.try_get_matches_from(std::iter::once("serve").chain(flags.iter().copied()));
        let matches = matches.map_err(|e| ConfigError::Invalid(e.to_string()))?;
        ServerConfig::from_arg_matches(&matches).unwrap().resolve(file, &matches)
    }

    fn cwd() -> PathBuf {
        std::env::current_dir().unwrap()
    }

    #[test]
    fn defaults_then_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("forge.toml");
        std::fs::write(&file, "bind = \"0.0.0.0:9000\"\nmax_in_flight = 8\nlog_format = \"json\"\n").unwrap();

        let defaults = load(None, &[]).unwrap();
        assert_eq!(defaults, ServerConfig { data_dir: cwd().join("data"), ..ServerConfig::default() });
        assert_eq!(
            defaults.http_limits().max_body_bytes,
            22_435_160,
            "a 16 MiB module in base64, and 64 KiB"
        );
        assert_eq!((defaults.max_in_flight, defaults.compiled_cache), (256, true));

        let from_file = load(Some(&file), &[]).unwrap();
        assert_eq!((from_file.bind.as_str(), from_file.max_in_flight), ("0.0.0.0:9000", 8));
        assert_eq!(from_file.log_format, LogFormat::Json);
        assert_eq!(from_file.data_dir, cwd().join("data"), "unset keys keep their defaults");

        let merged = load(Some(&file), &["--bind", "127.0.0.1:0"]).unwrap();
        assert_eq!((merged.bind.as_str(), merged.max_in_flight), ("127.0.0.1:0", 8));
        let off = load(None, &["--compiled-cache", "false"]).unwrap();
        assert!(!off.compiled_cache);
    }

    #[test]
    fn relative_paths_become_absolute() {
        let config = load(None, &["--data-dir", "rel/dir", "--object-store", "blobs"]).unwrap();
        assert_eq!(config.data_dir, cwd().join("rel/dir"));
        assert_eq!(config.object_store, Some(cwd().join("blobs").to_string_lossy().into_owned()));
        let s3 = load(None, &["--object-store", "s3://bucket/prefix"]).unwrap();
        assert_eq!(s3.object_store.as_deref(), Some("s3://bucket/prefix"), "URLs are left alone");
        let compiled = config.service_config().runtime.compiled_cache_dir.unwrap();
        assert!(compiled.is_absolute(), "{}", compiled.display());
    }

    #[test]
    fn mistakes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("forge.toml");
        std::fs::write(&file, "bnid = \"0.0.0.0:9000\"\n").unwrap();
        let err = load(Some(&file), &[]).unwrap_err().to_string();
        assert!(err.contains("bnid") && err.contains("forge.toml"), "{err}");

        let err = load(None, &["--max-in-flight", "0", "--max-body-bytes", "0"]).unwrap_err().to_string();
        assert!(err.contains("max_in_flight") && err.contains("max_body_bytes"), "{err}");

        let zeros = [
            "--memory-budget-mb=0",
            "--max-module-bytes=0",
            "--registrations-per-minute=0",
            "--log-retention-entries=0",
            "--log-retention-bytes=0",
        ];
        let err = load(None, &zeros).unwrap_err().to_string();
        for setting in [
            "memory_budget_mb",
            "max_module_bytes",
            "registrations_per_minute",
            "log_retention_entries",
            "log_retention_bytes",
        ] {
            assert!(err.contains(setting), "{err}");
        }

        let weak = load(None, &["--admin-token", "secret"]).unwrap_err().to_string();
        assert!(weak.contains("admin_token"), "{weak}");

        assert!(load(None, &["--database-url", "mysql://x"]).is_err());
        let err =
            load(None, &["--http-allowed-hosts", "https://*.example.com,ftp://x"]).unwrap_err().to_string();
        assert!(err.contains("http_allowed_hosts: `ftp://x`"), "{err}");
        let allowed =
            load(None, &["--http-allowed-hosts", "https://*.example.com:*,http://127.0.0.1:*"]).unwrap();
        assert_eq!(allowed.service_config().http_allowed_hosts.len(), 2);
        assert!(load(Some(&dir.path().join("missing.toml")), &[]).is_err());

        for outside in ["9", "10001"] {
            let err = load(None, &["--quarantine-window-calls", outside]).unwrap_err().to_string();
            assert!(err.contains("quarantine_window_calls must be between 10 and 10000"), "{err}");
        }
        let window = load(None, &["--quarantine-window-calls", "50"]).unwrap();
        assert_eq!(window.service_config().quarantine.window_calls, 50);
        assert_eq!(ServerConfig::default().service_config().quarantine, QuarantinePolicy::default());
        let retention =
            load(None, &["--log-retention-entries", "20", "--log-retention-bytes", "4096"]).unwrap();
        assert_eq!(
            retention.service_config().log_retention,
            LogRetention { max_entries: 20, max_bytes: 4096 }
        );
    }

    #[test]
    fn mounts_come_from_flags_or_the_file_and_must_be_directories() {
        let dir = tempfile::tempdir().unwrap();
        let docs = dir.path().join("docs");
        std::fs::create_dir(&docs).unwrap();
        let flags =
            load(None, &["--mount", &format!("docs={}", docs.display()), "--mount", "out=.:rw"]).unwrap();
        let mounts = flags.service_config().runtime.mounts;
        assert_eq!(
            mounts.iter().map(|m| (m.name.as_str(), m.writable)).collect::<Vec<_>>(),
            [("docs", false), ("out", true)]
        );
        assert_eq!(mounts[1].dir, cwd(), "relative directories become absolute");

        let file = dir.path().join("forge.toml");
        let toml =
            format!("mounts = [{{ name = \"docs\", dir = \"{}\", writable = true }}]\n", docs.display());
        std::fs::write(&file, toml).unwrap();
        assert!(load(Some(&file), &[]).unwrap().mounts[0].writable);

        let missing = load(None, &["--mount", "gone=/no/such/dir"]).unwrap_err().to_string();
        assert!(missing.contains("mount `gone`") && missing.contains("not a directory"), "{missing}");
        let twice = load(None, &["--mount", "a=.", "--mount", "a=.:rw"]).unwrap_err().to_string();
        assert!(twice.contains("mount `a` is defined twice"), "{twice}");
        assert!(load(None, &["--mount", "Bad=."]).is_err());
    }

    #[test]
    fn embedded_defaults_live_in_the_data_dir() {
        let config = ServerConfig { data_dir: "/srv/forge".into(), ..ServerConfig::default() };
        assert_eq!(config.sqlite_path(), PathBuf::from("/srv/forge/forge.db"));
        assert_eq!(config.object_store_location(), "/srv/forge/blobs");
        assert_eq!(config.service_config().max_in_flight, config.max_in_flight);
        let service = config.service_config();
        assert_eq!(service.memory_budget_mb, forge_service::half_of_physical_memory_mb());
        assert_eq!(service.runtime.max_module_bytes, 16 << 20);
        assert_eq!(service.compile_wait, Duration::from_secs(2));
        let compiled = config.service_config().runtime.compiled_cache_dir;
        assert_eq!(compiled, Some(PathBuf::from("/srv/forge/compiled")));
        let without = ServerConfig { compiled_cache: false, ..config };
        assert_eq!(without.service_config().runtime.compiled_cache_dir, None);
    }

    /// docs/configuration.md's table has one row per setting, each with the flag, variable and
    /// default declared here.
    #[test]
    fn the_configuration_doc_lists_exactly_the_settings() {
        let doc = include_str!("../../../docs/configuration.md");
        let rows: Vec<Vec<&str>> = doc
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| line.trim_matches('|').split(" | ").map(str::trim).collect())
            .collect();
        let command = ServerConfig::command();
        let documented: Vec<&str> = rows.iter().map(|row| row[0].trim_matches('`')).collect();
        let declared: Vec<&str> = command.get_arguments().map(|arg| arg.get_id().as_str()).collect();
        assert_eq!(documented, declared, "docs/configuration.md's table, in declaration order");
        for (row, arg) in rows.iter().zip(command.get_arguments()) {
            let value_name = arg.get_value_names().unwrap_or_default().join(" ");
            assert_eq!(row[1], format!("`--{} {value_name}`", arg.get_long().unwrap()), "{row:?}");
            let env = arg.get_env().unwrap().to_string_lossy();
            assert_eq!(row[2], format!("`{env}`"), "{row:?}");
            if let Some(default) = arg.get_default_values().first() {
                let shown = format!("`{}`", default.to_string_lossy());
                assert!(
                    row[3].starts_with(&shown),
                    "default of {}: doc says {}, code {shown}",
                    row[0],
                    row[3]
                );
            }
        }
    }
}
