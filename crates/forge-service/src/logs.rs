//! Overlay logs kept for their authors and operators: what each invocation logged, and the failure
//! that ended it, written behind the calls in batches like the health counts and kept per overlay
//! within `log_retention`.

use crate::OverlayService;
use crate::access::{Operation, require, require_log_access};
use forge_model::{ForgeError, LogEntry, LogLine, LogQuery, LogRetention, OverlayResult, Principal};
use forge_storage::LogBatch;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::Notify;
use uuid::Uuid;

/// Entries waiting to be written, and what was written since each overlay's last trim.
pub(crate) struct LogRecorder {
    retention: LogRetention,
    pending: Mutex<HashMap<Uuid, Pending>>,
    pub(crate) wake: Arc<Notify>,
    /// Serialises writes, so that `flush_logs` returns only after everything recorded before it is
    /// stored.
    writer: tokio::sync::Mutex<HashMap<Uuid, Written>>,
}

/// One overlay's entries waiting, oldest first, held to the retention: older ones would be trimmed
/// as soon as written.
#[derive(Default)]
struct Pending {
    entries: VecDeque<LogEntry>,
    bytes: u64,
}

/// Entries and bytes written for an overlay since its log was last trimmed.
#[derive(Default, Clone, Copy)]
struct Written {
    entries: u64,
    bytes: u64,
}

impl Pending {
    fn push(&mut self, entry: LogEntry, retention: LogRetention) {
        self.bytes += entry.retained_bytes();
        self.entries.push_back(entry);
        while self.entries.len() as u64 > retention.max_entries || self.bytes > retention.max_bytes {
            let Some(oldest) = self.entries.pop_front() else { break };
            self.bytes -= oldest.retained_bytes();
        }
    }
}

impl LogRecorder {
    pub(crate) fn new(retention: LogRetention) -> Self {
        LogRecorder {
            retention,
            pending: Mutex::default(),
            wake: Arc::default(),
            writer: tokio::sync::Mutex::default(),
        }
    }

    /// Keeps what invocation `invocation_id` of overlay `overlay_id` logged, and its failure if it
    /// failed. A call that logged nothing and succeeded costs nothing here.
    pub(crate) fn record(
        &self,
        overlay_id: Uuid,
        invocation_id: Uuid,
        lines: Vec<LogLine>,
        result: &OverlayResult,
    ) {
        let failure = result.error_kind.map(|kind| {
            let error = result.error.clone().unwrap_or_default();
            LogEntry::failure(invocation_id, kind, error, forge_model::log_time())
        });
        if lines.is_empty() && failure.is_none() {
            return;
        }
        let mut pending = self.pending.lock();
        let overlay = pending.entry(overlay_id).or_default();
        for line in lines {
            overlay.push(LogEntry::line(invocation_id, line), self.retention);
        }
        if let Some(failure) = failure {
            overlay.push(failure, self.retention);
        }
        drop(pending);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<LogBatch> {
        let pending = std::mem::take(&mut *self.pending.lock());
        pending
            .into_iter()
            .map(|(overlay_id, pending)| LogBatch { overlay_id, entries: pending.entries.into() })
            .collect()
    }

    /// Returns a batch that could not be written, ahead of the entries recorded meanwhile.
    fn put_back(&self, batches: Vec<LogBatch>) {
        let mut pending = self.pending.lock();
        for batch in batches {
            let newer = pending.remove(&batch.overlay_id).unwrap_or_default();
            let merged = pending.entry(batch.overlay_id).or_default();
            for entry in batch.entries.into_iter().chain(newer.entries) {
                merged.push(entry, self.retention);
            }
        }
    }
}

impl Written {
    /// Whether an overlay's log has grown by a tenth of the retention since its last trim: trims
    /// then cost one indexed read and delete per tenth, whatever the rate of lines.
    fn trim_due(&self, retention: LogRetention) -> bool {
        retention.reached(self.entries * 10, self.bytes * 10)
    }
}

impl OverlayService {
    /// Stores every log entry recorded so far, then trims the logs that have grown past a tenth of
    /// the retention since their last trim (a failed trim is logged and tried again at the next
    /// flush: the entries are stored, and reads never exceed the retention anyway).
    pub async fn flush_logs(&self) -> Result<(), ForgeError> {
        let recorder = &self.inner.logs;
        let retention = recorder.retention;
        let mut written = recorder.writer.lock().await;
        let batches = recorder.take();
        if batches.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.inner.repo.append_logs(&batches).await {
            recorder.put_back(batches);
            return Err(error.into());
        }
        for batch in &batches {
            let since_trim = written.entry(batch.overlay_id).or_default();
            since_trim.entries += batch.entries.len() as u64;
            since_trim.bytes += batch.entries.iter().map(LogEntry::retained_bytes).sum::<u64>();
            if since_trim.trim_due(retention) {
                match self.inner.repo.trim_logs(batch.overlay_id, retention).await {
                    Ok(()) => *since_trim = Written::default(),
                    Err(error) => {
                        tracing::warn!(%error, overlay = %batch.overlay_id, "cannot trim an overlay's log")
                    }
                }
            }
        }
        Ok(())
    }

