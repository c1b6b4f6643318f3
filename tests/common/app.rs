//! The application in this test's process: built like the binary builds it, its
//! listener on a port the system picks (no port chosen beforehand that another process
//! could take), stopped by its shutdown token instead of a signal.
//!
//! The metrics recorder is one per process, shared by every application a test binary
//! starts: a test that asserts exact metric values runs the binary instead
//! ([`super::process`]), as do those that need an exit code or a signal.

use std::net::SocketAddr;
use std::time::Duration;

use iam_key_revoker::Application;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::TestEnv;

/// A running application.
pub struct TestApp {
    /// Where `/metrics`, `/healthz` and `/readyz` answer.
    pub address: SocketAddr,
    shutdown: CancellationToken,
    running: JoinHandle<()>,
}

/// Builds and starts the application for `env`'s configuration and clients.
pub async fn spawn_app(env: &TestEnv) -> TestApp {
    let mut config = env.config.clone();
    config.metrics.listen = "127.0.0.1:0".to_owned();
    let settings =
        iam_key_revoker::config::Settings::new(config).expect("the test's configuration is valid");
    let app = Application::build(settings, env.clients.clone())
        .await
        .expect("the application starts");
    let address = app.address();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        shutdown,
        running,
    }
}

impl TestApp {
    /// The status code of `GET path`, or `None` when nothing answers.
    pub async fn status(&self, path: &str) -> Option<u16> {
        let (port, path) = (self.address.port(), path.to_owned());
        tokio::task::spawn_blocking(move || super::process::http_status(port, &path))
            .await
            .expect("the request task does not panic")
    }

    /// Stops the application as SIGTERM would and waits, up to `limit`, for it to finish.
    pub async fn stop(self, limit: Duration) {
        self.shutdown.cancel();
        tokio::time::timeout(limit, self.running)
            .await
            .expect("the application stops within its limit")
            .expect("the application does not panic");
    }
}
