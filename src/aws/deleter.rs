//! Deleting messages in batches across concurrent jobs (`DeleteMessageBatch`), and the
//! batching every batch call of the worker shares (`next_batch`).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use tokio::sync::{mpsc, oneshot};

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::retry::{call, RetryCounter};
use crate::aws::sqs::{Sqs, SQS_BATCH_MAX};

/// How long the delete batcher waits for more deletes before sending a partial batch
/// while other jobs are being worked: short against a job's duration, long enough to
/// gather the deletes of jobs finishing together.
pub const DELETE_LINGER: Duration = Duration::from_millis(25);

/// The same while IAM's rate, not the job slots, is the bound: jobs then finish at
/// IAM's pace (ten a second by default), and this gathers about five deletes a call.
/// The key is revoked before its delete waits, so this delays the message's deletion
/// and the audit line, never a revocation.
pub const DELETE_LINGER_RATE_BOUND: Duration = Duration::from_millis(500);

/// A request to delete one message, answered when its batch settles.
struct DeleteRequest {
    receipt_handle: String,
    reply: oneshot::Sender<Result<(), AwsError>>,
}

/// Deletes messages in batches across concurrent jobs: each job asks for its own message
/// and waits for the answer, while one task sends them ten at a time with
/// `DeleteMessageBatch`. Entries a batch reports as failed are deleted one by one (with
/// retries), so a partial failure never loses a delete silently.
#[derive(Debug, Clone)]
pub struct Deleter {
    tx: mpsc::Sender<DeleteRequest>,
}

impl Deleter {
    /// Starts the batching task; it ends when every `Deleter` clone is dropped and the
    /// requests already queued are sent. `linger(n)` says how long a partial batch of
    /// `n` may wait for more deletes now (zero when none are on their way).
    pub fn spawn(
        sqs: Sqs,
        queue_url: String,
        linger: impl Fn(usize) -> Duration + Send + Sync + 'static,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(run_deleter(sqs, queue_url, rx, linger));
        (Self { tx }, task)
    }

