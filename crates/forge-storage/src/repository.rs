//! The metadata repository: what the service needs to keep overlays, their health and audit trail,
//! users and capsules, whichever database holds them.

use crate::error::StorageError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use forge_model::api::TokenInfo;
use forge_model::{
    AuditEvent, Blame, Capsule, CapsuleHit, LatencyHistogram, LogEntry, LogQuery, LogRetention,
    NewAuditEvent, NewCapsule, Overlay, OverlayFilter, OverlayHealth, OverlayResult, OverlayState, Page,
    PageRequest, QuarantinePolicy, RecentCalls, TrustLevel, User,
};
use std::time::Instant;
use uuid::Uuid;

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Durable metadata of the runtime, shared by every server process pointed at the same database.
///
/// Every write that the audit trail must reflect takes its [`NewAuditEvent`] and records it in the
/// same transaction, so a change is never stored without its event nor an event without its change.
/// Timestamps are stored with microsecond precision; values returned by writes are the stored ones.
#[async_trait]
pub trait Repository: Send + Sync + 'static {
    /// Stores a newly registered overlay (with its health as given and an empty latency histogram)
    /// together with its `register` event. [`StorageError::Conflict`] if the name+version is taken.
    async fn insert_overlay(&self, overlay: &Overlay, event: NewAuditEvent) -> Result<Overlay>;

    async fn get_overlay(&self, id: Uuid) -> Result<Option<Overlay>>;

    async fn get_overlay_by_name_version(&self, name: &str, version: &str) -> Result<Option<Overlay>>;

    /// Overlays matching every given filter, oldest first (`created_at`, then id). The name filter is a
    /// substring match; names are lower-case, so it is lower-cased too. The total and the page are two
    /// reads, so a write landing between them can make them disagree by that write.
    async fn list_overlays(&self, filter: &OverlayFilter, page: PageRequest) -> Result<Page<Overlay>>;

    /// The active overlays with this name, oldest first; the caller picks the newest version by
    /// semver, which SQL cannot order.
    async fn active_overlays_named(&self, name: &str) -> Result<Vec<Overlay>>;

    /// Who registered the overlays with this name (any version, any state), each once.
    async fn name_submitters(&self, name: &str) -> Result<Vec<String>>;

    /// Moves an overlay from `expected_from` to `to` only if it is still in `expected_from`
    /// (compare-and-set), so two concurrent transitions cannot both succeed. `None` if the overlay is
    /// gone or in another state; then nothing is written. `reset_health` zeroes every health field,
    /// the window of recent calls and the latency histogram, and puts the overlay on probation, as
    /// releasing from quarantine does.
    async fn transition(
        &self,
        id: Uuid,
        expected_from: OverlayState,
        to: OverlayState,
        reset_health: bool,
        event: NewAuditEvent,
    ) -> Result<Option<Overlay>>;

    /// `None` if the overlay does not exist (no event is recorded then).
    async fn set_trust_level(
        &self,
        id: Uuid,
        trust: TrustLevel,
        event: NewAuditEvent,
    ) -> Result<Option<Overlay>>;

    /// Deletes the overlay record; its audit trail stays, ending with `event`. False if it did not
    /// exist (no event is recorded then). Removing the binary is the caller's part.
    async fn delete_overlay(&self, id: Uuid, event: NewAuditEvent) -> Result<bool>;

    /// Applies a batch of health deltas in one transaction and quarantines, exactly once, every active
    /// overlay that `policy` says should be (judging the window of its `policy.window_calls` most
    /// recent counted calls, stored with the counters), recording `quarantine_event`'s event for it
    /// in the same transaction. An overlay on probation whose window fills without a quarantine
    /// leaves probation. See [`HealthDelta`] and [`HealthOutcome`].
    ///
    /// Counters are incremented in the database (`x = x + n`), never read, changed and written back,
    /// and the quarantine is a conditional update of an `active` row; so any number of processes may
    /// record against one database at once without losing a count or quarantining twice. Deltas of
    /// overlays that no longer exist are skipped. Rows are locked in overlay id order, so concurrent
    /// batches cannot deadlock.
    async fn record_health(
        &self,
        deltas: &[HealthDelta],
        policy: QuarantinePolicy,
        quarantine_event: QuarantineEvent,
    ) -> Result<Vec<HealthOutcome>>;

    /// [`StorageError::NotFound`] if the overlay does not exist.
    async fn latency_histogram(&self, id: Uuid) -> Result<LatencyHistogram>;

    /// An overlay's audit trail, oldest first; kept after the overlay is deleted.
    async fn list_events(&self, overlay_id: Uuid, page: PageRequest) -> Result<Page<AuditEvent>>;

    /// [`StorageError::Conflict`] if the name or id is taken.
    async fn insert_user(&self, user: &User) -> Result<User>;

    async fn get_user_by_name(&self, name: &str) -> Result<Option<User>>;

    /// Stores the hash of a new API token of the user ([`StorageError::NotFound`] if there is no such
    /// user, [`StorageError::Conflict`] if the hash is already stored). Tokens themselves are never
    /// stored; hashing is the caller's job.
    async fn add_token(&self, user_id: Uuid, token_hash: &str) -> Result<()>;

    /// The user a token hash belongs to, unless the token was revoked.
    async fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<User>>;

    /// False if no live token has this hash.
    async fn revoke_token(&self, token_hash: &str) -> Result<bool>;

    /// The user's tokens, revoked ones too, oldest first; never their hashes.
    async fn list_tokens(&self, user_id: Uuid, page: PageRequest) -> Result<Page<TokenInfo>>;

    /// Revokes every live token of the user; returns how many.
    async fn revoke_user_tokens(&self, user_id: Uuid) -> Result<u64>;

    /// Disables the user `name` (none of its tokens authenticates) or enables it again; `None` if
    /// there is no such user.
    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<Option<User>>;

    /// Makes `token_hash` the user's bootstrap token (the one `FORGE_ADMIN_TOKEN` names), in one
    /// transaction: a new hash revokes the previous bootstrap token; a hash revoked earlier stays
    /// revoked. Safe for processes starting at once with the same token.
    /// [`StorageError::Conflict`] if the hash is another user's token.
    async fn install_bootstrap_token(&self, user_id: Uuid, token_hash: &str) -> Result<BootstrapToken>;

    /// Stores a capsule as version 1. `commit_by`: the deadline of the host call that writes it,
    /// past which it rolls back ([`StorageError::Unavailable`]) rather than commit.
    async fn insert_capsule(&self, capsule: NewCapsule, commit_by: Option<Instant>) -> Result<Capsule>;

    async fn get_capsule(&self, id: Uuid) -> Result<Option<Capsule>>;

    /// Deletes the capsule if `max_trust` can access it, recording `event` in the same transaction.
    /// False, and nothing recorded, if it is missing or above `max_trust`: the caller cannot tell
    /// the two apart. `commit_by` as for [`Repository::insert_capsule`].
    async fn delete_capsule(
        &self,
        id: Uuid,
        max_trust: TrustLevel,
        event: NewAuditEvent,
        commit_by: Option<Instant>,
    ) -> Result<bool>;

    /// Full-text search, most relevant first, among capsules whose trust level is at most
    /// `max_trust`; content is cut to a preview. Every whitespace-separated term must match (AND);
    /// words are stemmed (English). Any text is a valid query: operators and quotes are taken as
    /// words. A query without words returns no hits (search is not browsing).
    ///
    /// Scores are comparable within one backend only: SQLite ranks by BM25, PostgreSQL by
    /// `ts_rank`. PostgreSQL also ignores English stop words ("the", "and") in queries and content.
    async fn search_capsules(
        &self,
        query: &str,
        limit: u32,
        max_trust: TrustLevel,
    ) -> Result<Vec<CapsuleHit>>;

    /// Appends each batch to its overlay's kept log, one row per batch, in one transaction; batches
    /// of overlays that no longer exist are skipped. Deleting an overlay deletes its log.
    async fn append_logs(&self, batches: &[LogBatch]) -> Result<()>;

    /// Deletes the overlay's log batches wholly past `retention` (the newest entries within both of
    /// its bounds are kept, and the batch they end in).
    async fn trim_logs(&self, overlay_id: Uuid, retention: LogRetention) -> Result<()>;

    /// The overlay's kept log entries matching `query`, newest first, at most `query.limit` of
    /// them, and how many match in all. Only the newest entries within `retention` are read, so what
    /// a reader sees never depends on when the last trim ran.
    async fn read_logs(
        &self,
        overlay_id: Uuid,
        retention: LogRetention,
        query: &LogQuery,
    ) -> Result<(Vec<LogEntry>, u64)>;

    /// Closes the connection pools after in-flight work; call at shutdown (SQLite then checkpoints
    /// its write-ahead log into the database file).
    async fn close(&self);
}

