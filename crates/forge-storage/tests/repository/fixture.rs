//! Fresh databases per test, and sample records.

use chrono::Utc;
use forge_model::{NewAuditEvent, Overlay, OverlayHealth, OverlayManifest, OverlayState, TrustLevel};
use forge_storage::{Repository, open_repository};
use serde_json::{Map, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::sync::Arc;
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

pub async fn sqlite() -> Db {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("data/forge.db").display());
    let repo = open_repository(&url).await.expect("open SQLite repository");
    Db { repo, url, _cleanup: Cleanup::Sqlite { _dir: dir } }
}

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of its own on the server at `FORGE_TEST_POSTGRES_URL`; panics if there is none.
pub async fn postgres() -> Db {
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
    let cleanup = Cleanup::Postgres { admin_url, database };
    let repo = open_repository(&url).await.expect("open PostgreSQL repository");
    Db { repo, url, _cleanup: cleanup }
}

/// `url` with its database name replaced, query parameters kept.
fn with_database(url: &str, database: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let path = url[authority..].find(['/', '?']).map_or(url.len(), |i| authority + i);
    let query = url[path..].find('?').map_or("", |i| &url[path + i..]);
    format!("{}/{database}{query}", &url[..path])
}

#[test]
fn database_names_are_replaced() {
    assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
    assert_eq!(with_database("postgres://u@h/test?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}

/// A pending sandbox overlay as registration makes it.
pub fn overlay(name: &str, version: &str, capabilities: &[&str]) -> Overlay {
    let manifest = OverlayManifest::from_value(json!({
        "name": name,
        "version": version,
        "capabilities": capabilities,
        "max_fuel": u64::MAX,
    }))
    .expect("valid manifest");
    let now = Utc::now();
    let hash = format!("{:064x}", Uuid::new_v4().as_u128());
    Overlay {
        id: Uuid::now_v7(),
        wasm_key: Overlay::wasm_key_for(name, version, &hash),
        wasm_hash: hash,
        requires_approval: !manifest.privileged_capabilities().is_empty(),
        manifest,
        state: OverlayState::Pending,
        trust_level: TrustLevel::Sandbox,
        source_hash: None,
        submitted_by: "alice".into(),
        created_at: now,
        updated_at: now,
        health: OverlayHealth::default(),
    }
}

pub fn event(
    overlay_id: Uuid,
    action: &str,
    from: Option<OverlayState>,
    to: Option<OverlayState>,
) -> NewAuditEvent {
    NewAuditEvent {
        overlay_id,
        actor: "admin".into(),
        action: action.into(),
        from_state: from,
        to_state: to,
        reason: Some(format!("{action} for the test")),
        details: Map::new(),
    }
}

/// Registers a sample overlay.
pub async fn register(db: &Db, name: &str, version: &str) -> Overlay {
    let overlay = overlay(name, version, &[]);
    let register = event(overlay.id, "register", None, Some(OverlayState::Pending));
    db.repo.insert_overlay(&overlay, register).await.expect("insert overlay")
}

/// Registers a sample overlay, sets its trust and activates it.
pub async fn active(db: &Db, name: &str, trust: TrustLevel) -> Overlay {
    let overlay = register(db, name, "1.0.0").await;
    let id = overlay.id;
    db.repo.set_trust_level(id, trust, event(id, "set_trust_level", None, None)).await.unwrap();
    let activate = event(id, "activate", Some(OverlayState::Pending), Some(OverlayState::Active));
    db.repo
        .transition(id, OverlayState::Pending, OverlayState::Active, false, activate)
        .await
        .unwrap()
        .unwrap()
}
