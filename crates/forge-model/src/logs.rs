//! What overlays log: the lines of one invocation, and the entries kept per overlay so that its
//! owner and operators can read what it did.

use crate::invocation::ErrorKind;
use crate::names::wire_names;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How serious a line is: `info` for `log_info` and WASI stdout, `error` for `log_error`, WASI
/// stderr and the failure that ended an invocation.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LogLevel {
    Info,
    Error,
}

wire_names!(LogLevel, "log level");

/// The time of a log line or entry: now, to the microsecond like every time the service stores, so
/// that an entry's `at` given back as `since` (by a client keeping microseconds) excludes it.
pub fn log_time() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// One line a guest logged during a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
    /// When the guest wrote it.
    pub at: DateTime<Utc>,
}

/// One entry of an overlay's kept log: a line of one of its invocations, or the failure that ended
/// one (then `error_kind` is set and `message` is the invocation's error), so that the entries of an
/// invocation tell its whole story.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntry {
    pub invocation_id: Uuid,
    pub level: LogLevel,
    pub message: String,
    pub at: DateTime<Utc>,
    /// Only on the entry recording a failed invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
}

impl LogEntry {
    pub fn line(invocation_id: Uuid, line: LogLine) -> Self {
        LogEntry { invocation_id, level: line.level, message: line.message, at: line.at, error_kind: None }
    }

    /// The entry closing a failed invocation.
    pub fn failure(invocation_id: Uuid, kind: ErrorKind, error: String, at: DateTime<Utc>) -> Self {
        LogEntry { invocation_id, level: LogLevel::Error, message: error, at, error_kind: Some(kind) }
    }

    /// What the entry counts against an overlay's byte retention: its message.
    pub fn retained_bytes(&self) -> u64 {
        self.message.len() as u64
    }
}

/// Which of an overlay's kept log entries to read, newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Most entries returned.
    pub limit: u32,
    /// Only entries written after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only entries at least this serious (`error`: errors only).
    pub level: Option<LogLevel>,
    /// Only the entries of this invocation.
    pub invocation_id: Option<Uuid>,
}

impl LogQuery {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    pub fn matches(&self, entry: &LogEntry) -> bool {
        self.since.is_none_or(|since| entry.at > since)
            && self.level.is_none_or(|level| entry.level >= level)
            && self.invocation_id.is_none_or(|id| entry.invocation_id == id)
    }
}

/// How much of an overlay's log is kept: the newest entries up to both bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRetention {
    pub max_entries: u64,
    pub max_bytes: u64,
}

impl LogRetention {
    /// Whether `entries` entries of `bytes` message bytes fill the retention (either bound).
    pub fn reached(&self, entries: u64, bytes: u64) -> bool {
        entries >= self.max_entries || bytes >= self.max_bytes
    }

    /// How many of `entries` (newest first) the retention keeps.
    pub fn kept<'a>(&self, entries: impl IntoIterator<Item = &'a LogEntry>) -> usize {
        let (mut count, mut bytes) = (0u64, 0u64);
        for entry in entries {
            bytes += entry.retained_bytes();
            if count == self.max_entries || bytes > self.max_bytes {
                break;
            }
            count += 1;
        }
        count as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(message: &str, level: LogLevel, seconds: i64) -> LogEntry {
        let at = DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap();
        LogEntry::line(Uuid::nil(), LogLine { level, message: message.into(), at })
    }

    #[test]
    fn wire_shape() {
        let failure =
            LogEntry::failure(Uuid::nil(), ErrorKind::Trap, "unreachable".into(), DateTime::UNIX_EPOCH);
        assert_eq!(
            serde_json::to_value(&failure).unwrap(),
            json!({"invocation_id": Uuid::nil(), "level": "error", "message": "unreachable",
                   "at": "1970-01-01T00:00:00Z", "error_kind": "trap"})
        );
        let line = entry("hi", LogLevel::Info, 0);
        assert!(serde_json::to_value(&line).unwrap().get("error_kind").is_none());
        assert_eq!("error".parse::<LogLevel>().unwrap(), LogLevel::Error);
        assert!("warn".parse::<LogLevel>().is_err());
        assert_eq!(log_time().timestamp_subsec_nanos() % 1000, 0, "microseconds, as stored times");
    }

    #[test]
    fn queries_filter_by_time_level_and_invocation() {
        let (info, error) = (entry("a", LogLevel::Info, 10), entry("b", LogLevel::Error, 20));
        let since = |s: i64| Some(DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap());
        assert!(LogQuery::default().matches(&info));
        assert!(!LogQuery { since: since(10), ..Default::default() }.matches(&info), "strictly after");
        assert!(LogQuery { since: since(10), ..Default::default() }.matches(&error));
        let errors = LogQuery { level: Some(LogLevel::Error), ..Default::default() };
        assert!(!errors.matches(&info) && errors.matches(&error));
        let info_and_up = LogQuery { level: Some(LogLevel::Info), ..Default::default() };
        assert!(info_and_up.matches(&info) && info_and_up.matches(&error));
        let other = LogQuery { invocation_id: Some(Uuid::max()), ..Default::default() };
        assert!(!other.matches(&info));
    }

    #[test]
    fn retention_keeps_the_newest_within_both_bounds() {
        let entries: Vec<LogEntry> = (0..10).map(|i| entry("0123456789", LogLevel::Info, i)).collect();
        assert_eq!(LogRetention { max_entries: 4, max_bytes: 1000 }.kept(&entries), 4);
        assert_eq!(LogRetention { max_entries: 100, max_bytes: 35 }.kept(&entries), 3);
        assert_eq!(
            LogRetention { max_entries: 100, max_bytes: 30 }.kept(&entries),
            3,
            "bounds are inclusive"
        );
        assert_eq!(LogRetention { max_entries: 0, max_bytes: 1000 }.kept(&entries), 0);
        let retention = LogRetention { max_entries: 10, max_bytes: 100 };
        assert!(!retention.reached(9, 99) && retention.reached(10, 0) && retention.reached(0, 100));
    }
}