/// What [`Repository::install_bootstrap_token`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapToken {
    /// A new token, stored; `replaced` previous bootstrap tokens were revoked.
    Installed { replaced: u64 },
    /// Already stored and live: nothing changed.
    Kept,
    /// Revoked earlier (through the API): it stays revoked and does not authenticate.
    Revoked,
}

/// Words the audit event of an automatic quarantine from the health that triggered it (with
/// `on_probation` still telling whether the overlay was on probation). The service words every
/// event; storage records this one in the transaction that quarantines.
pub type QuarantineEvent =
    fn(overlay_id: Uuid, health: &OverlayHealth, policy: QuarantinePolicy) -> NewAuditEvent;

/// What some invocations of one overlay add to its health, recorded in one go.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthDelta {
    pub overlay_id: Uuid,
    /// Every invocation, host failures included.
    pub invocations: u64,
    /// Failures that count against the overlay.
    pub failures: u64,
    /// Failures the host caused; counted apart (see [`OverlayHealth::failure_rate`]).
    pub host_failures: u64,
    /// Failures the caller caused; counted apart too.
    pub caller_failures: u64,
    /// These invocations that count (neither host nor caller faults), in order, for the window.
    pub recent: RecentCalls,
    pub total_execution_ms: f64,
    /// Invocations per bucket of [`LatencyHistogram::BOUNDS_MS`].
    pub latency_buckets: [u64; LatencyHistogram::BUCKETS],
    /// When the latest of these invocations ran; the stored value only moves forward.
    pub last_invoked_at: DateTime<Utc>,
    /// The latest error among them; `None` keeps the stored one.
    pub last_error: Option<String>,
}

