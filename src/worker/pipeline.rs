//! The path of one job, as a line of typed steps:
//!
//! admit (receive count, read the job message or security event, claim the request id)
//! → guard (protected list, the worker's credentials) → revoke (the IAM action, then the
//! older sessions when asked) → remember → settle the message (delete, dead-letter, or
//! leave it for later) → record (audit line, metrics, event).
//!
//! Each step returns a value; the job's report is built once, at the end, from them.

use std::pin::pin;
use std::time::Instant;

use aws_sdk_sqs::types::Message;
use tokio_util::sync::CancellationToken;

use super::turns::Turn;
use super::Worker;
use crate::activity::Task;
use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::ratelimit;
use crate::aws::retry::RetryCounter;
use crate::aws::sqs::{Delivery, Lane};
use crate::detection;
use crate::guard::{Claim, InFlight};
use crate::intake::{self, Intake};
use crate::job::Job;
use crate::login_task::LoginTask;
use crate::metrics;
use crate::outcome::{JobFacts, JobReport, Outcome, Reason};
use crate::worker::settle::{Decision, Settled, Settling};
use crate::worker::slots::{Counted, SlotWait};

/// A job worked to its decision, before its message is settled.
#[derive(Debug)]
pub(super) struct Worked {
    pub decision: Decision,
    pub facts: JobFacts,
    /// The in-flight mark of its request id, while it holds one.
    pub claim: Option<InFlight>,
    /// The job as a message of the worker's own would carry it on (docs,
    /// "Continuations"): set when this delivery changed keys whose owner only IAM's
    /// lookup named, which a redelivery of the original could no longer find.
    pub carry_on: Option<Box<Job>>,
}

/// A message handled under its heartbeat: what its job learnt, when its outcome was
/// decided (the revocation's time), and where its message stands.
struct Handled {
    facts: JobFacts,
    decided_at_ms: Option<u64>,
    settling: Settling,
}

impl Handled {
    /// A message whose job never started.
    fn unstarted(settling: Settling) -> Self {
        Self {
            facts: JobFacts::default(),
            decided_at_ms: None,
            settling,
        }
    }
}

/// The first step's result.
enum Admission {
    /// A valid job, its request id claimed by this delivery.
    Admitted { job: Job, claim: InFlight },
    /// Decided already: invalid, received too often, a duplicate or a conflict.
    Decided(Worked),
}

impl Worker {
    /// One iteration: works one received message to its outcome, settles it on the
    /// queue, writes the audit line and returns the report.
    pub async fn handle(&self, message: Message) -> JobReport {
        self.handle_from(message, Lane::Main).await
    }

    /// [`Worker::handle`] for a message received from `lane`'s queue.
    pub async fn handle_from(&self, message: Message, lane: Lane) -> JobReport {
        let never = CancellationToken::new();
        self.handle_message(message, lane, Turn::default(), never.clone(), never)
            .await
    }

