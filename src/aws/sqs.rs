//! SQS: receiving jobs, settling messages (batched delete, dead-letter copy, visibility
//! changes) and finding the dead-letter queue.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::retry::{call, BackoffPolicy, RetryCounter};
pub use crate::metrics::Depth;
pub use crate::outcome::Lane;
use crate::outcome::Outcome;

/// SQS's longest message delay, `DelaySeconds` (SQS API Reference, `SendMessage`).
pub const MAX_DELAY_SECONDS: u32 = 900;

/// SQS accepts at most ten entries per batch call and per receive.
pub const SQS_BATCH_MAX: usize = 10;

/// The job queue and where its rejected jobs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queues {
    pub queue_url: String,
    pub dead_letter_queue_url: String,
    /// Whether SQS itself moves messages after `maxReceiveCount` (a redrive policy exists).
    pub has_redrive_policy: bool,
}

/// Startup problems with the queues.
#[derive(Debug, thiserror::Error)]
pub enum QueueSetupError {
    #[error("no dead-letter queue for {queue}: set {key} or give the queue a RedrivePolicy")]
    NoDeadLetterQueue {
        /// The queue without one.
        queue: String,
        /// The configuration key that names it.
        key: &'static str,
    },
    #[error("the queue's RedrivePolicy is unreadable: {0}")]
    BadRedrivePolicy(String),
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// SQS access for the worker.
#[derive(Debug, Clone)]
pub struct Sqs {
    pub(super) client: aws_sdk_sqs::Client,
    pub(super) policy: BackoffPolicy,
}

/// Attributes of a received message the worker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The job queue it came from.
    pub lane: Lane,
    /// `ApproximateReceiveCount`: 1 on first delivery.
    pub receive_count: u32,
    /// `SentTimestamp`, in milliseconds since the epoch.
    pub sent_timestamp_ms: Option<u64>,
    /// When the worker got the message: SQS's 12-hour visibility limit counts from here.
    pub received_at: Instant,
}

impl Delivery {
    /// Reads the system attributes of `message`, received just now from `lane`.
    pub fn of(message: &Message, lane: Lane) -> Self {
        let attr = |name: MessageSystemAttributeName| {
            message
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u64>().ok())
        };
        Self {
            lane,
            receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount)
                .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            sent_timestamp_ms: attr(MessageSystemAttributeName::SentTimestamp),
            received_at: Instant::now(),
        }
    }

    /// How long the worker has held the message.
    pub fn held(&self) -> Duration {
        self.received_at.elapsed()
    }
}

impl Sqs {
    pub fn new(client: aws_sdk_sqs::Client, policy: BackoffPolicy) -> Self {
        Self { client, policy }
    }

    /// Works out the dead-letter queue: the configured one, else the queue's
    /// `RedrivePolicy` target. Also reports whether the queue has a redrive policy.
    /// `dlq_key` is the configuration key of `configured_dlq`, for the error.
    pub async fn discover(
        &self,
        queue_url: &str,
        configured_dlq: Option<&str>,
        dlq_key: &'static str,
    ) -> Result<Queues, QueueSetupError> {
        let redrive = self
            .attribute(queue_url, QueueAttributeName::RedrivePolicy)
            .await?
            .filter(|p| !p.is_empty());
        let dlq_from_policy = match &redrive {
            Some(policy) => Some(self.redrive_target(policy).await?),
            None => None,
        };
        let dead_letter_queue_url = configured_dlq
            .map(str::to_owned)
            .or(dlq_from_policy)
            .ok_or_else(|| QueueSetupError::NoDeadLetterQueue {
                queue: queue_url.to_owned(),
                key: dlq_key,
            })?;
        Ok(Queues {
            queue_url: queue_url.to_owned(),
            dead_letter_queue_url,
            has_redrive_policy: redrive.is_some(),
        })
    }

