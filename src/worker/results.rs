//! Outcome events (docs, "Notifications"): one JSON event per finished job, with a
//! one-line summary, sent to each configured sink: the results queue
//! (`SendMessageBatch`), an SNS topic (`PublishBatch`, with message attributes to filter
//! on and a subject) and an EventBridge bus (`PutEvents`, detail type
//! `Key Revocation Outcome`). Each sink has its own task and buffer, so a slow one holds
//! back no other. Publishing never delays, repeats or undoes a revocation: a failure is
//! retried, then counted by sink and logged, nothing more.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::activity::ActivityReport;
use crate::aws::classify::AwsError;
use crate::aws::deleter::next_batch;
use crate::aws::iam::{KeyResult, LastUsed};
use crate::aws::notify::{self, Bus, Message, Refused, Topic};
use crate::aws::retry::{BackoffPolicy, RetryCounter};
use crate::aws::sqs::{Outgoing, Sqs, SQS_BATCH_MAX};
use crate::outcome::JobReport;
use crate::outcome::ScheduledDelete;
use crate::worker::fit::fit;

/// The EventBridge detail type of an outcome event.
pub const OUTCOME_DETAIL_TYPE: &str = "Key Revocation Outcome";
/// The EventBridge detail type of an activity report.
pub const REPORT_DETAIL_TYPE: &str = "Key Activity Report";
/// The largest event JSON sent: SNS, SQS and EventBridge each take at most 256 KiB
/// (262,144 bytes) a message, and the SNS attributes and subject or EventBridge's source,
/// detail type and time count towards it; a larger event is cut to fit ([`fit`]).
pub const MAX_EVENT_BYTES: usize = 250_000;
/// The most bytes in one `PublishBatch` or `PutEvents` call, all entries together.
const MAX_CALL_BYTES: usize = 256 * 1024;
/// Sends of entries a sink refused but called retryable, after the first.
const RESENDS: usize = 3;

/// Events waiting to be sent; past this, new events are dropped and counted.
const BUFFER: usize = 10_000;
const LINGER: Duration = Duration::from_millis(50);

/// The event sent for each finished job.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutcomeEvent {
    /// One line for people (docs, "Notifications").
    pub summary: String,
    pub request_id: Option<String>,
    pub message_id: String,
    pub outcome: &'static str,
    pub reason: &'static str,
    pub detail: Option<String>,
    pub user_name: Option<String>,
    /// The role of a role job, and the one session its cut-off is narrowed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_session: Option<String>,
    pub access_key_ids: Vec<String>,
    pub account_id: Option<String>,
    pub batch_id: Option<String>,
    pub action: Option<&'static str>,
    pub keys_changed: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_source: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Where the Health event says the key was exposed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposed_url: Option<String>,
    /// The GuardDuty finding's severity and ARN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding_severity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_revoked_before: Option<String>,
    /// What the session cut-off covers, and where there is none, why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<String>,
    /// What became of the quarantine policy, user by user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
    /// What became of the GuardDuty finding in Security Hub.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding_update: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_used: Vec<LastUsed>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyResult>,
    /// The deletes a staged revocation scheduled.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scheduled_deletes: Vec<ScheduledDelete>,
    pub attempts: u32,
    pub retries: u32,
    /// When the exposure was detected (RFC 3339), where the job carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<String>,
    /// From detection to the revocation, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposure_to_revoke_seconds: Option<f64>,
    /// When the job was enqueued (`SentTimestamp`), Unix milliseconds.
    pub enqueued_at_ms: Option<u64>,
    /// When this worker received it, Unix milliseconds.
    pub received_at_ms: u64,
    /// When it finished, Unix milliseconds.
    pub finished_at_ms: u64,
}

