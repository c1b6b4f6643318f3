//! Backoff: the validated policy for transient AWS errors, the one wrapper every AWS call
//! goes through, and the visibility delay of a job that ends `retry`.
//!
//! The SDK's own retries are switched off (see `clients`), so this is the only retry layer:
//! every retry is seen, logged and bounded here, and the two layers never multiply.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

use crate::classify::{AwsError, ErrorClass};
use crate::config::{ConfigError, RetrySection};

/// Exponential backoff with jitter, bounded by a total time budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    initial: Duration,
    max: Duration,
    multiplier: f32,
    jitter: bool,
    max_elapsed: Duration,
}

impl BackoffPolicy {
    /// Validates the `retry.*` values.
    pub fn from_config(section: &RetrySection) -> Result<Self, ConfigError> {
        let bad = |key, problem: &str| ConfigError::Invalid {
            key,
            problem: problem.to_owned(),
        };
        if section.initial_delay_ms == 0 {
            return Err(bad("retry.initial_delay_ms", "must be at least 1"));
        }
        if section.max_delay_ms < section.initial_delay_ms {
            return Err(bad(
                "retry.max_delay_ms",
                "must be at least retry.initial_delay_ms",
            ));
        }
        if !section.multiplier.is_finite() || !(1.0..=10.0).contains(&section.multiplier) {
            return Err(bad("retry.multiplier", "must be between 1 and 10"));
        }
        Ok(Self {
            initial: Duration::from_millis(section.initial_delay_ms),
            max: Duration::from_millis(section.max_delay_ms),
            multiplier: section.multiplier,
            jitter: section.jitter,
            max_elapsed: Duration::from_secs(section.max_elapsed_seconds),
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

/// Counts in-process retries, so the audit line can say how hard a job had to try.
#[derive(Debug, Default)]
pub struct RetryCounter(AtomicU32);

impl RetryCounter {
    /// Retries counted so far.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
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
    send.retry(policy.builder())
        .sleep(tokio::time::sleep)
        .when(|e: &AwsError| e.class == ErrorClass::Transient)
        .notify(|e: &AwsError, delay: Duration| {
            retries.bump();
            crate::metrics::aws_retry(service, operation, e.code.as_deref());
            tracing::warn!(
                operation,
                error_code = e.code.as_deref().unwrap_or("none"),
                delay_ms = delay.as_millis() as u64,
                error = %e,
                "Transient AWS error, retrying"
            );
        })
        .await
}

/// Visibility delay for a job that ends `retry` on its `receive_count`-th receive:
/// `base * 2^(receive_count - 1)`, saturating, capped at `max`.
pub fn visibility_delay(receive_count: u32, base_seconds: u32, max_seconds: u32) -> u32 {
    let exponent = receive_count.saturating_sub(1).min(31);
    base_seconds
        .saturating_mul(1u32 << exponent)
        .min(max_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SQS_MAX_VISIBILITY_SECONDS;

    fn policy(jitter: bool) -> BackoffPolicy {
        BackoffPolicy::from_config(&RetrySection {
            initial_delay_ms: 100,
            max_delay_ms: 1_000,
            multiplier: 2.0,
            jitter,
            max_elapsed_seconds: 5,
            ..RetrySection::default()
        })
        .unwrap()
    }

    fn transient() -> AwsError {
        AwsError {
            operation: "DeleteAccessKey",
            class: ErrorClass::Transient,
            code: Some("Throttling".into()),
            message: "Rate exceeded".into(),
        }
    }

    #[test]
    fn visibility_delay_doubles_and_caps() {
        assert_eq!(visibility_delay(1, 30, SQS_MAX_VISIBILITY_SECONDS), 30);
        assert_eq!(visibility_delay(2, 30, SQS_MAX_VISIBILITY_SECONDS), 60);
        assert_eq!(visibility_delay(5, 30, SQS_MAX_VISIBILITY_SECONDS), 480);
        assert_eq!(visibility_delay(12, 30, SQS_MAX_VISIBILITY_SECONDS), 43_200);
        assert_eq!(
            visibility_delay(u32::MAX, u32::MAX, SQS_MAX_VISIBILITY_SECONDS),
            43_200
        );
        assert_eq!(visibility_delay(0, 30, SQS_MAX_VISIBILITY_SECONDS), 30);
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