    /// Works one message: waits for its turn in its FIFO group and for a job slot, then
    /// goes down the job's path. The message's visibility is extended from receipt
    /// until it is settled. When `shutdown` fires before the job has a slot, the message
    /// is made visible again at once and the job ends `retry/shutdown`. A main-queue
    /// message waiting for a slot while a priority job waits is kept, its visibility
    /// extended, never released: a release would cost it one of the queue's
    /// `maxReceiveCount` receives. `hard_stop` ends retries, not the job. A priority job's IAM
    /// requests go before any other job's.
    pub(super) async fn handle_message(
        &self,
        message: Message,
        lane: Lane,
        turn: Turn,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
    ) -> JobReport {
        let started = Instant::now();
        let _in_progress = Counted::new(&self.in_progress);
        let delivery = Delivery::of(&message, lane);
        let receipt = message.receipt_handle().unwrap_or_default();
        let retries =
            RetryCounter::until(hard_stop).gated(self.breaker.as_ref().map(|b| (b.pauses(), lane)));
        let Turn { previous, next } = turn;
        let job = pin!(async {
            if Turn::wait(previous).await {
                return Handled::unstarted(Settling::group_order());
            }
            let slot = match self.slot(lane, &shutdown).await {
                SlotWait::Slot(slot, share) => (slot, share),
                SlotWait::Shutdown => return Handled::unstarted(Settling::released_at_shutdown()),
            };
            let worked = {
                let _slot = (slot, metrics::job_started());
                // On the heap: the IAM step's future is large, and a message's whole
                // path must fit a thread's stack even in a debug build.
                let work = Box::pin(self.work(&message, delivery, &retries));
                match lane {
                    Lane::Priority => ratelimit::urgent(work).await,
                    Lane::Main => work.await,
                }
            };
            // When the outcome was decided: the revocation's time.
            let decided_at_ms = Some(metrics::now_ms());
            // The slot is free for the next job while this one's message is settled.
            let Worked {
                decision,
                facts,
                claim,
                carry_on,
            } = worked;
            remember(decision.outcome, claim);
            // Before the message goes: the report tasks are durable once it is.
            if facts.report_activity {
                // On the heap: SQS's batch send, for jobs that ask for reports only.
                Box::pin(self.schedule_reports(&facts, decision.outcome, &retries)).await;
            }
            let settling = self
                .settler
                .settle(
                    &message,
                    delivery,
                    decision,
                    facts.request_id.as_deref(),
                    carry_on,
                    &retries,
                )
                .await;
            Handled {
                facts,
                decided_at_ms,
                settling,
            }
        });
        let Handled {
            facts,
            decided_at_ms,
            settling,
        } = self.settler.with_heartbeat(receipt, delivery, job).await;
        let settled = self
            .settler
            .apply_after_heartbeat(receipt, delivery, settling, &retries)
            .await;
        if let Some(next) = next {
            // A job whose continuation replaced its message has left the group's turn.
            let _ = next.send(settled.outcome.is_final() || settled.replaced);
        }
        let mut report = report(
            &message,
            delivery,
            facts,
            settled,
            retries.get(),
            started.elapsed(),
        );
        // After the message is settled: the finding follows the outcome, never leads it.
        // On the heap: Security Hub's calls are kilobytes of future, rarely needed.
        report.facts.finding_update = Box::pin(self.close_finding(&report, &retries)).await;
        if let (Some(detected), Some(revoked), true) = (
            report.facts.detected_at_ms,
            decided_at_ms,
            report.outcome.closes_exposure(),
        ) {
            report.facts.exposure_to_revoke_seconds =
                Some(detection::exposure_seconds(detected, revoked));
        }
        self.record(&report, delivery, decided_at_ms);
        report
    }

    /// admit → guard → revoke: the job's decision, with what is known of it. Changes IAM,
    /// not the queue.
    async fn work(&self, message: &Message, delivery: Delivery, retries: &RetryCounter) -> Worked {
        let (job, claim) = match self.admit(message, delivery, retries).await {
            Admission::Admitted { job, claim } => (job, claim),
            Admission::Decided(worked) => return worked,
        };
        let mut facts = self.facts_of(&job).await;
        let mut job = job;
        let unsent = match job.parts.is_empty() {
            true => None,
            false => Box::pin(self.send_parts(&job, message, delivery, retries))
                .await
                .err(),
        };
        if unsent.is_none() {
            job.parts.clear();
        }
        let (mut decision, carry_on) = match self.guard(&job) {
            Some(refused) => (refused, None),
            None => {
                let revocation = self.revoke(&job, message, delivery, retries).await;
                facts.learn(revocation.learnt);
                (revocation.decision, revocation.carry_on)
            }
        };
        // The keys of this part are revoked; the rest of the event comes round again.
        if let (Some(unsent), true) = (unsent, decision.outcome.is_remembered()) {
            let detail = decision.detail.take().into_iter().chain([unsent]);
            decision = Decision::new(
                Outcome::Retry(Reason::TransientError),
                detail.collect::<Vec<_>>().join("; "),
            );
        }
        Worked {
            decision,
            facts,
            claim: Some(claim),
            carry_on,
        }
    }

