//! The operators' side of the breaker (`held`, `approve`, `discard`, `pause`, `resume`,
//! and what `plan` reads): with a person's own credentials, whose policy may write
//! approvals and pauses (deploy/aws/worker.cfn.json, `BreakerOperatorPolicy`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use crate::aws::classify::AwsError;
use crate::aws::retry::{call, BackoffPolicy, RetryCounter};
use crate::breaker::table::{self, key, n, num, s, text};
use crate::breaker::unix_now;
use crate::breaker::window::Window;
use crate::outcome::Lane;

/// One held job as the table keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Held {
    pub request_id: String,
    pub queue: String,
    pub account_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    pub keys: i64,
    /// `account` or `fleet`.
    pub limit: String,
    pub detail: String,
    pub held_at: u64,
    /// `held`, `approved` or `discarded`.
    pub state: String,
    /// Approved and sent back to its queue.
    pub sent: bool,
    #[serde(skip)]
    pub body: String,
    #[serde(skip)]
    pub body_sha256: String,
    #[serde(skip)]
    pub job_digest: String,
}

impl Held {
    fn of(item: &HashMap<String, AttributeValue>) -> Option<Self> {
        Some(Self {
            request_id: s(item, "request_id")?,
            queue: s(item, "queue")?,
            account_id: s(item, "account_id").unwrap_or_default(),
            batch_id: s(item, "batch_id"),
            keys: n(item, "keys").unwrap_or(0),
            limit: s(item, "limit").unwrap_or_default(),
            detail: s(item, "detail").unwrap_or_default(),
            held_at: n(item, "held_at")
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0),
            state: s(item, "state").unwrap_or_default(),
            sent: item.contains_key("sent_at"),
            body: s(item, "body").unwrap_or_default(),
            body_sha256: s(item, "body_sha256").unwrap_or_default(),
            job_digest: s(item, "job_digest").unwrap_or_default(),
        })
    }

    /// Waiting for a person, or approved and not yet sent back.
    pub fn is_waiting(&self) -> bool {
        self.state == "held" || (self.state == "approved" && !self.sent)
    }

    pub fn lane(&self) -> Option<Lane> {
        table::lane_of(&self.queue)
    }
}

/// Which held jobs a decision is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    RequestId(String),
    BatchId(String),
    AccountId(String),
}

impl Selector {
    fn selects(&self, held: &Held) -> bool {
        match self {
            Selector::RequestId(id) => held.request_id == *id,
            Selector::BatchId(id) => held.batch_id.as_deref() == Some(id),
            Selector::AccountId(id) => held.account_id == *id,
        }
    }
}

/// The table, with an operator's credentials.
#[derive(Debug, Clone)]
pub struct Admin {
    client: aws_sdk_dynamodb::Client,
    table: String,
    policy: BackoffPolicy,
}