impl HealthDelta {
    /// An empty delta, to [`add`](Self::add) results to.
    pub fn new(overlay_id: Uuid, at: DateTime<Utc>) -> Self {
        HealthDelta {
            overlay_id,
            invocations: 0,
            failures: 0,
            host_failures: 0,
            caller_failures: 0,
            recent: RecentCalls::default(),
            total_execution_ms: 0.0,
            latency_buckets: [0; LatencyHistogram::BUCKETS],
            last_invoked_at: at,
            last_error: None,
        }
    }

    /// Counts one invocation's result: host and caller faults apart from the overlay's own
    /// failures. `deadline_shortened`: the caller asked for a deadline below the manifest's.
    pub fn add(&mut self, result: &OverlayResult, deadline_shortened: bool, at: DateTime<Utc>) {
        self.invocations += 1;
        match result.blame(deadline_shortened) {
            None => self.recent.push(false),
            Some(Blame::Overlay) => {
                self.failures += 1;
                self.recent.push(true);
            }
            Some(Blame::Host) => self.host_failures += 1,
            Some(Blame::Caller) => self.caller_failures += 1,
        }
        if result.error.is_some() {
            self.last_error.clone_from(&result.error);
        }
        self.total_execution_ms += result.execution_time_ms;
        self.latency_buckets[LatencyHistogram::bucket_of(result.execution_time_ms)] += 1;
        self.last_invoked_at = self.last_invoked_at.max(at);
    }