    /// The ARN of `queue_url` (`QueueArn`): what EventBridge Scheduler targets.
    pub async fn queue_arn(&self, queue_url: &str) -> Result<String, AwsError> {
        self.attribute(queue_url, QueueAttributeName::QueueArn)
            .await?
            .ok_or_else(|| AwsError {
                operation: "GetQueueAttributes",
                class: crate::aws::classify::ErrorClass::Permanent,
                code: None,
                message: format!("no QueueArn in the answer for {queue_url}"),
                unanswered: false,
            })
    }

    /// Whether the FIFO queue `queue_url` deduplicates by content
    /// (`ContentBasedDeduplication`): EventBridge Scheduler sends to a FIFO queue only
    /// when it does (EventBridge Scheduler API Reference, `SqsParameters`).
    pub async fn deduplicates_by_content(&self, queue_url: &str) -> Result<bool, AwsError> {
        Ok(self
            .attribute(queue_url, QueueAttributeName::ContentBasedDeduplication)
            .await?
            .is_some_and(|v| v.eq_ignore_ascii_case("true")))
    }

    async fn attribute(
        &self,
        queue_url: &str,
        name: QueueAttributeName,
    ) -> Result<Option<String>, AwsError> {
        let retries = RetryCounter::default();
        let attrs = call(
            &self.policy,
            &retries,
            "sqs",
            "GetQueueAttributes",
            || async {
                self.client
                    .get_queue_attributes()
                    .queue_url(queue_url)
                    .attribute_names(name.clone())
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("GetQueueAttributes", e))
            },
        )
        .await?;
        Ok(attrs.attributes().and_then(|a| a.get(&name)).cloned())
    }

    /// How many messages `queue_url` holds: visible, in flight (received, not deleted)
    /// and delayed. One `GetQueueAttributes` call, not retried: a depth is read again soon.
    pub async fn depth(&self, queue_url: &str) -> Result<Depth, AwsError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetQueueAttributes", e))?;
        let read = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Depth {
            visible: read(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: read(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: read(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }

    async fn redrive_target(&self, policy: &str) -> Result<String, QueueSetupError> {
        let parsed: serde_json::Value = serde_json::from_str(policy)
            .map_err(|e| QueueSetupError::BadRedrivePolicy(e.to_string()))?;
        let arn = parsed
            .get("deadLetterTargetArn")
            .and_then(|v| v.as_str())
            .ok_or_else(|| QueueSetupError::BadRedrivePolicy("no deadLetterTargetArn".into()))?;
        // arn:aws:sqs:<region>:<account>:<name>
        let parts: Vec<&str> = arn.split(':').collect();
        let [_, _, "sqs", _, account, name] = parts.as_slice() else {
            return Err(QueueSetupError::BadRedrivePolicy(format!(
                "deadLetterTargetArn {arn:?} is not an SQS queue ARN"
            )));
        };
        let retries = RetryCounter::default();
        let out = call(&self.policy, &retries, "sqs", "GetQueueUrl", || async {
            self.client
                .get_queue_url()
                .queue_name(*name)
                .queue_owner_aws_account_id(*account)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("GetQueueUrl", e))
        })
        .await?;
        out.queue_url()
            .map(str::to_owned)
            .ok_or_else(|| QueueSetupError::BadRedrivePolicy("GetQueueUrl returned no URL".into()))
    }

    /// One long poll for up to `max` messages (at most ten), asking for the visibility
    /// timeout and the attributes the worker reads. Not retried here: the receive loop
    /// backs off on its own.
    pub async fn receive(
        &self,
        queue_url: &str,
        max: usize,
        wait_time_seconds: u32,
        visibility_timeout_seconds: u32,
    ) -> Result<Vec<Message>, AwsError> {
        let max = max.clamp(1, SQS_BATCH_MAX) as i32;
        let out = self
            .client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait_time_seconds as i32)
            .visibility_timeout(visibility_timeout_seconds as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ReceiveMessage", e))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Sets the visibility timeout of a received message (heartbeat, release, retry delay).
    pub async fn set_visibility(
        &self,
        queue_url: &str,
        receipt_handle: &str,
        seconds: u32,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        call(
            &self.policy,
            retries,
            "sqs",
            "ChangeMessageVisibility",
            || async {
                self.client
                    .change_message_visibility()
                    .queue_url(queue_url)
                    .receipt_handle(receipt_handle)
                    .visibility_timeout(seconds as i32)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| AwsError::from_sdk("ChangeMessageVisibility", e))
            },
        )
        .await
    }

    /// Sends one message of the worker's own, a continuation of a job (docs,
    /// "Continuations"), `delay_seconds` from now (at most SQS's 900). A FIFO queue takes
    /// no delay per message (SQS API Reference, `SendMessage`: `DelaySeconds`): there the
    /// message joins the end of `fifo`'s message group, with that deduplication id.
    /// Returns the new message's id.
    pub async fn send_continuation(
        &self,
        queue_url: &str,
        body: &str,
        delay_seconds: u32,
        fifo: Option<(&str, &str)>,
        retries: &RetryCounter,
    ) -> Result<String, AwsError> {
        let delay = match fifo {
            Some(_) => None,
            None => Some(delay_seconds.min(MAX_DELAY_SECONDS) as i32),
        };
        let out = call(&self.policy, retries, "sqs", "SendMessage", || async {
            self.client
                .send_message()
                .queue_url(queue_url)
                .message_body(body)
                .set_delay_seconds(delay)
                .set_message_group_id(fifo.map(|(group, _)| group.to_owned()))
                .set_message_deduplication_id(fifo.map(|(_, dedup)| dedup.to_owned()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("SendMessage", e))
        })
        .await?;
        Ok(out.message_id().unwrap_or_default().to_owned())
    }

    /// Copies `message` to the dead-letter queue: the body byte for byte, with the
    /// `revoker-*` attributes saying why. Attribute values are made valid SQS text and
    /// the detail is bounded ([`dead_letter_attributes`]). When SQS refuses that copy for
    /// good (its size or content), it is sent again with only `revoker-outcome` and
    /// `revoker-reason`; an error is returned only when that fails too.
    pub async fn dead_letter(
        &self,
        dlq_url: &str,
        message: &Message,
        outcome: Outcome,
        detail: &str,
        request_id: Option<&str>,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        let full = dead_letter_attributes(outcome, detail, request_id);
        match self.copy_to(dlq_url, message, full, retries).await {
            Err(e) if e.class == ErrorClass::Permanent => {
                tracing::warn!(
                    error = %e,
                    "Dead-letter copy refused; sending it again with only revoker-outcome and revoker-reason"
                );
                let minimal = dead_letter_attributes(outcome, "", None)
                    .into_iter()
                    .filter(|(name, _)| name == "revoker-outcome" || name == "revoker-reason")
                    .collect();
                self.copy_to(dlq_url, message, minimal, retries).await
            }
            other => other,
        }
    }

    async fn copy_to(
        &self,
        dlq_url: &str,
        message: &Message,
        attributes: HashMap<String, MessageAttributeValue>,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        let fifo = dlq_url.ends_with(".fifo");
        let group = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
            .cloned()
            .unwrap_or_else(|| "rejected".to_owned());
        let body = message.body().unwrap_or_default();
        call(&self.policy, retries, "sqs", "SendMessage", || async {
            self.client
                .send_message()
                .queue_url(dlq_url)
                .message_body(body)
                .set_message_attributes(Some(attributes.clone()))
                .set_message_group_id(fifo.then(|| group.clone()))
                .set_message_deduplication_id(
                    fifo.then(|| message.message_id().unwrap_or_default().to_owned()),
                )
                .send()
                .await
                .map(drop)
                .map_err(|e| AwsError::from_sdk("SendMessage", e))
        })
        .await
    }
}

/// The longest `revoker-detail` value.
pub const MAX_DETAIL_CHARS: usize = 1_024;

/// The `revoker-*` attributes of a dead-lettered copy, each value valid SQS text.
pub fn dead_letter_attributes(
    outcome: Outcome,
    detail: &str,
    request_id: Option<&str>,
) -> HashMap<String, MessageAttributeValue> {
    let string = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            // Cannot fail: data_type, the only required field, is set just above.
            .expect("data_type is set")
    };
    let detail = sqs_text(detail, MAX_DETAIL_CHARS);
    // SQS refuses empty attribute values.
    let detail = if detail.is_empty() {
        outcome.reason().to_owned()
    } else {
        detail
    };
    let mut attributes = HashMap::from([
        ("revoker-outcome".to_owned(), string(outcome.as_str())),
        ("revoker-reason".to_owned(), string(outcome.reason())),
        ("revoker-detail".to_owned(), string(&detail)),
    ]);
    if let Some(id) = request_id.map(|id| sqs_text(id, MAX_DETAIL_CHARS)) {
        if !id.is_empty() {
            attributes.insert("revoker-request-id".to_owned(), string(&id));
        }
    }
    attributes
}

/// `text` as SQS accepts it in a message or a string attribute: at most `max_chars`
/// characters, each outside SQS's allowed set (`#x9 | #xA | #xD | #x20-#xD7FF |
/// #xE000-#xFFFD | #x10000-#x10FFFF`, SQS API Reference, SendMessage) replaced with
/// U+FFFD.
pub fn sqs_text(text: &str, max_chars: usize) -> String {
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r')
            || ('\u{20}'..='\u{D7FF}').contains(&c)
            || ('\u{E000}'..='\u{FFFD}').contains(&c)
            || c >= '\u{10000}'
    };
    text.chars()
        .take(max_chars)
        .map(|c| if allowed(c) { c } else { '\u{FFFD}' })
        .collect()
}

