//! Backoff: the validated policy for transient AWS errors, the one wrapper every AWS call
//! goes through, and the visibility delay of a job that ends `retry`.
//!
//! The SDK's own retries are switched off (see `clients`), so this is the only retry layer:
//! every retry is seen, logged and bounded here, and the two layers never multiply.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

use crate::aws::classify::{AwsError, ErrorClass};
use crate::breaker::pause::Pauses;
use crate::outcome::Lane;
use tokio_util::sync::CancellationToken;

/// Exponential backoff with jitter, bounded by a total time budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    initial: Duration,
    max: Duration,
    multiplier: f32,
    jitter: bool,
    max_elapsed: Duration,
}

/// Why backoff values do not make a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    #[error("the initial delay must be at least 1 ms")]
    InitialZero,
    #[error("the largest delay must be at least the initial delay")]
    MaxBelowInitial,
    #[error("the multiplier must be between 1 and 10")]
    Multiplier,
}

impl BackoffPolicy {
    /// A policy: the first delay, the largest single delay, the growth factor between
    /// delays, whether to add jitter, and the total time it may spend sleeping.
    pub fn new(
        initial: Duration,
        max: Duration,
        multiplier: f32,
        jitter: bool,
        max_elapsed: Duration,
    ) -> Result<Self, BackoffError> {
        if initial < Duration::from_millis(1) {
            return Err(BackoffError::InitialZero);
        }
        if max < initial {
            return Err(BackoffError::MaxBelowInitial);
        }
        if !multiplier.is_finite() || !(1.0..=10.0).contains(&multiplier) {
            return Err(BackoffError::Multiplier);
        }
        Ok(Self {
            initial,
            max,
            multiplier,
            jitter,
            max_elapsed,
        })
    }

    /// The total time a call may spend sleeping between attempts.
    pub fn max_elapsed(&self) -> Duration {
        self.max_elapsed
    }

    /// A backon builder for this policy: unbounded attempts, bounded total delay.
    pub fn builder(&self) -> ExponentialBuilder {
        let builder = ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(self.multiplier)
            .without_max_times()
            .with_total_delay(Some(self.max_elapsed));
        if self.jitter {
            builder.with_jitter()
        } else {
            builder
        }
    }

    /// An endless sequence of delays for loops that never give up (receiving).
    pub fn endless(&self) -> impl Iterator<Item = Duration> {
        let builder = ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(self.multiplier)
            .without_max_times();
        let builder = if self.jitter {
            builder.with_jitter()
        } else {
            builder
        };
        builder.build()
    }
}

/// Counts in-process retries, so the audit line can say how hard a job had to try, and
/// carries the job's stop signal: once it fires (the shutdown grace period is over), a
/// backoff in progress ends and no further retry starts, so the job reaches its outcome,
/// and its audit line, within one request timeout.
#[derive(Debug, Default)]
pub struct RetryCounter {
    count: AtomicU32,
    stop: CancellationToken,
    /// An answer-less failure (connection, DNS, TLS, timeout) is not retried.
    fail_fast: bool,
    /// The breaker's pauses as last read, and the job's queue: each key write waits
    /// while that queue is paused (docs, "The breaker").
    gate: Option<(tokio::sync::watch::Receiver<Pauses>, Lane)>,
}

impl RetryCounter {
    /// A counter whose retries end when `stop` is cancelled.
    pub fn until(stop: CancellationToken) -> Self {
        Self {
            count: AtomicU32::new(0),
            stop,
            fail_fast: false,
            gate: None,
        }
    }

    /// Key writes of this job wait while `lane` is paused, as `pauses` last says.
    pub fn gated(mut self, gate: Option<(tokio::sync::watch::Receiver<Pauses>, Lane)>) -> Self {
        self.gate = gate;
        self
    }

    /// Waits while the job's queue is paused; `false` when retrying is called off first.
    pub async fn unpaused(&self) -> bool {
        let Some((pauses, lane)) = &self.gate else {
            return true;
        };
        let mut pauses = pauses.clone();
        tokio::select! {
            _ = pauses.wait_for(|p| p.of(*lane).is_none()) => !self.stopped(),
            () = self.stop.cancelled() => false,
        }
    }

    /// For a command's requests (`plan`, `enqueue`): their retries end when `stop` is
    /// cancelled, and a request the endpoint never answered is not retried: the command
    /// stops at once, since every other request would fail the same way, where the
    /// worker waits such an outage out.
    pub fn for_command(stop: CancellationToken) -> Self {
        Self {
            fail_fast: true,
            ..Self::until(stop)
        }
    }

