//! `capsule_read`, `capsule_search`, `capsule_create`, `capsule_delete`: Forge's capsules, filtered by
//! the overlay's trust.

use super::{HandlerFuture, HostCallError, RequestContext, parse_request, to_answer};
use crate::abi::GuestErrorCode;
use crate::state::{Abort, OverlayIdentity};
use forge_model::{Capsule, CapsuleHit, CapsulePreview, CapsuleType, NewCapsule, TrustLevel};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::Instant;
use uuid::Uuid;

/// Where capsules live. The service backs it with its database; [`InMemoryCapsules`] serves local runs
/// and tests.
#[async_trait::async_trait]
pub trait CapsuleStore: Send + Sync + 'static {
    async fn read(&self, id: Uuid) -> Result<Option<Capsule>, HostCallError>;
    /// Best matches first, only capsules `max_trust` can access, content cut to 500 characters.
    async fn search(
        &self,
        query: &str,
        limit: u32,
        max_trust: TrustLevel,
    ) -> Result<Vec<CapsuleHit>, HostCallError>;
    /// Stores the capsule, unless the call's `deadline` passes first: by then the guest was told its
    /// call failed, so a write still waiting (on a stalled database) must not land afterwards.
    async fn create(&self, capsule: NewCapsule, deadline: Instant) -> Result<Capsule, HostCallError>;
    /// Deletes the capsule if `by`'s trust level can access it, recording `by` as who deleted it.
    /// False if it is missing or above that trust: the two must look alike to the guest. Like
    /// `create`, nothing changes once the call's `deadline` has passed.
    async fn delete(&self, id: Uuid, by: &OverlayIdentity, deadline: Instant) -> Result<bool, HostCallError>;
}

/// Most hits one search returns.
pub const MAX_SEARCH_LIMIT: u32 = 100;
const DEFAULT_SEARCH_LIMIT: u32 = 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadRequest {
    id: Uuid,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteRequest {
    id: Uuid,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    query: String,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    content: String,
    #[serde(rename = "type")]
    capsule_type: CapsuleType,
    #[serde(default)]
    metadata: Map<String, Value>,
}

/// A capsule the overlay may not see is answered exactly like a missing one.
pub(crate) fn read(context: &mut RequestContext<'_>, request: Value) -> Result<HandlerFuture, Abort> {
    let store = context.grants.services.capsules.clone();
    let trust = context.identity.trust_level;
    Ok(Box::pin(async move {
        let ReadRequest { id } = parse_request(request)?;
        match store.read(id).await? {
            Some(capsule) if trust.can_access(capsule.trust_level) => to_answer(capsule),
            _ => Err(HostCallError::refused(GuestErrorCode::NotFound, format!("capsule {id} not found"))),
        }
    }))
}

pub(crate) fn search(context: &mut RequestContext<'_>, request: Value) -> Result<HandlerFuture, Abort> {
    let store = context.grants.services.capsules.clone();
    let trust = context.identity.trust_level;
    Ok(Box::pin(async move {
        let SearchRequest { query, limit } = parse_request(request)?;
        let limit = limit.unwrap_or(DEFAULT_SEARCH_LIMIT).clamp(1, MAX_SEARCH_LIMIT);
        let mut hits = store.search(&query, limit, trust).await?;
        // The store filters already; the host re-checks, since trust is its promise to keep.
        hits.retain(|hit| trust.can_access(hit.capsule.trust_level));
        hits.truncate(limit as usize);
        to_answer(hits)
    }))
}

/// The new capsule gets the overlay's trust level and records which overlay made it.
pub(crate) fn create(context: &mut RequestContext<'_>, request: Value) -> Result<HandlerFuture, Abort> {
    let store = context.grants.services.capsules.clone();
    let (identity, deadline) = (context.identity.clone(), context.deadline);
    Ok(Box::pin(async move {
        let CreateRequest { content, capsule_type, mut metadata } = parse_request(request)?;
        if let Some(id) = identity.id {
            metadata.insert("created_by_overlay".into(), id.to_string().into());
        }
        metadata.insert("overlay_name".into(), identity.name.to_string().into());
        let capsule = NewCapsule {
            content,
            capsule_type,
            trust_level: identity.trust_level,
            metadata,
            owner: None,
            created_by_overlay: identity.id,
        };
        capsule.validate().map_err(|e| HostCallError::refused(GuestErrorCode::InvalidRequest, e.message))?;
        to_answer(store.create(capsule, deadline).await?)
    }))
}

/// Answers `{"deleted": id}`; a capsule the overlay may not see is answered exactly like a missing one.
pub(crate) fn delete(context: &mut RequestContext<'_>, request: Value) -> Result<HandlerFuture, Abort> {
    let store = context.grants.services.capsules.clone();
    let (identity, deadline) = (context.identity.clone(), context.deadline);
    Ok(Box::pin(async move {
        let DeleteRequest { id } = parse_request(request)?;
        if store.delete(id, &identity, deadline).await? {
            Ok(serde_json::json!({ "deleted": id }))
        } else {
            Err(HostCallError::refused(GuestErrorCode::NotFound, format!("capsule {id} not found")))
        }
    }))
}

/// Capsules held in memory, searched by counting query words. For local runs and tests; the service
/// uses its database's full-text search.
#[derive(Default)]
pub struct InMemoryCapsules {
    capsules: Mutex<Vec<Capsule>>,
}

impl InMemoryCapsules {
    /// Stores a capsule as version 1 and returns it.
    pub fn insert(&self, capsule: NewCapsule) -> Capsule {
        let capsule = Capsule {
            id: Uuid::now_v7(),
            content: capsule.content,
            capsule_type: capsule.capsule_type,
            trust_level: capsule.trust_level,
            version: 1,
            metadata: capsule.metadata,
            owner: capsule.owner,
            created_by_overlay: capsule.created_by_overlay,
            created_at: chrono::Utc::now(),
        };
        self.capsules.lock().push(capsule.clone());
        capsule
    }

    /// Every capsule stored so far, oldest first.
    pub fn all(&self) -> Vec<Capsule> {
        self.capsules.lock().clone()
    }
}

#[async_trait::async_trait]
impl CapsuleStore for InMemoryCapsules {
    async fn read(&self, id: Uuid) -> Result<Option<Capsule>, HostCallError> {
        Ok(self.capsules.lock().iter().find(|c| c.id == id).cloned())
    }

    async fn search(
        &self,
        query: &str,
        limit: u32,
        max_trust: TrustLevel,
    ) -> Result<Vec<CapsuleHit>, HostCallError> {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        let mut hits: Vec<CapsuleHit> = self
            .capsules
            .lock()
            .iter()
            .filter(|c| max_trust.can_access(c.trust_level))
            .filter_map(|c| {
                let content = c.content.to_lowercase();
                let score = words.iter().map(|w| content.matches(w.as_str()).count()).sum::<usize>();
                (score > 0).then(|| CapsuleHit { capsule: CapsulePreview::of(c), score: score as f64 })
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(limit as usize);
        Ok(hits)
    }

    /// Answers at once, so within any deadline.
    async fn create(&self, capsule: NewCapsule, _: Instant) -> Result<Capsule, HostCallError> {
        Ok(self.insert(capsule))
    }

    async fn delete(&self, id: Uuid, by: &OverlayIdentity, _: Instant) -> Result<bool, HostCallError> {
        let mut capsules = self.capsules.lock();
        let before = capsules.len();
        capsules.retain(|c| c.id != id || !by.trust_level.can_access(c.trust_level));
        Ok(capsules.len() < before)
    }
}
