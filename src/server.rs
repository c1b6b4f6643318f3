//! The one HTTP listener (`metrics.listen`): `/metrics` in Prometheus text format,
//! `/healthz` (200 while the process runs) and `/readyz` (200 while the last successful
//! receive is recent and the worker is not shutting down; 503 otherwise).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Readiness as the worker reports it.
#[derive(Debug)]
pub struct Health {
    /// Unix milliseconds of the last successful receive; 0 before the first.
    last_receive_ms: AtomicU64,
    stopping: AtomicBool,
    max_age: Duration,
}

impl Health {
    /// Ready while a receive succeeded within `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Self {
            last_receive_ms: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            max_age,
        }
    }

    /// A receive from the job queue succeeded.
    pub fn receive_succeeded(&self) {
        self.last_receive_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Shutdown has started: not ready from now on.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        let last = self.last_receive_ms.load(Ordering::Relaxed);
        !self.stopping.load(Ordering::Relaxed)
            && last > 0
            && now_ms().saturating_sub(last) <= self.max_age.as_millis() as u64
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    health: Arc<Health>,
}

/// Serves the three endpoints on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    health: Arc<Health>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .with_state(AppState { metrics, health });
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn readiness(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_a_recent_receive_and_no_shutdown() {
        let health = Health::new(Duration::from_secs(60));
        assert!(!health.is_ready(), "not ready before the first receive");
        health.receive_succeeded();
        assert!(health.is_ready());
        health.stopping();
        assert!(!health.is_ready(), "not ready once shutdown starts");

        let stale = Health::new(Duration::ZERO);
        stale
            .last_receive_ms
            .store(now_ms() - 1_000, Ordering::Relaxed);
        assert!(!stale.is_ready(), "not ready when the last receive is old");
    }
}
