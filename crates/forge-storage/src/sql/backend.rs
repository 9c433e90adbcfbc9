//! The thin layer that lets one body of SQL and logic run on SQLite and PostgreSQL.
//!
//! sqlx's generic `Database` bounds grow unwieldy once a repository binds a dozen types, and its `Any`
//! driver knows no UUIDs, timestamps or JSON. So the repository speaks in [`Arg`]s and [`Row`]s and
//! this module maps them to each backend's native types: `uuid`, `timestamptz` and `jsonb` on
//! PostgreSQL; on SQLite, hyphenated text UUIDs, fixed-width UTC text timestamps (so they sort as
//! text) and JSON text.

use crate::error::StorageError;
use chrono::{DateTime, SecondsFormat, Utc};
use forge_model::{OverlayState, TrustLevel};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::query::Query;
use sqlx::sqlite::SqliteRow;
use sqlx::{
    Database, Decode, Encode, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool,
    Transaction, Type,
};
use std::borrow::Cow;
use uuid::Uuid;

/// The pools of one repository.
#[derive(Debug, Clone)]
pub(crate) enum Pools {
    /// SQLite allows one writer at a time: writes queue for the single writer connection instead of
    /// sleeping in SQLite's busy handler; readers run beside it (WAL).
    Sqlite {
        reader: SqlitePool,
        writer: SqlitePool,
    },
    Postgres(PgPool),
}

impl Pools {
    /// A connection for reads outside a transaction (one statement each).
    pub(crate) async fn read(&self) -> Result<Pooled, StorageError> {
        Ok(match self {
            Pools::Sqlite { reader, .. } => Pooled::Sqlite(reader.acquire().await?),
            Pools::Postgres(pool) => Pooled::Postgres(pool.acquire().await?),
        })
    }

