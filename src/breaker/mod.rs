//! The breaker (docs, "The breaker"): keys changed per account and in all, per sliding
//! window and per queue, counted across every replica in DynamoDB before each IAM write;
//! a job that would exceed a limit changes nothing and is held for a person; operators
//! pause and resume every replica's key changes.
//!
//! One `TransactWriteItems` takes a job's units: the account's count, the fleet's count
//! and a check that the queue is not paused move together or not at all, each count
//! conditioned on its limit, so replicas racing for the last unit of a window cannot
//! overshoot it (DynamoDB API Reference, TransactWriteItems: the whole request is
//! cancelled when a condition fails). What a job did not change is given back.

pub mod admin;
pub mod config;
mod count;
pub mod gauges;
pub mod pause;
pub mod table;
pub mod window;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, TransactWriteItem};
use tokio::sync::watch;

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::retry::{call, BackoffPolicy, RetryCounter};
use crate::outcome::Lane;
use config::BreakerSection;
pub use pause::{Pause, Pauses};
use table::{count_key, key, num, text};
use window::Window;

/// Which limit a job would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Account,
    Fleet,
}

/// Units taken for a job, to be given back for the keys it did not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Units {
    lane: Lane,
    account: String,
    pub n: u32,
    bucket: u64,
    /// Counted over the limit, by an operator's approval: spent once the job ends.
    pub approved: bool,
}

/// What recording a hold found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Held now.
    New,
    /// This same message is held already (a redelivery, or sent again): not counted again.
    Already,
    /// The request id is held, or approved, for another message: a request id conflict.
    Conflict,
}

/// The answer to a take.
#[derive(Debug)]
pub enum Take {
    Taken(Units),
    /// Over this limit; what was counted, said for a person.
    Over(Scope, String),
    /// The queue's key changes are paused.
    Paused,
    /// The table did not answer (after retries), or refused.
    Failed(AwsError),
}

/// A held job's record, as the worker writes it.
#[derive(Debug, Clone)]
pub struct Hold<'a> {
    pub request_id: &'a str,
    pub lane: Lane,
    pub account: &'a str,
    pub batch_id: Option<&'a str>,
    pub keys: u32,
    pub scope: Scope,
    pub detail: &'a str,
    pub body: &'a str,
    /// [`table::job_digest`] of the job.
    pub job_digest: &'a str,
}

/// The worker's side of the breaker.
#[derive(Debug)]
pub struct Breaker {
    client: aws_sdk_dynamodb::Client,
    table: String,
    window: Window,
    config: BreakerSection,
    policy: BackoffPolicy,
    pauses: watch::Sender<Pauses>,
}

