//! Starting, serving and stopping: storage opened from the configuration, the admin token
//! installed, the listener bound, and a graceful stop that flushes the service's metrics.

use crate::config::{LogFormat, ServerConfig};
use crate::{AppState, api};
use anyhow::Context;
use axum::Router;
use axum::extract::{ConnectInfo, Request};
use forge_model::{Role, TrustLevel};
use forge_service::{OverlayService, generate_token};
use forge_storage::BlobStore;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;
use tower::ServiceExt;

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
    state: Arc<AppState>,
    app: Router,
    service: OverlayService,
    grace: Duration,
    max_connections: usize,
    header_read_timeout: Duration,
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
        let limits = config.http_limits();
        let state = Arc::new(AppState::new(service.clone(), &limits));
        Ok(Server {
            listener,
            app: api::router(state.clone(), &limits),
            state,
            service,
            grace: config.shutdown_grace(),
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout(),
        })
    }

    /// The address actually bound (the real port when the configuration asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; then stops accepting, lets the requests and invocations in
    /// flight finish (for at most the grace period in all), and shuts the service down, which
    /// writes every metric and closes the database.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let connections = Connections {
            open: Arc::new(Semaphore::new(self.max_connections)),
            header_read_timeout: self.header_read_timeout,
            graceful: GracefulShutdown::new(),
        };
        let stopped = connections.accept(self.listener, self.app, shutdown).await;
        tracing::info!("shutting down: finishing the requests in flight");
        let deadline = tokio::time::Instant::now() + self.grace;
        let calls = &self.state.calls;
        calls.close();
        let finished = tokio::time::timeout_at(deadline, async {
            stopped.shutdown().await;
            calls.wait().await;
        });
        if finished.await.is_err() {
            tracing::warn!(grace = ?self.grace, "requests still in flight after the grace period were dropped");
        }
        self.service.shutdown().await.context("cannot write the last metrics")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The accept loop's limits: at most `open`'s permits connections at once, each closed when its
/// client is slow to send headers or idle between requests.
struct Connections {
    open: Arc<Semaphore>,
    header_read_timeout: Duration,
    graceful: GracefulShutdown,
}

impl Connections {
    /// Accepts and serves connections until `shutdown` completes; returns the watcher of those still
    /// open, to shut them down gracefully.
    async fn accept(
        self,
        listener: TcpListener,
        app: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> GracefulShutdown {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // At the cap, the next connection waits in the listen backlog until one closes.
            let room = tokio::select! {
                room = self.open.clone().acquire_owned() => room.expect("the semaphore is never closed"),
                () = &mut shutdown => break,
            };
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, say: wait instead of spinning.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Small answers go out at once instead of waiting for Nagle's algorithm.
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            let app = app.clone();
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request)
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.header_read_timeout)
                .serve_connection(TokioIo::new(tcp), service);
            let connection = self.graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::trace!(%error, %peer, "connection ended with an error");
                }
                drop(room);
            });
        }
        self.graceful
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