impl OutcomeEvent {
    /// The event for `report`, finished now.
    pub fn new(report: &JobReport, enqueued_at_ms: Option<u64>) -> Self {
        let finished_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let origin = report.facts.origin.as_ref();
        Self {
            summary: report.summary(),
            request_id: report.facts.request_id.clone(),
            message_id: report.message_id.clone(),
            outcome: report.outcome.as_str(),
            reason: report.outcome.reason(),
            detail: report.detail.clone(),
            user_name: report.facts.user_name.clone(),
            role_name: report.facts.role_name.clone(),
            role_session: report.facts.role_session.clone(),
            access_key_ids: report.facts.access_key_ids.clone(),
            account_id: report.facts.account_id.clone(),
            batch_id: report.facts.batch_id.clone(),
            action: report.facts.action.map(|a| a.as_str()),
            keys_changed: report.facts.keys_changed,
            event_source: report.facts.event_source(),
            event_type: report.facts.event_type().map(str::to_owned),
            exposed_url: origin.and_then(|o| o.exposed_url.clone()),
            finding_severity: origin.and_then(|o| o.severity.clone()),
            finding_arn: origin.and_then(|o| o.finding_arn.clone()),
            sessions_revoked_before: report.facts.sessions_revoked_before.clone(),
            sessions: report.facts.sessions.clone(),
            quarantine: report.facts.quarantine.clone(),
            finding_update: report.facts.finding_update.clone(),
            last_used: report.facts.last_used.clone(),
            keys: report.facts.keys.clone(),
            scheduled_deletes: report.facts.scheduled_deletes.clone(),
            attempts: report.attempts,
            retries: report.retries,
            detected_at: report.facts.detected_at_ms.map(crate::detection::text),
            exposure_to_revoke_seconds: report.facts.exposure_to_revoke_seconds,
            enqueued_at_ms,
            received_at_ms: finished_at_ms.saturating_sub(report.duration.as_millis() as u64),
            finished_at_ms,
        }
    }
}

/// Where outcome events go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// `results.queue_url`.
    Queue(Sqs, String),
    /// `results.sns_topic_arn`.
    Topic(Topic),
    /// `results.event_bus`.
    Bus(Bus),
}

impl Sink {
    /// The `sink` label of the publish failures counter.
    pub fn label(&self) -> &'static str {
        match self {
            Sink::Queue(..) => "queue",
            Sink::Topic(_) => "sns",
            Sink::Bus(_) => "eventbridge",
        }
    }

    /// The bytes a message counts towards its call's 256 KiB (SQS: the bodies of a
    /// `SendMessageBatch` together, SQS API Reference; SNS and EventBridge: below).
    fn call_bytes(&self, message: &Message) -> Option<usize> {
        match self {
            Sink::Queue(..) => Some(message.body.len()),
            Sink::Topic(_) => Some(notify::sns_message_size(message)),
            Sink::Bus(_) => Some(notify::event_entry_size(message)),
        }
    }

    async fn send(&self, messages: &[Arc<Message>]) -> Result<Vec<Refused>, AwsError> {
        let retries = RetryCounter::default();
        match self {
            Sink::Queue(sqs, url) => {
                let bodies: Vec<Outgoing> = messages
                    .iter()
                    .map(|m| Outgoing {
                        body: m.body.clone(),
                        group_id: None,
                        deduplication_id: None,
                        delay_seconds: None,
                    })
                    .collect();
                Ok(sqs
                    .send_batch(url, &bodies, &retries)
                    .await?
                    .into_iter()
                    .map(|r| Refused {
                        index: r.index,
                        code: r.code,
                        message: r.message,
                        retryable: !r.sender_fault,
                    })
                    .collect())
            }
            Sink::Topic(topic) => topic.publish(messages, &retries).await,
            Sink::Bus(bus) => bus.put(messages, &retries).await,
        }
    }

    /// `messages` in calls: at most ten entries, and within the sink's size per call.
    fn calls(&self, messages: Vec<Arc<Message>>) -> Vec<Vec<Arc<Message>>> {
        let mut calls: Vec<Vec<Arc<Message>>> = Vec::new();
        let mut bytes = 0;
        for message in messages {
            let size = self.call_bytes(&message).unwrap_or(0);
            match calls.last_mut() {
                Some(call) if call.len() < SQS_BATCH_MAX && bytes + size <= MAX_CALL_BYTES => {
                    bytes += size;
                    call.push(message);
                }
                _ => {
                    bytes = size;
                    calls.push(vec![message]);
                }
            }
        }
        calls
    }
}

