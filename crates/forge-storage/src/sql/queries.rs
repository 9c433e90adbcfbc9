//! The statements, written once in the SQL both dialects accept (`$n` parameters, `RETURNING`,
//! `ON CONFLICT`); only capsule search differs, FTS5 against `tsvector`. Column lists that follow
//! [`LatencyHistogram::BUCKETS`] are generated once at first use.

use forge_model::LatencyHistogram;
use std::sync::LazyLock;

/// Columns of [`OverlayHealth`] plus the state and trust that the quarantine rule reads.
macro_rules! health_columns {
    () => {
        "state, trust_level, invocation_count, failure_count, host_failure_count, caller_failure_count, \
         total_execution_ms, last_invoked_at, last_error, recent_calls, on_probation"
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
        "id, name, roles, trust_level, created_at, disabled_at"
    };
}

pub(super) const INSERT_OVERLAY: &str = concat!(
    "INSERT INTO overlays (id, name, version, manifest, state, trust_level, wasm_key, wasm_hash, source_hash, \
     submitted_by, requires_approval, created_at, updated_at, invocation_count, failure_count, \
     host_failure_count, total_execution_ms, last_invoked_at, last_error, caller_failure_count, recent_calls, \
     on_probation) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, \
     $22) RETURNING ",
    overlay_columns!()
);
pub(super) const INSERT_CAPABILITY: &str =
    "INSERT INTO overlay_capabilities (overlay_id, capability) VALUES ($1, $2) ON CONFLICT DO NOTHING";
pub(super) const GET_OVERLAY: &str = concat!("SELECT ", overlay_columns!(), " FROM overlays WHERE id = $1");
pub(super) const GET_OVERLAY_BY_NAME_VERSION: &str =
    concat!("SELECT ", overlay_columns!(), " FROM overlays WHERE name = $1 AND version = $2");
pub(super) const COUNT_OVERLAYS: &str = concat!("SELECT COUNT(*) AS total", overlay_filter!());
pub(super) const LIST_OVERLAYS: &str =
    concat!("SELECT ", overlay_columns!(), overlay_filter!(), " ORDER BY created_at, id LIMIT $5 OFFSET $6");
pub(super) const ACTIVE_NAMED: &str = concat!(
    "SELECT ",
    overlay_columns!(),
    " FROM overlays WHERE name = $1 AND state = $2 ORDER BY created_at, id"
);
pub(super) const NAME_SUBMITTERS: &str = "SELECT DISTINCT submitted_by FROM overlays WHERE name = $1";
pub(super) const TRANSITION: &str = concat!(
    "UPDATE overlays SET state = $3, updated_at = $4 WHERE id = $1 AND state = $2 RETURNING ",
    overlay_columns!()
);
pub(super) const SET_TRUST: &str = concat!(
    "UPDATE overlays SET trust_level = $2, updated_at = $3 WHERE id = $1 RETURNING ",
    overlay_columns!()
);
pub(super) const DELETE_OVERLAY: &str = "DELETE FROM overlays WHERE id = $1";
/// The compare-and-set that makes an automatic quarantine happen once: only an overlay still in
/// `$3` (active) moves. A quarantine ends any probation.
pub(super) const QUARANTINE_IF: &str =
    "UPDATE overlays SET state = $2, updated_at = $4, on_probation = FALSE WHERE id = $1 AND state = $3";
/// An overlay came through its first window after a release.
pub(super) const END_PROBATION: &str = "UPDATE overlays SET on_probation = FALSE WHERE id = $1";

pub(super) const INSERT_EVENT: &str = "INSERT INTO audit_events \
     (overlay_id, actor, action, from_state, to_state, reason, details, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(super) const COUNT_EVENTS: &str = "SELECT COUNT(*) AS total FROM audit_events WHERE overlay_id = $1";
pub(super) const LIST_EVENTS: &str = "SELECT id, overlay_id, actor, action, from_state, to_state, reason, details, \
     created_at FROM audit_events WHERE overlay_id = $1 ORDER BY id LIMIT $2 OFFSET $3";

