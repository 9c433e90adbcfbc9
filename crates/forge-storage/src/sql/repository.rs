//! The one implementation of [`Repository`], shared by SQLite and PostgreSQL: transactions, the
//! audit event recorded with each change, and the quarantine rule applied where the counters are.

use super::backend::{Arg, Execute, Pools, Row, Tx, count};
use super::queries::*;
use super::rows::{
    capsule_from, event_from, health_from, overlay_from, overlays_from, preview_from, token_from, trust_from,
    user_from,
};
use super::search::{fts5_query, like_substring, search_terms};
use crate::error::StorageError;
use crate::repository::{
    BootstrapToken, HealthDelta, HealthOutcome, LogBatch, QuarantineEvent, Repository, Result,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use forge_model::api::TokenInfo;
use forge_model::{
    AuditEvent, Capsule, CapsuleHit, LatencyHistogram, LogEntry, LogQuery, LogRetention, NewAuditEvent,
    NewCapsule, Overlay, OverlayFilter, OverlayState, Page, PageRequest, QuarantinePolicy, TrustLevel, User,
};
use serde_json::{Value, json};
use std::time::Instant;
use uuid::Uuid;

/// The repository over either backend.
pub(crate) struct SqlRepository {
    pub(crate) pools: Pools,
}

/// Replaces the database's wording of a unique violation with one naming the caller's record.
fn conflict_means(message: impl FnOnce() -> String) -> impl FnOnce(StorageError) -> StorageError {
    |error| match error {
        StorageError::Conflict(_) => StorageError::Conflict(message()),
        other => other,
    }
}

fn limit_offset(page: PageRequest) -> (i64, i64) {
    (i64::from(page.per_page), count(page.offset()))
}

async fn insert_event(tx: &mut Tx, event: &NewAuditEvent, at: DateTime<Utc>) -> Result<()> {
    let details = Value::Object(event.details.clone());
    tx.execute(
        INSERT_EVENT,
        &[
            event.overlay_id.into(),
            event.actor.as_str().into(),
            event.action.as_str().into(),
            event.from_state.into(),
            event.to_state.into(),
            event.reason.as_deref().into(),
            (&details).into(),
            at.into(),
        ],
    )
    .await?;
    Ok(())
}

/// How many of an overlay's log batches (rows with `entry_count` and `byte_count`, newest first)
/// hold its retained entries: up to and including the batch in which the retention is reached.
fn retained_batches(batches: &[Row], retention: LogRetention) -> Result<usize> {
    let (mut entries, mut bytes) = (0, 0);
    for (index, batch) in batches.iter().enumerate() {
        entries += batch.count("entry_count")?;
        bytes += batch.count("byte_count")?;
        if retention.reached(entries, bytes) {
            return Ok(index + 1);
        }
    }
    Ok(batches.len())
}

/// Applies one delta inside the batch's transaction, then the quarantine rule on the new values; an
/// overlay on probation that comes through its first window leaves probation.
async fn apply_delta(
    tx: &mut Tx,
    delta: &HealthDelta,
    policy: QuarantinePolicy,
    quarantine_event: QuarantineEvent,
    at: DateTime<Utc>,
) -> Result<Option<HealthOutcome>> {
    let mut args: Vec<Arg> = vec![
        delta.overlay_id.into(),
        count(delta.invocations).into(),
        count(delta.failures).into(),
        count(delta.host_failures).into(),
        delta.total_execution_ms.into(),
        delta.last_invoked_at.into(),
        delta.last_error.as_deref().into(),
        count(delta.caller_failures).into(),
        delta.recent.as_str().into(),
        i64::from(policy.window_calls).into(),
    ];
    debug_assert_eq!(args.len() + 1, FIRST_BUCKET_PARAM);
    args.extend(delta.latency_buckets.iter().map(|n| Arg::from(count(*n))));
    let Some(row) = tx.fetch_optional(RECORD_HEALTH.as_str(), &args).await? else {
        return Ok(None);
    };
    let mut outcome = HealthOutcome {
        overlay_id: delta.overlay_id,
        state: row.parsed("state")?,
        trust_level: trust_from(&row)?,
        health: health_from(&row)?,
        quarantined: false,
    };
    if outcome.state == OverlayState::Active && policy.should_quarantine(outcome.trust_level, &outcome.health)
    {
        let (from, to) = (OverlayState::Active, OverlayState::Quarantined);
        let moved =
            tx.execute(QUARANTINE_IF, &[delta.overlay_id.into(), to.into(), from.into(), at.into()]).await?;
        if moved == 1 {
            insert_event(tx, &quarantine_event(delta.overlay_id, &outcome.health, policy), at).await?;
            outcome.state = to;
            outcome.quarantined = true;
            outcome.health.on_probation = false;
        }
    } else if policy.ends_probation(&outcome.health) {
        tx.execute(END_PROBATION, &[delta.overlay_id.into()]).await?;
        outcome.health.on_probation = false;
    }
    Ok(Some(outcome))
}

impl SqlRepository {
    async fn count(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64> {
        self.pools.read().await?.fetch_one(sql, args).await?.count("total")
    }
}

#[async_trait]
impl Repository for SqlRepository {
    async fn insert_overlay(&self, overlay: &Overlay, event: NewAuditEvent) -> Result<Overlay> {
        let manifest = serde_json::to_value(&overlay.manifest)
            .map_err(|e| StorageError::Corrupt(format!("manifest does not serialise: {e}")))?;
        let health = &overlay.health;
        let (name, version) = (overlay.manifest.name.as_str(), overlay.manifest.version.as_str());
        let mut tx = self.pools.write().await?;
        let row = tx
            .fetch_one(
                INSERT_OVERLAY,
                &[
                    overlay.id.into(),
                    name.into(),
                    version.into(),
                    (&manifest).into(),
                    overlay.state.into(),
                    overlay.trust_level.into(),
                    overlay.wasm_key.as_str().into(),
                    overlay.wasm_hash.as_str().into(),
                    overlay.source_hash.as_deref().into(),
                    overlay.submitted_by.as_str().into(),
                    overlay.requires_approval.into(),
                    overlay.created_at.into(),
                    overlay.updated_at.into(),
                    count(health.invocation_count).into(),
                    count(health.failure_count).into(),
                    count(health.host_failure_count).into(),
                    (health.avg_execution_ms * health.invocation_count as f64).into(),
                    health.last_invoked_at.into(),
                    health.last_error.as_deref().into(),
                    count(health.caller_failure_count).into(),
                    health.recent.as_str().into(),
                    health.on_probation.into(),
                ],
            )
            .await
            .map_err(conflict_means(|| format!("overlay {name} version {version} already exists")))?;
        for capability in &overlay.manifest.capabilities {
            tx.execute(INSERT_CAPABILITY, &[overlay.id.into(), capability.name.as_str().into()]).await?;
        }
        let stored = overlay_from(&row)?;
        insert_event(&mut tx, &event, stored.created_at).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn get_overlay(&self, id: Uuid) -> Result<Option<Overlay>> {
        let row = self.pools.read().await?.fetch_optional(GET_OVERLAY, &[id.into()]).await?;
        row.as_ref().map(overlay_from).transpose()
    }

    async fn get_overlay_by_name_version(&self, name: &str, version: &str) -> Result<Option<Overlay>> {
        let row = self
            .pools
            .read()
            .await?
            .fetch_optional(GET_OVERLAY_BY_NAME_VERSION, &[name.into(), version.into()])
            .await?;
        row.as_ref().map(overlay_from).transpose()
    }

    async fn list_overlays(&self, filter: &OverlayFilter, page: PageRequest) -> Result<Page<Overlay>> {
        let name = filter.name.as_deref().map(like_substring);
        let filters: [Arg; 4] = [
            filter.state.into(),
            filter.submitter.as_deref().into(),
            name.as_deref().into(),
            filter.capability.map(|c| c.as_str()).into(),
        ];
        let total = self.count(COUNT_OVERLAYS, &filters).await?;
        let (limit, offset) = limit_offset(page);
        let mut args = filters.to_vec();
        args.extend([Arg::Int(limit), Arg::Int(offset)]);
        let rows = self.pools.read().await?.fetch_all(LIST_OVERLAYS, &args).await?;
        Ok(Page::new(overlays_from(rows)?, total, page))
    }

    async fn active_overlays_named(&self, name: &str) -> Result<Vec<Overlay>> {
        let args = [name.into(), OverlayState::Active.into()];
        overlays_from(self.pools.read().await?.fetch_all(ACTIVE_NAMED, &args).await?)
    }

    async fn name_submitters(&self, name: &str) -> Result<Vec<String>> {
        let rows = self.pools.read().await?.fetch_all(NAME_SUBMITTERS, &[name.into()]).await?;
        rows.iter().map(|row| row.text("submitted_by")).collect()
    }

    async fn transition(
        &self,
        id: Uuid,
        expected_from: OverlayState,
        to: OverlayState,
        reset_health: bool,
        event: NewAuditEvent,
    ) -> Result<Option<Overlay>> {
        let sql = if reset_health { TRANSITION_RESETTING_HEALTH.as_str() } else { TRANSITION };
        let at = Utc::now();
        let mut tx = self.pools.write().await?;
        let args = [id.into(), expected_from.into(), to.into(), at.into()];
        let Some(row) = tx.fetch_optional(sql, &args).await? else { return Ok(None) };
        let overlay = overlay_from(&row)?;
        insert_event(&mut tx, &event, at).await?;
        tx.commit().await?;
        Ok(Some(overlay))
    }

    async fn set_trust_level(
        &self,
        id: Uuid,
        trust: TrustLevel,
        event: NewAuditEvent,
    ) -> Result<Option<Overlay>> {
        let at = Utc::now();
        let mut tx = self.pools.write().await?;
        let args = [id.into(), trust.into(), at.into()];
        let Some(row) = tx.fetch_optional(SET_TRUST, &args).await? else { return Ok(None) };
        let overlay = overlay_from(&row)?;
        insert_event(&mut tx, &event, at).await?;
        tx.commit().await?;
        Ok(Some(overlay))
    }

    async fn delete_overlay(&self, id: Uuid, event: NewAuditEvent) -> Result<bool> {
        let mut tx = self.pools.write().await?;
        if tx.execute(DELETE_OVERLAY, &[id.into()]).await? == 0 {
            return Ok(false);
        }
        insert_event(&mut tx, &event, Utc::now()).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn record_health(
        &self,
        deltas: &[HealthDelta],
        policy: QuarantinePolicy,
        quarantine_event: QuarantineEvent,
    ) -> Result<Vec<HealthOutcome>> {
        if deltas.is_empty() {
            return Ok(Vec::new());
        }
        // One lock order for every batch: two batches touching the same overlays never wait on each
        // other in a cycle.
        let mut order: Vec<&HealthDelta> = deltas.iter().collect();
        order.sort_by_key(|d| d.overlay_id);
        let at = Utc::now();
        let mut tx = self.pools.write().await?;
        let mut outcomes = Vec::with_capacity(deltas.len());
        for delta in order {
            outcomes.extend(apply_delta(&mut tx, delta, policy, quarantine_event, at).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn latency_histogram(&self, id: Uuid) -> Result<LatencyHistogram> {
        let row = self.pools.read().await?.fetch_optional(LATENCY_HISTOGRAM.as_str(), &[id.into()]).await?;
        let row = row.ok_or_else(|| StorageError::NotFound(format!("overlay {id} not found")))?;
        let counts =
            (0..LatencyHistogram::BUCKETS).map(|b| row.count(&bucket_column(b))).collect::<Result<_>>()?;
        Ok(LatencyHistogram { counts })
    }

    async fn list_events(&self, overlay_id: Uuid, page: PageRequest) -> Result<Page<AuditEvent>> {
        let total = self.count(COUNT_EVENTS, &[overlay_id.into()]).await?;
        let (limit, offset) = limit_offset(page);
        let rows = self
            .pools
            .read()
            .await?
            .fetch_all(LIST_EVENTS, &[overlay_id.into(), limit.into(), offset.into()])
            .await?;
        let events = rows.iter().map(event_from).collect::<Result<_>>()?;
        Ok(Page::new(events, total, page))
    }

    async fn insert_user(&self, user: &User) -> Result<User> {
        let roles = json!(user.roles);
        let mut tx = self.pools.write().await?;
        let args = [
            user.id.into(),
            user.name.as_str().into(),
            (&roles).into(),
            user.trust_level.into(),
            user.created_at.into(),
        ];
        let row = tx
            .fetch_one(INSERT_USER, &args)
            .await
            .map_err(conflict_means(|| format!("user {} already exists", user.name)))?;
        let stored = user_from(&row)?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn get_user_by_name(&self, name: &str) -> Result<Option<User>> {
        let row = self.pools.read().await?.fetch_optional(GET_USER_BY_NAME, &[name.into()]).await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn add_token(&self, user_id: Uuid, token_hash: &str) -> Result<()> {
        let mut tx = self.pools.write().await?;
        tx.execute(INSERT_TOKEN, &[token_hash.into(), user_id.into(), Utc::now().into()])
            .await
            .map_err(conflict_means(|| "token already registered".into()))
            .map_err(|e| match e {
                // The only reference an insert of a token can break is its user.
                StorageError::NotFound(_) => StorageError::NotFound(format!("user {user_id} not found")),
                other => other,
            })?;
        tx.commit().await
    }

    async fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<User>> {
        let row = self.pools.read().await?.fetch_optional(USER_BY_TOKEN, &[token_hash.into()]).await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn revoke_token(&self, token_hash: &str) -> Result<bool> {
        let mut tx = self.pools.write().await?;
        let revoked = tx.execute(REVOKE_TOKEN, &[token_hash.into(), Utc::now().into()]).await? == 1;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn list_tokens(&self, user_id: Uuid, page: PageRequest) -> Result<Page<TokenInfo>> {
        let total = self.count(COUNT_TOKENS, &[user_id.into()]).await?;
        let (limit, offset) = limit_offset(page);
        let args = [user_id.into(), limit.into(), offset.into()];
        let rows = self.pools.read().await?.fetch_all(LIST_TOKENS, &args).await?;
        let tokens = rows.iter().map(token_from).collect::<Result<_>>()?;
        Ok(Page::new(tokens, total, page))
    }

    async fn revoke_user_tokens(&self, user_id: Uuid) -> Result<u64> {
        let mut tx = self.pools.write().await?;
        let revoked = tx.execute(REVOKE_USER_TOKENS, &[user_id.into(), Utc::now().into()]).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<Option<User>> {
        let at = disabled.then(Utc::now);
        let mut tx = self.pools.write().await?;
        let row = tx.fetch_optional(SET_USER_DISABLED, &[name.into(), at.into()]).await?;
        let user = row.as_ref().map(user_from).transpose()?;
        tx.commit().await?;
        Ok(user)
    }

    async fn install_bootstrap_token(&self, user_id: Uuid, token_hash: &str) -> Result<BootstrapToken> {
        let mut tx = self.pools.write().await?;
        let outcome = match tx.fetch_optional(TOKEN_OWNER, &[token_hash.into()]).await? {
            Some(row) if row.uuid("user_id")? != user_id => {
                return Err(StorageError::Conflict("the token belongs to another user".into()));
            }
            Some(row) if row.opt_time("revoked_at")?.is_some() => BootstrapToken::Revoked,
            Some(_) => {
                tx.execute(MARK_BOOTSTRAP, &[token_hash.into()]).await?;
                BootstrapToken::Kept
            }
            None => {
                let now = Utc::now();
                let replaced = tx.execute(REVOKE_OTHER_BOOTSTRAP, &[token_hash.into(), now.into()]).await?;
                tx.execute(INSERT_BOOTSTRAP_TOKEN, &[token_hash.into(), user_id.into(), now.into()]).await?;
                BootstrapToken::Installed { replaced }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn insert_capsule(&self, capsule: NewCapsule, commit_by: Option<Instant>) -> Result<Capsule> {
        let metadata = Value::Object(capsule.metadata);
        let mut tx = self.pools.write().await?;
        let args = [
            Uuid::now_v7().into(),
            capsule.content.as_str().into(),
            capsule.capsule_type.as_str().into(),
            capsule.trust_level.into(),
            1i64.into(),
            (&metadata).into(),
            capsule.owner.as_deref().into(),
            capsule.created_by_overlay.into(),
            Utc::now().into(),
        ];
        let stored = capsule_from(&tx.fetch_one(INSERT_CAPSULE, &args).await?)?;
        tx.commit_by(commit_by).await?;
        Ok(stored)
    }

    async fn get_capsule(&self, id: Uuid) -> Result<Option<Capsule>> {
        let row = self.pools.read().await?.fetch_optional(GET_CAPSULE, &[id.into()]).await?;
        row.as_ref().map(capsule_from).transpose()
    }

    async fn delete_capsule(
        &self,
        id: Uuid,
        max_trust: TrustLevel,
        event: NewAuditEvent,
        commit_by: Option<Instant>,
    ) -> Result<bool> {
        let mut tx = self.pools.write().await?;
        if tx.execute(DELETE_CAPSULE, &[id.into(), max_trust.into()]).await? == 0 {
            return Ok(false);
        }
        insert_event(&mut tx, &event, Utc::now()).await?;
        tx.commit_by(commit_by).await?;
        Ok(true)
    }

    async fn search_capsules(
        &self,
        query: &str,
        limit: u32,
        max_trust: TrustLevel,
    ) -> Result<Vec<CapsuleHit>> {
        let terms = search_terms(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let (sql, text) = match self.pools {
            Pools::Sqlite { .. } => (SEARCH_CAPSULES_SQLITE, fts5_query(&terms)),
            Pools::Postgres(_) => (SEARCH_CAPSULES_POSTGRES, terms.join(" ")),
        };
        let preview_chars = count(CapsuleHit::CONTENT_PREVIEW_CHARS as u64);
        let args = [text.as_str().into(), max_trust.into(), i64::from(limit).into(), preview_chars.into()];
        let rows = self.pools.read().await?.fetch_all(sql, &args).await?;
        // Only what a hit shows is selected and read: metadata and the rest of the content stay in
        // the database.
        rows.iter()
            .map(|row| Ok(CapsuleHit { capsule: preview_from(row)?, score: row.real("score")? }))
            .collect()
    }

    async fn append_logs(&self, batches: &[LogBatch]) -> Result<()> {
        let mut tx = self.pools.write().await?;
        for batch in batches.iter().filter(|batch| !batch.entries.is_empty()) {
            let entries = serde_json::to_string(&batch.entries)
                .map_err(|e| StorageError::Corrupt(format!("log entries do not serialise: {e}")))?;
            let bytes: u64 = batch.entries.iter().map(LogEntry::retained_bytes).sum();
            let args = [
                batch.overlay_id.into(),
                count(batch.entries.len() as u64).into(),
                count(bytes).into(),
                entries.as_str().into(),
            ];
            tx.execute(INSERT_LOGS, &args).await?;
        }
        tx.commit().await
    }

    async fn trim_logs(&self, overlay_id: Uuid, retention: LogRetention) -> Result<()> {
        let sizes = self.pools.read().await?.fetch_all(LOG_SIZES, &[overlay_id.into()]).await?;
        let kept = retained_batches(&sizes, retention)?;
        if kept == sizes.len() {
            return Ok(());
        }
        let mut tx = self.pools.write().await?;
        tx.execute(TRIM_LOGS, &[overlay_id.into(), sizes[kept - 1].int("id")?.into()]).await?;
        tx.commit().await
    }

    async fn read_logs(
        &self,
        overlay_id: Uuid,
        retention: LogRetention,
        query: &LogQuery,
    ) -> Result<(Vec<LogEntry>, u64)> {
        let rows = self.pools.read().await?.fetch_all(READ_LOGS, &[overlay_id.into()]).await?;
        // Newest first: each batch's entries reversed, batches past the retention left unparsed.
        let mut newest = Vec::new();
        for row in &rows[..retained_batches(&rows, retention)?] {
            let text = row.text("entries")?;
            let batch: Vec<LogEntry> = serde_json::from_str(&text)
                .map_err(|e| StorageError::Corrupt(format!("overlay_logs.entries: {e}")))?;
            newest.extend(batch.into_iter().rev());
        }
        newest.truncate(retention.kept(&newest));
        // Batches of several processes can interleave in time; entries are read by their own clock.
        newest.sort_by_key(|entry| std::cmp::Reverse(entry.at));
        newest.retain(|entry| query.matches(entry));
        let total = newest.len() as u64;
        newest.truncate(query.limit as usize);
        Ok((newest, total))
    }

    async fn close(&self) {
        self.pools.close().await;
    }
}
