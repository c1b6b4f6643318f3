//! The worker: the receive loop and the path of one job, in a straight line:
//! receive → parse/validate → guard (protected, duplicate) → IAM action → settle the
//! message (delete / dead-letter / release) → record.

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::Message;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::{AccountError, Accounts};
use crate::classify::{AwsError, ErrorClass};
use crate::clients::Clients;
use crate::config::{Config, ConfigError};
use crate::guard::{Claim, Dedup, InFlight, Protection};
use crate::iam::{Effect, Iam};
use crate::job::{self, Action, Job};
use crate::metrics;
use crate::outcome::{JobReport, Outcome, Reason};
use crate::queue::{Deleter, Delivery, QueueSetupError, Queues, Sqs, SQS_BATCH_MAX};
use crate::results::{OutcomeEvent, Results};
use crate::retry::{visibility_delay, RetryCounter};
use crate::server::Health;

/// How long the receive loop waits for enough free slots to make a receive worthwhile.
const RECEIVE_GATHER: Duration = Duration::from_millis(50);

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Queue(#[from] QueueSetupError),
    #[error("cannot listen on metrics.listen = {0}: {1}")]
    Listen(String, #[source] std::io::Error),
}

/// The decision for one job, before its message is settled.
struct Decision {
    outcome: Outcome,
    detail: Option<String>,
    /// The in-flight mark of the job's request id, recorded as finished once the outcome
    /// is durable.
    claim: Option<InFlight>,
}

impl Decision {
    fn new(outcome: Outcome, detail: impl Into<Option<String>>) -> Self {
        Self {
            outcome,
            detail: detail.into(),
            claim: None,
        }
    }
}

/// A running worker's shared state. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Worker {
    config: Arc<Config>,
    queues: Queues,
    sqs: Sqs,
    accounts: Accounts,
    deleter: Deleter,
    dedup: Dedup,
    protection: Protection,
    health: Arc<Health>,
    results: Option<Results>,
    /// Job slots: a job holds one while it is processed (parse, guards, IAM action), not
    /// while it waits for one or while its message is settled.
    working: Semaphore,
}

impl Worker {
    /// Validates `config`, finds the dead-letter queue and starts the delete batcher.
    pub async fn build(config: Config, clients: Clients) -> Result<Self, StartupError> {
        config.validate()?;
        let policy = config.backoff();
        let protection = Protection::new(&config.protect)?;
        let sqs = Sqs::new(clients.sqs, policy);
        let queues = sqs
            .discover(
                &config.sqs.queue_url,
                config.sqs.dead_letter_queue_url.as_deref(),
            )
            .await?;
        let (deleter, _task) = Deleter::spawn(sqs.clone(), queues.queue_url.clone());
        let iam = Iam::new(
            clients.iam,
            config.iam.max_requests_per_second,
            policy,
            protection.clone(),
        );
        let dedup = Dedup::new(
            NonZeroUsize::new(config.worker.dedup_capacity).unwrap_or(NonZeroUsize::MIN),
            Duration::from_secs(config.worker.dedup_ttl_seconds),
        );
        tracing::info!(
            queue_url = %queues.queue_url,
            dead_letter_queue_url = %queues.dead_letter_queue_url,
            redrive_policy = queues.has_redrive_policy,
            max_in_flight = config.worker.max_in_flight,
            "Worker ready"
        );
        let health = Arc::new(Health::new(Duration::from_secs(
            config.metrics.ready_max_receive_age_seconds,
        )));
        let results = config
            .results
            .queue_url
            .clone()
            .map(|url| Results::spawn(sqs.clone(), url));
        let accounts = Accounts::new(&config, iam, clients.sts, clients.sdk, protection.clone());
        Ok(Self {
            working: Semaphore::new(config.worker.max_in_flight),
            health,
            results,
            config: Arc::new(config),
            queues,
            sqs,
            accounts,
            deleter,
            dedup,
            protection,
        })
    }