enum Command {
    Publish(Arc<Message>),
    Flush(oneshot::Sender<()>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Publish(_) => "Publish",
            Command::Flush(_) => "Flush",
        })
    }
}

/// Sends outcome events to every sink in the background.
#[derive(Debug, Clone)]
pub struct Results {
    sinks: Vec<(&'static str, mpsc::Sender<Command>)>,
}

impl Results {
    /// Starts one sending task per sink; `None` when there is none.
    pub fn spawn(sinks: Vec<Sink>, policy: BackoffPolicy) -> Option<Self> {
        if sinks.is_empty() {
            return None;
        }
        let sinks = sinks
            .into_iter()
            .map(|sink| {
                let (tx, rx) = mpsc::channel(BUFFER);
                let label = sink.label();
                tokio::spawn(run(sink, policy, rx));
                (label, tx)
            })
            .collect();
        Some(Self { sinks })
    }

    /// Queues the outcome event of `report` for every sink; never waits.
    pub fn publish(&self, report: &JobReport, enqueued_at_ms: Option<u64>) {
        let event = OutcomeEvent::new(report, enqueued_at_ms);
        let body = match serde_json::to_value(&event) {
            Ok(value) => fit(value, MAX_EVENT_BYTES),
            Err(e) => {
                for (sink, _) in &self.sinks {
                    crate::metrics::results_publish_failed(sink, 1);
                }
                tracing::error!(error = %e, "Could not encode an outcome event");
                return;
            }
        };
        let facts = &report.facts;
        let message = Arc::new(Message {
            body,
            subject: report.subject(),
            detail_type: OUTCOME_DETAIL_TYPE,
            attributes: vec![
                ("outcome", event.outcome.to_owned()),
                ("reason", event.reason.to_owned()),
                (
                    "event_source",
                    facts.event_source().unwrap_or("").to_owned(),
                ),
                ("action", facts.action.map_or("", |a| a.as_str()).to_owned()),
            ],
        });
        self.send(message, event.request_id.as_deref().unwrap_or(""));
    }

    /// Queues an activity report for every sink, as its own kind of event (type
    /// `activity_report`, detail type `Key Activity Report`); never waits.
    pub fn publish_report(&self, report: &ActivityReport) {
        let body = match serde_json::to_value(report) {
            Ok(value) => fit(value, MAX_EVENT_BYTES),
            Err(e) => {
                for (sink, _) in &self.sinks {
                    crate::metrics::results_publish_failed(sink, 1);
                }
                tracing::error!(error = %e, "Could not encode an activity report");
                return;
            }
        };
        let subject: String = format!(
            "iam-key-revoker: activity of {} (pass {})",
            report.access_key_id, report.pass
        );
        let message = Arc::new(Message {
            body,
            subject,
            detail_type: REPORT_DETAIL_TYPE,
            attributes: vec![
                ("type", "activity_report".to_owned()),
                (
                    "event_source",
                    report.event_source.clone().unwrap_or_default(),
                ),
            ],
        });
        self.send(message, &report.request_id);
    }

    fn send(&self, message: Arc<Message>, request_id: &str) {
        for (sink, tx) in &self.sinks {
            if tx.try_send(Command::Publish(Arc::clone(&message))).is_err() {
                crate::metrics::results_publish_failed(sink, 1);
                tracing::warn!(sink, request_id, "Event dropped: buffer full");
            }
        }
    }

