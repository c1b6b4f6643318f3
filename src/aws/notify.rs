//! The notification sinks' AWS calls: SNS `PublishBatch` and EventBridge `PutEvents`,
//! each with the single retry wrapper for a failure of the whole call, and returning the
//! entries AWS refused one by one (both APIs answer 200 with per-entry failures).

use std::collections::HashMap;
use std::sync::Arc;

use aws_config::{Region, SdkConfig};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};

use crate::aws::classify::{AwsError, THROTTLING_CODES};
use crate::aws::retry::{call, BackoffPolicy, RetryCounter};
use crate::metrics::RequestCounter;

/// The EventBridge `source` of every event the worker puts.
pub const EVENT_SOURCE: &str = "iam-key-revoker";

/// One message for a sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The event, as JSON.
    pub body: String,
    /// SNS subject (under 100 characters) and EventBridge detail type.
    pub subject: String,
    pub detail_type: &'static str,
    /// SNS message attributes, all of type String, so subscribers filter on them.
    pub attributes: Vec<(&'static str, String)>,
}

/// An entry the service refused, by its position in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub index: usize,
    pub code: String,
    pub message: String,
    /// Whether sending it again may succeed (throttling, an internal failure).
    pub retryable: bool,
}

/// The Region of an ARN (`arn:partition:service:region:account:resource`), if it names
/// one: a topic or bus in another Region than the worker's is called there.
pub fn arn_region(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    if parts.next() != Some("arn") {
        return None;
    }
    parts.nth(2).filter(|region| !region.is_empty())
}

/// SNS, for one topic.
#[derive(Debug, Clone)]
pub struct Topic {
    client: aws_sdk_sns::Client,
    policy: BackoffPolicy,
    arn: String,
}

impl Topic {
    /// A client for `arn`, in the topic's Region.
    pub fn new(sdk: &SdkConfig, policy: BackoffPolicy, arn: String) -> Self {
        let mut config = aws_sdk_sns::config::Builder::from(sdk).interceptor(RequestCounter);
        if let Some(region) = arn_region(&arn) {
            config = config.region(Region::new(region.to_owned()));
        }
        Self {
            client: aws_sdk_sns::Client::from_conf(config.build()),
            policy,
            arn,
        }
    }

    /// A topic reached through `client` (tests replay AWS's answers with it).
    #[cfg(test)]
    pub(crate) fn with_client(
        client: aws_sdk_sns::Client,
        policy: BackoffPolicy,
        arn: String,
    ) -> Self {
        Self {
            client,
            policy,
            arn,
        }
    }

    /// Publishes up to ten messages with one `PublishBatch`. A FIFO topic gets a message
    /// group and a deduplication id made from the body.
    pub async fn publish(
        &self,
        messages: &[Arc<Message>],
        retries: &RetryCounter,
    ) -> Result<Vec<Refused>, AwsError> {
        let fifo = self.arn.ends_with(".fifo");
        let entries: Vec<_> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let attributes: HashMap<String, MessageAttributeValue> = m
                    .attributes
                    .iter()
                    .filter(|(_, value)| !value.is_empty())
                    .map(|(name, value)| {
                        let value = MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value(value)
                            .build()
                            // Cannot fail: the data type is set just above.
                            .expect("data type is set");
                        ((*name).to_owned(), value)
                    })
                    .collect();
                let mut entry = PublishBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message(&m.body)
                    .subject(&m.subject)
                    .set_message_attributes(Some(attributes));
                if fifo {
                    entry = entry
                        .message_group_id(EVENT_SOURCE)
                        .message_deduplication_id(digest(&m.body));
                }
                entry
                    .build()
                    // Cannot fail: id and message are set just above.
                    .expect("id and message are set")
            })
            .collect();
        let out = call(&self.policy, retries, "sns", "PublishBatch", || async {
            self.client
                .publish_batch()
                .topic_arn(&self.arn)
                .set_publish_batch_request_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("PublishBatch", e))
        })
        .await?;
        Ok(out
            .failed()
            .iter()
            .map(|f| Refused {
                index: f.id().parse().unwrap_or(usize::MAX),
                code: f.code().to_owned(),
                message: f.message().unwrap_or_default().to_owned(),
                retryable: !f.sender_fault(),
            })
            .collect())
    }
}

