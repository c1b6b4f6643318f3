//! The application: the worker and its metrics/health listener, built and run together,
//! so the binary and the tests start exactly the same thing.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::aws::clients::Clients;
use crate::config::Settings;
use crate::worker::{StartupError, Worker};

/// A built, not yet running, application.
pub struct Application {
    worker: Arc<Worker>,
    listener: TcpListener,
    address: SocketAddr,
}

impl Application {
    /// Binds the listener, then builds the worker (which checks the queues).
    pub async fn build(config: Settings, clients: Clients) -> Result<Self, StartupError> {
        crate::metrics::install();
        let listen = config.metrics.listen.clone();
        let listener = TcpListener::bind(&listen)
            .await
            .map_err(|e| StartupError::Listen(listen.clone(), e))?;
        let address = listener
            .local_addr()
            .map_err(|e| StartupError::Listen(listen, e))?;
        let worker = Arc::new(Worker::build(config, clients).await?);
        Ok(Self {
            worker,
            listener,
            address,
        })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served (the real port when the
    /// configuration asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Runs until SIGTERM or SIGINT, then drains (see [`Application::run_until_stopped`]).
    pub async fn run_until_signal(self) {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        self.run_until_stopped(shutdown).await;
    }

    /// Runs until `shutdown` is cancelled and in-flight jobs are done (see
    /// [`Worker::run`]). The listener keeps answering during the drain, with `/readyz`
    /// at 503, and stops last.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let stop_listener = CancellationToken::new();
        tracing::info!(address = %self.address, "Serving /metrics, /healthz and /readyz");
        let server = tokio::spawn(crate::server::serve(
            self.listener,
            crate::metrics::install(),
            self.worker.health(),
            stop_listener.clone(),
        ));
        Arc::clone(&self.worker).run(shutdown).await;
        stop_listener.cancel();
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "Metrics listener failed"),
            Err(e) => tracing::error!(error = %e, "Metrics listener panicked"),
        }
    }
}

/// Cancels `shutdown` on SIGTERM (what Kubernetes and most supervisors send) or SIGINT
/// (Ctrl-C at a terminal): both mean "finish what you hold, take nothing new".
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "Stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "Stopping"),
    }
    shutdown.cancel();
}
