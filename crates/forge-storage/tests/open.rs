//! Opening repositories, and the errors of a wrong URL, a database that is down and a corrupt row.

use forge_model::{ErrorCode, ForgeError};
use forge_storage::{StorageError, open_repository, open_sqlite};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use std::time::{Duration, Instant};

#[tokio::test]
async fn unsupported_urls_are_configuration_errors() {
    for url in ["mysql://root:secret@db/forge", "forge.db", ""] {
        let err = open_repository(url).await.err().expect("refused");
        assert!(matches!(&err, StorageError::Config(m) if !m.contains("secret")), "{url}: {err:?}");
    }
}

#[tokio::test]
async fn sqlite_files_and_their_directories_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a dir #1/forge.db");
    let repo = open_sqlite(&path).await.unwrap();
    assert!(repo.get_overlay(uuid::Uuid::now_v7()).await.unwrap().is_none());
    repo.close().await;
    assert!(path.is_file());
    let mut conn =
        SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path)).await.unwrap();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    assert_eq!(journal, "wal");
}

/// Processes starting together on a fresh file: each open waits for the one setting it up, so none
/// fails on a migration another applied (opens in one process contend for the same file lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_a_fresh_sqlite_file_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forge.db");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { open_sqlite(&path).await })
        })
        .collect();
    for open in opens {
        let repo = open.await.unwrap().unwrap();
        assert_eq!(repo.get_user_by_name("nobody").await.unwrap(), None);
        repo.close().await;
    }
}

#[tokio::test]
async fn a_database_that_is_down_is_unavailable() {
    let started = Instant::now();
    // Port 9 (discard) on loopback: nothing listens.
    let err = open_repository("postgres://postgres@127.0.0.1:9/forge").await.err().expect("refused");
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert_eq!(ForgeError::from(err).code, ErrorCode::ServiceUnavailable);
}

#[tokio::test]
async fn corrupt_rows_are_reported_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forge.db");
    let repo = open_sqlite(&path).await.unwrap();
    let user = forge_model::User {
        id: uuid::Uuid::now_v7(),
        name: "eve".into(),
        roles: vec![forge_model::Role::User],
        trust_level: forge_model::TrustLevel::Standard,
        created_at: chrono::Utc::now(),
        disabled: false,
    };
    repo.insert_user(&user).await.unwrap();

    let mut conn =
        SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path)).await.unwrap();
    sqlx::query("UPDATE users SET trust_level = 50").execute(&mut conn).await.unwrap();
    let err = repo.get_user_by_name("eve").await.unwrap_err();
    assert!(matches!(&err, StorageError::Corrupt(m) if m.contains("trust_level")), "{err:?}");
    assert_eq!(ForgeError::from(err).code, ErrorCode::InternalError);

    sqlx::query("UPDATE users SET trust_level = 60, roles = '[\"root\"]'").execute(&mut conn).await.unwrap();
    assert!(matches!(repo.get_user_by_name("eve").await, Err(StorageError::Corrupt(_))));
    conn.close().await.unwrap();
    repo.close().await;
}
