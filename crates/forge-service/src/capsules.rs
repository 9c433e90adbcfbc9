//! Capsules: created and read by users through the API, and by overlays through host functions.

use crate::OverlayService;
use crate::access::{Operation, require, require_trust};
use forge_model::{
    AuditAction, Capsule, CapsuleHit, ForgeError, NewAuditEvent, NewCapsule, Principal, TrustLevel,
};
use forge_runtime::MAX_SEARCH_LIMIT;
use forge_runtime::{CapsuleStore, HostCallError, OverlayIdentity};
use forge_storage::{Repository, StorageError};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// The repository as the runtime's capsule store: storage failures are host faults, never the
/// overlay's.
pub(crate) struct RepositoryCapsules {
    repo: Arc<dyn Repository>,
    /// Turns to use the database (`host_call_db_operations`), fewer than the pool's connections:
    /// guests looping on host calls queue here, leaving connections to authentication and
    /// lifecycle requests. A guest's wait is bounded by its call's deadline.
    turns: Arc<Semaphore>,
}

impl RepositoryCapsules {
    pub(crate) fn new(repo: Arc<dyn Repository>, db_operations: usize) -> Self {
        RepositoryCapsules { repo, turns: Arc::new(Semaphore::new(db_operations.max(1))) }
    }

    async fn turn(&self) -> Result<OwnedSemaphorePermit, HostCallError> {
        self.turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HostCallError::Fault("capsule store closed".into()))
    }

    /// Runs `operation` in a task of its own that keeps its turn until the statement ends. A host
    /// call dropped at its guest's deadline does not stop a statement the database is running (a
    /// stalled one keeps its pooled connection until it ends), so giving the turn back at the drop
    /// would let stalled calls hold more connections than there are turns, up to the whole pool.
    async fn with_turn<T, Operation, Running>(&self, operation: Operation) -> Result<T, HostCallError>
    where
        Operation: FnOnce(Arc<dyn Repository>) -> Running,
        Running: Future<Output = Result<T, StorageError>> + Send + 'static,
        T: Send + 'static,
    {
        let turn = self.turn().await?;
        let running = operation(self.repo.clone());
        let finished = tokio::spawn(async move {
            let result = running.await;
            drop(turn);
            result
        });
        match finished.await {
            Ok(result) => result.map_err(fault),
            Err(error) => {
                tracing::error!(%error, "a capsule store operation panicked");
                Err(HostCallError::Fault(CAPSULE_STORE_FAILED.into()))
            }
        }
    }
}

/// A storage failure as the invocation's result tells it: generic, as the storage error's text can
/// name the database's insides or quote other users' data; the real error goes to the server log.
fn fault(error: StorageError) -> HostCallError {
    tracing::error!(%error, "the capsule store failed during a host call");
    HostCallError::Fault(CAPSULE_STORE_FAILED.into())
}

/// The error an invocation ends with when the capsule store fails (`host_error`).
pub const CAPSULE_STORE_FAILED: &str = "the capsule store failed; the server log has the cause";

#[async_trait::async_trait]
impl CapsuleStore for RepositoryCapsules {
    async fn read(&self, id: Uuid) -> Result<Option<Capsule>, HostCallError> {
        self.with_turn(move |repo| async move { repo.get_capsule(id).await }).await
    }

    async fn search(
        &self,
        query: &str,
        limit: u32,
        max_trust: TrustLevel,
    ) -> Result<Vec<CapsuleHit>, HostCallError> {
        let query = query.to_owned();
        self.with_turn(move |repo| async move { repo.search_capsules(&query, limit, max_trust).await }).await
    }

    async fn create(&self, capsule: NewCapsule, deadline: Instant) -> Result<Capsule, HostCallError> {
        self.with_turn(move |repo| async move { repo.insert_capsule(capsule, Some(deadline)).await }).await
    }