    /// Deletes one message; returns once SQS confirmed it (or it failed for good).
    pub async fn delete(&self, receipt_handle: &str) -> Result<(), AwsError> {
        let (reply, answer) = oneshot::channel();
        let gone = || AwsError {
            operation: "DeleteMessageBatch",
            class: ErrorClass::Transient,
            code: None,
            message: "the delete batcher has stopped".to_owned(),
            unanswered: false,
        };
        self.tx
            .send(DeleteRequest {
                receipt_handle: receipt_handle.to_owned(),
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run_deleter(
    sqs: Sqs,
    queue_url: String,
    mut rx: mpsc::Receiver<DeleteRequest>,
    linger: impl Fn(usize) -> Duration,
) {
    while let Some(batch) = next_batch(&mut rx, SQS_BATCH_MAX, &linger).await {
        delete_batch(&sqs, &queue_url, batch).await;
    }
}

/// Waits for one item, then gathers more until there are `max` or the time `linger`
/// allows a batch of that size (asked again as items arrive; zero: send now) has passed
/// since the first. `None` once the channel is closed and empty.
pub(crate) async fn next_batch<T>(
    rx: &mut mpsc::Receiver<T>,
    max: usize,
    linger: impl Fn(usize) -> Duration,
) -> Option<Vec<T>> {
    let mut batch = vec![rx.recv().await?];
    let first = tokio::time::Instant::now();
    let deadline = tokio::time::sleep_until(first);
    tokio::pin!(deadline);
    while batch.len() < max {
        // Whatever is queued already joins the batch.
        while batch.len() < max {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let wait = linger(batch.len());
        if batch.len() >= max || first.elapsed() >= wait {
            break;
        }
        deadline.as_mut().reset(first + wait);
        tokio::select! {
            next = rx.recv() => match next {
                Some(item) => batch.push(item),
                None => break,
            },
            () = &mut deadline => break,
        }
    }
    Some(batch)
}

async fn delete_batch(sqs: &Sqs, queue_url: &str, batch: Vec<DeleteRequest>) {
    let retries = RetryCounter::default();
    let entries: Vec<_> = batch
        .iter()
        .enumerate()
        .map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&r.receipt_handle)
                .build()
                // Cannot fail: both required fields are set just above.
                .expect("id and receipt handle are set")
        })
        .collect();
    let result = call(
        &sqs.policy,
        &retries,
        "sqs",
        "DeleteMessageBatch",
        || async {
            sqs.client
                .delete_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("DeleteMessageBatch", e))
        },
    )
    .await;
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            for request in batch {
                let _ = request.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let failed: HashMap<&str, &str> = out.failed().iter().map(|f| (f.id(), f.code())).collect();
    for (i, request) in batch.into_iter().enumerate() {
        let id = i.to_string();
        let result = match failed.get(id.as_str()) {
            None => Ok(()),
            Some(code) => {
                tracing::warn!(
                    error_code = code,
                    "Batch delete entry failed, deleting singly"
                );
                delete_one(sqs, queue_url, &request.receipt_handle, &retries).await
            }
        };
        let _ = request.reply.send(result);
    }
}

async fn delete_one(
    sqs: &Sqs,
    queue_url: &str,
    receipt_handle: &str,
    retries: &RetryCounter,
) -> Result<(), AwsError> {
    call(&sqs.policy, retries, "sqs", "DeleteMessage", || async {
        sqs.client
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map(drop)
            .map_err(|e| AwsError::from_sdk("DeleteMessage", e))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::delete_message::DeleteMessageOutput;
    use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
    use aws_sdk_sqs::types::{BatchResultErrorEntry, DeleteMessageBatchResultEntry};
    use aws_sdk_sqs::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn sqs(client: Client) -> Sqs {
        Sqs::for_tests(client)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_deletes_share_one_batch_and_partial_failures_are_retried_singly() {
        let batch = mock!(Client::delete_message_batch).then_compute_output(|req| {
            let entries = req.entries();
            let mut out = DeleteMessageBatchOutput::builder();
            for e in entries {
                if e.receipt_handle() == "rh-3" {
                    out = out.failed(
                        BatchResultErrorEntry::builder()
                            .id(e.id())
                            .code("InternalError")
                            .sender_fault(false)
                            .build()
                            .unwrap(),
                    );
                } else {
                    out = out.successful(
                        DeleteMessageBatchResultEntry::builder()
                            .id(e.id())
                            .build()
                            .unwrap(),
                    );
                }
            }
            out.build().unwrap()
        });
        let single = mock!(Client::delete_message)
            .match_requests(|r| r.receipt_handle() == Some("rh-3"))
            .then_output(|| DeleteMessageOutput::builder().build());
        let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&batch, &single], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let (deleter, task) = Deleter::spawn(sqs(client), "http://q".into(), |_| DELETE_LINGER);
        let results = futures_join_all(&deleter, 10).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            batch.num_calls(),
            1,
            "ten concurrent deletes, one batch call"
        );
        assert_eq!(single.num_calls(), 1, "the failed entry is deleted singly");
        drop(deleter);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_waits_only_while_more_items_are_coming() {
        let linger = Duration::from_millis(500);
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(1).await.unwrap();
        let start = tokio::time::Instant::now();
        let lone = next_batch(&mut rx, 10, |_| Duration::ZERO).await.unwrap();
        assert_eq!(lone, vec![1]);
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "nothing else coming: at once"
        );

        tx.send(2).await.unwrap();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(3).await.unwrap();
            tx
        });
        let start = tokio::time::Instant::now();
        let shared = next_batch(&mut rx, 10, |_| linger).await.unwrap();
        assert_eq!(shared, vec![2, 3], "the later one joined the batch");
        assert_eq!(start.elapsed(), linger, "never longer than the linger");
        let tx = late.await.unwrap();
        for i in 0..12 {
            tx.send(i).await.unwrap();
        }
        let full = next_batch(&mut rx, 10, |_| linger).await.unwrap();
        assert_eq!(full.len(), 10, "a full batch goes at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_batch_reports_the_error_to_every_job() {
        let batch = mock!(Client::delete_message_batch)
            .sequence()
            .http_status(403, None)
            .repeatedly()
            .build();
        let client = mock_client!(aws_sdk_sqs, RuleMode::Sequential, [&batch], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let (deleter, _task) = Deleter::spawn(sqs(client), "http://q".into(), |_| DELETE_LINGER);
        let results = futures_join_all(&deleter, 3).await;
        assert!(results.iter().all(Result::is_err));
        assert_eq!(batch.num_calls(), 1, "permanent errors are not retried");
    }

    async fn futures_join_all(deleter: &Deleter, n: usize) -> Vec<Result<(), AwsError>> {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let d = deleter.clone();
            set.spawn(async move { d.delete(&format!("rh-{i}")).await });
        }
        set.join_all().await
    }
}