    /// Waits until every event queued before this call was sent (or failed), by every
    /// sink.
    pub async fn flush(&self) {
        for (_, tx) in &self.sinks {
            let (done, wait) = oneshot::channel();
            if tx.send(Command::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }
}

async fn run(sink: Sink, policy: BackoffPolicy, mut rx: mpsc::Receiver<Command>) {
    while let Some(batch) = next_batch(&mut rx, SQS_BATCH_MAX, |_| LINGER).await {
        let mut messages = Vec::new();
        let mut flushes = Vec::new();
        for command in batch {
            match command {
                Command::Publish(message) => messages.push(message),
                Command::Flush(done) => flushes.push(done),
            }
        }
        deliver(&sink, policy, messages).await;
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Sends `messages`: a failure of a whole call is retried by the retry wrapper; entries
/// the sink refused as retryable are sent again, up to [`RESENDS`] times, after the
/// backoff's delays. What still fails is counted and logged.
async fn deliver(sink: &Sink, policy: BackoffPolicy, mut messages: Vec<Arc<Message>>) {
    let label = sink.label();
    let mut delays = policy.endless();
    for round in 0..=RESENDS {
        let mut again = Vec::new();
        for call in sink.calls(std::mem::take(&mut messages)) {
            match sink.send(&call).await {
                Ok(refused) => {
                    for entry in refused {
                        let Some(message) = call.get(entry.index) else {
                            continue;
                        };
                        if entry.retryable && round < RESENDS {
                            again.push(Arc::clone(message));
                        } else {
                            crate::metrics::results_publish_failed(label, 1);
                            tracing::warn!(
                                sink = label,
                                error_code = %entry.code,
                                error = %entry.message,
                                "An outcome event was refused"
                            );
                        }
                    }
                }
                Err(e) => {
                    crate::metrics::results_publish_failed(label, call.len());
                    tracing::warn!(sink = label, error = %e, count = call.len(), "Could not publish outcome events");
                }
            }
        }
        if again.is_empty() {
            return;
        }
        tokio::time::sleep(delays.next().unwrap_or(LINGER)).await;
        messages = again;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: usize) -> Arc<Message> {
        Arc::new(Message {
            body: "x".repeat(bytes),
            subject: "s".into(),
            detail_type: OUTCOME_DETAIL_TYPE,
            attributes: vec![("outcome", "deleted".into())],
        })
    }

    /// `PublishBatch` answers 200 with a `Failed` list (SNS API Reference): an entry
    /// whose fault is SNS's is sent again, alone; one that is the sender's is not.
    #[tokio::test(start_paused = true)]
    async fn entries_sns_refused_as_its_own_fault_are_sent_again_alone() {
        use aws_sdk_sns::operation::publish_batch::PublishBatchOutput;
        use aws_sdk_sns::types::{BatchResultErrorEntry, PublishBatchResultEntry};
        use aws_smithy_mocks::{mock, mock_client, RuleMode};
        let first = mock!(aws_sdk_sns::Client::publish_batch)
            .match_requests(|r| r.publish_batch_request_entries().len() == 3)
            .then_output(|| {
                PublishBatchOutput::builder()
                    .successful(
                        PublishBatchResultEntry::builder()
                            .id("0")
                            .message_id("m0")
                            .build(),
                    )
                    .failed(
                        BatchResultErrorEntry::builder()
                            .id("1")
                            .code("InternalError")
                            .sender_fault(false)
                            .build()
                            .unwrap(),
                    )
                    .failed(
                        BatchResultErrorEntry::builder()
                            .id("2")
                            .code("InvalidParameter")
                            .sender_fault(true)
                            .build()
                            .unwrap(),
                    )
                    .build()
            });
        let again = mock!(aws_sdk_sns::Client::publish_batch)
            .match_requests(|r| {
                r.publish_batch_request_entries().len() == 1
                    && r.publish_batch_request_entries()[0].message() == "x".repeat(11)
            })
            .then_output(|| {
                PublishBatchOutput::builder()
                    .successful(
                        PublishBatchResultEntry::builder()
                            .id("0")
                            .message_id("m1")
                            .build(),
                    )
                    .build()
            });
        let client = mock_client!(aws_sdk_sns, RuleMode::MatchAny, [&first, &again], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let sink = Sink::Topic(Topic::with_client(
            client,
            crate::aws::retry::quick_policy(),
            "arn:aws:sns:us-east-1:111122223333:outcomes".into(),
        ));
        deliver(
            &sink,
            crate::aws::retry::quick_policy(),
            vec![message(10), message(11), message(12)],
        )
        .await;
        assert_eq!(first.num_calls(), 1);
        assert_eq!(
            again.num_calls(),
            1,
            "the entry SNS failed, sent again alone"
        );
    }

    /// `PutEvents` answers 200 with `FailedEntryCount` and an `ErrorCode` on the entries
    /// that failed, in request order (EventBridge API Reference): a throttled entry is
    /// sent again, one refused for its content is not.
    #[tokio::test(start_paused = true)]
    async fn events_eventbridge_throttled_are_put_again() {
        use aws_sdk_eventbridge::operation::put_events::PutEventsOutput;
        use aws_sdk_eventbridge::types::PutEventsResultEntry;
        use aws_smithy_mocks::{mock, mock_client, RuleMode};
        let first = mock!(aws_sdk_eventbridge::Client::put_events)
            .match_requests(|r| r.entries().len() == 3)
            .then_output(|| {
                PutEventsOutput::builder()
                    .failed_entry_count(2)
                    .entries(PutEventsResultEntry::builder().event_id("e0").build())
                    .entries(
                        PutEventsResultEntry::builder()
                            .error_code("ThrottlingException")
                            .error_message("Rate exceeded")
                            .build(),
                    )
                    .entries(
                        PutEventsResultEntry::builder()
                            .error_code("MalformedDetail")
                            .error_message("Detail is malformed")
                            .build(),
                    )
                    .build()
            });
        let again = mock!(aws_sdk_eventbridge::Client::put_events)
            .match_requests(|r| {
                r.entries().len() == 1 && r.entries()[0].detail() == Some(&*"x".repeat(11))
            })
            .then_output(|| {
                PutEventsOutput::builder()
                    .failed_entry_count(0)
                    .entries(PutEventsResultEntry::builder().event_id("e1").build())
                    .build()
            });
        let client = mock_client!(
            aws_sdk_eventbridge,
            RuleMode::MatchAny,
            [&first, &again],
            |c| c.retry_config(aws_smithy_types::retry::RetryConfig::disabled())
        );
        let sink = Sink::Bus(Bus::with_client(
            client,
            crate::aws::retry::quick_policy(),
            "security".into(),
        ));
        deliver(
            &sink,
            crate::aws::retry::quick_policy(),
            vec![message(10), message(11), message(12)],
        )
        .await;
        assert_eq!(first.num_calls(), 1);
        assert_eq!(again.num_calls(), 1, "the throttled event, put again alone");
    }

    /// SendMessageBatch, PublishBatch and PutEvents each take at most 256 KiB a call:
    /// large events go fewer to a call, small ones ten.
    #[test]
    fn calls_hold_ten_messages_and_at_most_256_kib() {
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                .build(),
        );
        let sink = Sink::Queue(
            Sqs::new(sqs, crate::aws::retry::quick_policy()),
            "https://sqs.us-east-1.amazonaws.com/111122223333/results".into(),
        );
        let large: Vec<Arc<Message>> = (0..5).map(|_| message(100_000)).collect();
        let calls = sink.calls(large);
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        let small: Vec<Arc<Message>> = (0..25).map(|_| message(1_000)).collect();
        let calls = sink.calls(small);
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    }
}