    /// The queues in use.
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// Readiness, shared with the health endpoint.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Receives and works jobs until `shutdown` is cancelled, then lets in-flight jobs
    /// finish within `worker.shutdown_grace_seconds` and releases the messages of those
    /// that did not, so SQS redelivers them at once. Messages received ahead
    /// (`worker.prefetch`) whose job has not started are released at shutdown.
    ///
    /// A receive cut short by shutdown is dropped: SQS redelivers anything it had already
    /// handed out once the visibility timeout passes, so nothing is lost.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // A message holds one of these from its receive until it is settled.
        let held = self.config.worker.max_in_flight + self.config.worker.prefetch;
        let permits = Arc::new(Semaphore::new(held));
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let mut backoff = self.sqs.policy().endless();
        loop {
            // Never hold more messages than max_in_flight + prefetch: a few wait for a job
            // slot (their heartbeat running), none sits unwatched in a local buffer.
            let first = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let mut slots = vec![first];
            // Ask SQS for a worthwhile batch: when only a slot or two are free, wait a
            // moment for more to free up rather than spend a receive on one message.
            let worthwhile = (held / 4).clamp(1, SQS_BATCH_MAX);
            let gather = tokio::time::sleep(RECEIVE_GATHER);
            tokio::pin!(gather);
            while slots.len() < SQS_BATCH_MAX {
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => slots.push(permit),
                    Err(_) if slots.len() >= worthwhile => break,
                    Err(_) => tokio::select! {
                        permit = permits.clone().acquire_owned() => match permit {
                            Ok(permit) => slots.push(permit),
                            Err(_) => break,
                        },
                        () = &mut gather => break,
                        () = shutdown.cancelled() => break,
                    },
                }
            }
            let received = tokio::select! {
                () = shutdown.cancelled() => break,
                received = self.sqs.receive(
                    &self.queues.queue_url,
                    slots.len(),
                    self.config.sqs.wait_time_seconds,
                    self.config.sqs.visibility_timeout_seconds,
                ) => received,
            };
            let messages = match received {
                Ok(messages) => {
                    backoff = self.sqs.policy().endless();
                    self.health.receive_succeeded();
                    metrics::receive_succeeded();
                    metrics::messages_received(messages.len());
                    messages
                }
                Err(e) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "Receive failed, backing off");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            for message in messages {
                // Cannot be empty: SQS returns at most as many messages as were asked for.
                let Some(permit) = slots.pop() else { break };
                let worker = Arc::clone(&self);
                let shutdown = shutdown.clone();
                let hard_stop = hard_stop.clone();
                tracker.spawn(async move {
                    let _held = permit;
                    worker.handle_until(message, shutdown, hard_stop).await;
                });
            }
        }
        tracker.close();
        tracing::info!(
            in_flight = tracker.len(),
            "Shutting down: no longer receiving"
        );
        let grace = Duration::from_secs(self.config.worker.shutdown_grace_seconds);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                in_flight = tracker.len(),
                "Shutdown grace period over: releasing unfinished messages"
            );
            hard_stop.cancel();
            tracker.wait().await;
        }
        if let Some(results) = &self.results {
            if tokio::time::timeout(Duration::from_secs(5), results.flush())
                .await
                .is_err()
            {
                tracing::warn!("Outcome events still unsent at shutdown");
            }
        }
        tracing::info!("Shutdown complete");
    }

    /// Works one message like [`Worker::handle`], unless `hard_stop` fires first, or
    /// `shutdown` fires before the job has a slot: then the message is made visible again
    /// at once and the job ends `retry`/`shutdown`.
    async fn handle_until(
        &self,
        message: Message,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
    ) -> JobReport {
        let started = Instant::now();
        let message_id = message.message_id().unwrap_or_default().to_owned();
        let receipt = message.receipt_handle().unwrap_or_default().to_owned();
        let delivery = Delivery::of(&message);
        let detail = tokio::select! {
            report = self.work(message, &shutdown) => match report {
                Some(report) => return report,
                None => "not started before shutdown; released for redelivery",
            },
            () = hard_stop.cancelled() => "interrupted by shutdown; released for redelivery",
        };
        let retries = RetryCounter::default();
        let settled = self
            .sqs
            .set_visibility(&self.queues.queue_url, &receipt, 0, &retries)
            .await
            .inspect_err(|e| tracing::error!(error = %e, message_id, "Could not release message"))
            .is_ok();
        let report = JobReport {
            detail: Some(detail.into()),
            retries: retries.get(),
            duration: started.elapsed(),
            settled,
            ..JobReport::new(
                &message_id,
                delivery.receive_count,
                Outcome::Retry(Reason::Shutdown),
            )
        };
        self.record(&report, delivery);
        report
    }

    /// One iteration: works one received message to its outcome, settles it on the
    /// queue, writes the audit line and returns the report.
    pub async fn handle(&self, message: Message) -> JobReport {
        let never = CancellationToken::new();
        let report = self.work(message, &never).await;
        report.expect("a job that is never cancelled always starts")
    }

    /// Waits for a job slot, then works the message like [`Worker::handle`]. `None` when
    /// `shutdown` fires before a slot is free: nothing was done, the message is the
    /// caller's to release.
    async fn work(&self, message: Message, shutdown: &CancellationToken) -> Option<JobReport> {
        let started = Instant::now();
        let delivery = Delivery::of(&message);
        let retries = RetryCounter::default();
        let receipt = message.receipt_handle().unwrap_or_default().to_owned();
        let mut report = JobReport::new(
            message.message_id().unwrap_or_default(),
            delivery.receive_count,
            Outcome::Retry(Reason::TransientError),
        );

        // The heartbeat covers the wait for a slot too. The slot is free for the next job
        // while this one's message is settled.
        let decided = self
            .with_heartbeat(&receipt, async {
                let slot = tokio::select! {
                    biased;
                    slot = self.working.acquire() => slot.ok(),
                    () = shutdown.cancelled() => None,
                };
                let _slot = (slot?, metrics::job_started());
                Some(self.decide(&message, delivery, &retries, &mut report).await)
            })
            .await;
        let decision = decided?;

        let (outcome, settled) = self
            .settle(
                &message,
                &receipt,
                delivery,
                &decision,
                report.request_id.as_deref(),
                &retries,
            )
            .await;
        if outcome.is_final() {
            if let Some(claim) = decision.claim {
                claim.finish();
            }
        }
        report.outcome = outcome;
        report.detail = decision.detail;
        report.settled = settled;
        report.retries = retries.get();
        report.duration = started.elapsed();
        self.record(&report, delivery);
        Some(report)
    }

    /// The last step of every job: the audit line, the metrics and the outcome event.
    fn record(&self, report: &JobReport, delivery: Delivery) {
        report.log();
        metrics::job_finished(
            report.outcome,
            report.duration,
            delivery.sent_timestamp_ms,
            report.action,
            report.keys_changed,
        );
        if let Some(results) = &self.results {
            results.publish(&OutcomeEvent::new(report, delivery.sent_timestamp_ms));
        }
    }

    /// Decides the outcome; changes IAM but not the queue.
    async fn decide(
        &self,
        message: &Message,
        delivery: Delivery,
        retries: &RetryCounter,
        report: &mut JobReport,
    ) -> Decision {
        let body = message.body().unwrap_or_default();
        let max_receives = self.config.sqs.max_receive_count;
        if !self.queues.has_redrive_policy && delivery.receive_count > max_receives {
            report.request_id = job::salvage_request_id(body);
            return Decision::new(
                Outcome::Rejected(Reason::TooManyReceives),
                format!(
                    "received {} times, more than sqs.max_receive_count = {max_receives}",
                    delivery.receive_count
                ),
            );
        }
        let job = match job::parse(body) {
            Ok(job) => job,
            Err(e) => {
                report.request_id = job::salvage_request_id(body);
                return Decision::new(Outcome::Rejected(Reason::InvalidMessage), e.to_string());
            }
        };
        report.request_id = Some(job.request_id.clone());
        report.user_name = job.user_name().map(str::to_owned);
        report.access_key_ids = job.access_key_id().map(str::to_owned).into_iter().collect();
        report.account_id = job.account_id.clone();
        report.batch_id = job.batch_id.clone();
        report.action = Some(job.action);

        // A concurrent delivery of the same request id waits for that one to end, then
        // ends `duplicate` (or does the work itself if that one did not finish).
        let claim = loop {
            match self.dedup.claim(&job.request_id) {
                Claim::Finished => {
                    return Decision::new(
                        Outcome::Duplicate,
                        "request id finished recently; nothing done".to_owned(),
                    )
                }
                Claim::InProgress(ended) => ended.await,
                Claim::Fresh(claim) => break claim,
            }
        };
        let mut decision = self.act(&job, retries, report).await;
        decision.claim = Some(claim);
        decision
    }

    /// Guards, then the IAM action.
    async fn act(&self, job: &Job, retries: &RetryCounter, report: &mut JobReport) -> Decision {
        if let Some(detail) = self.protection.refuses(job) {
            return Decision::new(Outcome::Rejected(Reason::Protected), detail);
        }
        let iam = match self
            .accounts
            .iam_for(job.account_id.as_deref(), retries)
            .await
        {
            Ok(iam) => iam,
            Err(e @ AccountError::Disabled { .. }) => {
                return Decision::new(
                    Outcome::Rejected(Reason::CrossAccountDisabled),
                    e.to_string(),
                );
            }
            Err(AccountError::Aws(e)) => return aws_failure(e),
        };
        match iam.revoke(job, retries).await {
            Ok(result) => {
                if result.user_name.is_some() {
                    report.user_name = result.user_name;
                }
                if !result.access_key_ids.is_empty() {
                    report.access_key_ids = result.access_key_ids;
                }
                report.keys_changed = result.keys_changed;
                match result.effect {
                    Effect::Revoked => Decision::new(
                        match job.action {
                            Action::Delete => Outcome::Deleted,
                            Action::Deactivate => Outcome::Deactivated,
                        },
                        format!("{} key(s) changed", result.keys_changed),
                    ),
                    Effect::AlreadyAbsent => Decision::new(Outcome::AlreadyAbsent, None),
                    Effect::Rejected(reason, detail) => {
                        Decision::new(Outcome::Rejected(reason), detail)
                    }
                }
            }
            Err(e) => aws_failure(e),
        }
    }

    /// Settles the message as `decision` requires. Returns the outcome (a rejection whose
    /// dead-letter copy failed becomes `retry`, since nothing durable happened) and
    /// whether the message was settled.
    async fn settle(
        &self,
        message: &Message,
        receipt: &str,
        delivery: Delivery,
        decision: &Decision,
        request_id: Option<&str>,
        retries: &RetryCounter,
    ) -> (Outcome, bool) {
        let outcome = decision.outcome;
        let message_id = message.message_id().unwrap_or_default();
        match outcome {
            Outcome::Deleted
            | Outcome::Deactivated
            | Outcome::AlreadyAbsent
            | Outcome::Duplicate => (outcome, self.delete(receipt, message_id).await),
            Outcome::Rejected(_) => {
                let detail = decision.detail.as_deref().unwrap_or_default();
                match self
                    .sqs
                    .dead_letter(
                        &self.queues.dead_letter_queue_url,
                        message,
                        outcome,
                        detail,
                        request_id,
                        retries,
                    )
                    .await
                {
                    // Invariant 4: deleted only once the copy is durable.
                    Ok(()) => (outcome, self.delete(receipt, message_id).await),
                    Err(e) => {
                        tracing::error!(error = %e, message_id, "Dead-letter copy failed; leaving the message on the queue");
                        let retry = Outcome::Retry(Reason::TransientError);
                        (retry, self.delay(receipt, delivery, retries).await)
                    }
                }
            }
            Outcome::Retry(_) => (outcome, self.delay(receipt, delivery, retries).await),
        }
    }

    async fn delete(&self, receipt: &str, message_id: &str) -> bool {
        self.deleter
            .delete(receipt)
            .await
            .inspect_err(|e| {
                tracing::error!(error = %e, message_id, "Could not delete message; SQS will redeliver it")
            })
            .is_ok()
    }

    /// Runs `work` while extending the message's visibility every half visibility
    /// timeout, so a long job is never handed to another consumer. An extension in flight
    /// when `work` ends is finished first, so it cannot undo the visibility that settling
    /// the message sets next.
    async fn with_heartbeat<T>(&self, receipt: &str, work: impl Future<Output = T>) -> T {
        let timeout = self.config.sqs.visibility_timeout_seconds;
        let period = Duration::from_millis(u64::from(timeout) * 500);
        let mut work = pin!(work);
        let beat = tokio::time::sleep(period);
        let mut beat = pin!(beat);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                () = &mut beat => {}
            }
            let retries = RetryCounter::default();
            let extend =
                self.sqs
                    .set_visibility(&self.queues.queue_url, receipt, timeout, &retries);
            let mut extend = pin!(extend);
            let (extended, out) = tokio::select! {
                biased;
                extended = &mut extend => (extended, None),
                out = &mut work => (extend.await, Some(out)),
            };
            match extended {
                Ok(()) => tracing::debug!(seconds = timeout, "Extended message visibility"),
                Err(e) => tracing::warn!(error = %e, "Could not extend message visibility"),
            }
            if let Some(out) = out {
                return out;
            }
            beat.as_mut().reset(tokio::time::Instant::now() + period);
        }
    }

    /// Leaves the message invisible for the retry delay.
    async fn delay(&self, receipt: &str, delivery: Delivery, retries: &RetryCounter) -> bool {
        let retry = &self.config.retry;
        let seconds = visibility_delay(
            delivery.receive_count,
            retry.visibility_base_seconds,
            retry.visibility_max_seconds,
        );
        self.sqs
            .set_visibility(&self.queues.queue_url, receipt, seconds, retries)
            .await
            .inspect_err(|e| tracing::error!(error = %e, "Could not set the retry delay"))
            .is_ok()
    }
}

/// Maps an AWS failure that escaped the IAM step to an outcome.
fn aws_failure(e: AwsError) -> Decision {
    if e.class == ErrorClass::Transient {
        Decision::new(Outcome::Retry(Reason::TransientError), e.to_string())
    } else if e.is_access_denied() {
        Decision::new(Outcome::Rejected(Reason::AccessDenied), e.to_string())
    } else {
        Decision::new(Outcome::Rejected(Reason::AwsError), e.to_string())
    }
}