    /// Folds a later delta of the same overlay into this one (a batch that could not be written
    /// goes back to wait for the next, ahead of what was recorded meanwhile).
    pub fn merge(&mut self, other: HealthDelta) {
        debug_assert_eq!(self.overlay_id, other.overlay_id);
        self.invocations += other.invocations;
        self.failures += other.failures;
        self.host_failures += other.host_failures;
        self.caller_failures += other.caller_failures;
        self.recent.append(&other.recent);
        self.total_execution_ms += other.total_execution_ms;
        for (mine, theirs) in self.latency_buckets.iter_mut().zip(other.latency_buckets) {
            *mine += theirs;
        }
        let other_is_newer = other.last_invoked_at >= self.last_invoked_at;
        if other.last_error.is_some() && (other_is_newer || self.last_error.is_none()) {
            self.last_error = other.last_error;
        }
        self.last_invoked_at = self.last_invoked_at.max(other.last_invoked_at);
    }
}

/// Log entries of one overlay written in one go, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct LogBatch {
    pub overlay_id: Uuid,
    pub entries: Vec<LogEntry>,
}

/// An overlay's state and health right after a [`Repository::record_health`] batch.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthOutcome {
    pub overlay_id: Uuid,
    pub state: OverlayState,
    pub trust_level: TrustLevel,
    pub health: OverlayHealth,
    /// True only for the one call that quarantined the overlay.
    pub quarantined: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use forge_model::ErrorKind;

    #[test]
    fn merged_deltas_add_up() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let mut first = HealthDelta::new(Uuid::nil(), t0);
        first.add(&OverlayResult::failed(ErrorKind::Trap, "old", 1.0, 1), false, t0);
        let mut second = HealthDelta::new(Uuid::nil(), t1);
        second.add(&OverlayResult::ok(None, 3.0, 1), false, t1);
        second.add(&OverlayResult::failed(ErrorKind::HostError, "new", 2.0, 1), false, t1);
        second.add(&OverlayResult::failed(ErrorKind::InvalidInput, "bad args", 2.0, 1), false, t1);
        first.merge(second);
        assert_eq!(
            (first.invocations, first.failures, first.host_failures, first.caller_failures),
            (4, 1, 1, 1)
        );
        assert_eq!(first.recent.as_str(), "-+", "the earlier delta's calls first");
        assert_eq!(first.total_execution_ms, 8.0);
        assert_eq!(first.latency_buckets.iter().sum::<u64>(), 4);
        assert_eq!(first.last_error.as_deref(), Some("bad args"));
        assert_eq!(first.last_invoked_at, t1);
    }

    #[test]
    fn delta_counts_host_faults_apart() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let mut delta = HealthDelta::new(Uuid::nil(), t0);
        delta.add(&OverlayResult::ok(None, 0.3, 10), false, t1);
        delta.add(&OverlayResult::failed(ErrorKind::Trap, "unreachable", 7.0, 10), false, t0);
        delta.add(&OverlayResult::failed(ErrorKind::HostError, "storage down", 2.0, 10), false, t0);
        assert_eq!((delta.invocations, delta.failures, delta.host_failures), (3, 1, 1));
        assert_eq!(delta.recent.as_str(), "+-", "host faults stay out of the window");
        assert_eq!(delta.last_error.as_deref(), Some("storage down"));
        assert!((delta.total_execution_ms - 9.3).abs() < 1e-9);
        assert_eq!(delta.latency_buckets.iter().sum::<u64>(), 3);
        assert_eq!(delta.latency_buckets[LatencyHistogram::bucket_of(7.0)], 1);
        assert_eq!(delta.last_invoked_at, t1, "the latest time wins, whatever the order");
    }

    #[test]
    fn caller_faults_are_counted_apart_and_stay_out_of_the_window() {
        let t0 = Utc::now();
        let mut delta = HealthDelta::new(Uuid::nil(), t0);
        delta.add(&OverlayResult::failed(ErrorKind::InvalidInput, "not a number", 1.0, 1), false, t0);
        delta.add(&OverlayResult::failed(ErrorKind::Timeout, "late", 100.0, 1), true, t0);
        delta.add(&OverlayResult::failed(ErrorKind::Timeout, "late", 100.0, 1), false, t0);
        assert_eq!((delta.invocations, delta.failures, delta.caller_failures), (3, 1, 2));
        assert_eq!(delta.recent.as_str(), "-", "only the timeout under the manifest's own deadline counts");
    }
}