    /// A read-write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so a
    /// transaction that reads first never fails to upgrade its lock when another process writes.
    pub(crate) async fn write(&self) -> Result<Tx, StorageError> {
        Ok(match self {
            Pools::Sqlite { writer, .. } => Tx::Sqlite(begin_immediate(writer).await?),
            Pools::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    pub(crate) async fn close(&self) {
        match self {
            Pools::Sqlite { reader, writer } => {
                reader.close().await;
                writer.close().await;
            }
            Pools::Postgres(pool) => pool.close().await,
        }
    }
}

/// `BEGIN IMMEDIATE` on the writer connection. After SQLITE_FULL or an I/O error SQLite may roll the
/// transaction back itself; sqlx's own ROLLBACK then fails and leaves the connection counted as in a
/// transaction, refusing every later BEGIN. Such a connection is closed and a fresh one begins, so
/// writes work again once the disk has room, without a restart.
async fn begin_immediate(writer: &SqlitePool) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    match writer.begin_with("BEGIN IMMEDIATE").await {
        Err(sqlx::Error::InvalidSavePointStatement) => {
            tracing::warn!("SQLite writer connection stuck in a transaction SQLite ended; reconnecting");
            writer.acquire().await?.close().await?;
            writer.begin_with("BEGIN IMMEDIATE").await
        }
        begun => begun,
    }
}

/// A pooled connection, for reads.
pub(crate) enum Pooled {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

/// An open transaction; dropped without [`Tx::commit`], it rolls back.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<(), StorageError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// Commits, unless `commit_by` has passed: then the transaction rolls back and the write is
    /// reported unavailable. A write made for a guest's host call commits only while the guest can
    /// still be told; after its deadline the guest was told the call failed.
    pub(crate) async fn commit_by(self, commit_by: Option<std::time::Instant>) -> Result<(), StorageError> {
        if commit_by.is_some_and(|by| std::time::Instant::now() >= by) {
            return Err(StorageError::Unavailable(
                "the write waited past its host call's deadline and was rolled back".into(),
            ));
        }
        self.commit().await
    }
}

/// A borrowed connection of either backend, where the statements run.
pub(crate) enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

/// Runs `$body` on whichever backend `$conn` is, with `$query` the statement with its arguments
/// bound, `$c` the native connection and `$row` the constructor wrapping its rows: the one place the
/// two backends are told apart when a statement runs.
macro_rules! on_backend {
    ($conn:expr, $sql:expr, $args:expr, |$query:ident, $c:ident, $row:ident| $body:expr) => {
        match $conn {
            Conn::Sqlite($c) => {
                let ($query, $row) = (bind(sqlx::query::<Sqlite>($sql), $args), Row::Sqlite);
                $body
            }
            Conn::Postgres($c) => {
                let ($query, $row) = (bind(sqlx::query::<Postgres>($sql), $args), Row::Postgres);
                $body
            }
        }
    };
}

/// Running statements, the same on pooled connections and in transactions.
pub(crate) trait Execute {
    fn conn(&mut self) -> Conn<'_>;

    /// Runs a statement and returns the number of rows it changed.
    async fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, StorageError> {
        Ok(on_backend!(self.conn(), sql, args, |query, c, _row| query.execute(c).await?.rows_affected()))
    }

    async fn fetch_optional(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Option<Row>, StorageError> {
        Ok(on_backend!(self.conn(), sql, args, |query, c, row| query.fetch_optional(c).await?.map(row)))
    }

    async fn fetch_one(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Row, StorageError> {
        Ok(on_backend!(self.conn(), sql, args, |query, c, row| row(query.fetch_one(c).await?)))
    }

    async fn fetch_all(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<Row>, StorageError> {
        Ok(on_backend!(self.conn(), sql, args, |query, c, row| {
            query.fetch_all(c).await?.into_iter().map(row).collect()
        }))
    }
}

impl Execute for Pooled {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Pooled::Sqlite(c) => Conn::Sqlite(c),
            Pooled::Postgres(c) => Conn::Postgres(c),
        }
    }
}

impl Execute for Tx {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite(tx) => Conn::Sqlite(tx),
            Tx::Postgres(tx) => Conn::Postgres(tx),
        }
    }
}

/// A bind parameter. Nullable kinds take an `Option`; `From` impls cover the plain values.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(i64),
    Real(f64),
    Bool(bool),
    Text(Option<&'a str>),
    Uuid(Option<Uuid>),
    Time(Option<DateTime<Utc>>),
    Json(&'a Value),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<f64> for Arg<'_> {
    fn from(v: f64) -> Self {
        Arg::Real(v)
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}
impl From<Uuid> for Arg<'_> {
    fn from(v: Uuid) -> Self {
        Arg::Uuid(Some(v))
    }
}
impl From<Option<Uuid>> for Arg<'_> {
    fn from(v: Option<Uuid>) -> Self {
        Arg::Uuid(v)
    }
}
impl From<DateTime<Utc>> for Arg<'_> {
    fn from(v: DateTime<Utc>) -> Self {
        Arg::Time(Some(v))
    }
}
impl From<Option<DateTime<Utc>>> for Arg<'_> {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Arg::Time(v)
    }
}
/// Trust levels are stored as Forge's numbers, so that "at most this trusted" is a comparison.
impl From<TrustLevel> for Arg<'_> {
    fn from(v: TrustLevel) -> Self {
        Arg::Int(i64::from(v.value()))
    }
}
impl From<OverlayState> for Arg<'_> {
    fn from(v: OverlayState) -> Self {
        Arg::Text(Some(v.as_str()))
    }
}
impl From<Option<OverlayState>> for Arg<'_> {
    fn from(v: Option<OverlayState>) -> Self {
        Arg::Text(v.map(OverlayState::as_str))
    }
}
impl<'a> From<&'a Value> for Arg<'a> {
    fn from(v: &'a Value) -> Self {
        Arg::Json(v)
    }
}

/// Counters are `u64` in the model and `BIGINT` in the databases. Counts beyond `i64::MAX` (9.2e18)
/// cannot occur in practice; saturating keeps recording infallible there.
pub(crate) fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// SQLite text form of a timestamp: UTC, always six fractional digits, so that text order is time
/// order and the precision matches PostgreSQL's microseconds.
fn sqlite_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// PostgreSQL's `text` and `jsonb` cannot hold NUL characters, and guest-supplied text (an error
/// message, a capsule) may contain them; they are replaced by U+FFFD on both backends, so both store
/// the same and no write fails over it.
fn clean_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') { Cow::Owned(text.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(text) }
}

