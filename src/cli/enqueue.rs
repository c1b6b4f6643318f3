//! `enqueue`: sends validated jobs to the queue with `SendMessageBatch`, ten a call,
//! several calls in flight. Entries a batch reports as failed are sent again (when the
//! fault is not the sender's); every job ends either sent or reported as failed, never
//! silently lost. FIFO queues get `MessageGroupId` per user and `MessageDeduplicationId`
//! from the request id, so a resend can never create a second job. A failure of the
//! endpoint's or the credentials' (no answer, a refused signature) stops the run at once:
//! what was sent is reported, the rest is not sent.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::aws::classify::AwsError;
use crate::aws::retry::RetryCounter;
use crate::aws::sqs::{Outgoing, Sqs, SQS_BATCH_MAX};
use crate::job::Job;

/// How often entries a batch refused are sent again.
const MAX_ROUNDS: u32 = 5;

/// What became of each job, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub request_id: String,
    /// `Err` holds why the job could not be sent.
    pub result: Result<(), String>,
}

/// What a run did: each job's fate, and the failure that stopped it early, if one did.
#[derive(Debug)]
pub struct Sending {
    pub sent: Vec<Sent>,
    pub stopped_by: Option<AwsError>,
}

/// Sends `jobs` to `queue_url` with up to `concurrency` batch calls in flight.
pub async fn send(
    sqs: &Sqs,
    queue_url: &str,
    jobs: &[Job],
    concurrency: usize,
    progress: &Progress,
) -> Sending {
    let fifo = queue_url.ends_with(".fifo");
    let messages: Vec<Outgoing> = jobs
        .iter()
        .map(|job| Outgoing {
            body: job.to_body(),
            group_id: fifo.then(|| message_group(job)),
            deduplication_id: fifo.then(|| job.request_id.clone()),
            delay_seconds: None,
        })
        .collect();
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for (chunk_index, chunk) in messages.chunks(SQS_BATCH_MAX).enumerate() {
        let (sqs, queue_url, chunk, slots, stop) = (
            sqs.clone(),
            queue_url.to_owned(),
            chunk.to_vec(),
            slots.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            // Cannot fail: the semaphore is never closed.
            let _slot = slots.acquire_owned().await.expect("semaphore open");
            if stop.is_cancelled() {
                return (
                    chunk_index,
                    (vec![Err(STOPPED.to_owned()); chunk.len()], None),
                );
            }
            let retries = RetryCounter::for_command(stop.clone());
            let (outcomes, failure) = send_chunk(&sqs, &queue_url, &chunk, &retries).await;
            if failure.is_some() {
                stop.cancel();
            }
            (chunk_index, (outcomes, failure))
        });
    }
    let mut results: Vec<Result<(), String>> = vec![Err("not sent".to_owned()); jobs.len()];
    let mut stopped_by = None;
    while let Some(done) = tasks.join_next().await {
        let (chunk_index, (outcomes, failure)) = match done {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "A sending task failed");
                continue;
            }
        };
        if stopped_by.is_none() {
            stopped_by = failure;
        }
        // Only what SQS accepted counts as sent; refusals are reported at the end.
        progress.advance(outcomes.iter().filter(|o| o.is_ok()).count());
        for (offset, outcome) in outcomes.into_iter().enumerate() {
            results[chunk_index * SQS_BATCH_MAX + offset] = outcome;
        }
    }
    progress.finish();
    let sent = jobs
        .iter()
        .zip(results)
        .map(|(job, result)| Sent {
            request_id: job.request_id.clone(),
            result,
        })
        .collect();
    Sending { sent, stopped_by }
}

/// Why a job was not sent after the run stopped.
const STOPPED: &str = "not sent: the run stopped at a failure of the endpoint";

/// Jobs of one user stay in order on a FIFO queue; key-only jobs are grouped by key.
fn message_group(job: &Job) -> String {
    job.user_name()
        .or(job.access_key_id())
        .unwrap_or(&job.request_id)
        .to_owned()
}