    /// The overlay's kept log entries matching `query`, newest first, and how many match in all; for
    /// its submitter, admins and operators (403 for others).
    pub async fn logs(
        &self,
        caller: &Principal,
        id: Uuid,
        query: &LogQuery,
    ) -> Result<(Vec<LogEntry>, u64), ForgeError> {
        require(caller, Operation::Read)?;
        let overlay = self.get(caller, id).await?;
        require_log_access(caller, &overlay.submitted_by)?;
        if let Err(error) = self.flush_logs().await {
            tracing::warn!(%error, "log read without this process's latest entries");
        }
        Ok(self.inner.repo.read_logs(id, self.inner.config.log_retention, query).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use forge_model::{ErrorKind, LogLevel};

    fn line(message: &str) -> LogLine {
        LogLine { level: LogLevel::Info, message: message.into(), at: chrono::Utc::now() }
    }

    #[test]
    fn pending_entries_are_held_to_the_retention() {
        let recorder = LogRecorder::new(LogRetention { max_entries: 3, max_bytes: 1000 });
        let (overlay, call) = (Uuid::nil(), Uuid::max());
        recorder.record(overlay, call, vec![line("a"), line("b")], &OverlayResult::ok(None, 1.0, 1));
        recorder.record(overlay, call, vec![], &OverlayResult::ok(None, 1.0, 1));
        let failed = OverlayResult::failed(ErrorKind::Trap, "boom", 1.0, 1);
        recorder.record(overlay, call, vec![line("c")], &failed);
        let batches = recorder.take();
        let messages: Vec<_> = batches[0].entries.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["b", "c", "boom"], "the oldest is dropped; the failure closes the call");
        assert_eq!(batches[0].entries[2].error_kind, Some(ErrorKind::Trap));

        recorder.record(overlay, call, vec![line("d")], &OverlayResult::ok(None, 1.0, 1));
        recorder.put_back(batches);
        let messages: Vec<_> =
            recorder.take()[0].entries.iter().map(|e| e.message.clone()).collect::<Vec<_>>();
        assert_eq!(messages, ["c", "boom", "d"], "a batch put back goes ahead of newer entries");
    }

    #[test]
    fn trims_come_every_tenth_of_the_retention() {
        let retention = LogRetention { max_entries: 1000, max_bytes: 1 << 20 };
        assert!(!Written { entries: 99, bytes: 0 }.trim_due(retention));
        assert!(Written { entries: 100, bytes: 0 }.trim_due(retention));
        assert!(Written { entries: 1, bytes: 104_858 }.trim_due(retention));
    }
}
