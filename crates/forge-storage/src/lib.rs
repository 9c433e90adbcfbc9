//! Forge overlay storage: where the runtime keeps what must survive a restart.
//!
//! - [`Repository`]: overlay records, health counters, the audit trail, users and capsules, on SQLite
//!   (the embedded default, one file in the data directory) or PostgreSQL (several server processes
//!   sharing one database). Open one with [`open_repository`] or [`open_sqlite`]; the schema is
//!   migrated at open.
//! - [`BlobStore`]: overlay binaries in a local directory or an S3-compatible bucket, every load
//!   checked against its SHA-256.

mod blob;
mod error;
mod repository;
mod sql;
#[cfg(feature = "testing")]
pub mod testing;

pub use blob::{BlobError, BlobStore};
pub use error::StorageError;
pub use repository::{
    BootstrapToken, HealthDelta, HealthOutcome, LogBatch, QuarantineEvent, Repository, Result,
};

use sql::{Pools, SqlRepository};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// How long SQLite waits for another process's write lock before giving up with
/// [`StorageError::Unavailable`]. Within one process writes queue for the single writer connection
/// instead, so this only matters when several processes share the file.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite read connections (reads run beside the single writer in WAL mode). Small: this machine
/// class has two cores, and reads are single indexed lookups.
pub const SQLITE_READERS: u32 = 4;

/// PostgreSQL connections per repository (per server process). Every process sharing a database
/// opens this many, so the server's `max_connections` must cover processes × this.
pub const POSTGRES_CONNECTIONS: u32 = 10;

/// How long an operation waits for a free pooled connection (or a new one) before it fails with
/// [`StorageError::Unavailable`]: a database that is down is reported within this time.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the repository a URL names and brings its schema up to date:
///
/// - `sqlite://PATH` (`sqlite:///abs/path/forge.db`, or relative to the working directory): a database
///   file, created with its directory if missing. Prefer [`open_sqlite`] for a path you hold, as a
///   URL cannot carry every file name.
/// - `postgres://user:password@host:port/database` (or `postgresql://`), with the usual URL parameters
///   (`sslmode`, `options`, ...). No TLS library is compiled in: connections are plain TCP or Unix
///   sockets, so `sslmode=require` fails.
pub async fn open_repository(url: &str) -> Result<Arc<dyn Repository>> {
    let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or_default();
    match scheme {
        "sqlite" => {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| StorageError::Config(format!("SQLite URL: {e}")))?;
            connect_sqlite(options).await
        }
        "postgres" | "postgresql" => connect_postgres(url).await,
        // The URL itself is not echoed: it may carry a password.
        _ => Err(StorageError::Config(format!(
            "unsupported repository URL scheme `{scheme}` (expected sqlite:// or postgres://)"
        ))),
    }
}

/// Opens (creating if missing, with its directory) the SQLite database file at `path`.
pub async fn open_sqlite(path: &Path) -> Result<Arc<dyn Repository>> {
    connect_sqlite(SqliteConnectOptions::new().filename(path)).await
}

/// WAL lets readers run beside the writer and makes each commit one append; with it,
/// `synchronous = NORMAL` syncs at checkpoints rather than every commit, so a power cut may lose the
/// last commits but never corrupts the file, and a killed process loses nothing committed.
async fn connect_sqlite(options: SqliteConnectOptions) -> Result<Arc<dyn Repository>> {
    if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    }
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);
    let setup_lock = lock_setup(options.get_filename()).await?;
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await?;
    SQLITE_MIGRATIONS.run(&writer).await?;
    drop(setup_lock);
    let reader = SqlitePoolOptions::new()
        .max_connections(SQLITE_READERS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    Ok(Arc::new(SqlRepository { pools: Pools::Sqlite { reader, writer } }))
}

/// Holds an exclusive lock on `DATABASE.setup-lock` beside the database file while one process
/// creates the file, switches it to WAL and migrates it: SQLite has no lock a migration can wait
/// on, so processes starting together on a fresh file would otherwise both apply the first
/// migration, and one would fail. `None` for an in-memory database, which no other process shares.
async fn lock_setup(database: &Path) -> Result<Option<std::fs::File>> {
    // sqlx names an in-memory database (`sqlite::memory:`) `file:sqlx-in-memory-N`.
    if database.to_str().is_some_and(|name| name.starts_with("file:sqlx-in-memory-")) {
        return Ok(None);
    }
    let mut name = database.as_os_str().to_owned();
    name.push(".setup-lock");
    let path = std::path::PathBuf::from(name);
    let unavailable =
        |e: std::io::Error| StorageError::Unavailable(format!("cannot lock {}: {e}", path.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(unavailable)?;
    // Waiting for another process's setup blocks this thread, so it is done on a blocking one.
    let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| StorageError::Unavailable(format!("setup lock: {e}")))?;
    locked.map(Some).map_err(unavailable)
}

/// Migrations take PostgreSQL's advisory lock, so processes starting together migrate once.
async fn connect_postgres(url: &str) -> Result<Arc<dyn Repository>> {
    let options =
        PgConnectOptions::from_str(url).map_err(|e| StorageError::Config(format!("PostgreSQL URL: {e}")))?;
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    POSTGRES_MIGRATIONS.run(&pool).await?;
    Ok(Arc::new(SqlRepository { pools: Pools::Postgres(pool) }))
}