/// Sends one chunk (at most ten), resending refused entries whose fault was not ours.
/// Returns each entry's fate and, when the endpoint or the credentials failed, that
/// failure.
async fn send_chunk(
    sqs: &Sqs,
    queue_url: &str,
    chunk: &[Outgoing],
    retries: &RetryCounter,
) -> (Vec<Result<(), String>>, Option<AwsError>) {
    let mut results: Vec<Result<(), String>> = vec![Err("not sent".to_owned()); chunk.len()];
    let mut pending: Vec<usize> = (0..chunk.len()).collect();
    let mut delays = sqs.policy().endless();
    for round in 1..=MAX_ROUNDS {
        let batch: Vec<Outgoing> = pending.iter().map(|&i| chunk[i].clone()).collect();
        let refused = match sqs.send_batch(queue_url, &batch, retries).await {
            Ok(refused) => refused,
            Err(e) => {
                for &i in &pending {
                    results[i] = Err(e.to_string());
                }
                return (results, e.is_the_endpoints().then_some(e));
            }
        };
        let mut again = Vec::new();
        for (position, &i) in pending.iter().enumerate() {
            results[i] = match refused.iter().find(|r| r.index == position) {
                None => Ok(()),
                Some(r) => {
                    if !r.sender_fault {
                        again.push(i);
                    }
                    Err(format!(
                        "{}: {} (after {round} attempt(s))",
                        r.code, r.message
                    ))
                }
            };
        }
        if again.is_empty() {
            break;
        }
        pending = again;
        tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
    }
    (results, None)
}

/// Progress of a send: a bar on a terminal, a plain line a second otherwise (on stderr).
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    done: Mutex<(usize, Instant)>,
}

impl Progress {
    /// A bar when standard error is a terminal, plain lines when it is not.
    pub fn new(total: usize) -> Self {
        Self::with_bar(total, std::io::stderr().is_terminal())
    }

    /// Nothing shown (tests, library callers).
    pub fn hidden(total: usize) -> Self {
        Self {
            bar: Some(ProgressBar::hidden()),
            total,
            done: Mutex::new((0, Instant::now())),
        }
    }

    fn with_bar(total: usize, bar: bool) -> Self {
        let bar = bar.then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} jobs sent ({per_sec})",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Self {
            bar,
            total,
            done: Mutex::new((0, Instant::now())),
        }
    }

    fn advance(&self, n: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
            return;
        }
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        done.0 += n;
        if done.1.elapsed() >= Duration::from_secs(1) || done.0 == self.total {
            eprintln!("enqueue: {}/{} jobs sent", done.0, self.total);
            done.1 = Instant::now();
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::retry::BackoffPolicy;
    use crate::job::{Action, Target};
    use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
    use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};
    use aws_sdk_sqs::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn job(i: usize) -> Job {
        let target = Target::AllKeys {
            user_name: format!("u{i}"),
        };
        Job::new(format!("r-{i}"), target, Action::Delete)
    }

    /// SQS refuses some entries of a batch (`SendMessageBatch` answers 200 with a
    /// `Failed` list): those whose fault is SQS's are sent again, the sender's are not.
    #[tokio::test(start_paused = true)]
    async fn refused_entries_are_sent_again_unless_the_fault_is_the_senders() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let batch = mock!(Client::send_message_batch).then_compute_output(move |req| {
            let first = counted.fetch_add(1, Ordering::Relaxed) == 0;
            let mut out = SendMessageBatchOutput::builder()
                .set_successful(Some(Vec::new()))
                .set_failed(Some(Vec::new()));
            for e in req.entries() {
                let body = e.message_body();
                let refuse = |code: &str, sender_fault| {
                    BatchResultErrorEntry::builder()
                        .id(e.id())
                        .code(code)
                        .sender_fault(sender_fault)
                        .build()
                        .unwrap()
                };
                out = if body.contains("\"r-1\"") {
                    out.failed(refuse("InvalidMessageContents", true))
                } else if first && body.contains("\"r-2\"") {
                    out.failed(refuse("InternalError", false))
                } else {
                    out.successful(
                        SendMessageBatchResultEntry::builder()
                            .id(e.id())
                            .message_id("m")
                            .md5_of_message_body("x")
                            .build()
                            .unwrap(),
                    )
                };
            }
            out.build().unwrap()
        });
        let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&batch], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let policy = BackoffPolicy::new(
            Duration::from_millis(10),
            Duration::from_millis(10),
            1.0,
            false,
            Duration::from_secs(1),
        )
        .unwrap();
        let jobs: Vec<Job> = (0..3).map(job).collect();
        let sent = send(
            &Sqs::new(client, policy),
            "https://sqs.us-east-1.amazonaws.com/111122223333/jobs",
            &jobs,
            1,
            &Progress::hidden(3),
        )
        .await;
        assert!(sent.stopped_by.is_none());
        let sent = sent.sent;

        assert_eq!(sent[0].result, Ok(()));
        assert!(
            sent[1]
                .result
                .as_ref()
                .is_err_and(|e| e.starts_with("InvalidMessageContents")),
            "the sender's fault is reported, not resent: {:?}",
            sent[1]
        );
        assert_eq!(sent[2].result, Ok(()), "sent again, then accepted");
        assert_eq!(calls.load(Ordering::Relaxed), 2, "one resend round");
    }
}