/// One message of a `SendMessageBatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub body: String,
    /// FIFO queues only.
    pub group_id: Option<String>,
    /// FIFO queues only.
    pub deduplication_id: Option<String>,
    /// Standard queues only: seconds before the message can be received (at most 900).
    pub delay_seconds: Option<i32>,
}

/// An entry of a batch that SQS refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Position of the entry in the batch.
    pub index: usize,
    pub code: String,
    pub message: String,
    /// Whether the fault is the sender's (sending it again cannot help).
    pub sender_fault: bool,
}

impl Sqs {
    /// Sends up to ten messages with one `SendMessageBatch` (transient failures of the
    /// whole call retried); returns the entries the queue refused.
    pub async fn send_batch(
        &self,
        queue_url: &str,
        messages: &[Outgoing],
        retries: &RetryCounter,
    ) -> Result<Vec<Refused>, AwsError> {
        let entries: Vec<_> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .set_message_group_id(m.group_id.clone())
                    .set_message_deduplication_id(m.deduplication_id.clone())
                    .set_delay_seconds(m.delay_seconds)
                    .build()
                    // Cannot fail: both required fields are set just above.
                    .expect("id and body are set")
            })
            .collect();
        let out = call(&self.policy, retries, "sqs", "SendMessageBatch", || async {
            self.client
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("SendMessageBatch", e))
        })
        .await?;
        Ok(out
            .failed()
            .iter()
            .map(|f| Refused {
                index: f.id().parse().unwrap_or(usize::MAX),
                code: f.code().to_owned(),
                message: f.message().unwrap_or_default().to_owned(),
                sender_fault: f.sender_fault(),
            })
            .collect())
    }

    /// The backoff policy of this client's calls.
    pub fn policy(&self) -> &BackoffPolicy {
        &self.policy
    }
}

