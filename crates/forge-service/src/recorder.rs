//! Health counts written behind the invocations, in batches.
//!
//! Each invocation adds its result to the pending delta of its overlay (a mutex and a few additions);
//! a writer task turns the pending deltas into one `record_health` transaction, which increments the
//! counters in the database and takes the quarantine decision there, atomically. Under load a batch
//! gathers while the previous one is written, so the cost per invocation shrinks as load grows.

use crate::OverlayService;
use crate::registry::auto_quarantine_event;
use chrono::Utc;
use forge_model::{ForgeError, OverlayResult};
use forge_storage::HealthDelta;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

/// Pause after a failed write before the next attempt; the batch is kept meanwhile.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Default)]
pub(crate) struct HealthRecorder {
    pending: Mutex<HashMap<Uuid, HealthDelta>>,
    wake: Arc<Notify>,
    /// Serialises writes, so that `flush` returns only after everything recorded before it is stored.
    writer: tokio::sync::Mutex<()>,
}

impl HealthRecorder {
    /// Counts one result; `deadline_shortened`: the caller asked for a deadline below the
    /// manifest's (its timeout is then the caller's doing).
    pub(crate) fn record(&self, overlay_id: Uuid, result: &OverlayResult, deadline_shortened: bool) {
        let now = Utc::now();
        self.pending.lock().entry(overlay_id).or_insert_with(|| HealthDelta::new(overlay_id, now)).add(
            result,
            deadline_shortened,
            now,
        );
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<HealthDelta> {
        self.pending.lock().drain().map(|(_, delta)| delta).collect()
    }

    /// Returns a batch that could not be written; its calls go ahead of those recorded meanwhile.
    fn put_back(&self, batch: Vec<HealthDelta>) {
        let mut pending = self.pending.lock();
        for mut delta in batch {
            if let Some(newer) = pending.remove(&delta.overlay_id) {
                delta.merge(newer);
            }
            pending.insert(delta.overlay_id, delta);
        }
    }
}

impl OverlayService {
    /// Stores every health count recorded so far (and applies any quarantine they call for).
    pub async fn flush_health(&self) -> Result<(), ForgeError> {
        let recorder = &self.inner.recorder;
        let _writing = recorder.writer.lock().await;
        let batch = recorder.take();
        if batch.is_empty() {
            return Ok(());
        }
        match self.inner.repo.record_health(&batch, self.inner.config.quarantine, auto_quarantine_event).await
        {
            Ok(outcomes) => {
                for outcome in outcomes {
                    self.apply_health_outcome(outcome);
                }
                Ok(())
            }
            Err(error) => {
                recorder.put_back(batch);
                Err(error.into())
            }
        }
    }
}

/// Starts the writers of health counts and of logs, each gathering for its window after a wake-up.
/// They hold the service weakly and end when it is dropped.
pub(crate) fn spawn_writers(service: &OverlayService) {
    let inner = &service.inner;
    let health = (inner.recorder.wake.clone(), inner.config.health_batch_window);
    spawn_writer(service, health, "health counts", |service| async move { service.flush_health().await });
    let logs = (inner.logs.wake.clone(), inner.config.log_batch_window);
    spawn_writer(service, logs, "overlay logs", |service| async move { service.flush_logs().await });
}

/// One writer: on each wake-up, waits `window` for more to gather, then `flush`es; a failed flush
/// keeps its batch and is retried after a pause.
fn spawn_writer<Flush, Flushing>(
    service: &OverlayService,
    (wake, window): (Arc<Notify>, Duration),
    what: &'static str,
    flush: Flush,
) where
    Flush: Fn(OverlayService) -> Flushing + Send + 'static,
    Flushing: Future<Output = Result<(), ForgeError>> + Send,
{
    let service: Weak<crate::Inner> = Arc::downgrade(&service.inner);
    tokio::spawn(async move {
        loop {
            wake.notified().await;
            tokio::time::sleep(window).await;
            let Some(inner) = service.upgrade() else { return };
            if let Err(error) = flush(OverlayService { inner }).await {
                tracing::warn!(%error, "cannot write {what}; keeping them for the next attempt");
                tokio::time::sleep(RETRY_PAUSE).await;
                wake.notify_one();
            }
        }
    });
}