/// Rounds of rolling stale buckets out before a take gives up as transient.
const ROLL_ROUNDS: usize = 4;

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Breaker {
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: String,
        config: BreakerSection,
        policy: BackoffPolicy,
    ) -> Self {
        Self {
            client,
            table,
            window: Window::new(config.window_seconds),
            config,
            policy,
            pauses: watch::Sender::new(Pauses::default()),
        }
    }

    pub fn config(&self) -> &BreakerSection {
        &self.config
    }

    /// The pauses as last read, to be watched.
    pub fn pauses(&self) -> watch::Receiver<Pauses> {
        self.pauses.subscribe()
    }

    pub fn is_paused(&self, lane: Lane) -> bool {
        self.pauses.borrow().of(lane).is_some()
    }

    /// Reads both queues' pause items (a strongly consistent read each). `Err` leaves the
    /// last known pauses as they were.
    pub async fn read_pauses(&self, retries: &RetryCounter) -> Result<Pauses, AwsError> {
        let mut pauses = Pauses::default();
        for lane in [Lane::Main, Lane::Priority] {
            let item = self.item(&table::pause_key(lane), retries).await?;
            let pause = item.as_ref().and_then(pause::pause_of);
            match lane {
                Lane::Main => pauses.main = pause,
                Lane::Priority => pauses.priority = pause,
            }
        }
        self.pauses.send_if_modified(|known| {
            let changed = *known != pauses;
            *known = pauses.clone();
            changed
        });
        Ok(pauses)
    }

    /// Takes `n` units for `lane`'s jobs in `account`, unless that would exceed a limit
    /// (`force`: an approved job, counted whatever the limit) or the queue is paused.
    pub async fn take(
        &self,
        lane: Lane,
        account: &str,
        n: u32,
        force: bool,
        retries: &RetryCounter,
    ) -> Take {
        let limits = self.config.limits(lane);
        if !force {
            // A job larger than a limit can never fit its window.
            if n > limits.max_keys_per_account {
                return Take::Over(
                    Scope::Account,
                    format!(
                        "{n} key(s), more than breaker.{}.max_keys_per_account = {} in any window",
                        lane.as_str(),
                        limits.max_keys_per_account
                    ),
                );
            }
            if n > limits.max_keys {
                return Take::Over(
                    Scope::Fleet,
                    format!(
                        "{n} key(s), more than breaker.{}.max_keys = {} in any window",
                        lane.as_str(),
                        limits.max_keys
                    ),
                );
            }
        }
        for _ in 0..ROLL_ROUNDS {
            let now = unix_now();
            let bucket = self.window.bucket(now);
            let scopes = [
                (count_key(lane, Some(account)), limits.max_keys_per_account),
                (count_key(lane, None), limits.max_keys),
            ];
            let items: Vec<TransactWriteItem> = scopes
                .iter()
                .map(|(pk, limit)| {
                    self.count_update(pk, n, bucket, now, (!force).then_some(*limit))
                })
                .chain([self.pause_check(lane)])
                .collect();
            // The same token on every retry of this take: DynamoDB applies it once however
            // often it is sent within ten minutes (API Reference, TransactWriteItems,
            // ClientRequestToken), so a retry after a lost answer does not count twice.
            let token = uuid::Uuid::now_v7().to_string();
            let answer = call(
                &self.policy,
                retries,
                "dynamodb",
                "TransactWriteItems",
                || {
                    let items = items.clone();
                    let token = token.clone();
                    async move {
                        match self
                            .client
                            .transact_write_items()
                            .set_transact_items(Some(items))
                            .client_request_token(token)
                            .send()
                            .await
                        {
                            Ok(_) => Ok(None),
                            Err(e) => count::cancelled(e).map(Some),
                        }
                    }
                },
            )
            .await;
            let reasons = match answer {
                Ok(None) => {
                    return Take::Taken(Units {
                        lane,
                        account: account.to_owned(),
                        n,
                        bucket,
                        approved: force,
                    })
                }
                Ok(Some(reasons)) => reasons,
                Err(e) => return Take::Failed(e),
            };
            let failed = |i: usize| {
                reasons
                    .get(i)
                    .and_then(CancellationReason::code)
                    .is_some_and(|c| c == "ConditionalCheckFailed")
            };
            if failed(2) {
                return Take::Paused;
            }
            let mut rolled = false;
            for (i, (pk, _)) in scopes.iter().enumerate() {
                let Some(item) = reasons.get(i).filter(|_| failed(i)).and_then(|r| r.item()) else {
                    continue;
                };
                let counted = table::counted(item);
                let repaired = if counted.is_other_width(self.window) {
                    Some(self.rewidth(pk, &counted, now, retries).await)
                } else if counted.is_stale(self.window, now) {
                    Some(self.roll(pk, &counted, now, retries).await)
                } else {
                    None
                };
                match repaired {
                    Some(Err(e)) => return Take::Failed(e),
                    Some(Ok(())) => rolled = true,
                    None => {}
                }
            }
            if rolled {
                continue;
            }
            for (i, (scope, (pk, limit))) in [Scope::Account, Scope::Fleet]
                .into_iter()
                .zip(&scopes)
                .enumerate()
            {
                if failed(i) {
                    let live = reasons[i]
                        .item()
                        .map_or(0, |item| table::counted(item).live(self.window, now));
                    let name = match scope {
                        Scope::Account => "max_keys_per_account",
                        Scope::Fleet => "max_keys",
                    };
                    let whose = match scope {
                        Scope::Account => format!("in account {account}"),
                        Scope::Fleet => "in all accounts".to_owned(),
                    };
                    let _ = pk;
                    return Take::Over(
                        scope,
                        format!(
                            "{n} more key(s) would exceed breaker.{}.{name} = {limit} {whose}: {live} changed in the last {} s",
                            lane.as_str(),
                            self.config.window_seconds
                        ),
                    );
                }
            }
            // Cancelled for no condition of ours: the table's answer, retried as AWS's.
            let codes: Vec<&str> = reasons
                .iter()
                .filter_map(CancellationReason::code)
                .collect();
            return Take::Failed(AwsError {
                operation: "TransactWriteItems",
                // The table answered: never a reason to fail open.
                class: ErrorClass::Permanent,
                code: Some("TransactionCanceledException".to_owned()),
                message: format!("transaction cancelled: {}", codes.join(", ")),
                unanswered: false,
            });
        }
        Take::Failed(AwsError {
            operation: "TransactWriteItems",
            class: ErrorClass::Permanent,
            code: None,
            message: "the count's buckets kept expiring while they were rolled out".to_owned(),
            unanswered: false,
        })
    }

    /// Gives back the units of `taken` a job did not use (`used` keys changed).
    pub async fn give_back(&self, taken: &Units, used: usize, retries: &RetryCounter) {
        let unused = taken
            .n
            .saturating_sub(u32::try_from(used).unwrap_or(u32::MAX));
        if unused == 0 {
            return;
        }
        // Both counts at once, once: a retry after a lost answer carries the same token
        // and is not applied twice. A bucket already rolled out of the window counts for
        // nothing: then nothing is given back, which only counts more.
        let items: Vec<TransactWriteItem> = [
            count_key(taken.lane, Some(&taken.account)),
            count_key(taken.lane, None),
        ]
        .into_iter()
        .map(|pk| {
            let update = aws_sdk_dynamodb::types::Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(pk)))
                .update_expression("SET #t = #t - :n, #b = #b - :n")
                .condition_expression("#b >= :n")
                .expression_attribute_names("#t", "total")
                .expression_attribute_names("#b", Window::attribute(taken.bucket))
                .expression_attribute_values(":n", num(unused))
                .build()
                .expect("table, key and expression are set");
            TransactWriteItem::builder().update(update).build()
        })
        .collect();
        let result = count::transact(&self.client, &self.policy, items, retries).await;
        if let Err(e) = result {
            if e.code.as_deref() != Some("TransactionCanceledException") {
                tracing::warn!(units = unused, error = %e, "Could not give back the breaker's units: they count until the window passes");
            }
        }
    }

    /// Records a held job, unless its request id is held or approved already: then says
    /// whether for this same message.
    pub async fn hold(&self, hold: &Hold<'_>, retries: &RetryCounter) -> Result<Holding, AwsError> {
        let mut item = HashMap::from([
            ("pk".to_owned(), text(table::held_key(hold.request_id))),
            ("request_id".to_owned(), text(hold.request_id)),
            ("queue".to_owned(), text(hold.lane.as_str())),
            ("account_id".to_owned(), text(hold.account)),
            ("keys".to_owned(), num(hold.keys)),
            (
                "limit".to_owned(),
                text(match hold.scope {
                    Scope::Account => "account",
                    Scope::Fleet => "fleet",
                }),
            ),
            ("detail".to_owned(), text(hold.detail)),
            ("body".to_owned(), text(hold.body)),
            (
                "body_sha256".to_owned(),
                text(table::body_digest(hold.body)),
            ),
            ("job_digest".to_owned(), text(hold.job_digest)),
            ("held_at".to_owned(), num(unix_now())),
            ("state".to_owned(), text("held")),
        ]);
        if let Some(batch) = hold.batch_id {
            item.insert("batch_id".to_owned(), text(batch));
        }
        let result = call(&self.policy, retries, "dynamodb", "PutItem", || async {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                // A hold waiting for a person, or approved and not yet worked, stays as it
                // is; one discarded or worked is replaced.
                .condition_expression("attribute_not_exists(pk) OR #s = :discarded OR #s = :worked")
                .expression_attribute_names("#s", "state")
                .expression_attribute_values(":discarded", text("discarded"))
                .expression_attribute_values(":worked", text("worked"))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("PutItem", e))
        })
        .await;
        match result {
            Ok(_) => Ok(Holding::New),
            Err(e) if e.code.as_deref() == Some("ConditionalCheckFailedException") => {
                let held = self
                    .item(&table::held_key(hold.request_id), retries)
                    .await?;
                let same = held
                    .as_ref()
                    .and_then(|h| table::s(h, "job_digest"))
                    .as_deref()
                    == Some(hold.job_digest);
                Ok(if same {
                    Holding::Already
                } else {
                    Holding::Conflict
                })
            }
            Err(e) => Err(e),
        }
    }

    /// One item, read strongly consistently.
    async fn item(
        &self,
        pk: &str,
        retries: &RetryCounter,
    ) -> Result<Option<HashMap<String, AttributeValue>>, AwsError> {
        count::get_item(&self.client, &self.policy, &self.table, pk, retries).await
    }

    /// Records that the approved job of `request_id` reached its outcome: its approval is
    /// spent, and the same job sent again is held again.
    pub async fn spend_approval(&self, request_id: &str, job_digest: &str, retries: &RetryCounter) {
        let result = call(&self.policy, retries, "dynamodb", "UpdateItem", || async {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(table::held_key(request_id))))
                .update_expression("SET #s = :worked, worked_at = :at")
                .condition_expression("#s = :approved AND job_digest = :digest")
                .expression_attribute_names("#s", "state")
                .expression_attribute_values(":worked", text("worked"))
                .expression_attribute_values(":approved", text("approved"))
                .expression_attribute_values(":digest", text(job_digest))
                .expression_attribute_values(":at", num(unix_now()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("UpdateItem", e))
        })
        .await;
        if let Err(e) = result {
            if e.code.as_deref() != Some("ConditionalCheckFailedException") {
                tracing::warn!(request_id, error = %e, "Could not record the approval as spent");
            }
        }
    }

    /// Whether an operator approved the job `job_digest` names for `request_id` on
    /// `lane`, and that approval is not spent: the hold says `approved` for it, and the
    /// approval (which only operators may write) names it.
    pub async fn approved(
        &self,
        request_id: &str,
        lane: Lane,
        job_digest: &str,
        retries: &RetryCounter,
    ) -> Result<bool, AwsError> {
        let names = |item: &HashMap<String, AttributeValue>| {
            table::s(item, "job_digest").as_deref() == Some(job_digest)
                && table::s(item, "queue").as_deref() == Some(lane.as_str())
        };
        let held = self.item(&table::held_key(request_id), retries).await?;
        if !held
            .as_ref()
            .is_some_and(|h| names(h) && table::s(h, "state").as_deref() == Some("approved"))
        {
            return Ok(false);
        }
        let approval = self.item(&table::approval_key(request_id), retries).await?;
        Ok(approval.as_ref().is_some_and(names))
    }

    /// How long a job waits between looks at a paused queue.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.config.poll_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
    use aws_sdk_dynamodb::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    /// `TransactionCanceledException` as the DynamoDB API Reference documents it
    /// (TransactWriteItems, Errors): one reason per action, in the request's order, the
    /// item as it was where `ReturnValuesOnConditionCheckFailure` asked for it.
    fn cancelled(reasons: &str) -> String {
        format!(
            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons","CancellationReasons":{reasons}}}"#
        )
    }

    fn breaker(rules: &[&aws_smithy_mocks::Rule]) -> Breaker {
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, rules, |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let mut config = BreakerSection::default();
        config.main.max_keys_per_account = 5;
        config.main.max_keys = 8;
        Breaker::new(
            client,
            "t".to_owned(),
            config,
            crate::aws::retry::quick_policy(),
        )
    }

    /// DynamoDB's answers, not the emulator's: the fleet's count refused with its item
    /// (over the limit, as counted), the pause check refused (paused), a conflict with
    /// another transaction on the hot item (retried with the same token, then counted).
    #[tokio::test(start_paused = true)]
    async fn a_take_reads_dynamodbs_cancellation_reasons() {
        let now = unix_now();
        let bucket = Window::new(3600).bucket(now);
        let fleet = format!(
            r#"{{"pk":{{"S":"count#main#all"}},"total":{{"N":"8"}},"oldest":{{"N":"{bucket}"}},"w":{{"N":"60"}},"b{bucket}":{{"N":"8"}}}}"#
        );
        let over = mock!(Client::transact_write_items).then_http_response(move || {
            aws_smithy_runtime_api::client::orchestrator::HttpResponse::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                aws_smithy_types::body::SdkBody::from(cancelled(&format!(
                    r#"[{{"Code":"None"}},{{"Code":"ConditionalCheckFailed","Message":"The conditional request failed","Item":{fleet}}},{{"Code":"None"}}]"#
                ))),
            )
        });
        match breaker(&[&over])
            .take(
                Lane::Main,
                "111122223333",
                1,
                false,
                &RetryCounter::default(),
            )
            .await
        {
            Take::Over(Scope::Fleet, detail) => {
                assert!(detail.contains("breaker.main.max_keys = 8"), "{detail}");
                assert!(detail.contains("8 changed in the last 3600 s"), "{detail}");
            }
            other => panic!("{other:?}"),
        }

        let paused = mock!(Client::transact_write_items).then_http_response(|| {
            aws_smithy_runtime_api::client::orchestrator::HttpResponse::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                aws_smithy_types::body::SdkBody::from(cancelled(
                    r#"[{"Code":"None"},{"Code":"None"},{"Code":"ConditionalCheckFailed","Message":"The conditional request failed"}]"#,
                )),
            )
        });
        assert!(matches!(
            breaker(&[&paused])
                .take(
                    Lane::Main,
                    "111122223333",
                    1,
                    true,
                    &RetryCounter::default()
                )
                .await,
            Take::Paused
        ));

        let tokens = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = tokens.clone();
        let conflict = mock!(Client::transact_write_items)
            .match_requests(move |r| {
                seen.lock()
                    .unwrap()
                    .push(r.client_request_token().unwrap_or_default().to_owned());
                true
            })
            .sequence()
            .http_status(
                400,
                Some(cancelled(
                    r#"[{"Code":"None"},{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"},{"Code":"None"}]"#,
                )),
            )
            .output(|| TransactWriteItemsOutput::builder().build())
            .build();
        let retries = RetryCounter::default();
        let taken = breaker(&[&conflict])
            .take(Lane::Main, "111122223333", 2, false, &retries)
            .await;
        assert!(matches!(taken, Take::Taken(ref u) if u.n == 2), "{taken:?}");
        assert_eq!(retries.get(), 1, "the conflict was retried");
        let tokens = tokens.lock().unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(
            !tokens[0].is_empty() && tokens[0] == tokens[1],
            "{tokens:?}"
        );
    }
}
