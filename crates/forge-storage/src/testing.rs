//! Throw-away databases for tests of this crate and of the crates above it: SQLite in a temporary
//! directory, or a PostgreSQL database created for one test and dropped after it.

use crate::{BlobStore, Repository, open_repository};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// A repository on a database of its own, removed when dropped.
pub struct Db {
    pub repo: Arc<dyn Repository>,
    /// The URL the repository was opened with, for opening more repositories on the same database.
    pub url: String,
    _cleanup: Cleanup,
}

enum Cleanup {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { admin_url: String, database: String },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, database } = self {
            let (admin_url, name) = (admin_url.clone(), database.clone());
            // Drop runs inside the test's runtime, which cannot be blocked on; a runtime of its own
            // on a thread of its own can. `FORCE` ends the sessions the repository's pool left.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async {
                    let mut admin = PgConnection::connect(&admin_url).await?;
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    sqlx::query(AssertSqlSafe(sql)).execute(&mut admin).await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("could not drop test database {database}: {dropped:?}");
            }
        }
    }
}

impl Db {
    fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    /// Runs `sql` (one or more statements) on the database behind the repository's back.
    pub async fn execute(&self, sql: &str) {
        let sql = AssertSqlSafe(sql.to_owned());
        let done = if self.is_sqlite() {
            let mut connection = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut connection).await.map(drop)
        } else {
            let mut connection = PgConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut connection).await.map(drop)
        };
        done.unwrap_or_else(|e| panic!("test SQL failed: {e}"));
    }

    /// The rows of `table` (a trusted name), counted behind the repository's back.
    pub async fn count_rows(&self, table: &str) -> i64 {
        let sql = AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
        let counted = if self.is_sqlite() {
            let mut connection = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut connection).await
        } else {
            let mut connection = PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut connection).await
        };
        counted.unwrap_or_else(|e| panic!("cannot count {table}: {e}"))
    }

    /// Makes every later insert into `overlays` fail, as a database refusing a write would.
    pub async fn refuse_overlay_inserts(&self) {
        self.execute(if self.is_sqlite() {
            "CREATE TRIGGER refuse_overlays BEFORE INSERT ON overlays \
             BEGIN SELECT RAISE(ABORT, 'refused for the test'); END;"
        } else {
            "CREATE FUNCTION refuse_overlays() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused for the test'; END $$; \
             CREATE TRIGGER refuse_overlays BEFORE INSERT ON overlays \
             FOR EACH ROW EXECUTE FUNCTION refuse_overlays();"
        })
        .await;
    }
}

pub async fn sqlite() -> Db {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("data/forge.db").display());
    let repo = open_repository(&url).await.expect("open SQLite repository");
    Db { repo, url, _cleanup: Cleanup::Sqlite { _dir: dir } }
}

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of its own on the server at `FORGE_TEST_POSTGRES_URL`; panics if there is none.
pub async fn postgres() -> Db {
    let FreshDatabase { url, cleanup } = fresh_postgres().await;
    let repo = open_repository(&url).await.expect("open PostgreSQL repository");
    Db { repo, url, _cleanup: cleanup }
}

/// An empty PostgreSQL database, not yet migrated, dropped when this is.
pub struct FreshDatabase {
    pub url: String,
    cleanup: Cleanup,
}

/// A new, empty database on the server at `FORGE_TEST_POSTGRES_URL` (for tests of what happens
/// when processes first open it); panics if there is no server.
pub async fn fresh_postgres() -> FreshDatabase {
    let admin_url = std::env::var("FORGE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
    let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL tests need a server at {admin_url} (set FORGE_TEST_POSTGRES_URL): {e}")
    });
    let database = format!("forge_test_{}", Uuid::new_v4().simple());
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{database}\"")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {database}: {e}"));
    admin.close().await.ok();
    let url = with_database(&admin_url, &database);
    FreshDatabase { url, cleanup: Cleanup::Postgres { admin_url, database } }
}

/// `url` with its database name replaced, query parameters kept.
fn with_database(url: &str, database: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let path = url[authority..].find(['/', '?']).map_or(url.len(), |i| authority + i);
    let query = url[path..].find('?').map_or("", |i| &url[path + i..]);
    format!("{}/{database}{query}", &url[..path])
}

#[cfg(test)]
#[test]
fn database_names_are_replaced() {
    assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
    assert_eq!(with_database("postgres://u@h/test?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}

/// A store on a backend of its own, and the directory that backs it when local.
pub struct TestBlobs {
    pub blobs: BlobStore,
    /// The directory behind a local store.
    pub dir: Option<tempfile::TempDir>,
}

pub fn local_blobs() -> TestBlobs {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::open(&format!("file://{}", dir.path().join("blobs").display())).unwrap();
    TestBlobs { blobs, dir: Some(dir) }
}

/// A store in memory whose every delete waits `delay` before it removes anything: a delete that
/// is still under way while other requests run, as on a slow bucket.
pub fn blobs_with_slow_deletes(delay: std::time::Duration) -> TestBlobs {
    use object_store::throttle::{ThrottleConfig, ThrottledStore};
    let config = ThrottleConfig { wait_delete_per_call: delay, ..ThrottleConfig::default() };
    let store = ThrottledStore::new(object_store::memory::InMemory::new(), config);
    TestBlobs { blobs: BlobStore { store: Arc::new(store) }, dir: None }
}

pub const DEFAULT_S3_ENDPOINT: &str = "http://127.0.0.1:9000";

/// Options for the test server: fixed credentials, plain HTTP.
pub fn s3_options(endpoint: &str) -> [(&'static str, String); 5] {
    [
        ("aws_endpoint", endpoint.to_owned()),
        ("aws_access_key_id", "test".into()),
        ("aws_secret_access_key", "test".into()),
        ("aws_region", "us-east-1".into()),
        ("aws_allow_http", "true".into()),
    ]
}

/// The S3-compatible test server, from `FORGE_TEST_S3_ENDPOINT`.
pub fn s3_endpoint() -> String {
    std::env::var("FORGE_TEST_S3_ENDPOINT").unwrap_or_else(|_| DEFAULT_S3_ENDPOINT.into())
}

/// A store on a bucket of its own on the test server; panics if there is no server.
pub async fn s3_blobs() -> TestBlobs {
    let endpoint = s3_endpoint();
    let bucket = create_bucket(&endpoint).await;
    let blobs =
        BlobStore::open_with_options(&format!("s3://{bucket}/some/prefix"), s3_options(&endpoint)).unwrap();
    TestBlobs { blobs, dir: None }
}

/// `PUT /bucket`, unsigned, which test servers such as moto accept. object_store has no call to create
/// a bucket, and a plain HTTP/1.1 request needs no client library.
pub async fn create_bucket(endpoint: &str) -> String {
    let bucket = format!("forge-test-{}", Uuid::new_v4().simple());
    let host = endpoint
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("plain http endpoint expected: {endpoint}"));
    let host = host.trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .unwrap_or_else(|e| panic!("S3 tests need a server at {endpoint} (set FORGE_TEST_S3_ENDPOINT): {e}"));
    let request =
        format!("PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "creating bucket {bucket}: {response}");
    bucket
}