impl Admin {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String, policy: BackoffPolicy) -> Self {
        Self {
            client,
            table,
            policy,
        }
    }

    /// Every held job still waiting for a decision (`all`: decided ones too), oldest
    /// first.
    pub async fn held(&self, all: bool, retries: &RetryCounter) -> Result<Vec<Held>, AwsError> {
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = call(&self.policy, retries, "dynamodb", "Scan", || async {
                self.client
                    .scan()
                    .table_name(&self.table)
                    .filter_expression("begins_with(pk, :held)")
                    .expression_attribute_values(":held", text("held#"))
                    .consistent_read(true)
                    .set_exclusive_start_key(start.clone())
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("Scan", e))
            })
            .await?;
            found.extend(
                page.items()
                    .iter()
                    .filter_map(Held::of)
                    .filter(|h| all || h.is_waiting()),
            );
            match page.last_evaluated_key() {
                Some(last) if !last.is_empty() => start = Some(last.clone()),
                _ => break,
            }
        }
        found.sort_by(|a, b| (a.held_at, &a.request_id).cmp(&(b.held_at, &b.request_id)));
        Ok(found)
    }

    /// The held jobs `selector` names, still waiting.
    pub async fn select(
        &self,
        selector: &Selector,
        retries: &RetryCounter,
    ) -> Result<Vec<Held>, AwsError> {
        Ok(self
            .held(false, retries)
            .await?
            .into_iter()
            .filter(|h| selector.selects(h))
            .collect())
    }

    /// Approves one held job: the approval (which the worker believes only for this
    /// body) and the hold marked decided, together or not at all. `Ok(false)`: decided
    /// meanwhile by someone else.
    pub async fn approve(
        &self,
        held: &Held,
        by: &str,
        reason: &str,
        retries: &RetryCounter,
    ) -> Result<bool, AwsError> {
        let approval = HashMap::from([
            ("pk".to_owned(), text(table::approval_key(&held.request_id))),
            ("request_id".to_owned(), text(held.request_id.clone())),
            ("queue".to_owned(), text(held.queue.clone())),
            ("body_sha256".to_owned(), text(held.body_sha256.clone())),
            ("job_digest".to_owned(), text(held.job_digest.clone())),
            ("by".to_owned(), text(by)),
            ("reason".to_owned(), text(reason)),
            ("at".to_owned(), num(unix_now())),
        ]);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(approval))
            .build()
            .expect("table and item are set");
        let decided = self.decision(held, "approved", by, reason);
        let items = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().update(decided).build(),
        ];
        let result =
            crate::breaker::count::transact(&self.client, &self.policy, items, retries).await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.code.as_deref() == Some("TransactionCanceledException") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The update that marks `held` decided, if it still waits with the same body.
    fn decision(&self, held: &Held, state: &str, by: &str, reason: &str) -> Update {
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(table::held_key(&held.request_id))))
            .update_expression(
                "SET #s = :state, decided_by = :by, decided_reason = :reason, decided_at = :at",
            )
            .condition_expression("#s = :held AND body_sha256 = :sha")
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":state", text(state))
            .expression_attribute_values(":held", text("held"))
            .expression_attribute_values(":sha", text(held.body_sha256.clone()))
            .expression_attribute_values(":by", text(by))
            .expression_attribute_values(":reason", text(reason))
            .expression_attribute_values(":at", num(unix_now()))
            .build()
            .expect("table, key and expression are set")
    }

    /// Marks one held job discarded, if it still waits. `Ok(false)`: decided meanwhile.
    pub async fn discard(
        &self,
        held: &Held,
        by: &str,
        reason: &str,
        retries: &RetryCounter,
    ) -> Result<bool, AwsError> {
        let items = vec![TransactWriteItem::builder()
            .update(self.decision(held, "discarded", by, reason))
            .build()];
        let result =
            crate::breaker::count::transact(&self.client, &self.policy, items, retries).await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.code.as_deref() == Some("TransactionCanceledException") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records that an approved job was sent back to its queue as `message_id`.
    pub async fn mark_sent(
        &self,
        held: &Held,
        message_id: &str,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        call(&self.policy, retries, "dynamodb", "UpdateItem", || async {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(table::held_key(&held.request_id))))
                .update_expression("SET sent_at = :at, message_id = :id")
                .expression_attribute_values(":at", num(unix_now()))
                .expression_attribute_values(":id", text(message_id))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("UpdateItem", e))
        })
        .await
        .map(drop)
    }

    /// Pauses (`Some(reason)`) or resumes (`None`) `lane`'s key changes.
    pub async fn set_pause(
        &self,
        lane: Lane,
        reason: Option<&str>,
        by: &str,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        let item = HashMap::from([
            ("pk".to_owned(), text(table::pause_key(lane))),
            ("paused".to_owned(), AttributeValue::Bool(reason.is_some())),
            ("reason".to_owned(), text(reason.unwrap_or("resumed"))),
            ("by".to_owned(), text(by)),
            ("since".to_owned(), num(unix_now())),
        ]);
        call(&self.policy, retries, "dynamodb", "PutItem", || async {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("PutItem", e))
        })
        .await
        .map(drop)
    }

    /// The keys counted now for `lane`'s jobs in `account` (`None`: in all), as the
    /// worker would compare them with a limit.
    pub async fn counted(
        &self,
        lane: Lane,
        account: Option<&str>,
        window_seconds: u64,
        retries: &RetryCounter,
    ) -> Result<i64, AwsError> {
        let pk = table::count_key(lane, account);
        let item =
            crate::breaker::count::get_item(&self.client, &self.policy, &self.table, &pk, retries)
                .await?;
        Ok(item.map_or(0, |item| {
            table::counted(&item).live_as_counted(Window::new(window_seconds), unix_now())
        }))
    }
}