/// EventBridge, for one event bus.
#[derive(Debug, Clone)]
pub struct Bus {
    client: aws_sdk_eventbridge::Client,
    policy: BackoffPolicy,
    /// The bus's name or ARN.
    name: String,
}

impl Bus {
    /// A client for the bus `name` (a name, or an ARN: then in the bus's Region).
    pub fn new(sdk: &SdkConfig, policy: BackoffPolicy, name: String) -> Self {
        let mut config =
            aws_sdk_eventbridge::config::Builder::from(sdk).interceptor(RequestCounter);
        if let Some(region) = arn_region(&name) {
            config = config.region(Region::new(region.to_owned()));
        }
        Self {
            client: aws_sdk_eventbridge::Client::from_conf(config.build()),
            policy,
            name,
        }
    }

    /// A bus reached through `client` (tests replay AWS's answers with it).
    #[cfg(test)]
    pub(crate) fn with_client(
        client: aws_sdk_eventbridge::Client,
        policy: BackoffPolicy,
        name: String,
    ) -> Self {
        Self {
            client,
            policy,
            name,
        }
    }

    /// Puts up to ten events with one `PutEvents`: source [`EVENT_SOURCE`], the
    /// message's detail type, the body as detail.
    pub async fn put(
        &self,
        messages: &[Arc<Message>],
        retries: &RetryCounter,
    ) -> Result<Vec<Refused>, AwsError> {
        let entries: Vec<_> = messages
            .iter()
            .map(|m| {
                PutEventsRequestEntry::builder()
                    .source(EVENT_SOURCE)
                    .detail_type(m.detail_type)
                    .detail(&m.body)
                    .event_bus_name(&self.name)
                    .build()
            })
            .collect();
        let out = call(
            &self.policy,
            retries,
            "eventbridge",
            "PutEvents",
            || async {
                self.client
                    .put_events()
                    .set_entries(Some(entries.clone()))
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("PutEvents", e))
            },
        )
        .await?;
        // The result entries are in the order of the request's (EventBridge API
        // Reference, "PutEvents": "the response contains one entry for each request
        // entry, in the same order").
        Ok(out
            .entries()
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| {
                let code = entry.error_code()?;
                Some(Refused {
                    index,
                    code: code.to_owned(),
                    message: entry.error_message().unwrap_or_default().to_owned(),
                    retryable: THROTTLING_CODES.contains(&code)
                        || matches!(code, "InternalFailure" | "InternalException"),
                })
            })
            .collect())
    }
}

/// The size EventBridge counts for an entry (EventBridge User Guide, "Calculating
/// PutEvents event entry size"): 14 bytes for the time, then the UTF-8 bytes of source,
/// detail type and detail.
pub fn event_entry_size(message: &Message) -> usize {
    14 + EVENT_SOURCE.len() + message.detail_type.len() + message.body.len()
}

/// The size SNS counts for a message: the body, the subject, and each attribute's name,
/// type and value (SNS Developer Guide, "Amazon SNS message attributes": attributes count
/// towards the 256 KiB message size).
pub fn sns_message_size(message: &Message) -> usize {
    message.body.len()
        + message.subject.len()
        + message
            .attributes
            .iter()
            .map(|(name, value)| name.len() + "String".len() + value.len())
            .sum::<usize>()
}

fn digest(body: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arn_names_its_region_and_a_name_none() {
        assert_eq!(
            arn_region("arn:aws:sns:eu-west-1:111122223333:revocations"),
            Some("eu-west-1")
        );
        assert_eq!(
            arn_region("arn:aws:events:us-east-2:111122223333:event-bus/security"),
            Some("us-east-2")
        );
        assert_eq!(arn_region("security"), None);
        assert_eq!(arn_region("arn:aws:iam::111122223333:role/x"), None);
    }

    #[test]
    fn entry_sizes_count_what_aws_counts() {
        let message = Message {
            body: "{\"a\":1}".into(),
            subject: "s".into(),
            detail_type: "Key Revocation Outcome",
            attributes: vec![("outcome", "deleted".into())],
        };
        assert_eq!(event_entry_size(&message), 14 + 15 + 22 + 7);
        assert_eq!(sns_message_size(&message), 7 + 1 + 7 + 6 + 7);
    }
}