pub(super) const INSERT_USER: &str = concat!(
    "INSERT INTO users (id, name, roles, trust_level, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING ",
    user_columns!()
);
pub(super) const GET_USER_BY_NAME: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE name = $1");
pub(super) const INSERT_TOKEN: &str =
    "INSERT INTO api_tokens (token_hash, user_id, created_at) VALUES ($1, $2, $3)";
/// Only a live token of an enabled user authenticates.
pub(super) const USER_BY_TOKEN: &str = "SELECT u.id, u.name, u.roles, u.trust_level, u.created_at, u.disabled_at \
     FROM users u JOIN api_tokens t ON t.user_id = u.id \
     WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.disabled_at IS NULL";
pub(super) const REVOKE_TOKEN: &str =
    "UPDATE api_tokens SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL";
pub(super) const COUNT_TOKENS: &str = "SELECT COUNT(*) AS total FROM api_tokens WHERE user_id = $1";
/// A user's tokens, oldest first, identified by a prefix of their hash: the hash stays in the database.
pub(super) const LIST_TOKENS: &str = "SELECT substr(token_hash, 1, 12) AS id, created_at, revoked_at, bootstrap \
     FROM api_tokens WHERE user_id = $1 ORDER BY created_at, token_hash LIMIT $2 OFFSET $3";
pub(super) const REVOKE_USER_TOKENS: &str =
    "UPDATE api_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL";
/// `$2` is the time it is disabled at, or null to enable it.
pub(super) const SET_USER_DISABLED: &str =
    concat!("UPDATE users SET disabled_at = $2 WHERE name = $1 RETURNING ", user_columns!());
pub(super) const TOKEN_OWNER: &str = "SELECT user_id, revoked_at FROM api_tokens WHERE token_hash = $1";
pub(super) const MARK_BOOTSTRAP: &str = "UPDATE api_tokens SET bootstrap = TRUE WHERE token_hash = $1";
/// Every other live bootstrap token: the one `FORGE_ADMIN_TOKEN` named before it changed.
pub(super) const REVOKE_OTHER_BOOTSTRAP: &str =
    "UPDATE api_tokens SET revoked_at = $2 WHERE bootstrap AND revoked_at IS NULL AND token_hash <> $1";
/// Processes starting together may insert the same bootstrap token: the first one wins.
pub(super) const INSERT_BOOTSTRAP_TOKEN: &str = "INSERT INTO api_tokens (token_hash, user_id, created_at, bootstrap) \
     VALUES ($1, $2, $3, TRUE) ON CONFLICT DO NOTHING";

pub(super) const INSERT_CAPSULE: &str = concat!(
    "INSERT INTO capsules (",
    capsule_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
    capsule_columns!()
);
pub(super) const GET_CAPSULE: &str = concat!("SELECT ", capsule_columns!(), " FROM capsules WHERE id = $1");
/// Only a capsule at most as trusted as `$2`: the trust check and the delete are one statement.
pub(super) const DELETE_CAPSULE: &str = "DELETE FROM capsules WHERE id = $1 AND trust_level <= $2";
/// Capsule search on SQLite: `$1` is an FTS5 query of quoted terms. BM25 is lower-is-better, so
/// the score is its negation.
pub(super) const SEARCH_CAPSULES_SQLITE: &str = "SELECT c.id, substr(c.content, 1, CAST($4 AS INTEGER)) AS content, \
     c.capsule_type, c.trust_level, -bm25(capsules_fts) AS score \
     FROM capsules_fts JOIN capsules c ON c.seq = capsules_fts.rowid \
     WHERE capsules_fts MATCH $1 AND c.trust_level <= $2 \
     ORDER BY score DESC, c.created_at DESC LIMIT $3";
/// Capsule search on PostgreSQL: `plainto_tsquery` reads any text as plain words joined by AND.
pub(super) const SEARCH_CAPSULES_POSTGRES: &str = "SELECT c.id, substr(c.content, 1, CAST($4 AS INTEGER)) AS content, \
     c.capsule_type, c.trust_level, CAST(ts_rank(c.search, q) AS DOUBLE PRECISION) AS score \
     FROM capsules c, plainto_tsquery('english', $1) q \
     WHERE c.search @@ q AND c.trust_level <= $2 \
     ORDER BY score DESC, c.created_at DESC LIMIT $3";

