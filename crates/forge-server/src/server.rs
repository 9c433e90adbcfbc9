//! Starting, serving and stopping: storage opened from the configuration, the admin token
//! installed, the listener bound, and a graceful stop that flushes the service's metrics.

use crate::api;
use crate::config::{LogFormat, ServerConfig};
use anyhow::Context;
use axum::Router;
use axum::serve::ListenerExt;
use forge_model::{Role, TrustLevel};
use forge_service::{OverlayService, generate_token};
use forge_storage::BlobStore;
use std::future::{Future, IntoFuture};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

/// Name of the user `admin_token` (`FORGE_ADMIN_TOKEN`) belongs to.
pub const ADMIN_USER: &str = "admin";

/// Opens the database and the object store the configuration names and starts the service on
/// them (migrating the database schema if needed).
pub async fn open_service(config: &ServerConfig) -> anyhow::Result<OverlayService> {
    let repo = match &config.database_url {
        Some(url) => forge_storage::open_repository(url).await,
        None => forge_storage::open_sqlite(&config.sqlite_path()).await,
    }
    .context("cannot open the database")?;
    let blobs = BlobStore::open(&config.object_store_location()).context("cannot open the object store")?;
    OverlayService::new(config.service_config(), repo, blobs).context("cannot start the service")
}

/// Mints a fresh token for user `name` holding `role`, creating the user at `trust` if there is
/// none, without a server running (`forge-overlay token create`). Fails if a user of that name
/// exists without the role.
pub async fn mint_token(
    config: &ServerConfig,
    name: &str,
    role: Role,
    trust: TrustLevel,
) -> anyhow::Result<String> {
    let service = open_service(config).await?;
    let token = generate_token();
    let ensured = service.ensure_token(name, role, trust, &token).await;
    service.shutdown().await.context("cannot close the database")?;
    ensured.with_context(|| format!("cannot give user `{name}` a token"))?;
    Ok(token)
}

/// A server bound to its address, ready to serve.
pub struct Server {
    listener: TcpListener,
    app: Router,
    service: OverlayService,
    grace: Duration,
}

impl Server {
    /// Opens storage, starts the service, installs `admin_token` as the admin's bootstrap token (see
    /// [`OverlayService::install_admin_token`]) and binds.
    pub async fn start(config: &ServerConfig) -> anyhow::Result<Server> {
        let service = open_service(config).await?;
        if let Some(token) = &config.admin_token {
            service
                .install_admin_token(ADMIN_USER, token)
                .await
                .context("cannot install FORGE_ADMIN_TOKEN")?;
        }
        let listener = TcpListener::bind(&config.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        Ok(Server {
            listener,
            app: api::app(service.clone(), config.max_body_bytes),
            service,
            grace: config.shutdown_grace(),
        })
    }

    /// The address actually bound (the real port when the configuration asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; then stops accepting, lets the requests in flight finish
    /// (for at most the grace period), and shuts the service down, which writes every metric.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let stopping = Arc::new(Notify::new());
        let signal = {
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: finishing the requests in flight");
                stopping.notify_one();
            }
        };
        // Small answers go out at once instead of waiting for Nagle's algorithm.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let mut serving =
            tokio::spawn(axum::serve(listener, self.app).with_graceful_shutdown(signal).into_future());
        let grace = self.grace;
        tokio::select! {
            served = &mut serving => served.context("the server task failed")?.context("serving failed")?,
            () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
                serving.abort();
                tracing::warn!(?grace, "requests still in flight after the grace period were dropped");
            }
        }
        self.service.shutdown().await.context("cannot write the last metrics")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Completes on the first SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first polled, so a signal that arrives right after start is not missed.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// Sends logs to stderr in `format`, filtered by `filter` (`tracing` directives such as `info`).
pub fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).context("invalid log filter")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
