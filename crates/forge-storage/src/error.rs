//! Storage errors and how they reach clients as [`ForgeError`]s.

use forge_model::ForgeError;
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::postgres::PgDatabaseError;

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A record with the same key already exists (overlay name+version, user name, token hash).
    #[error("{0}")]
    Conflict(String),
    /// A record the operation needs does not exist (e.g. the user a token is added to).
    #[error("{0}")]
    NotFound(String),
    /// The database cannot be reached or is too busy to answer in time; retrying later may work.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// A stored value does not decode into the domain model: the database was edited by hand or
    /// written by an incompatible version.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The repository URL or its options are wrong; nothing was opened.
    #[error("invalid repository configuration: {0}")]
    Config(String),
    /// Applying the schema migrations failed at open.
    #[error("schema migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Any other database error; these are bugs, not conditions a caller can act on.
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

/// The SQLSTATE classes and codes that mean "the server cannot serve right now" rather than "this
/// statement is wrong": connection exceptions (08), insufficient resources such as a full disk (53),
/// operator intervention such as an administrative shutdown (57) and a lock not had in time (55P03).
fn is_transient_postgres(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57") || code == "55P03"
}

/// SQLite's primary result codes (the low byte of the extended code) for the same situations:
/// BUSY (5) and LOCKED (6) once the busy timeout ran out, IOERR (10), FULL (13) and CANTOPEN (14).
fn is_transient_sqlite(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14))
}

fn is_transient(error: &dyn DatabaseError) -> bool {
    let Some(code) = error.code() else { return false };
    if error.try_downcast_ref::<PgDatabaseError>().is_some() {
        is_transient_postgres(&code)
    } else {
        is_transient_sqlite(&code)
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) => match db.kind() {
                ErrorKind::UniqueViolation => StorageError::Conflict(db.message().to_owned()),
                ErrorKind::ForeignKeyViolation => StorageError::NotFound(db.message().to_owned()),
                _ if is_transient(db.as_ref()) => StorageError::Unavailable(db.message().to_owned()),
                _ => StorageError::Database(error),
            },
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StorageError::Unavailable(error.to_string()),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StorageError::Corrupt(error.to_string())
            }
            _ => StorageError::Database(error),
        }
    }
}

/// Conflicts and missing records keep their message (they name the caller's own input); outages and
/// bugs are logged here in full and reach the client as a generic message, so no SQL detail leaks.
impl From<StorageError> for ForgeError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Conflict(message) => ForgeError::conflict(message),
            StorageError::NotFound(message) => ForgeError::not_found(message),
            StorageError::Unavailable(_) => {
                tracing::warn!(%error, "metadata store unavailable");
                ForgeError::unavailable("metadata store unavailable, retry later")
            }
            StorageError::Corrupt(_)
            | StorageError::Config(_)
            | StorageError::Migration(_)
            | StorageError::Database(_) => {
                tracing::error!(%error, "storage failure");
                ForgeError::internal("internal storage error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use forge_model::ErrorCode;

    #[test]
    fn codes_reaching_clients() {
        let cases = [
            (StorageError::Conflict("echo 1.0.0 exists".into()), ErrorCode::Conflict),
            (StorageError::NotFound("no user".into()), ErrorCode::NotFound),
            (StorageError::Unavailable("connection refused".into()), ErrorCode::ServiceUnavailable),
            (StorageError::Corrupt("bad state".into()), ErrorCode::InternalError),
            (StorageError::from(sqlx::Error::PoolTimedOut), ErrorCode::ServiceUnavailable),
        ];
        for (error, code) in cases {
            assert_eq!(ForgeError::from(error).code, code);
        }
        let internal = ForgeError::from(StorageError::Corrupt("column state: `x`".into()));
        assert!(!internal.message.contains("column"), "details stay in the log: {}", internal.message);
    }

    #[test]
    fn transient_codes() {
        assert!(is_transient_postgres("08006") && is_transient_postgres("57P01"));
        assert!(!is_transient_postgres("23505") && !is_transient_postgres("42601"));
        assert!(is_transient_sqlite("5") && is_transient_sqlite("517") && is_transient_sqlite("13"));
        assert!(!is_transient_sqlite("2067") && !is_transient_sqlite("787"), "constraints are not outages");
    }
}
