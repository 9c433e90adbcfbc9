//! The one implementation of [`Repository`], shared by SQLite and PostgreSQL.
//!
//! The statements below are written once in the SQL both dialects accept (`$n` parameters,
//! `RETURNING`, `ON CONFLICT`); only capsule search differs, FTS5 against `tsvector`. Column lists
//! that follow [`LatencyHistogram::BUCKETS`] are generated once at first use.

use crate::db::{Arg, Execute, Pools, Row, Tx, count};
use crate::error::StorageError;
use crate::repository::{MetricsDelta, MetricsOutcome, Repository, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use forge_model::{
    AuditAction, AuditEvent, Capsule, CapsuleHit, CapsulePreview, LatencyHistogram, NewAuditEvent,
    NewCapsule, Overlay, OverlayFilter, OverlayHealth, OverlayManifest, OverlayState, Page, PageRequest,
    QuarantinePolicy, TrustLevel, User,
};
use serde_json::{Map, Value, json};
use std::sync::LazyLock;
use uuid::Uuid;

/// Columns of [`OverlayHealth`] plus the state and trust that the quarantine rule reads.
macro_rules! health_columns {
    () => {
        "state, trust_level, invocation_count, failure_count, host_failure_count, total_execution_ms, \
         last_invoked_at, last_error"
    };
}

macro_rules! overlay_columns {
    () => {
        concat!(
            "id, name, version, manifest, wasm_key, wasm_hash, source_hash, submitted_by, requires_approval, \
             created_at, updated_at, ",
            health_columns!()
        )
    };
}

/// The filters of [`OverlayFilter`]; each is skipped when its parameter is null.
macro_rules! overlay_filter {
    () => {
        " FROM overlays WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR submitted_by = $2) \
         AND ($3 IS NULL OR name LIKE $3 ESCAPE '\\') \
         AND ($4 IS NULL OR id IN (SELECT overlay_id FROM overlay_capabilities WHERE capability = $4))"
    };
}

macro_rules! capsule_columns {
    () => {
        "id, content, capsule_type, trust_level, version, metadata, owner, created_by_overlay, created_at"
    };
}

macro_rules! user_columns {
    () => {
        "id, name, roles, trust_level, created_at"
    };
}

const INSERT_OVERLAY: &str = concat!(
    "INSERT INTO overlays (id, name, version, manifest, state, trust_level, wasm_key, wasm_hash, source_hash, \
     submitted_by, requires_approval, created_at, updated_at, invocation_count, failure_count, \
     host_failure_count, total_execution_ms, last_invoked_at, last_error) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) RETURNING ",
    overlay_columns!()
);
const INSERT_CAPABILITY: &str =
    "INSERT INTO overlay_capabilities (overlay_id, capability) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const GET_OVERLAY: &str = concat!("SELECT ", overlay_columns!(), " FROM overlays WHERE id = $1");
const GET_OVERLAY_BY_NAME_VERSION: &str =
    concat!("SELECT ", overlay_columns!(), " FROM overlays WHERE name = $1 AND version = $2");
const COUNT_OVERLAYS: &str = concat!("SELECT COUNT(*) AS total", overlay_filter!());
const LIST_OVERLAYS: &str =
    concat!("SELECT ", overlay_columns!(), overlay_filter!(), " ORDER BY created_at, id LIMIT $5 OFFSET $6");
const ACTIVE_NAMED: &str = concat!(
    "SELECT ",
    overlay_columns!(),
    " FROM overlays WHERE name = $1 AND state = $2 ORDER BY created_at, id"
);
const TRANSITION: &str = concat!(
    "UPDATE overlays SET state = $3, updated_at = $4 WHERE id = $1 AND state = $2 RETURNING ",
    overlay_columns!()
);
const SET_TRUST: &str = concat!(
    "UPDATE overlays SET trust_level = $2, updated_at = $3 WHERE id = $1 RETURNING ",
    overlay_columns!()
);
const DELETE_OVERLAY: &str = "DELETE FROM overlays WHERE id = $1";
/// The compare-and-set that makes an automatic quarantine happen once: only an overlay still in
/// `$3` (active) moves.
const QUARANTINE_IF: &str = "UPDATE overlays SET state = $2, updated_at = $4 WHERE id = $1 AND state = $3";

const INSERT_EVENT: &str = "INSERT INTO audit_events \
     (overlay_id, actor, action, from_state, to_state, reason, details, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const COUNT_EVENTS: &str = "SELECT COUNT(*) AS total FROM audit_events WHERE overlay_id = $1";
const LIST_EVENTS: &str = "SELECT id, overlay_id, actor, action, from_state, to_state, reason, details, \
     created_at FROM audit_events WHERE overlay_id = $1 ORDER BY id LIMIT $2 OFFSET $3";

const INSERT_USER: &str = concat!(
    "INSERT INTO users (id, name, roles, trust_level, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING ",
    user_columns!()
);
const GET_USER_BY_NAME: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE name = $1");
const INSERT_TOKEN: &str = "INSERT INTO api_tokens (token_hash, user_id, created_at) VALUES ($1, $2, $3)";
const USER_BY_TOKEN: &str = "SELECT u.id, u.name, u.roles, u.trust_level, u.created_at \
     FROM users u JOIN api_tokens t ON t.user_id = u.id WHERE t.token_hash = $1 AND t.revoked_at IS NULL";
const REVOKE_TOKEN: &str =
    "UPDATE api_tokens SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL";

const INSERT_CAPSULE: &str = concat!(
    "INSERT INTO capsules (",
    capsule_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
    capsule_columns!()
);
const GET_CAPSULE: &str = concat!("SELECT ", capsule_columns!(), " FROM capsules WHERE id = $1");
/// Capsule search on SQLite: `$1` is an FTS5 query of quoted terms. BM25 is lower-is-better, so
/// the score is its negation.
const SEARCH_CAPSULES_SQLITE: &str = "SELECT c.id, substr(c.content, 1, CAST($4 AS INTEGER)) AS content, \
     c.capsule_type, c.trust_level, c.version, c.metadata, c.owner, c.created_by_overlay, c.created_at, \
     -bm25(capsules_fts) AS score \
     FROM capsules_fts JOIN capsules c ON c.seq = capsules_fts.rowid \
     WHERE capsules_fts MATCH $1 AND c.trust_level <= $2 \
     ORDER BY score DESC, c.created_at DESC LIMIT $3";
/// Capsule search on PostgreSQL: `plainto_tsquery` reads any text as plain words joined by AND.
const SEARCH_CAPSULES_POSTGRES: &str = "SELECT c.id, substr(c.content, 1, CAST($4 AS INTEGER)) AS content, \
     c.capsule_type, c.trust_level, c.version, c.metadata, c.owner, c.created_by_overlay, c.created_at, \
     CAST(ts_rank(c.search, q) AS DOUBLE PRECISION) AS score \
     FROM capsules c, plainto_tsquery('english', $1) q \
     WHERE c.search @@ q AND c.trust_level <= $2 \
     ORDER BY score DESC, c.created_at DESC LIMIT $3";

fn bucket_column(bucket: usize) -> String {
    format!("latency_{bucket:02}")
}

/// `latency_00 = <value>, latency_01 = <value>, ...` with `value(bucket)` on the right.
fn bucket_assignments(value: impl Fn(usize) -> String) -> String {
    (0..LatencyHistogram::BUCKETS)
        .map(|b| format!("{col} = {}", value(b), col = bucket_column(b)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parameter number of bucket 0 in [`RECORD_METRICS`].
const FIRST_BUCKET_PARAM: usize = 8;

/// Adds one delta in a single statement; every counter is incremented where it is stored, so
/// concurrent writers serialise on the row lock and none of their increments is lost.
static RECORD_METRICS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE overlays SET invocation_count = invocation_count + $2, failure_count = failure_count + $3, \
         host_failure_count = host_failure_count + $4, total_execution_ms = total_execution_ms + $5, \
         last_invoked_at = CASE WHEN last_invoked_at IS NULL OR last_invoked_at < $6 THEN $6 \
         ELSE last_invoked_at END, last_error = COALESCE($7, last_error), {buckets} \
         WHERE id = $1 RETURNING {health}",
        buckets = bucket_assignments(|b| format!("{} + ${}", bucket_column(b), FIRST_BUCKET_PARAM + b)),
        health = health_columns!(),
    )
});

/// [`TRANSITION`] that also empties the health and the histogram.
static TRANSITION_RESETTING_HEALTH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE overlays SET state = $3, updated_at = $4, invocation_count = 0, failure_count = 0, \
         host_failure_count = 0, total_execution_ms = 0, last_invoked_at = NULL, last_error = NULL, {buckets} \
         WHERE id = $1 AND state = $2 RETURNING {columns}",
        buckets = bucket_assignments(|_| "0".into()),
        columns = overlay_columns!(),
    )
});

