//! Settling a job's message as its outcome requires, and keeping it invisible until
//! then: delete it, copy it to the dead-letter queue and delete it, or leave it on the
//! queue for later (released at once, or invisible for the retry delay).

use std::future::Future;
use std::pin::{pin, Pin};
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};

use crate::activity::Task;
use crate::aws::classify::AwsError;
use crate::aws::deleter::Deleter;
use crate::aws::mac::{Mac, Purpose};
use crate::aws::retry::RetryCounter;
use crate::aws::sqs::{Delivery, Lane, Queues, Sqs};
use crate::aws::visibility::{visibility_delay, within_visibility_limit};
use crate::config::Config;
use crate::job::Job;
use crate::outcome::{Outcome, Reason};

/// A job queue the worker takes jobs from, with its dead-letter queue and its delete
/// batcher.
#[derive(Debug)]
pub(super) struct Source {
    pub queues: Queues,
    pub deleter: Deleter,
}

/// What settling a message needs, and nothing else of the worker: the SQS client, the
/// job queues with their dead-letter queues and delete batchers, the visibility timeout
/// and the retry delays.
#[derive(Debug)]
pub(super) struct Settler {
    sqs: Sqs,
    /// Signs the messages the worker sends itself (docs, "Continuations").
    pub mac: Option<Mac>,
    /// `sqs.queue_url`.
    pub main: Source,
    /// `sqs.priority_queue_url`.
    pub priority: Option<Source>,
    visibility_timeout_seconds: u32,
    retry_base_seconds: u32,
    retry_max_seconds: u32,
}

/// How long the worker vouches for a message it sends itself: SQS keeps a message at
/// most 14 days, so a continuation moved back from a dead-letter queue within its
/// retention is still believed; a captured one is not for ever.
pub(super) const CONTINUATION_TTL_MS: u64 = 14 * 24 * 3600 * 1000;

/// An outcome and why.
#[derive(Debug)]
pub(super) struct Decision {
    pub outcome: Outcome,
    pub detail: Option<String>,
}

impl Decision {
    pub fn new(outcome: Outcome, detail: impl Into<Option<String>>) -> Self {
        Self {
            outcome,
            detail: detail.into(),
        }
    }
}

/// Where a job's message stands once the work under its heartbeat is done.
#[derive(Debug)]
pub(super) enum Settling {
    /// Deleted (or dead-lettered, then deleted), or that failed and SQS will redeliver.
    Done(Settled),
    /// Stays on the queue: its visibility is set to `seconds` once the heartbeat has
    /// stopped, so no extension can overwrite it.
    Visibility { decision: Decision, seconds: u32 },
}

impl Settling {
    /// An earlier job of its FIFO message group stays on the queue: back on the queue
    /// at once too, to keep the group in order.
    pub fn group_order() -> Self {
        Self::Visibility {
            decision: Decision::new(
                Outcome::Retry(Reason::GroupOrder),
                "an earlier job of its FIFO message group stays on the queue; released to keep the group in order"
                    .to_owned(),
            ),
            seconds: 0,
        }
    }

    /// A job that never got a slot before shutdown: back on the queue at once.
    pub fn released_at_shutdown() -> Self {
        Self::Visibility {
            decision: Decision {
                outcome: Outcome::Retry(Reason::Shutdown),
                detail: Some("not started before shutdown; released for redelivery".into()),
            },
            seconds: 0,
        }
    }
}

/// How a job ended on the queue.
#[derive(Debug)]
pub(super) struct Settled {
    pub outcome: Outcome,
    pub detail: Option<String>,
    /// Whether the message was settled as the outcome requires; false means SQS will
    /// redeliver it.
    pub settled: bool,
    /// Whether a message of the worker's own carries the job on in its place.
    pub replaced: bool,
}

impl Settler {
    pub fn new(
        sqs: Sqs,
        mac: Option<Mac>,
        main: Source,
        priority: Option<Source>,
        config: &Config,
    ) -> Self {
        Self {
            sqs,
            mac,
            main,
            priority,
            visibility_timeout_seconds: config.sqs.visibility_timeout_seconds,
            retry_base_seconds: config.retry.visibility_base_seconds,
            retry_max_seconds: config.retry.visibility_max_seconds,
        }
    }

    /// The queue a message came from.
    pub fn source(&self, lane: Lane) -> &Source {
        match (lane, &self.priority) {
            (Lane::Priority, Some(priority)) => priority,
            _ => &self.main,
        }
    }