    /// Reads the job and claims its request id. A concurrent delivery of the same
    /// request id waits for that one to end, then ends `duplicate` (or does the work
    /// itself if that one did not finish).
    async fn admit(
        &self,
        message: &Message,
        delivery: Delivery,
        retries: &RetryCounter,
    ) -> Admission {
        let body = message.body().unwrap_or_default();
        let decided = |decision, facts| {
            Admission::Decided(Worked {
                decision,
                facts,
                claim: None,
                carry_on: None,
            })
        };
        let max_receives = self.config.sqs.max_receive_count;
        let has_redrive_policy = self.source(delivery.lane).queues.has_redrive_policy;
        if !has_redrive_policy && delivery.receive_count > max_receives {
            let detail = format!(
                "received {} times, more than sqs.max_receive_count = {max_receives}",
                delivery.receive_count
            );
            return decided(
                Decision::new(Outcome::Rejected(Reason::TooManyReceives), detail),
                JobFacts::salvaged(body),
            );
        }
        if let Some(task) = Task::of(body) {
            return match task {
                Ok(task) => {
                    let facts = JobFacts {
                        request_id: Some(task.request_id.clone()),
                        user_name: task.user_name.clone(),
                        access_key_ids: vec![task.access_key_id.clone()],
                        account_id: task.account_id.clone(),
                        ..JobFacts::default()
                    };
                    // On the heap: CloudTrail's and KMS's futures, for report tasks only.
                    let decision = Box::pin(async {
                        match self.own_task(&task, retries).await {
                            Ok(()) => self.report(&task, retries).await,
                            Err(refused) => refused,
                        }
                    })
                    .await;
                    decided(decision, facts)
                }
                Err(e) => decided(
                    Decision::new(Outcome::Rejected(Reason::InvalidMessage), e.to_string()),
                    JobFacts::salvaged(body),
                ),
            };
        }
        if let Some(task) = LoginTask::of(body) {
            return match task {
                Ok(task) => {
                    let facts = JobFacts {
                        request_id: Some(task.request_id.clone()),
                        user_name: Some(task.user_name.clone()),
                        account_id: task.account_id.clone(),
                        batch_id: Some(task.made_by.clone()),
                        console_password: true,
                        ..JobFacts::default()
                    };
                    let decision = Box::pin(self.remove_login(&task, retries)).await;
                    decided(decision, facts)
                }
                Err(e) => decided(
                    Decision::new(Outcome::Rejected(Reason::InvalidMessage), e.to_string()),
                    JobFacts::salvaged(body),
                ),
            };
        }
        let job = match intake::read(body, &self.intake) {
            Ok(Intake::Job(job)) => Box::pin(self.believe(*job, retries)).await,
            Ok(Intake::NotRevocable(event)) => {
                let detail = format!("{}; nothing done", event.detail);
                return decided(
                    Decision::new(Outcome::Rejected(Reason::NotRevocable), detail),
                    JobFacts::not_revocable(*event),
                );
            }
            Err(e) => {
                return decided(
                    Decision::new(Outcome::Rejected(Reason::InvalidMessage), e.to_string()),
                    JobFacts::salvaged(body),
                )
            }
        };
        // The job as sent: whether STS could name the worker's own account must not make
        // a redelivery a conflict, nor change what a continuation carries.
        let digest = job.digest();
        loop {
            let decision = match self.dedup.claim(&job.request_id, digest) {
                Claim::Fresh(claim) => return Admission::Admitted { job, claim },
                Claim::InProgress(ended) => {
                    ended.await;
                    continue;
                }
                Claim::Finished => Decision::new(
                    Outcome::Duplicate,
                    "request id finished recently; nothing done".to_owned(),
                ),
                Claim::Conflict => Decision::new(
                    Outcome::Rejected(Reason::RequestIdConflict),
                    format!(
                        "request id {} finished recently for a job that changes something else (another key, user, account or action); nothing done",
                        job.request_id
                    ),
                ),
            };
            let facts = self.facts_of(&job).await;
            return decided(decision, facts);
        }
    }

    /// What the job's body says, as facts. An event names the account it happened in:
    /// in the worker's own account the facts name none. When STS cannot say which account
    /// is the worker's, the account stays (acting in it works the same).
    async fn facts_of(&self, job: &Job) -> JobFacts {
        let mut facts = JobFacts::of(job);
        if job.origin.is_some() {
            let own = self.accounts.own_identity(&RetryCounter::default()).await;
            if let (Ok(own), Some(account)) = (own, &facts.account_id) {
                if own.account == *account {
                    facts.account_id = None;
                }
            }
        }
        facts
    }

    /// Refuses a job before any IAM call: a protected user or key, or the worker's own
    /// credentials failing (not the job's fault: it goes back to the queue).
    fn guard(&self, job: &Job) -> Option<Decision> {
        if let Some(detail) = self.protection.refuses(job) {
            return Some(Decision::new(Outcome::Rejected(Reason::Protected), detail));
        }
        self.health.credentials_failing().then(|| {
            Decision::new(
                Outcome::Retry(Reason::Credentials),
                "the worker's credentials are failing; released until they work again".to_owned(),
            )
        })
    }