static LATENCY_HISTOGRAM: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<String> = (0..LatencyHistogram::BUCKETS).map(bucket_column).collect();
    format!("SELECT {} FROM overlays WHERE id = $1", columns.join(", "))
});

/// The repository over either backend.
pub(crate) struct SqlRepository {
    pub(crate) pools: Pools,
}

fn trust_from(row: &Row) -> Result<TrustLevel> {
    let value = row.int("trust_level")?;
    TrustLevel::from_value(value).ok_or_else(|| StorageError::Corrupt(format!("trust_level: {value}")))
}

fn health_from(row: &Row) -> Result<OverlayHealth> {
    let invocation_count = row.count("invocation_count")?;
    let total_ms = row.real("total_execution_ms")?;
    Ok(OverlayHealth {
        invocation_count,
        failure_count: row.count("failure_count")?,
        host_failure_count: row.count("host_failure_count")?,
        avg_execution_ms: if invocation_count == 0 { 0.0 } else { total_ms / invocation_count as f64 },
        last_invoked_at: row.opt_time("last_invoked_at")?,
        last_error: row.opt_text("last_error")?,
    })
}

fn overlay_from(row: &Row) -> Result<Overlay> {
    let id = row.uuid("id")?;
    let manifest = OverlayManifest::from_value(row.json("manifest")?)
        .map_err(|e| StorageError::Corrupt(format!("overlay {id}: stored manifest: {e}")))?;
    Ok(Overlay {
        id,
        manifest,
        state: row.parsed("state")?,
        trust_level: trust_from(row)?,
        wasm_key: row.text("wasm_key")?,
        wasm_hash: row.text("wasm_hash")?,
        source_hash: row.opt_text("source_hash")?,
        submitted_by: row.text("submitted_by")?,
        requires_approval: row.bool("requires_approval")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        health: health_from(row)?,
    })
}

