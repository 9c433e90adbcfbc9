//! The Forge overlay service: what the HTTP API and the CLI expose.
//!
//! [`OverlayService`] registers overlays (checked, content-addressed in the blob store, recorded in
//! the repository), moves them through their lifecycle with an audit trail, invokes them through the
//! original Forge pipeline (exists, active, trust, entry point, binary verified, run, record, health),
//! keeps their health and quarantines those that fail too often. It behaves the same on the embedded
//! default (SQLite and a local directory) and on PostgreSQL with S3 shared by several processes.

mod access;
mod cache;
mod capsules;
mod config;
mod invoke;
mod logs;
mod metrics;
mod outbound;
mod recorder;
mod registry;
mod users;

pub use access::{Operation, require};
pub use capsules::CAPSULE_STORE_FAILED;
pub use config::{ServiceConfig, half_of_physical_memory_mb};
pub use metrics::ServiceMetrics;
pub use outbound::{MAX_REDIRECTS, OutboundHttp};
pub use registry::Registration;
pub use users::{generate_token, token_hash};

use forge_model::ForgeError;
use forge_runtime::{HostServices, Runtime};
use forge_storage::{BlobStore, Repository};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};

/// The service. Cheap to clone; every clone is the same service.
#[derive(Clone)]
pub struct OverlayService {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServiceConfig,
    repo: Arc<dyn Repository>,
    blobs: BlobStore,
    runtime: Runtime,
    overlays: cache::OverlayCache,
    /// Invocations running now, over all overlays.
    in_flight: AtomicUsize,
    /// Sum of the `max_memory_mb` of the invocations running now.
    memory_in_flight_mb: AtomicU64,
    /// Turns to compile a module (`max_concurrent_compilations`).
    compilations: Arc<tokio::sync::Semaphore>,
    /// Each user's registration token bucket.
    registrations: registry::RegistrationLimiter,
    recorder: recorder::HealthRecorder,
    logs: logs::LogRecorder,
    tokens: users::TokenCache,
    auth_failures: users::AuthFailures,
    metrics: ServiceMetrics,
}

impl OverlayService {
    /// Starts the service on a repository and a blob store. Must be called inside a Tokio runtime:
    /// invocations and the health writer run on it.
    pub fn new(
        config: ServiceConfig,
        repo: Arc<dyn Repository>,
        blobs: BlobStore,
    ) -> Result<Self, ForgeError> {
        let capsules =
            Arc::new(capsules::RepositoryCapsules::new(repo.clone(), config.host_call_db_operations));
        let metrics = ServiceMetrics::new();
        let http = Arc::new(OutboundHttp::counted(metrics.http_requests.clone())?);
        let services = HostServices { capsules, http };
        let runtime = Runtime::new(config.runtime.clone(), services)?;
        let service = OverlayService {
            inner: Arc::new(Inner {
                overlays: cache::OverlayCache::new(config.overlay_cache_entries, config.record_refresh),
                in_flight: AtomicUsize::new(0),
                memory_in_flight_mb: AtomicU64::new(0),
                compilations: Arc::new(tokio::sync::Semaphore::new(
                    config.max_concurrent_compilations.max(1),
                )),
                registrations: registry::RegistrationLimiter::new(config.registrations_per_minute),
                tokens: users::TokenCache::default(),
                auth_failures: users::AuthFailures::new(config.failed_auth_per_minute),
                metrics,
                recorder: recorder::HealthRecorder::default(),
                logs: logs::LogRecorder::new(config.log_retention),
                runtime,
                repo,
                blobs,
                config,
            }),
        };
        recorder::spawn_writers(&service);
        Ok(service)
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &ServiceMetrics {
        &self.inner.metrics
    }

    /// Writes every health count and log entry recorded so far and closes the database: call once,
    /// at shutdown, after the last invocation.
    pub async fn shutdown(&self) -> Result<(), ForgeError> {
        let health = self.flush_health().await;
        let logs = self.flush_logs().await;
        self.inner.repo.close().await;
        health.and(logs)
    }
}