pub(super) fn bucket_column(bucket: usize) -> String {
    format!("latency_{bucket:02}")
}

/// `latency_00 = <value>, latency_01 = <value>, ...` with `value(bucket)` on the right.
fn bucket_assignments(value: impl Fn(usize) -> String) -> String {
    (0..LatencyHistogram::BUCKETS)
        .map(|b| format!("{col} = {}", value(b), col = bucket_column(b)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parameter number of bucket 0 in [`RECORD_HEALTH`].
pub(super) const FIRST_BUCKET_PARAM: usize = 11;

/// Adds one delta in a single statement; every counter is incremented where it is stored, so
/// concurrent writers serialise on the row lock and none of their increments is lost. The window of
/// recent calls (`$9`, the delta's calls in order) is appended where it is stored too and cut to
/// its last `$10` calls.
pub(super) static RECORD_HEALTH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE overlays SET invocation_count = invocation_count + $2, failure_count = failure_count + $3, \
         host_failure_count = host_failure_count + $4, total_execution_ms = total_execution_ms + $5, \
         last_invoked_at = CASE WHEN last_invoked_at IS NULL OR last_invoked_at < $6 THEN $6 \
         ELSE last_invoked_at END, last_error = COALESCE($7, last_error), \
         caller_failure_count = caller_failure_count + $8, \
         recent_calls = substr(recent_calls || $9, CAST(CASE WHEN length(recent_calls || $9) > $10 \
         THEN length(recent_calls || $9) - $10 + 1 ELSE 1 END AS INTEGER)), {buckets} \
         WHERE id = $1 RETURNING {health}",
        buckets = bucket_assignments(|b| format!("{} + ${}", bucket_column(b), FIRST_BUCKET_PARAM + b)),
        health = health_columns!(),
    )
});

/// [`TRANSITION`] that also empties the health and the histogram and starts a probation.
pub(super) static TRANSITION_RESETTING_HEALTH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE overlays SET state = $3, updated_at = $4, invocation_count = 0, failure_count = 0, \
         host_failure_count = 0, caller_failure_count = 0, total_execution_ms = 0, last_invoked_at = NULL, \
         last_error = NULL, recent_calls = '', on_probation = TRUE, {buckets} \
         WHERE id = $1 AND state = $2 RETURNING {columns}",
        buckets = bucket_assignments(|_| "0".into()),
        columns = overlay_columns!(),
    )
});

pub(super) static LATENCY_HISTOGRAM: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<String> = (0..LatencyHistogram::BUCKETS).map(bucket_column).collect();
    format!("SELECT {} FROM overlays WHERE id = $1", columns.join(", "))
});

/// Appends one batch of an overlay's log entries, unless the overlay is gone.
pub(super) const INSERT_LOGS: &str = "INSERT INTO overlay_logs (overlay_id, entry_count, byte_count, entries) \
     SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM overlays WHERE id = $1)";
/// The sizes of an overlay's log batches, newest first (to find where the retention ends).
pub(super) const LOG_SIZES: &str =
    "SELECT id, entry_count, byte_count FROM overlay_logs WHERE overlay_id = $1 ORDER BY id DESC";
pub(super) const TRIM_LOGS: &str = "DELETE FROM overlay_logs WHERE overlay_id = $1 AND id < $2";
pub(super) const READ_LOGS: &str =
    "SELECT entry_count, byte_count, entries FROM overlay_logs WHERE overlay_id = $1 ORDER BY id DESC";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_statements_cover_every_bucket() {
        let last = LatencyHistogram::BUCKETS - 1;
        let last_param = format!("{} + ${}", bucket_column(last), FIRST_BUCKET_PARAM + last);
        assert!(RECORD_HEALTH.contains(&last_param), "{}", *RECORD_HEALTH);
        assert!(TRANSITION_RESETTING_HEALTH.contains(&format!("{} = 0", bucket_column(last))));
        assert!(LATENCY_HISTOGRAM.contains(&bucket_column(last)));
    }
}
