//! The one HTTP listener (`metrics.listen`): `/metrics` in Prometheus text format,
//! `/healthz` (200 while the process runs) and `/readyz` (200 while the last successful
//! receive is recent, the worker's credentials work and it is not shutting down; 503
//! otherwise). Its body names the member accounts whose role fails: their failure is
//! theirs, the worker stays ready.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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

use crate::aws::classify::code_label;
use crate::aws::member::MemberFailures;

/// Readiness as the worker reports it.
#[derive(Debug)]
pub struct Health {
    /// Unix milliseconds of the last successful receive; 0 before the first.
    last_receive_ms: AtomicU64,
    stopping: AtomicBool,
    max_age: Duration,
    /// The worker's own credentials failed and have not worked since.
    credentials_failing: AtomicBool,
    /// Credential failures since a job last got through: spaces out the checks.
    credential_strikes: AtomicU32,
    /// The member accounts whose role fails now.
    members: Arc<MemberFailures>,
    /// What an operator paused (docs, "The breaker"), as `/readyz` says it.
    paused: std::sync::Mutex<Option<String>>,
}

impl Health {
    /// Ready while a receive succeeded within `max_age`; `members` are named, not held
    /// against readiness.
    pub fn new(max_age: Duration, members: Arc<MemberFailures>) -> Self {
        Self {
            last_receive_ms: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            max_age,
            credentials_failing: AtomicBool::new(false),
            credential_strikes: AtomicU32::new(0),
            members,
            paused: std::sync::Mutex::new(None),
        }
    }

    /// The breaker's pauses as last read: the worker is not ready while one holds.
    pub fn set_paused(&self, paused: Option<String>) {
        let mut known = self
            .paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *known != paused {
            match &paused {
                Some(what) => {
                    tracing::warn!(paused = %what.trim_end(), "Key changes paused by an operator: not ready")
                }
                None => tracing::info!("Key changes resumed"),
            }
            *known = paused;
        }
    }

    fn paused(&self) -> Option<String> {
        self.paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The worker's own credentials failed: not ready, and no new jobs, until they work.
    pub fn credentials_failed(&self, error_code: Option<&str>) {
        if !self.credentials_failing.swap(true, Ordering::Relaxed) {
            self.credential_strikes.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                error_code = error_code.unwrap_or("no_credentials"),
                "The worker's AWS credentials failed: taking no new jobs until they work again"
            );
        }
        crate::metrics::credentials_failed(code_label(error_code, "no_credentials"));
    }

    /// A check of the failing credentials failed again: wait longer before the next.
    pub fn credentials_still_failing(&self, error_code: Option<&str>) {
        self.credentials_failing.store(true, Ordering::Relaxed);
        self.credential_strikes.fetch_add(1, Ordering::Relaxed);
        crate::metrics::credentials_failed(code_label(error_code, "no_credentials"));
    }

    /// A check of the credentials succeeded: take jobs again.
    pub fn credentials_recovered(&self) {
        if self.credentials_failing.swap(false, Ordering::Relaxed) {
            tracing::info!("The worker's AWS credentials work again: taking jobs");
        }
        crate::metrics::credentials_recovered();
    }

    /// A job got through IAM: the credentials are fine for real.
    pub fn credentials_proven(&self) {
        self.credential_strikes.store(0, Ordering::Relaxed);
    }

    /// Whether the worker's credentials are failing now.
    pub fn credentials_failing(&self) -> bool {
        self.credentials_failing.load(Ordering::Relaxed)
    }

    /// How long to wait before checking failing credentials again: 1 s, doubling with
    /// each failure since a job last got through, at most 30 s.
    pub fn credentials_check_delay(&self) -> Duration {
        let strikes = self.credential_strikes.load(Ordering::Relaxed).clamp(1, 6);
        Duration::from_secs(1 << (strikes - 1)).min(Duration::from_secs(30))
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
            && !self.credentials_failing()
            && self.paused().is_none()
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
    let (status, mut body) = if state.health.is_ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned())
    };
    if let Some(paused) = state.health.paused() {
        body.push_str(&paused);
    }
    if let Some(members) = state.health.members.describe() {
        body.push_str(&members);
    }
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_a_recent_receive_and_no_shutdown() {
        let health = Health::new(Duration::from_secs(60), Arc::default());
        assert!(!health.is_ready(), "not ready before the first receive");
        health.receive_succeeded();
        assert!(health.is_ready());
        health.stopping();
        assert!(!health.is_ready(), "not ready once shutdown starts");

        let stale = Health::new(Duration::ZERO, Arc::default());
        stale
            .last_receive_ms
            .store(now_ms() - 1_000, Ordering::Relaxed);
        assert!(!stale.is_ready(), "not ready when the last receive is old");
    }

    #[test]
    fn failing_credentials_make_it_unready_and_space_out_the_checks() {
        let health = Health::new(Duration::from_secs(60), Arc::default());
        health.receive_succeeded();
        health.credentials_failed(Some("ExpiredToken"));
        assert!(!health.is_ready());
        assert_eq!(health.credentials_check_delay(), Duration::from_secs(1));
        health.credentials_recovered();
        assert!(health.is_ready());
        health.credentials_failed(Some("ExpiredToken"));
        assert_eq!(health.credentials_check_delay(), Duration::from_secs(2));
        health.credentials_failed(None);
        assert_eq!(
            health.credentials_check_delay(),
            Duration::from_secs(2),
            "more failures while failing do not count"
        );
        health.credentials_still_failing(None);
        assert_eq!(health.credentials_check_delay(), Duration::from_secs(4));
        for _ in 0..10 {
            health.credentials_still_failing(None);
        }
        assert_eq!(health.credentials_check_delay(), Duration::from_secs(30));
        health.credentials_proven();
        health.credentials_recovered();
        assert!(health.is_ready());
        assert_eq!(health.credentials_check_delay(), Duration::from_secs(1));
    }
}