/// For unit tests with mocked clients: a short backoff.
#[cfg(test)]
impl Sqs {
    pub(crate) fn for_tests(client: aws_sdk_sqs::Client) -> Self {
        let policy = BackoffPolicy::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
            2.0,
            false,
            Duration::from_secs(1),
        )
        .unwrap();
        Sqs::new(client, policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Reason;
    use aws_sdk_sqs::operation::send_message::SendMessageOutput;
    use aws_sdk_sqs::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn sqs(client: Client) -> Sqs {
        Sqs::for_tests(client)
    }

    /// An SQS JSON-protocol error as SQS sends it: the JSON body with `__type`, and the
    /// query-compatible code in `x-amzn-query-error`.
    fn sqs_error(
        status: u16,
        code: &str,
    ) -> aws_smithy_runtime_api::client::orchestrator::HttpResponse {
        let mut response = aws_smithy_runtime_api::client::orchestrator::HttpResponse::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap(),
            aws_smithy_types::body::SdkBody::from(format!(
                r#"{{"__type":"com.amazonaws.sqs#{code}","message":"refused by the test"}}"#
            )),
        );
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        response
            .headers_mut()
            .insert("x-amzn-query-error", format!("{code};Sender"));
        response
    }

    fn attribute<'a>(
        r: &'a aws_sdk_sqs::operation::send_message::SendMessageInput,
        name: &str,
    ) -> Option<&'a str> {
        r.message_attributes()?.get(name)?.string_value()
    }

    fn rejected_message() -> Message {
        Message::builder()
            .message_id("m-1")
            .body("{\"request_id\":\"r\"}")
            .build()
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_dead_letter_copy_is_sent_again_with_the_two_required_attributes() {
        let full = mock!(Client::send_message)
            .match_requests(|r| r.message_attributes().map_or(0, |a| a.len()) == 4)
            .then_http_response(|| sqs_error(400, "InvalidMessageContents"));
        let minimal = mock!(Client::send_message)
            .match_requests(|r| {
                r.message_attributes().map_or(0, |a| a.len()) == 2
                    && attribute(r, "revoker-outcome") == Some("rejected")
                    && attribute(r, "revoker-reason") == Some("access_denied")
                    && r.message_body() == Some("{\"request_id\":\"r\"}")
            })
            .then_output(|| SendMessageOutput::builder().build());
        let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&full, &minimal], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        sqs(client)
            .dead_letter(
                "http://dlq",
                &rejected_message(),
                Outcome::Rejected(Reason::AccessDenied),
                "DeleteAccessKey: AccessDenied: no",
                Some("r"),
                &RetryCounter::default(),
            )
            .await
            .expect("the minimal copy is accepted");
        assert_eq!((full.num_calls(), minimal.num_calls()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn dead_letter_attributes_are_valid_sqs_text_and_bounded() {
        let send = mock!(Client::send_message)
            .match_requests(|r| {
                let detail = attribute(r, "revoker-detail").unwrap_or_default();
                detail.chars().count() == MAX_DETAIL_CHARS
                    && detail.starts_with("bad \u{FFFD} char")
                    && attribute(r, "revoker-request-id") == Some("id\u{FFFD}")
            })
            .then_output(|| SendMessageOutput::builder().build());
        let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&send], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let detail = format!("bad \u{1} char {}", "x".repeat(5_000));
        sqs(client)
            .dead_letter(
                "http://dlq",
                &rejected_message(),
                Outcome::Rejected(Reason::InvalidMessage),
                &detail,
                Some("id\u{FFFF}"),
                &RetryCounter::default(),
            )
            .await
            .expect("sent");
        assert_eq!(send.num_calls(), 1);
    }

    #[test]
    fn sqs_text_replaces_what_sqs_refuses() {
        assert_eq!(sqs_text("a\tb\nc\r", 100), "a\tb\nc\r");
        assert_eq!(
            sqs_text("\u{0}\u{8}\u{1F}\u{FFFE}", 100),
            "\u{FFFD}".repeat(4)
        );
        assert_eq!(sqs_text("é😀", 100), "é😀");
        assert_eq!(sqs_text("abcdef", 3), "abc");
    }

    #[test]
    fn delivery_attributes_are_read() {
        let message = Message::builder()
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "3")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1700000000000")
            .build();
        let delivery = Delivery::of(&message, Lane::Main);
        assert_eq!(delivery.receive_count, 3);
        assert_eq!(delivery.sent_timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(
            Delivery::of(&Message::builder().build(), Lane::Main).receive_count,
            1
        );
    }
}
