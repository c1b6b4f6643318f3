//! The worker: the receive loop and the path of one job, in a straight line:
//! receive → parse/validate → guard (protected, duplicate) → IAM action → settle the
//! message (delete / dead-letter / release) → record.

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use tokio::sync::{oneshot, Semaphore};
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
use crate::retry::{visibility_delay, within_visibility_limit, RetryCounter};
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
    /// is one a redelivery may repeat as `duplicate`.
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

/// Where a job's message stands once the work under its heartbeat is done.
enum Settling {
    /// Deleted (or dead-lettered, then deleted), or that failed and SQS will redeliver.
    Done {
        outcome: Outcome,
        detail: Option<String>,
        settled: bool,
    },
    /// Stays on the queue: its visibility is set to `seconds` once the heartbeat has
    /// stopped, so no extension can overwrite it.
    Visibility {
        outcome: Outcome,
        detail: Option<String>,
        seconds: u32,
    },
}

/// A job's place in its FIFO message group: it starts once the previous job of the group
/// in the same receive has ended, and tells the next one how it ended.
#[derive(Default)]
struct Turn {
    /// Ends with whether the previous job's message left the queue for good.
    previous: Option<oneshot::Receiver<bool>>,
    next: Option<oneshot::Sender<bool>>,
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
            protected_users = %config.protect.users.join(","),
            protected_access_keys = %config.protect.access_keys.join(","),
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
    /// finish within `worker.shutdown_grace_seconds`. Messages received ahead
    /// (`worker.prefetch`) whose job has not started are released at shutdown, so SQS
    /// redelivers them at once. Once the grace period is over, jobs stop retrying and
    /// end within one request timeout: a job whose IAM write went through always gets
    /// its audit line.
    ///
    /// While the worker's own credentials fail, it receives nothing; it checks them again
    /// after a growing pause and resumes by itself once they work.
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
            if self.health.credentials_failing() {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(self.health.credentials_check_delay()) => {}
                }
                self.check_credentials().await;
                continue;
            }
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
                Err(e) if e.class == ErrorClass::Credentials => {
                    self.health.credentials_failed(e.code.as_deref());
                    tracing::error!(error = %e, "Receive refused: the worker's credentials failed");
                    continue;
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
            for (message, turn) in in_group_order(messages) {
                // Cannot be empty: SQS returns at most as many messages as were asked for.
                let Some(permit) = slots.pop() else { break };
                let worker = Arc::clone(&self);
                let shutdown = shutdown.clone();
                let hard_stop = hard_stop.clone();
                tracker.spawn(async move {
                    let _held = permit;
                    worker
                        .handle_until(message, turn, shutdown, hard_stop)
                        .await;
                });
            }
        }
        // Not ready from the moment shutdown starts until the process exits.
        self.health.stopping();
        tracker.close();
        tracing::info!(
            in_flight = tracker.len(),
            "Shutting down: no longer receiving"
        );
        let grace = Duration::from_secs(self.config.worker.shutdown_grace_seconds);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                in_flight = tracker.len(),
                "Shutdown grace period over: jobs stop retrying and end now"
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

    /// Asks STS whether the worker's credentials work again.
    async fn check_credentials(&self) {
        match self.accounts.check_credentials().await {
            Ok(()) => self.health.credentials_recovered(),
            Err(e) if e.class == ErrorClass::Credentials => {
                tracing::warn!(error = %e, "The worker's credentials still fail");
                self.health.credentials_still_failing(e.code.as_deref());
            }
            // Not a credential problem: let the receive loop find out what it is.
            Err(e) => {
                tracing::warn!(error = %e, "Could not check the worker's credentials");
                self.health.credentials_recovered();
            }
        }
    }

    /// One iteration: works one received message to its outcome, settles it on the
    /// queue, writes the audit line and returns the report.
    pub async fn handle(&self, message: Message) -> JobReport {
        let never = CancellationToken::new();
        self.handle_until(message, Turn::default(), never.clone(), never)
            .await
    }

    /// Works one message: waits for its turn in its FIFO group and for a job slot, then
    /// decides, settles and records. The message's visibility is extended from receipt
    /// until it is settled. When `shutdown` fires before the job has a slot, the message
    /// is made visible again at once and the job ends `retry/shutdown`; `hard_stop` ends
    /// retries, not the job.
    async fn handle_until(
        &self,
        message: Message,
        turn: Turn,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
    ) -> JobReport {
        let started = Instant::now();
        let delivery = Delivery::of(&message);
        let receipt = message.receipt_handle().unwrap_or_default().to_owned();
        let retries = RetryCounter::until(hard_stop);
        let mut report = JobReport::new(
            message.message_id().unwrap_or_default(),
            delivery.receive_count,
            Outcome::Retry(Reason::TransientError),
        );
        let Turn { previous, next } = turn;
        let settling = self
            .with_heartbeat(&receipt, delivery, async {
                if let Some(previous) = previous {
                    // A dropped sender means the previous job ended without a word: go on.
                    if !previous.await.unwrap_or(true) {
                        return Settling::Visibility {
                            outcome: Outcome::Retry(Reason::GroupOrder),
                            detail: Some("an earlier job of its FIFO message group stays on the queue; released to keep the group in order".into()),
                            seconds: 0,
                        };
                    }
                }
                let slot = tokio::select! {
                    biased;
                    slot = self.working.acquire() => slot.ok(),
                    () = shutdown.cancelled() => None,
                };
                let Some(slot) = slot else {
                    return Settling::Visibility {
                        outcome: Outcome::Retry(Reason::Shutdown),
                        detail: Some("not started before shutdown; released for redelivery".into()),
                        seconds: 0,
                    };
                };
                let decision = {
                    let _slot = (slot, metrics::job_started());
                    self.decide(&message, delivery, &retries, &mut report).await
                };
                // The slot is free for the next job while this one's message is settled.
                self.settle(&message, &receipt, delivery, decision, report.request_id.as_deref(), &retries)
                    .await
            })
            .await;
        let (outcome, detail, settled) = match settling {
            Settling::Done {
                outcome,
                detail,
                settled,
            } => (outcome, detail, settled),
            Settling::Visibility {
                outcome,
                detail,
                seconds,
            } => {
                let settled = self
                    .set_visibility(&receipt, delivery, seconds, &retries)
                    .await;
                (outcome, detail, settled)
            }
        };
        if let Some(next) = next {
            let _ = next.send(outcome.is_final());
        }
        report.outcome = outcome;
        report.detail = detail;
        report.settled = settled;
        report.retries = retries.get();
        report.duration = started.elapsed();
        self.record(&report, delivery);
        report
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
        let digest = job.digest();
        let claim = loop {
            match self.dedup.claim(&job.request_id, digest) {
                Claim::Finished => {
                    return Decision::new(
                        Outcome::Duplicate,
                        "request id finished recently; nothing done".to_owned(),
                    )
                }
                Claim::Conflict => {
                    return Decision::new(
                        Outcome::Rejected(Reason::RequestIdConflict),
                        format!(
                            "request id {} finished recently for a job that changes something else (another key, user, account or action); nothing done",
                            job.request_id
                        ),
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
        if self.health.credentials_failing() {
            return Decision::new(
                Outcome::Retry(Reason::Credentials),
                "the worker's credentials are failing; released until they work again".to_owned(),
            );
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
            Err(AccountError::Aws(e)) => return self.aws_failure(e, 0),
        };
        let result = iam.revoke(job, retries).await;
        if result.user_name.is_some() {
            report.user_name = result.user_name;
        }
        if !result.access_key_ids.is_empty() {
            report.access_key_ids = result.access_key_ids;
        }
        report.keys_changed = result.keys_changed;
        match result.effect {
            Effect::Revoked => {
                self.health.credentials_proven();
                Decision::new(
                    match job.action {
                        Action::Delete => Outcome::Deleted,
                        Action::Deactivate => Outcome::Deactivated,
                    },
                    format!("{} key(s) changed", result.keys_changed),
                )
            }
            Effect::AlreadyAbsent => {
                self.health.credentials_proven();
                Decision::new(Outcome::AlreadyAbsent, None)
            }
            Effect::Rejected(reason, detail) => Decision::new(Outcome::Rejected(reason), detail),
            Effect::Failed(e) => self.aws_failure(e, result.keys_changed),
        }
    }

    /// Maps an AWS failure that ended the IAM step to an outcome. A failure of the
    /// worker's own credentials is never a verdict on the job; nor can a job that
    /// already changed keys be `rejected` (that says nothing changed): it stays on the
    /// queue, and its redelivery does the rest.
    fn aws_failure(&self, e: AwsError, keys_changed: usize) -> Decision {
        let detail = e.to_string();
        match e.class {
            ErrorClass::Credentials => {
                self.health.credentials_failed(e.code.as_deref());
                Decision::new(Outcome::Retry(Reason::Credentials), detail)
            }
            ErrorClass::Transient => Decision::new(Outcome::Retry(Reason::TransientError), detail),
            _ if keys_changed > 0 => Decision::new(
                Outcome::Retry(Reason::TransientError),
                format!("{keys_changed} key(s) changed, then {detail}"),
            ),
            _ if e.is_access_denied() => {
                Decision::new(Outcome::Rejected(Reason::AccessDenied), detail)
            }
            _ => Decision::new(Outcome::Rejected(Reason::AwsError), detail),
        }
    }

    /// Settles the message as `decision` requires, as far as can be done while its
    /// heartbeat runs: deletes it, or copies it to the dead-letter queue and deletes it.
    /// A rejection whose dead-letter copy failed becomes `retry`, since nothing durable
    /// happened. The job's request id is remembered once its outcome may be repeated as
    /// `duplicate`: the IAM change is made, whatever becomes of the message.
    async fn settle(
        &self,
        message: &Message,
        receipt: &str,
        delivery: Delivery,
        decision: Decision,
        request_id: Option<&str>,
        retries: &RetryCounter,
    ) -> Settling {
        let Decision {
            outcome,
            detail,
            claim,
        } = decision;
        if outcome.is_remembered() {
            if let Some(claim) = claim {
                claim.finish();
            }
        }
        let message_id = message.message_id().unwrap_or_default();
        match outcome {
            Outcome::Deleted
            | Outcome::Deactivated
            | Outcome::AlreadyAbsent
            | Outcome::Duplicate => Settling::Done {
                outcome,
                detail,
                settled: self.delete(receipt, message_id).await,
            },
            Outcome::Rejected(_) => {
                let copied = self
                    .sqs
                    .dead_letter(
                        &self.queues.dead_letter_queue_url,
                        message,
                        outcome,
                        detail.as_deref().unwrap_or_default(),
                        request_id,
                        retries,
                    )
                    .await;
                match copied {
                    // Invariant 4: deleted only once the copy is durable.
                    Ok(()) => Settling::Done {
                        outcome,
                        detail,
                        settled: self.delete(receipt, message_id).await,
                    },
                    Err(e) => {
                        tracing::error!(error = %e, message_id, "Dead-letter copy failed; leaving the message on the queue");
                        let detail = format!(
                            "{}; the dead-letter copy failed: {e}",
                            detail.as_deref().unwrap_or(outcome.reason())
                        );
                        Settling::Visibility {
                            outcome: Outcome::Retry(Reason::TransientError),
                            detail: Some(detail),
                            seconds: self.retry_delay(delivery),
                        }
                    }
                }
            }
            // Not the job's fault: back on the queue at once, for this or another replica.
            Outcome::Retry(Reason::Credentials | Reason::Shutdown) => Settling::Visibility {
                outcome,
                detail,
                seconds: 0,
            },
            Outcome::Retry(_) => Settling::Visibility {
                outcome,
                detail,
                seconds: self.retry_delay(delivery),
            },
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
    /// timeout, so a long job is never handed to another consumer (never past SQS's 12
    /// hours from the receive). An extension in flight when `work` ends is finished
    /// first, so it cannot undo the visibility that settling the message sets next.
    async fn with_heartbeat<T>(
        &self,
        receipt: &str,
        delivery: Delivery,
        work: impl Future<Output = T>,
    ) -> T {
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
            let seconds = within_visibility_limit(timeout, delivery.held());
            let extend =
                self.sqs
                    .set_visibility(&self.queues.queue_url, receipt, seconds, &retries);
            let mut extend = pin!(extend);
            let (extended, out) = tokio::select! {
                biased;
                extended = &mut extend => (extended, None),
                out = &mut work => (extend.await, Some(out)),
            };
            match extended {
                Ok(()) => tracing::debug!(seconds, "Extended message visibility"),
                Err(e) => tracing::warn!(error = %e, "Could not extend message visibility"),
            }
            if let Some(out) = out {
                return out;
            }
            beat.as_mut().reset(tokio::time::Instant::now() + period);
        }
    }

    /// The delay of a job that ends `retry`: grows with the receive count.
    fn retry_delay(&self, delivery: Delivery) -> u32 {
        let retry = &self.config.retry;
        visibility_delay(
            delivery.receive_count,
            retry.visibility_base_seconds,
            retry.visibility_max_seconds,
        )
    }

    /// Sets the message's visibility to `seconds` from now, within SQS's 12-hour limit.
    async fn set_visibility(
        &self,
        receipt: &str,
        delivery: Delivery,
        seconds: u32,
        retries: &RetryCounter,
    ) -> bool {
        let seconds = within_visibility_limit(seconds, delivery.held());
        self.sqs
            .set_visibility(&self.queues.queue_url, receipt, seconds, retries)
            .await
            .inspect_err(
                |e| tracing::error!(error = %e, seconds, "Could not set the message's visibility"),
            )
            .is_ok()
    }
}

/// Pairs each message with its turn: messages of one FIFO message group (in the order
/// SQS handed them out, which is the group's order) run one after another; others, and
/// standard-queue messages, run at once.
fn in_group_order(messages: Vec<Message>) -> Vec<(Message, Turn)> {
    let mut last_of_group: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<(Message, Turn)> = Vec::with_capacity(messages.len());
    for message in messages {
        let group = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
            .cloned();
        let mut turn = Turn::default();
        if let Some(group) = group {
            if let Some(&before) = last_of_group.get(&group) {
                let (tx, rx) = oneshot::channel();
                out[before].1.next = Some(tx);
                turn.previous = Some(rx);
            }
            last_of_group.insert(group, out.len());
        }
        out.push((message, turn));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, group: Option<&str>) -> Message {
        let mut m = Message::builder().message_id(id);
        if let Some(group) = group {
            m = m.attributes(MessageSystemAttributeName::MessageGroupId, group);
        }
        m.build()
    }

    #[tokio::test]
    async fn jobs_of_one_fifo_group_are_chained_in_order_and_others_are_free() {
        let turns = in_group_order(vec![
            message("a1", Some("alice")),
            message("b1", Some("bob")),
            message("a2", Some("alice")),
            message("s", None),
            message("a3", Some("alice")),
        ]);
        let shape: Vec<(&str, bool, bool)> = turns
            .iter()
            .map(|(m, t)| {
                (
                    m.message_id().unwrap(),
                    t.previous.is_some(),
                    t.next.is_some(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("a1", false, true),
                ("b1", false, false),
                ("a2", true, true),
                ("s", false, false),
                ("a3", true, false),
            ]
        );
        // a1's end reaches a2, and a2's reaches a3.
        let mut turns = turns.into_iter().map(|(_, t)| t).collect::<Vec<_>>();
        let a3 = turns.pop().unwrap();
        let _s = turns.pop().unwrap();
        let a2 = turns.pop().unwrap();
        let _b1 = turns.pop().unwrap();
        let a1 = turns.pop().unwrap();
        a1.next.unwrap().send(true).unwrap();
        assert!(a2.previous.unwrap().await.unwrap());
        a2.next.unwrap().send(false).unwrap();
        assert!(!a3.previous.unwrap().await.unwrap());
    }
}