    /// Recorded in the deleting overlay's audit trail (actor: the overlay's name) and the server log.
    async fn delete(&self, id: Uuid, by: &OverlayIdentity, deadline: Instant) -> Result<bool, HostCallError> {
        let Some(overlay_id) = by.id else {
            return Err(HostCallError::Fault("capsule_delete needs a registered overlay".into()));
        };
        let event = NewAuditEvent {
            overlay_id,
            actor: by.name.to_string(),
            action: AuditAction::DeleteCapsule,
            from_state: None,
            to_state: None,
            reason: None,
            details: json!({ "capsule_id": id, "trust_level": by.trust_level })
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        let trust_level = by.trust_level;
        let deleted = self
            .with_turn(move |repo| async move {
                repo.delete_capsule(id, trust_level, event, Some(deadline)).await
            })
            .await?;
        if deleted {
            tracing::info!(capsule_id = %id, %overlay_id, overlay = %by.name, "an overlay deleted a capsule");
        }
        Ok(deleted)
    }
}

impl OverlayService {
    /// Stores a capsule owned by `actor`, at most as trusted as the actor.
    pub async fn create_capsule(
        &self,
        actor: &Principal,
        mut capsule: NewCapsule,
    ) -> Result<Capsule, ForgeError> {
        require(actor, Operation::WriteCapsule)?;
        capsule.validate_submitted()?;
        require_trust(actor, capsule.trust_level, "create a capsule of")?;
        capsule.owner = Some(actor.name.clone());
        capsule.created_by_overlay = None;
        Ok(self.inner.repo.insert_capsule(capsule, None).await?)
    }

    /// A capsule the caller's trust can access; any other is "not found", like a missing one.
    pub async fn get_capsule(&self, caller: &Principal, id: Uuid) -> Result<Capsule, ForgeError> {
        require(caller, Operation::Read)?;
        match self.inner.repo.get_capsule(id).await? {
            Some(capsule) if caller.trust_level.can_access(capsule.trust_level) => Ok(capsule),
            _ => Err(ForgeError::not_found(format!("capsule {id} not found"))),
        }
    }

    /// Full-text search among the capsules the caller's trust can access, best first.
    pub async fn search_capsules(
        &self,
        caller: &Principal,
        query: &str,
        limit: u32,
    ) -> Result<Vec<CapsuleHit>, ForgeError> {
        require(caller, Operation::Read)?;
        let limit = limit.clamp(1, MAX_SEARCH_LIMIT);
        Ok(self.inner.repo.search_capsules(query, limit, caller.trust_level).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn host_calls_wait_for_a_database_turn_while_the_rest_of_the_pool_serves() {
        let db = forge_storage::testing::sqlite().await;
        let capsules = RepositoryCapsules::new(db.repo.clone(), 1);
        let taken = capsules.turn().await.unwrap();
        let mut search = capsules.search("wasm", 10, TrustLevel::Core);
        let waited = tokio::time::timeout(Duration::from_millis(200), &mut search).await;
        assert!(waited.is_err(), "a host call beyond the turns waits");
        assert_eq!(db.repo.get_capsule(Uuid::now_v7()).await.unwrap(), None, "other requests are served");
        drop(taken);
        assert_eq!(search.await.unwrap(), vec![], "the waiting host call runs once a turn is free");
    }

    /// Backends of the test's database waiting for a lock: the capsule statements stalled behind it.
    async fn statements_waiting_for_a_lock(db: &forge_storage::testing::Db) -> i64 {
        let mut connection = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let sql = "SELECT COUNT(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
        sqlx::query_scalar(sql).fetch_one(&mut connection).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL (FORGE_TEST_POSTGRES_URL)"]
    async fn stalled_capsule_calls_hold_no_more_connections_than_their_database_turns() {
        const TURNS: usize = 2;
        let db = forge_storage::testing::postgres().await;
        let capsules = Arc::new(RepositoryCapsules::new(db.repo.clone(), TURNS));
        let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let mut lock = locker.begin().await.unwrap();
        sqlx::query("LOCK TABLE capsules IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();

        // Guests whose deadlines cut their reads off, again and again, as a stalled store makes them.
        let guests: Vec<_> = (0..8)
            .map(|_| {
                let capsules = capsules.clone();
                tokio::spawn(async move {
                    for _ in 0..3 {
                        let read = capsules.read(Uuid::now_v7());
                        let cut = tokio::time::timeout(Duration::from_millis(150), read).await;
                        assert!(cut.is_err(), "a read behind the lock ended: {cut:?}");
                    }
                })
            })
            .collect();
        for guest in guests {
            guest.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stalled = statements_waiting_for_a_lock(&db).await;
        assert!(stalled as usize <= TURNS, "{stalled} stalled statements hold connections, {TURNS} turns");
        assert_eq!(db.repo.get_overlay(Uuid::now_v7()).await.unwrap(), None, "the rest of the pool serves");

        lock.rollback().await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), capsules.read(Uuid::now_v7())).await;
        assert_eq!(read.expect("a read once the lock is gone").unwrap(), None);
    }
}