    /// Maps an AWS failure that ended the IAM step to an outcome. A failure of the
    /// worker's own credentials is never a verdict on the job. A permanent failure after
    /// keys were changed is `rejected` with the changes in its detail (docs,
    /// "Outcomes").
    pub(super) fn aws_failure(&self, e: AwsError, keys_changed: usize) -> Decision {
        let detail = e.to_string();
        match e.class {
            ErrorClass::Credentials => {
                self.health.credentials_failed(e.code.as_deref());
                Decision::new(Outcome::Retry(Reason::Credentials), detail)
            }
            ErrorClass::Transient => Decision::new(Outcome::Retry(Reason::TransientError), detail),
            // Permanent: retrying cannot help. A job that changed keys first says so; its
            // redrive (or its continuation, which records them) finishes what is left.
            _ if e.is_access_denied() => Decision::new(
                Outcome::Rejected(Reason::AccessDenied),
                changed_then(keys_changed, detail),
            ),
            _ => Decision::new(
                Outcome::Rejected(Reason::AwsError),
                changed_then(keys_changed, detail),
            ),
        }
    }

    /// The last step of every job: the audit line, the metrics and the outcome event.
    /// A job handed on before it changed anything (`retry/continued`, its message
    /// replaced by the worker's own) has not ended: it is logged, not counted, and ends
    /// once, in its continuation. Latency counts from the first message's enqueue.
    fn record(&self, report: &JobReport, delivery: Delivery, decided_at_ms: Option<u64>) {
        if matches!(
            report.outcome,
            Outcome::Retry(Reason::Reported | Reason::ReportLater)
        ) {
            tracing::info!(
                message_id = %report.message_id,
                request_id = report.facts.request_id.as_deref().unwrap_or(""),
                detail = report.detail.as_deref().unwrap_or(""),
                "Activity report task"
            );
            return;
        }
        if report.outcome == Outcome::Retry(Reason::Continued) && report.settled {
            tracing::info!(
                message_id = %report.message_id,
                request_id = report.facts.request_id.as_deref().unwrap_or(""),
                detail = report.detail.as_deref().unwrap_or(""),
                "Job handed on to a message of the worker's own"
            );
            return;
        }
        report.log();
        // A held job is counted once, however often it is received (docs, "The breaker").
        if report.outcome == Outcome::Held(Reason::AlreadyHeld) {
            return;
        }
        let enqueued_ms = report.facts.enqueued_at_ms.or(delivery.sent_timestamp_ms);
        metrics::job_finished(
            delivery.lane,
            report.outcome,
            report.duration,
            enqueued_ms,
            decided_at_ms,
            report.facts.action,
            report.facts.keys_changed,
        );
        if let Some(seconds) = report.facts.exposure_to_revoke_seconds {
            metrics::exposure_to_revoke(report.facts.detection_source(), seconds);
        }
        if let Some(results) = &self.results {
            results.publish(report, enqueued_ms);
        }
    }
}

/// Records the request id as finished when a redelivery of the job may end `duplicate`:
/// the IAM change is made (or nothing was there), whatever becomes of the message.
/// Otherwise the claim is dropped, and the id is free to be worked again.
fn remember(outcome: Outcome, claim: Option<InFlight>) {
    if let (true, Some(claim)) = (outcome.is_remembered(), claim) {
        claim.finish();
    }
}

/// A failure's detail, after what the job changed first.
fn changed_then(keys_changed: usize, detail: String) -> String {
    if keys_changed > 0 {
        format!("{keys_changed} key(s) changed, then {detail}")
    } else {
        detail
    }
}

/// The job's report, built once from what its steps returned.
fn report(
    message: &Message,
    delivery: Delivery,
    facts: JobFacts,
    settled: Settled,
    retries: u32,
    duration: std::time::Duration,
) -> JobReport {
    JobReport {
        message_id: message.message_id().unwrap_or_default().to_owned(),
        outcome: settled.outcome,
        detail: settled.detail,
        facts,
        attempts: delivery.receive_count,
        retries,
        duration,
        settled: settled.settled,
    }
}