fn overlays_from(rows: Vec<Row>) -> Result<Vec<Overlay>> {
    rows.iter().map(overlay_from).collect()
}

fn opt_state(row: &Row, column: &str) -> Result<Option<OverlayState>> {
    row.opt_text(column)?
        .map(|s| s.parse().map_err(|e| StorageError::Corrupt(format!("{column}: {e}"))))
        .transpose()
}

fn json_object(row: &Row, column: &str) -> Result<Map<String, Value>> {
    match row.json(column)? {
        Value::Object(map) => Ok(map),
        other => Err(StorageError::Corrupt(format!("{column} is not an object: {other}"))),
    }
}

fn event_from(row: &Row) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: row.int("id")?,
        overlay_id: row.uuid("overlay_id")?,
        actor: row.text("actor")?,
        action: row.parsed("action")?,
        from_state: opt_state(row, "from_state")?,
        to_state: opt_state(row, "to_state")?,
        reason: row.opt_text("reason")?,
        details: json_object(row, "details")?,
        created_at: row.time("created_at")?,
    })
}

fn user_from(row: &Row) -> Result<User> {
    let roles = serde_json::from_value(row.json("roles")?)
        .map_err(|e| StorageError::Corrupt(format!("roles: {e}")))?;
    Ok(User {
        id: row.uuid("id")?,
        name: row.text("name")?,
        roles,
        trust_level: trust_from(row)?,
        created_at: row.time("created_at")?,
    })
}

fn capsule_from(row: &Row) -> Result<Capsule> {
    let version = row.int("version")?;
    Ok(Capsule {
        id: row.uuid("id")?,
        content: row.text("content")?,
        capsule_type: row.parsed("capsule_type")?,
        trust_level: trust_from(row)?,
        version: u32::try_from(version).map_err(|_| StorageError::Corrupt(format!("version: {version}")))?,
        metadata: json_object(row, "metadata")?,
        owner: row.opt_text("owner")?,
        created_by_overlay: row.opt_uuid("created_by_overlay")?,
        created_at: row.time("created_at")?,
    })
}

/// Replaces the database's wording of a unique violation with one naming the caller's record.
fn conflict_means(message: impl FnOnce() -> String) -> impl FnOnce(StorageError) -> StorageError {
    |error| match error {
        StorageError::Conflict(_) => StorageError::Conflict(message()),
        other => other,
    }
}

