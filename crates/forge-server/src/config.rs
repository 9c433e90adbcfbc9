//! `ServerConfig`: every setting of `forge-overlay serve`, with its default.
//!
//! Settings come from, lowest precedence first: the defaults below, a TOML file (`--config FILE` or
//! `FORGE_CONFIG`), environment variables (`FORGE_` and the field name in upper case, e.g.
//! `FORGE_MAX_BODY_BYTES`), and command-line flags (`--max-body-bytes`). docs/configuration.md has
//! the same table for operators.

use forge_service::ServiceConfig;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Shortest `admin_token` accepted: a guessable admin token would open the whole API.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// How `serve` is set up. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, `HOST:PORT`. Default: `127.0.0.1:8000` (this machine only).
    ///
    /// Port 0 takes a free port; the line `listening on http://HOST:PORT` printed at start names it.
    pub bind: String,

    /// Directory of the embedded defaults: the SQLite database `forge.db` and the object store
    /// `blobs/`, created if missing. Default: `./data`.
    pub data_dir: PathBuf,

    /// The metadata database: `sqlite://PATH` or `postgres://user:password@host:port/database`.
    /// Default: none, meaning SQLite at `{data_dir}/forge.db`.
    ///
    /// Several server processes can share one PostgreSQL database (and one S3 bucket); SQLite is for
    /// one process.
    pub database_url: Option<String>,

    /// Where overlay binaries are kept: `file:///abs/dir`, a directory path, or `s3://bucket[/prefix]`
    /// with endpoint and credentials from the standard `AWS_*` variables (`AWS_ENDPOINT_URL`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`).
    /// Default: none, meaning the directory `{data_dir}/blobs`.
    pub object_store: Option<String>,

    /// A bearer token made an admin's (user `admin`, trust `core`) at start; idempotent, so the same
    /// value can be given at every start. At least 16 characters: it opens everything.
    /// Default: none (mint one with `forge-overlay token create`).
    pub admin_token: Option<String>,

    /// Largest request body accepted, in bytes; larger ones get 413 `payload_too_large`.
    /// Default: 52428800 (50 MiB), room for any overlay binary the runtime would accept.
    pub max_body_bytes: usize,

    /// Invocations running at once in this process, over all overlays; past it, 429 with
    /// `Retry-After`. Default: 256 (the service's). Must not exceed the runtime's instance pool
    /// (1000).
    pub max_in_flight: usize,

    /// Invocations of one overlay running at once; past it, 429. Default: 64 (the service's), so one
    /// busy overlay cannot take every slot.
    pub max_in_flight_per_overlay: usize,

    /// Log line format on stderr: `text` or `json` (one object per line, for log shippers).
    /// Default: `text`.
    pub log_format: LogFormat,

    /// Which logs to write, as `tracing` filter directives (`info`, `warn,forge_service=debug`).
    /// Default: `info`: start, shutdown, refused binaries and automatic quarantines; nothing per request.
    pub log: String,

    /// Seconds to wait, after SIGTERM or SIGINT, for requests in flight before the connections still
    /// open are dropped. Default: 30 (an invocation runs at most 30 s).
    pub shutdown_grace_secs: u64,

    /// Keep compiled overlays on disk in `{data_dir}/compiled`, keyed by the engine's compatibility
    /// hash, so that a restart (or an upgrade that keeps the engine) does not compile them again.
    /// Default: true. Costs disk space about the size of the binaries' machine code.
    pub compiled_cache: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let service = ServiceConfig::default();
        ServerConfig {
            bind: "127.0.0.1:8000".into(),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            object_store: None,
            admin_token: None,
            max_body_bytes: 50 << 20,
            max_in_flight: service.max_in_flight,
            max_in_flight_per_overlay: service.max_in_flight_per_overlay,
            log_format: LogFormat::Text,
            log: "info".into(),
            shutdown_grace_secs: 30,
            compiled_cache: true,
        }
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
    /// Defaults, then the TOML `file` if given, then `overrides`: any value that serializes to a
    /// table of these fields (`None` fields leave the value below them in place). The CLI passes its
    /// flags and `FORGE_*` variables, already merged by precedence, as the overrides.
    pub fn load(file: Option<&Path>, overrides: &impl Serialize) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|e| ConfigError::File { path: path.to_owned(), message: e.to_string() })?
            }
            None => toml::Table::new(),
        };
        let overrides =
            toml::Table::try_from(overrides).map_err(|e| ConfigError::Invalid(format!("settings: {e}")))?;
        table.extend(overrides);
        let config: ServerConfig = table.try_into().map_err(|e: toml::de::Error| match file {
            Some(path) => ConfigError::File { path: path.to_owned(), message: e.to_string() },
            None => ConfigError::Invalid(e.to_string()),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let max_instances = forge_runtime::RuntimeConfig::default().max_instances as usize;
        let problems: Vec<String> = [
            (self.max_body_bytes == 0).then(|| "max_body_bytes must be at least 1".to_owned()),
            (!(1..=max_instances).contains(&self.max_in_flight))
                .then(|| format!("max_in_flight must be between 1 and {max_instances}")),
            (self.max_in_flight_per_overlay == 0)
                .then(|| "max_in_flight_per_overlay must be at least 1".to_owned()),
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
            runtime: forge_runtime::RuntimeConfig { compiled_cache_dir, ..defaults.runtime.clone() },
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
    use std::collections::BTreeMap;

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        bind: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max_in_flight: Option<usize>,
    }

    #[test]
    fn defaults_then_file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("forge.toml");
        std::fs::write(&file, "bind = \"0.0.0.0:9000\"\nmax_in_flight = 8\nlog_format = \"json\"\n").unwrap();

        let defaults = ServerConfig::load(None, &Flags::default()).unwrap();
        assert_eq!(defaults, ServerConfig::default());
        assert_eq!(defaults.max_body_bytes, 50 * 1024 * 1024);

        let from_file = ServerConfig::load(Some(&file), &Flags::default()).unwrap();
        assert_eq!((from_file.bind.as_str(), from_file.max_in_flight), ("0.0.0.0:9000", 8));
        assert_eq!(from_file.log_format, LogFormat::Json);
        assert_eq!(from_file.data_dir, PathBuf::from("./data"), "unset keys keep their defaults");

        let flags = Flags { bind: Some("127.0.0.1:0".into()), max_in_flight: None };
        let merged = ServerConfig::load(Some(&file), &flags).unwrap();
        assert_eq!((merged.bind.as_str(), merged.max_in_flight), ("127.0.0.1:0", 8));
    }

    #[test]
    fn mistakes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("forge.toml");
        std::fs::write(&file, "bnid = \"0.0.0.0:9000\"\n").unwrap();
        let err = ServerConfig::load(Some(&file), &Flags::default()).unwrap_err().to_string();
        assert!(err.contains("bnid") && err.contains("forge.toml"), "{err}");

        let zero = BTreeMap::from([("max_in_flight", 0), ("max_body_bytes", 0)]);
        let err = ServerConfig::load(None, &zero).unwrap_err().to_string();
        assert!(err.contains("max_in_flight") && err.contains("max_body_bytes"), "{err}");

        let weak = BTreeMap::from([("admin_token", "secret")]);
        assert!(ServerConfig::load(None, &weak).unwrap_err().to_string().contains("admin_token"));

        let mysql = BTreeMap::from([("database_url", "mysql://x")]);
        assert!(ServerConfig::load(None, &mysql).is_err());
        assert!(ServerConfig::load(Some(&dir.path().join("missing.toml")), &Flags::default()).is_err());
    }

    #[test]
    fn embedded_defaults_live_in_the_data_dir() {
        let config = ServerConfig { data_dir: "/srv/forge".into(), ..ServerConfig::default() };
        assert_eq!(config.sqlite_path(), PathBuf::from("/srv/forge/forge.db"));
        assert_eq!(config.object_store_location(), "/srv/forge/blobs");
        assert_eq!(config.service_config().max_in_flight, config.max_in_flight);
        let compiled = config.service_config().runtime.compiled_cache_dir;
        assert_eq!(compiled, Some(PathBuf::from("/srv/forge/compiled")));
        let without = ServerConfig { compiled_cache: false, ..config };
        assert_eq!(without.service_config().runtime.compiled_cache_dir, None);
    }
}
