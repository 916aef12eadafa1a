//! Starting and stopping the service.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::config::{LogFormat, ServeConfig};
use crate::state::AppState;

/// How often idle pipelines are looked at (watermark idleness).
const TICK: Duration = Duration::from_millis(100);

/// A service that is running: its address, and a way to stop it.
pub struct RunningServer {
    addr: SocketAddr,
    state: Arc<AppState>,
    server: JoinHandle<std::io::Result<()>>,
    ticker: JoinHandle<()>,
}

/// Opens the store, starts the stored pipelines, binds the listener and serves in the background.
pub async fn start(config: ServeConfig) -> anyhow::Result<RunningServer> {
    let listen = config.listen;
    let state = tokio::task::spawn_blocking(move || AppState::open(config))
        .await
        .context("opening the state")??;
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let app = crate::routes::router(state.clone());
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(state.shutdown_signal())
            .into_future(),
    );
    let ticker = tokio::spawn(tick(state.clone()));
    Ok(RunningServer {
        addr,
        state,
        server,
        ticker,
    })
}

async fn tick(state: Arc<AppState>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = state.shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let now = Instant::now();
                for pipeline in state.pipelines() {
                    pipeline.tick(now);
                }
            }
            _ = &mut shutdown => break,
        }
    }
}

impl RunningServer {
    /// The address the service listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops intake, lets requests in flight finish, ends live streams, stores the recent
    /// outputs and closes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.state.begin_shutdown();
        self.server
            .await
            .context("the server task failed")?
            .context("serving")?;
        self.ticker.await.context("the ticker task failed")?;
        let state = self.state;
        tokio::task::spawn_blocking(move || {
            state.persist()?;
            // Dropping the last reference closes RocksDB and releases its lock.
            match Arc::try_unwrap(state) {
                Ok(state) => drop(state),
                Err(_) => tracing::warn!("state still referenced at shutdown"),
            }
            anyhow::Ok(())
        })
        .await
        .context("persisting")??;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Serves until SIGTERM or SIGINT, then shuts down cleanly.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    tracing::info!(config = %config.redacted(), "effective configuration");
    let server = start(config).await?;
    tracing::info!(addr = %server.addr(), "listening");
    wait_for_signal().await;
    tracing::info!("signal received: stopping intake and draining");
    server.shutdown().await
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// Sets up structured logs (text or JSON lines) on stderr.
pub fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid log filter '{filter}'"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("setting up logs: {e}"))
}

/// Stderr that never fails: a closed or full stderr must not take the service down (the
/// subscriber reports a failed write with `eprintln!`, which panics when stderr is gone).
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