    /// Retries counted so far.
    pub fn get(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether retrying has been called off.
    pub fn stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    fn bump(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs one AWS operation, retrying transient errors with `policy` until its budget is
/// spent. Not-found and permanent errors return at once.
///
/// `service` (`iam`, `sqs`, `sts`) and `operation` label the retry metric; `send`
/// performs one attempt and maps the SDK error with [`AwsError::from_sdk`].
pub async fn call<T, F, Fut>(
    policy: &BackoffPolicy,
    retries: &RetryCounter,
    service: &'static str,
    operation: &'static str,
    send: F,
) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let stop = retries.stop.clone();
    // This call's retries: the first is a warning, the rest are said at debug (the
    // caller says how the call ended), so a throttled bulk run or a Region that keeps
    // failing does not write a warning per attempt.
    let retried = std::sync::atomic::AtomicU32::new(0);
    send.retry(policy.builder())
        .sleep(move |delay| {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => {}
                }
            }
        })
        .when(|e: &AwsError| {
            e.class == ErrorClass::Transient
                && !retries.stopped()
                && !(retries.fail_fast && e.unanswered)
        })
        .notify(|e: &AwsError, delay: Duration| {
            retries.bump();
            crate::metrics::aws_retry(
                service,
                operation,
                crate::aws::classify::code_label(e.code.as_deref(), "none"),
            );
            let retry = retried.fetch_add(1, Ordering::Relaxed) + 1;
            if retry == 1 {
                tracing::warn!(
                    operation,
                    error_code = e.code.as_deref().unwrap_or("none"),
                    delay_ms = delay.as_millis() as u64,
                    error = %e,
                    "Transient AWS error, retrying (further retries of this call at debug level)"
                );
            } else {
                tracing::debug!(
                    operation,
                    error_code = e.code.as_deref().unwrap_or("none"),
                    delay_ms = delay.as_millis() as u64,
                    retry,
                    error = %e,
                    "Transient AWS error, retrying again"
                );
            }
        })
        .await
}

/// Short delays for unit tests: 10 ms to 100 ms, no jitter, a 5 s budget.
#[cfg(test)]
pub(crate) fn quick_policy() -> BackoffPolicy {
    BackoffPolicy::new(
        Duration::from_millis(10),
        Duration::from_millis(100),
        2.0,
        false,
        Duration::from_secs(5),
    )
    .expect("a valid policy")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: bool) -> BackoffPolicy {
        BackoffPolicy::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
            2.0,
            jitter,
            Duration::from_secs(5),
        )
        .unwrap()
    }

    #[test]
    fn values_that_make_no_policy_are_refused() {
        let ms = Duration::from_millis;
        let new = |initial, max, multiplier| {
            BackoffPolicy::new(initial, max, multiplier, true, Duration::from_secs(1))
        };
        assert_eq!(new(ms(0), ms(10), 2.0), Err(BackoffError::InitialZero));
        assert_eq!(new(ms(10), ms(5), 2.0), Err(BackoffError::MaxBelowInitial));
        assert_eq!(new(ms(10), ms(50), 0.5), Err(BackoffError::Multiplier));
        assert_eq!(new(ms(10), ms(50), f32::NAN), Err(BackoffError::Multiplier));
        assert!(new(ms(10), ms(10), 1.0).is_ok());
    }

    fn transient() -> AwsError {
        AwsError {
            operation: "DeleteAccessKey",
            class: ErrorClass::Transient,
            code: Some("Throttling".into()),
            message: "Rate exceeded".into(),
            unanswered: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_backoff_at_once_and_retries_no_more() {
        let stop = CancellationToken::new();
        let retries = RetryCounter::until(stop.clone());
        let policy = policy(false);
        let start = tokio::time::Instant::now();
        let mut attempts = 0;
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            stop.cancel();
        });
        let result: Result<(), _> = call(&policy, &retries, "iam", "DeleteAccessKey", || {
            attempts += 1;
            async { Err(transient()) }
        })
        .await;
        stopper.await.unwrap();
        assert_eq!(result.unwrap_err().class, ErrorClass::Transient);
        // 100 ms, then a 200 ms backoff cut short at 150 ms by the stop; one last attempt.
        assert_eq!(attempts, 3);
        assert_eq!(start.elapsed(), Duration::from_millis(150));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_back_off_exponentially_then_succeed() {
        let policy = policy(false);
        let retries = RetryCounter::default();
        let mut attempts = 0;
        let start = tokio::time::Instant::now();
        let result = call(&policy, &retries, "iam", "DeleteAccessKey", || {
            attempts += 1;
            let n = attempts;
            async move {
                if n <= 3 {
                    Err(transient())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 4);
        assert_eq!(retries.get(), 3);
        // 100 + 200 + 400 ms of backoff, no jitter (the timer rounds up to whole ms).
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(710), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_one_delay_of_the_base() {
        let policy = policy(true);
        let retries = RetryCounter::default();
        let mut attempts = 0;
        let start = tokio::time::Instant::now();
        let _ = call(&policy, &retries, "iam", "DeleteAccessKey", || {
            attempts += 1;
            let n = attempts;
            async move {
                if n <= 3 {
                    Err(transient())
                } else {
                    Ok(())
                }
            }
        })
        .await;
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1_400), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_total_backoff() {
        let policy = policy(false);
        let retries = RetryCounter::default();
        let start = tokio::time::Instant::now();
        let result: Result<(), _> = call(&policy, &retries, "iam", "DeleteAccessKey", || async {
            Err(transient())
        })
        .await;
        assert_eq!(result.unwrap_err().class, ErrorClass::Transient);
        assert!(
            start.elapsed() <= policy.max_elapsed(),
            "{:?}",
            start.elapsed()
        );
        // 100+200+400+800 then 1000s: the budget of 5 s allows 7 sleeps.
        assert_eq!(retries.get(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_and_not_found_errors_are_never_retried() {
        let policy = policy(false);
        for class in [ErrorClass::Permanent, ErrorClass::NotFound] {
            let retries = RetryCounter::default();
            let mut attempts = 0;
            let result: Result<(), _> = call(&policy, &retries, "iam", "DeleteAccessKey", || {
                attempts += 1;
                async move {
                    Err(AwsError {
                        class,
                        ..transient()
                    })
                }
            })
            .await;
            assert_eq!(result.unwrap_err().class, class);
            assert_eq!(attempts, 1);
            assert_eq!(retries.get(), 0);
        }
    }
}