    /// Settles the message as `decision` requires, as far as can be done while its
    /// heartbeat runs: deletes it, or copies it to the dead-letter queue and deletes it.
    /// A rejection whose dead-letter copy failed becomes `retry`, since nothing durable
    /// happened.
    pub(super) async fn settle(
        &self,
        message: &Message,
        delivery: Delivery,
        decision: Decision,
        request_id: Option<&str>,
        carry_on: Option<Box<Job>>,
        retries: &RetryCounter,
    ) -> Settling {
        let receipt = message.receipt_handle().unwrap_or_default();
        let message_id = message.message_id().unwrap_or_default();
        let unfinished = matches!(
            decision.outcome,
            Outcome::Rejected(_)
                | Outcome::Retry(Reason::TransientError | Reason::Credentials | Reason::Continued)
        );
        let decision = match carry_on {
            // Boxed like the dead-letter copy: only unfinished jobs need it.
            Some(next) if unfinished => {
                match Box::pin(self.carry_on(message, delivery, next, decision, retries)).await {
                    Ok(settling) => return settling,
                    Err(decision) => decision,
                }
            }
            _ => decision,
        };
        let done = |decision: Decision, settled| {
            Settling::Done(Settled {
                // Handed on: its continuation is on the queue in its place.
                replaced: decision.outcome == Outcome::Retry(Reason::Continued),
                outcome: decision.outcome,
                detail: decision.detail,
                settled,
            })
        };
        match decision.outcome {
            // Handed on before any change: the continuation, already sent, replaces it.
            Outcome::Deleted
            | Outcome::Deactivated
            | Outcome::AlreadyAbsent
            | Outcome::Duplicate
            | Outcome::Cancelled
            | Outcome::SessionsRevoked
            // Held: kept in the breaker's table before the message goes.
            | Outcome::Held(_)
            | Outcome::Retry(Reason::Continued | Reason::Reported) => {
                done(decision, self.delete(delivery, receipt, message_id).await)
            }
            Outcome::Rejected(_) => {
                // Boxed: an SQS request's future is kilobytes, and every message held
                // would carry room for it inline while only rejected ones need it.
                let copied = Box::pin(self.sqs.dead_letter(
                    &self.source(delivery.lane).queues.dead_letter_queue_url,
                    message,
                    decision.outcome,
                    decision.detail.as_deref().unwrap_or_default(),
                    request_id,
                    retries,
                ))
                .await;
                match copied {
                    // Invariant 4: deleted only once the copy is durable.
                    Ok(()) => {
                        crate::metrics::dead_lettered(delivery.lane, decision.outcome);
                        done(decision, self.delete(delivery, receipt, message_id).await)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, message_id, "Dead-letter copy failed; leaving the message on the queue");
                        let detail = format!(
                            "{}; the dead-letter copy failed: {e}",
                            decision
                                .detail
                                .as_deref()
                                .unwrap_or(decision.outcome.reason())
                        );
                        Settling::Visibility {
                            decision: Decision {
                                outcome: Outcome::Retry(Reason::TransientError),
                                detail: Some(detail),
                            },
                            seconds: self.retry_delay(delivery),
                        }
                    }
                }
            }
            // A report task early: back when its time comes (at most SQS's 12 hours).
            Outcome::Retry(Reason::ReportLater) => {
                let due = Task::of(message.body().unwrap_or_default())
                    .and_then(Result::ok)
                    .map_or(0, |task| task.not_before_ms);
                let seconds = due.saturating_sub(crate::metrics::now_ms()).div_ceil(1000);
                Settling::Visibility {
                    decision,
                    seconds: seconds.clamp(1, 43_200) as u32,
                }
            }
            // Not the job's fault: back on the queue at once, for this or another replica.
            Outcome::Retry(Reason::Credentials | Reason::Shutdown | Reason::GroupOrder) => {
                Settling::Visibility {
                    decision,
                    seconds: 0,
                }
            }
            Outcome::Retry(_) => Settling::Visibility {
                seconds: self.retry_delay(delivery),
                decision,
            },
        }
    }

    /// Carries an unfinished job on in a message of the worker's own that names the
    /// owners IAM reported and what was changed (docs, "Continuations"), then deletes
    /// the original: once a key is deleted, a redelivery of the original could no longer
    /// find its owner to finish the job. The continuation comes back after the retry
    /// delay (at once after a refusal, so that it is dead-lettered itself, ready to be
    /// moved back). When it cannot be sent, the message is settled as `decision` says.
    async fn carry_on(
        &self,
        message: &Message,
        delivery: Delivery,
        mut next: Box<Job>,
        decision: Decision,
        retries: &RetryCounter,
    ) -> Result<Settling, Decision> {
        let receipt = message.receipt_handle().unwrap_or_default();
        let message_id = message.message_id().unwrap_or_default();
        let reason = match decision.outcome {
            Outcome::Rejected(reason) | Outcome::Retry(reason) => reason,
            _ => Reason::TransientError,
        };
        let delay = match decision.outcome {
            Outcome::Retry(Reason::TransientError) => self.retry_delay(delivery),
            _ => 0,
        };
        let queue_url = self.source(delivery.lane).queues.queue_url.clone();
        match self
            .send_on(message, delivery, &mut next, &queue_url, delay, retries)
            .await
        {
            Ok(id) => {
                let detail = format!(
                    "{}; carried on by message {id}, which names the owners IAM reported, in {delay} s",
                    decision.detail.as_deref().unwrap_or(decision.outcome.reason())
                );
                Ok(Settling::Done(Settled {
                    outcome: Outcome::Retry(reason),
                    detail: Some(detail),
                    settled: self.delete(delivery, receipt, message_id).await,
                    replaced: true,
                }))
            }
            Err(e) => {
                tracing::error!(error = %e, message_id, "Could not send the job's continuation; settling the original");
                Err(decision)
            }
        }
    }

    /// Sends `next`, the job of `message`, on to `queue_url` as a message of the worker's
    /// own, `delay` seconds from now (docs, "Continuations"); returns its id. It counts
    /// the deliveries so far and keeps the first message's enqueue time.
    pub(super) async fn send_on(
        &self,
        message: &Message,
        delivery: Delivery,
        next: &mut Job,
        queue_url: &str,
        delay: u32,
        retries: &RetryCounter,
    ) -> Result<String, AwsError> {
        let message_id = message.message_id().unwrap_or_default();
        if let Some(continuation) = next.continuation.as_mut() {
            continuation.deliveries = continuation
                .deliveries
                .saturating_add(delivery.receive_count);
            if continuation.enqueued_at_ms.is_none() {
                continuation.enqueued_at_ms = delivery.sent_timestamp_ms;
            }
        }
        // The worker's word on it, for its time (docs, "Continuations"): without a MAC
        // key the continuation goes unsigned, and none of its claims will be believed.
        // KMS failing never holds the job back: unsigned, the continuation is worked from
        // its own fields (its keys), which still revokes them.
        if let (Some(mac), Some(continuation)) = (&self.mac, next.continuation.as_mut()) {
            continuation.mac = None;
            continuation.expires_at_ms = Some(crate::metrics::now_ms() + CONTINUATION_TTL_MS);
            let canonical = next.canonical();
            let signed = Box::pin(mac.sign(Purpose::Continuation, &canonical, retries)).await;
            if let Some(continuation) = next.continuation.as_mut() {
                match signed {
                    Ok(signature) => continuation.mac = Some(signature),
                    Err(e) => {
                        tracing::warn!(error = %e, message_id, "Could not MAC the job's continuation; sending it unsigned (none of its claims will be believed)");
                        continuation.expires_at_ms = None;
                    }
                }
            }
        }
        let group = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId));
        // One message's continuation is one (a redelivery's copy deduplicated), and each
        // part of an event's keys is its own.
        let deduplication = format!(
            "{message_id}-{}",
            &crate::sessions::request_digest(&next.request_id)[..16]
        );
        let fifo = group.map(|g| (g.as_str(), deduplication.as_str()));
        let id =
            Box::pin(
                self.sqs
                    .send_continuation(queue_url, &next.to_body(), delay, fifo, retries),
            )
            .await?;
        tracing::info!(message_id, continuation = %id, delay_seconds = delay, "Job carried on by a message of the worker's own");
        Ok(id)
    }

    /// The last change to the message, after its heartbeat has stopped.
    pub(super) async fn apply_after_heartbeat(
        &self,
        receipt: &str,
        delivery: Delivery,
        settling: Settling,
        retries: &RetryCounter,
    ) -> Settled {
        match settling {
            Settling::Done(settled) => settled,
            Settling::Visibility { decision, seconds } => Settled {
                replaced: false,
                // Boxed like the dead-letter copy: only jobs that end `retry` need it.
                settled: Box::pin(self.set_visibility(receipt, delivery, seconds, retries)).await,
                outcome: decision.outcome,
                detail: decision.detail,
            },
        }
    }

    async fn delete(&self, delivery: Delivery, receipt: &str, message_id: &str) -> bool {
        self.source(delivery.lane)
            .deleter
            .delete(receipt)
            .await
            .inspect_err(|e| {
                tracing::error!(error = %e, message_id, "Could not delete message; SQS will redeliver it")
            })
            .is_ok()
    }

    /// Runs `work` while extending the message's visibility every half visibility
    /// timeout, so a job is never handed to another consumer while it runs or while its
    /// message is settled (never past SQS's 12 hours from the receive). An extension in
    /// flight when `work` ends is finished first, so it cannot undo the visibility that
    /// [`Worker::apply_after_heartbeat`] sets next.
    ///
    /// `work` is pinned by the caller: taken by value, it would be stored twice in this
    /// future (as the argument and as the pinned local), and every message held carries
    /// this future.
    pub(super) async fn with_heartbeat<T>(
        &self,
        receipt: &str,
        delivery: Delivery,
        mut work: Pin<&mut impl Future<Output = T>>,
    ) -> T {
        let timeout = self.visibility_timeout_seconds;
        let period = Duration::from_millis(u64::from(timeout) * 500);
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
            let queue_url = &self.source(delivery.lane).queues.queue_url;
            // On the heap: it runs once per half visibility timeout, not in every
            // message's future.
            let mut extend = Box::pin(
                self.sqs
                    .set_visibility(queue_url, receipt, seconds, &retries),
            );
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
        visibility_delay(
            delivery.receive_count,
            self.retry_base_seconds,
            self.retry_max_seconds,
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
            .set_visibility(
                &self.source(delivery.lane).queues.queue_url,
                receipt,
                seconds,
                retries,
            )
            .await
            .inspect_err(
                |e| tracing::error!(error = %e, seconds, "Could not set the message's visibility"),
            )
            .is_ok()
    }
}
