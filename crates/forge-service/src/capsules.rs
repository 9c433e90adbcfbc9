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
use tokio::sync::{Semaphore, SemaphorePermit};
use uuid::Uuid;

/// The repository as the runtime's capsule store: storage failures are host faults, never the
/// overlay's.
pub(crate) struct RepositoryCapsules {
    repo: Arc<dyn Repository>,
    /// Turns to use the database (`host_call_db_operations`), fewer than the pool's connections:
    /// guests looping on host calls queue here, leaving connections to authentication and
    /// lifecycle requests. A guest's wait is bounded by its call's deadline.
    turns: Semaphore,
}

impl RepositoryCapsules {
    pub(crate) fn new(repo: Arc<dyn Repository>, db_operations: usize) -> Self {
        RepositoryCapsules { repo, turns: Semaphore::new(db_operations.max(1)) }
    }

    async fn turn(&self) -> Result<SemaphorePermit<'_>, HostCallError> {
        self.turns.acquire().await.map_err(|_| HostCallError::Fault("capsule store closed".into()))
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
        let _turn = self.turn().await?;
        self.repo.get_capsule(id).await.map_err(fault)
    }

    async fn search(
        &self,
        query: &str,
        limit: u32,
        max_trust: TrustLevel,
    ) -> Result<Vec<CapsuleHit>, HostCallError> {
        let _turn = self.turn().await?;
        self.repo.search_capsules(query, limit, max_trust).await.map_err(fault)
    }

    async fn create(&self, capsule: NewCapsule) -> Result<Capsule, HostCallError> {
        let _turn = self.turn().await?;
        self.repo.insert_capsule(capsule).await.map_err(fault)
    }

    /// Recorded in the deleting overlay's audit trail (actor: the overlay's name) and the server log.
    async fn delete(&self, id: Uuid, by: &OverlayIdentity) -> Result<bool, HostCallError> {
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
        let _turn = self.turn().await?;
        let deleted = self.repo.delete_capsule(id, by.trust_level, event).await.map_err(fault)?;
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
        Ok(self.inner.repo.insert_capsule(capsule).await?)
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
}