/// `%needle%` for LIKE, with LIKE's own wildcards in the needle taken literally.
fn like_substring(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The words of a search query: terms separated by whitespace or control characters (NUL among
/// them, which PostgreSQL refuses in text), with at least one letter or digit.
fn search_terms(query: &str) -> Vec<&str> {
    query
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|t| t.chars().any(char::is_alphanumeric))
        .collect()
}

/// An FTS5 query matching every term, each quoted as a string so that no input is FTS5 syntax.
fn fts5_query(terms: &[&str]) -> String {
    terms.iter().map(|t| format!("\"{}\"", t.replace('"', "\"\""))).collect::<Vec<_>>().join(" AND ")
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

/// The audit event of an automatic quarantine, with the numbers that triggered it.
fn auto_quarantine_event(
    overlay_id: Uuid,
    health: &OverlayHealth,
    policy: QuarantinePolicy,
) -> NewAuditEvent {
    let rate = health.failure_rate();
    let mut details = Map::new();
    details.insert("failure_rate".into(), json!(rate));
    details.insert("invocation_count".into(), json!(health.invocation_count));
    details.insert("failure_count".into(), json!(health.failure_count));
    NewAuditEvent {
        overlay_id,
        actor: "system".into(),
        action: AuditAction::AutoQuarantine,
        from_state: Some(OverlayState::Active),
        to_state: Some(OverlayState::Quarantined),
        reason: Some(format!(
            "failure rate {:.1}% over {} invocations is above {:.1}%",
            rate * 100.0,
            health.invocation_count,
            policy.max_failure_rate * 100.0
        )),
        details,
    }
}

/// Applies one delta inside the batch's transaction, then the quarantine rule on the new values.
async fn apply_delta(
    tx: &mut Tx,
    delta: &MetricsDelta,
    policy: QuarantinePolicy,
    at: DateTime<Utc>,
) -> Result<Option<MetricsOutcome>> {
    let mut args: Vec<Arg> = vec![
        delta.overlay_id.into(),
        count(delta.invocations).into(),
        count(delta.failures).into(),
        count(delta.host_failures).into(),
        delta.total_execution_ms.into(),
        delta.last_invoked_at.into(),
        delta.last_error.as_deref().into(),
    ];
    debug_assert_eq!(args.len() + 1, FIRST_BUCKET_PARAM);
    args.extend(delta.latency_buckets.iter().map(|n| Arg::from(count(*n))));
    let Some(row) = tx.fetch_optional(RECORD_METRICS.as_str(), &args).await? else {
        return Ok(None);
    };
    let mut outcome = MetricsOutcome {
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
            insert_event(tx, &auto_quarantine_event(delta.overlay_id, &outcome.health, policy), at).await?;
            outcome.state = to;
            outcome.quarantined = true;
        }
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

    async fn record_metrics(
        &self,
        deltas: &[MetricsDelta],
        policy: QuarantinePolicy,
    ) -> Result<Vec<MetricsOutcome>> {
        if deltas.is_empty() {
            return Ok(Vec::new());
        }
        // One lock order for every batch: two batches touching the same overlays never wait on each
        // other in a cycle.
        let mut order: Vec<&MetricsDelta> = deltas.iter().collect();
        order.sort_by_key(|d| d.overlay_id);
        let at = Utc::now();
        let mut tx = self.pools.write().await?;
        let mut outcomes = Vec::with_capacity(deltas.len());
        for delta in order {
            outcomes.extend(apply_delta(&mut tx, delta, policy, at).await?);
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

    async fn insert_capsule(&self, capsule: NewCapsule) -> Result<Capsule> {
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
        tx.commit().await?;
        Ok(stored)
    }

    async fn get_capsule(&self, id: Uuid) -> Result<Option<Capsule>> {
        let row = self.pools.read().await?.fetch_optional(GET_CAPSULE, &[id.into()]).await?;
        row.as_ref().map(capsule_from).transpose()
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
        rows.iter()
            .map(|row| {
                let capsule = capsule_from(row)?;
                Ok(CapsuleHit { capsule: CapsulePreview::of(&capsule), score: row.real("score")? })
            })
            .collect()
    }

    async fn close(&self) {
        self.pools.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_takes_wildcards_literally() {
        assert_eq!(like_substring("Echo"), "%echo%");
        assert_eq!(like_substring("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }

    #[test]
    fn fts5_terms_are_quoted() {
        let terms = search_terms("  rust \"wasm\" AND -- NEAR(x) * ");
        assert_eq!(terms, ["rust", "\"wasm\"", "AND", "NEAR(x)"]);
        assert_eq!(fts5_query(&terms), r#""rust" AND """wasm""" AND "AND" AND "NEAR(x)""#);
        assert!(search_terms(" -- * \" ").is_empty());
        assert_eq!(search_terms("sand\u{0}box"), ["sand", "box"]);
    }

    #[test]
    fn generated_statements_cover_every_bucket() {
        let last = LatencyHistogram::BUCKETS - 1;
        let last_param = format!("{} + ${}", bucket_column(last), FIRST_BUCKET_PARAM + last);
        assert!(RECORD_METRICS.contains(&last_param), "{}", *RECORD_METRICS);
        assert!(TRANSITION_RESETTING_HEALTH.contains(&format!("{} = 0", bucket_column(last))));
        assert!(LATENCY_HISTOGRAM.contains(&bucket_column(last)));
    }
}
