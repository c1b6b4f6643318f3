//! The count items' requests: a unit's update under its limit, the pause check beside
//! it, rolling buckets out of the window, and what a cancelled transaction says.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConditionCheck, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};

use super::table::{self, key, num};
use super::window::{self, Window};
use super::Breaker;
use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::retry::{call, RetryCounter};
use crate::outcome::Lane;

impl Breaker {
    /// One count's update: the unit added to this bucket and the total, under the limit
    /// (when one applies) and only when no bucket older than the window is left in it.
    pub(super) fn count_update(
        &self,
        pk: &str,
        n: u32,
        bucket: u64,
        now: u64,
        limit: Option<u32>,
    ) -> TransactWriteItem {
        let mut condition =
            "(attribute_not_exists(#o) OR #o >= :live) AND (attribute_not_exists(#w) OR #w = :w)"
                .to_owned();
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk.to_owned())))
            .update_expression(
                "SET #t = if_not_exists(#t, :zero) + :n, #b = if_not_exists(#b, :zero) + :n, #o = if_not_exists(#o, :bucket), #w = if_not_exists(#w, :w)",
            )
            .expression_attribute_names("#w", "w")
            .expression_attribute_values(":w", num(self.window.bucket_seconds()))
            .expression_attribute_names("#t", "total")
            .expression_attribute_names("#b", Window::attribute(bucket))
            .expression_attribute_names("#o", "oldest")
            .expression_attribute_values(":zero", num(0))
            .expression_attribute_values(":n", num(n))
            .expression_attribute_values(":bucket", num(bucket))
            .expression_attribute_values(":live", num(self.window.oldest_live(now)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(limit) = limit {
            condition.push_str(" AND (attribute_not_exists(#t) OR #t <= :room)");
            update =
                update.expression_attribute_values(":room", num(i64::from(limit) - i64::from(n)));
        }
        let update = update
            .condition_expression(condition)
            .build()
            .expect("table, key and expression are set");
        TransactWriteItem::builder().update(update).build()
    }

    /// The check that `lane`'s key changes are not paused, in the same transaction.
    pub(super) fn pause_check(&self, lane: Lane) -> TransactWriteItem {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(table::pause_key(lane))))
            .condition_expression("attribute_not_exists(#p) OR #p = :no")
            .expression_attribute_names("#p", "paused")
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .build()
            .expect("table, key and expression are set");
        TransactWriteItem::builder().condition_check(check).build()
    }

    /// Collapses the buckets of `pk`, counted in another bucket length, into the current
    /// bucket: what counted in their own window still counts, for a whole window more
    /// (never less than the keys changed, at most a window longer), if nobody changed
    /// them since they were read.
    pub(super) async fn rewidth(
        &self,
        pk: &str,
        counted: &window::Counted,
        now: u64,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        let live = counted.live_as_counted(self.window, now);
        let bucket = self.window.bucket(now);
        let mut names = HashMap::from([
            ("#t".to_owned(), "total".to_owned()),
            ("#o".to_owned(), "oldest".to_owned()),
            ("#w".to_owned(), "w".to_owned()),
            ("#b".to_owned(), Window::attribute(bucket)),
        ]);
        let mut values = HashMap::from([
            (":live".to_owned(), num(live)),
            (":bucket".to_owned(), num(bucket)),
            (":w".to_owned(), num(self.window.bucket_seconds())),
            (":was".to_owned(), num(counted.width.unwrap_or(0))),
            (":total".to_owned(), num(counted.total)),
        ]);
        // The total too: a replica still on the old length that added a bucket since the
        // read changed it, and its keys must not be dropped.
        let mut conditions = vec!["#w = :was".to_owned(), "#t = :total".to_owned()];
        let mut removed = Vec::new();
        for (i, (index, count)) in counted.buckets.iter().enumerate() {
            if *index == bucket {
                // Set below, from what counted.
                conditions.push(format!("#b = :x{i}"));
                values.insert(format!(":x{i}"), num(count));
                continue;
            }
            names.insert(format!("#x{i}"), Window::attribute(*index));
            values.insert(format!(":x{i}"), num(count));
            conditions.push(format!("#x{i} = :x{i}"));
            removed.push(format!("#x{i}"));
        }
        let mut expression = "SET #t = :live, #b = :live, #o = :bucket, #w = :w".to_owned();
        if !removed.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removed.join(", ")));
        }
        self.repair(pk, &expression, &conditions, names, values, retries)
            .await
    }

    /// Removes the buckets of `pk` that left the window, if nobody changed them since
    /// they were read.
    pub(super) async fn roll(
        &self,
        pk: &str,
        counted: &window::Counted,
        now: u64,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        let (expired, oldest) = counted.roll(self.window, now);
        let mut names = HashMap::from([
            ("#t".to_owned(), "total".to_owned()),
            ("#o".to_owned(), "oldest".to_owned()),
        ]);
        let mut values = HashMap::from([
            (
                ":gone".to_owned(),
                num(expired.iter().map(|(_, n)| n).sum::<i64>()),
            ),
            (":was".to_owned(), num(counted.oldest.unwrap_or(0))),
        ]);
        let mut conditions = vec!["#o = :was".to_owned()];
        let mut removed = Vec::new();
        for (i, (index, count)) in expired.iter().enumerate() {
            names.insert(format!("#x{i}"), Window::attribute(*index));
            values.insert(format!(":x{i}"), num(count));
            conditions.push(format!("#x{i} = :x{i}"));
            removed.push(format!("#x{i}"));
        }
        let mut expression = "SET #t = #t - :gone".to_owned();
        match oldest {
            Some(oldest) => {
                expression.push_str(", #o = :oldest");
                values.insert(":oldest".to_owned(), num(oldest));
                if !removed.is_empty() {
                    expression.push_str(&format!(" REMOVE {}", removed.join(", ")));
                }
            }
            None => {
                removed.push("#o".to_owned());
                expression.push_str(&format!(" REMOVE {}", removed.join(", ")));
            }
        }
        self.repair(pk, &expression, &conditions, names, values, retries)
            .await
    }

    /// Rewrites a count item's buckets if they are still as read (`conditions`): when
    /// another replica (or a give-back) changed them first, the take reads them again.
    async fn repair(
        &self,
        pk: &str,
        expression: &str,
        conditions: &[String],
        names: HashMap<String, String>,
        values: HashMap<String, AttributeValue>,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        let result = call(&self.policy, retries, "dynamodb", "UpdateItem", || async {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(pk.to_owned())))
                .update_expression(expression)
                .condition_expression(conditions.join(" AND "))
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("UpdateItem", e))
        })
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.code.as_deref() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A cancelled transaction's reasons, or the error as AWS's: a conflict with another
/// transaction on the same item is transient (DynamoDB API Reference,
/// TransactWriteItems, "TransactionConflict").
pub(super) fn cancelled(
    e: SdkError<
        TransactWriteItemsError,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> Result<Vec<CancellationReason>, AwsError> {
    if let SdkError::ServiceError(service) = &e {
        if let TransactWriteItemsError::TransactionCanceledException(c) = service.err() {
            let reasons = c.cancellation_reasons().to_vec();
            let conflict = reasons.iter().any(|r| {
                matches!(
                    r.code(),
                    Some(
                        "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
                    )
                )
            });
            if !conflict && !reasons.is_empty() {
                return Ok(reasons);
            }
            let mut error = AwsError::from_sdk("TransactWriteItems", e);
            error.class = ErrorClass::Transient;
            return Err(error);
        }
    }
    Err(AwsError::from_sdk("TransactWriteItems", e))
}

/// One `TransactWriteItems` of `items`, under one `ClientRequestToken` for all its retries:
/// DynamoDB applies it once however often it is sent within ten minutes (API Reference,
/// TransactWriteItems), so a retry after a lost answer does not apply it twice.
pub(super) async fn transact(
    client: &aws_sdk_dynamodb::Client,
    policy: &crate::aws::retry::BackoffPolicy,
    items: Vec<TransactWriteItem>,
    retries: &RetryCounter,
) -> Result<(), AwsError> {
    let token = uuid::Uuid::now_v7().to_string();
    call(
        policy,
        retries,
        "dynamodb",
        "TransactWriteItems",
        || async {
            client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(token.clone())
                .send()
                .await
                .map(drop)
                .map_err(|e| AwsError::from_sdk("TransactWriteItems", e))
        },
    )
    .await
}

/// One item of `table`, read strongly consistently; `None` when there is none.
pub(super) async fn get_item(
    client: &aws_sdk_dynamodb::Client,
    policy: &crate::aws::retry::BackoffPolicy,
    table: &str,
    pk: &str,
    retries: &RetryCounter,
) -> Result<Option<HashMap<String, AttributeValue>>, AwsError> {
    let out = call(policy, retries, "dynamodb", "GetItem", || async {
        client
            .get_item()
            .table_name(table)
            .set_key(Some(key(pk.to_owned())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetItem", e))
    })
    .await?;
    Ok(out.item().cloned())
}