/// [`clean_text`] for every string and key of a JSON value.
fn clean_json(value: &Value) -> Cow<'_, Value> {
    fn has_nul(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn cleaned(value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(clean_text(s).into_owned()),
            Value::Array(items) => Value::Array(items.iter().map(cleaned).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (clean_text(k).into_owned(), cleaned(v))).collect())
            }
            other => other.clone(),
        }
    }
    if has_nul(value) { Cow::Owned(cleaned(value)) } else { Cow::Borrowed(value) }
}

/// A statement with its arguments, on backend `DB`.
type Statement<'q, DB> = Query<'q, DB, <DB as Database>::Arguments>;

/// How a backend stores the kinds of [`Arg`] that have no column type common to both.
trait Native: Database {
    fn bind_uuid(query: Statement<'_, Self>, value: Option<Uuid>) -> Statement<'_, Self>;
    fn bind_time(query: Statement<'_, Self>, value: Option<DateTime<Utc>>) -> Statement<'_, Self>;
    fn bind_json<'q>(query: Statement<'q, Self>, value: &Value) -> Statement<'q, Self>;
}

/// Hyphenated text UUIDs, fixed-width text timestamps and JSON text.
impl Native for Sqlite {
    fn bind_uuid(query: Statement<'_, Self>, value: Option<Uuid>) -> Statement<'_, Self> {
        query.bind(value.map(|u| u.hyphenated().to_string()))
    }
    fn bind_time(query: Statement<'_, Self>, value: Option<DateTime<Utc>>) -> Statement<'_, Self> {
        query.bind(value.map(sqlite_time))
    }
    fn bind_json<'q>(query: Statement<'q, Self>, value: &Value) -> Statement<'q, Self> {
        query.bind(clean_json(value).to_string())
    }
}

/// `uuid`, `timestamptz` and `jsonb`.
impl Native for Postgres {
    fn bind_uuid(query: Statement<'_, Self>, value: Option<Uuid>) -> Statement<'_, Self> {
        query.bind(value)
    }
    fn bind_time(query: Statement<'_, Self>, value: Option<DateTime<Utc>>) -> Statement<'_, Self> {
        query.bind(value)
    }
    fn bind_json<'q>(query: Statement<'q, Self>, value: &Value) -> Statement<'q, Self> {
        query.bind(sqlx::types::Json(clean_json(value).into_owned()))
    }
}

/// Binds `args` in order: the kinds both backends store alike here, the others through [`Native`].
fn bind<'q, DB: Native>(mut query: Statement<'q, DB>, args: &[Arg<'_>]) -> Statement<'q, DB>
where
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    f64: for<'t> Encode<'t, DB> + Type<DB>,
    bool: for<'t> Encode<'t, DB> + Type<DB>,
    Option<String>: for<'t> Encode<'t, DB> + Type<DB>,
{
    for arg in args {
        query = match *arg {
            Arg::Int(v) => query.bind(v),
            Arg::Real(v) => query.bind(v),
            Arg::Bool(v) => query.bind(v),
            Arg::Text(v) => query.bind(v.map(|t| clean_text(t).into_owned())),
            Arg::Uuid(v) => DB::bind_uuid(query, v),
            Arg::Time(v) => DB::bind_time(query, v),
            Arg::Json(v) => DB::bind_json(query, v),
        };
    }
    query
}

/// A result row of either backend, read by column name into model-friendly types.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Row {
    /// Decodes a column whose Rust type both backends store natively.
    fn get<T>(&self, column: &str) -> Result<T, StorageError>
    where
        T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>,
    {
        use sqlx::Row as _;
        Ok(match self {
            Row::Sqlite(row) => row.try_get(column)?,
            Row::Postgres(row) => row.try_get(column)?,
        })
    }

    pub(crate) fn int(&self, column: &str) -> Result<i64, StorageError> {
        self.get(column)
    }

    /// A counter column: never negative unless the row was tampered with.
    pub(crate) fn count(&self, column: &str) -> Result<u64, StorageError> {
        let value = self.int(column)?;
        u64::try_from(value).map_err(|_| StorageError::Corrupt(format!("{column} is negative: {value}")))
    }

    pub(crate) fn real(&self, column: &str) -> Result<f64, StorageError> {
        self.get(column)
    }

    pub(crate) fn bool(&self, column: &str) -> Result<bool, StorageError> {
        self.get(column)
    }

    pub(crate) fn text(&self, column: &str) -> Result<String, StorageError> {
        self.get(column)
    }

    pub(crate) fn opt_text(&self, column: &str) -> Result<Option<String>, StorageError> {
        self.get(column)
    }

    /// Parses a text column with the type's `FromStr`, reporting a bad value as corruption.
    pub(crate) fn parsed<T>(&self, column: &str) -> Result<T, StorageError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        let text = self.text(column)?;
        text.parse().map_err(|e| StorageError::Corrupt(format!("{column}: {e}")))
    }

