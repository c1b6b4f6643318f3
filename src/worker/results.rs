//! Outcome events: when `results.queue_url` is set, one JSON event per finished job is
//! sent there, ten to a `SendMessageBatch`. Publishing never delays, repeats or undoes a
//! revocation: a full buffer or a failed send is counted and logged, nothing more.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::aws::deleter::next_batch;
use crate::aws::iam::{KeyResult, LastUsed};
use crate::aws::retry::RetryCounter;
use crate::aws::sqs::{Outgoing, Sqs, SQS_BATCH_MAX};
use crate::outcome::JobReport;

/// Events waiting to be sent; past this, new events are dropped and counted.
const BUFFER: usize = 10_000;
const LINGER: Duration = Duration::from_millis(50);

/// The event sent for each finished job.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutcomeEvent {
    pub request_id: Option<String>,
    pub message_id: String,
    pub outcome: &'static str,
    pub reason: &'static str,
    pub detail: Option<String>,
    pub user_name: Option<String>,
    pub access_key_ids: Vec<String>,
    pub account_id: Option<String>,
    pub batch_id: Option<String>,
    pub action: Option<&'static str>,
    pub keys_changed: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_source: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_revoked_before: Option<String>,
    /// What the session cut-off covers, and where there is none, why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_used: Vec<LastUsed>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyResult>,
    pub attempts: u32,
    pub retries: u32,
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
        Self {
            request_id: report.facts.request_id.clone(),
            message_id: report.message_id.clone(),
            outcome: report.outcome.as_str(),
            reason: report.outcome.reason(),
            detail: report.detail.clone(),
            user_name: report.facts.user_name.clone(),
            access_key_ids: report.facts.access_key_ids.clone(),
            account_id: report.facts.account_id.clone(),
            batch_id: report.facts.batch_id.clone(),
            action: report.facts.action.map(|a| a.as_str()),
            keys_changed: report.facts.keys_changed,
            event_source: report.facts.event_source(),
            event_type: report.facts.event_type().map(str::to_owned),
            sessions_revoked_before: report.facts.sessions_revoked_before.clone(),
            sessions: report.facts.sessions.clone(),
            last_used: report.facts.last_used.clone(),
            keys: report.facts.keys.clone(),
            attempts: report.attempts,
            retries: report.retries,
            enqueued_at_ms,
            received_at_ms: finished_at_ms.saturating_sub(report.duration.as_millis() as u64),
            finished_at_ms,
        }
    }
}

enum Command {
    Publish(String),
    Flush(oneshot::Sender<()>),
}

/// Sends outcome events in the background.
#[derive(Debug, Clone)]
pub struct Results {
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Publish(_) => "Publish",
            Command::Flush(_) => "Flush",
        })
    }
}

impl Results {
    /// Starts the sending task for `queue_url`.
    pub fn spawn(sqs: Sqs, queue_url: String) -> Self {
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(run(sqs, queue_url, rx));
        Self { tx }
    }

    /// Queues `event` for sending; never waits.
    pub fn publish(&self, event: &OutcomeEvent) {
        let body = match serde_json::to_string(event) {
            Ok(body) => body,
            Err(e) => {
                crate::metrics::results_publish_failed(1);
                tracing::error!(error = %e, "Could not encode an outcome event");
                return;
            }
        };
        if self.tx.try_send(Command::Publish(body)).is_err() {
            crate::metrics::results_publish_failed(1);
            tracing::warn!(
                request_id = event.request_id.as_deref().unwrap_or(""),
                "Outcome event dropped: buffer full"
            );
        }
    }

    /// Waits until every event queued before this call was sent (or failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(sqs: Sqs, queue_url: String, mut rx: mpsc::Receiver<Command>) {
    while let Some(batch) = next_batch(&mut rx, SQS_BATCH_MAX, |_| LINGER).await {
        let mut bodies = Vec::new();
        let mut flushes = Vec::new();
        for command in batch {
            match command {
                Command::Publish(body) => bodies.push(Outgoing {
                    body,
                    group_id: None,
                    deduplication_id: None,
                }),
                Command::Flush(done) => flushes.push(done),
            }
        }
        if !bodies.is_empty() {
            match sqs
                .send_batch(&queue_url, &bodies, &RetryCounter::default())
                .await
            {
                Ok(refused) if refused.is_empty() => {}
                Ok(refused) => {
                    let failed = refused.len();
                    crate::metrics::results_publish_failed(failed);
                    tracing::warn!(
                        failed,
                        "Some outcome events were not accepted by the results queue"
                    );
                }
                Err(e) => {
                    crate::metrics::results_publish_failed(bodies.len());
                    tracing::warn!(error = %e, count = bodies.len(), "Could not publish outcome events");
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