    pub(crate) fn opt_uuid(&self, column: &str) -> Result<Option<Uuid>, StorageError> {
        match self {
            Row::Sqlite(_) => self
                .opt_text(column)?
                .map(|text| text.parse().map_err(|e| StorageError::Corrupt(format!("{column}: {e}"))))
                .transpose(),
            Row::Postgres(_) => self.get(column),
        }
    }

    pub(crate) fn uuid(&self, column: &str) -> Result<Uuid, StorageError> {
        self.opt_uuid(column)?.ok_or_else(|| StorageError::Corrupt(format!("{column} is null")))
    }

    pub(crate) fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, StorageError> {
        match self {
            Row::Sqlite(_) => self
                .opt_text(column)?
                .map(|text| {
                    DateTime::parse_from_rfc3339(&text)
                        .map(|t| t.to_utc())
                        .map_err(|e| StorageError::Corrupt(format!("{column}: `{text}`: {e}")))
                })
                .transpose(),
            Row::Postgres(_) => self.get(column),
        }
    }

    pub(crate) fn time(&self, column: &str) -> Result<DateTime<Utc>, StorageError> {
        self.opt_time(column)?.ok_or_else(|| StorageError::Corrupt(format!("{column} is null")))
    }

    pub(crate) fn json(&self, column: &str) -> Result<Value, StorageError> {
        match self {
            Row::Sqlite(_) => {
                let text = self.text(column)?;
                serde_json::from_str(&text).map_err(|e| StorageError::Corrupt(format!("{column}: {e}")))
            }
            Row::Postgres(_) => Ok(self.get::<sqlx::types::Json<Value>>(column)?.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn nul_characters_are_replaced() {
        assert!(matches!(clean_text("plain"), Cow::Borrowed("plain")));
        assert_eq!(clean_text("a\0b"), "a\u{FFFD}b");
        let value = json!({"k\u{0}": ["x\u{0}", 1, {"n": null}]});
        assert_eq!(*clean_json(&value), json!({"k\u{FFFD}": ["x\u{FFFD}", 1, {"n": null}]}));
        assert!(matches!(clean_json(&json!({"a": "b"})), Cow::Borrowed(_)));
    }

    #[tokio::test]
    async fn writes_work_again_after_sqlite_full() {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
        let dir = tempfile::tempdir().unwrap();
        // A database capped at 16 pages fills as a full disk would: SQLITE_FULL, transaction rolled back.
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("capped.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("max_page_count", "16");
        let pool = || SqlitePoolOptions::new().max_connections(1).connect_with(options.clone());
        let pools = Pools::Sqlite { reader: pool().await.unwrap(), writer: pool().await.unwrap() };
        let mut setup = pools.write().await.unwrap();
        setup.execute("CREATE TABLE t (x BLOB)", &[]).await.unwrap();
        setup.commit().await.unwrap();

        let mut filling = pools.write().await.unwrap();
        let full = loop {
            if let Err(error) = filling.execute("INSERT INTO t VALUES (randomblob(8000))", &[]).await {
                break error;
            }
        };
        assert!(matches!(full, StorageError::Unavailable(_)), "{full:?}");
        drop(filling);

        let mut next = pools.write().await.expect("a later write begins");
        next.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
        next.commit().await.unwrap();
        let mut read = pools.read().await.unwrap();
        assert_eq!(read.fetch_one("SELECT COUNT(*) AS n FROM t", &[]).await.unwrap().int("n").unwrap(), 1);
    }

    #[test]
    fn sqlite_timestamps_sort_as_text() {
        let early = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let later = early + chrono::Duration::nanoseconds(1500);
        let (a, b) = (sqlite_time(early), sqlite_time(later));
        assert_eq!(a, "2024-01-01T00:00:00.000000Z");
        assert_eq!(b, "2024-01-01T00:00:00.000001Z", "truncated to microseconds like PostgreSQL");
        assert!(a < b);
    }
}
