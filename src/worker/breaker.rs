//! The breaker on the job's path (docs, "The breaker"): a job's units are taken before
//! its first IAM write and what it did not change is given back; a job over a limit is
//! held, unless an operator approved exactly its message; a paused queue's jobs wait,
//! their messages kept (the heartbeat extends them), since a release would cost each
//! one of its `maxReceiveCount` receives.

use std::sync::Arc;

use aws_sdk_sqs::types::Message;
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::retry::RetryCounter;
use crate::aws::sqs::{Delivery, Lane};
use crate::breaker::{gauges, table, unix_now, Breaker, Hold, Holding, Scope, Take, Units};
use crate::job::{Job, Target};
use crate::outcome::{Outcome, Reason};
use crate::worker::settle::Decision;

/// The most access keys IAM lets one user have ("IAM and AWS STS quotas", IAM User
/// Guide: access keys assigned to an IAM user, 2): what an offboarding job may change.
const KEYS_PER_USER: u32 = 2;

/// The most keys a job can change: counted before it changes any, the rest given back.
fn keys_at_most(job: &Job) -> u32 {
    match &job.target {
        Target::Key { .. } => 1,
        Target::AllKeys { .. } => KEYS_PER_USER,
        Target::Keys(keys) => u32::try_from(keys.len()).unwrap_or(u32::MAX),
        // A role's cut-off changes no key: the breaker counts keys.
        Target::Role { .. } => 0,
    }
}

impl Worker {
    /// Takes the units of `job`'s keys on its queue's limits. `Ok(None)`: no breaker, or
    /// its table unreachable on a queue that fails open. `Err`: how the job ends
    /// without changing anything (held, or back on the queue).
    pub(super) async fn take_units(
        &self,
        job: &Job,
        message: &Message,
        delivery: Delivery,
        retries: &RetryCounter,
    ) -> Result<Option<Units>, Decision> {
        let Some(breaker) = &self.breaker else {
            return Ok(None);
        };
        if keys_at_most(job) == 0 {
            return Ok(None);
        }
        let lane = delivery.lane;
        let account = match &job.account_id {
            Some(account) => account.clone(),
            None => match self.accounts.own_identity(retries).await {
                Ok(own) => own.account.clone(),
                Err(e) => return Err(self.aws_failure(e, 0)),
            },
        };
        let n = keys_at_most(job);
        let body = message.body().unwrap_or_default();
        let digest = table::job_digest(job);
        let mut approved = false;
        loop {
            let (scope, detail) = match breaker.take(lane, &account, n, approved, retries).await {
                Take::Taken(units) => return Ok(Some(units)),
                Take::Paused => {
                    tracing::info!(request_id = %job.request_id, queue = lane.as_str(), "Key changes paused: the job waits, its message kept");
                    if !wait_a_poll(breaker, retries).await {
                        return Err(Decision::new(
                            Outcome::Retry(Reason::Shutdown),
                            "key changes were paused until shutdown; nothing changed".to_owned(),
                        ));
                    }
                    continue;
                }
                Take::Failed(e) => return self.uncounted(breaker, lane, e),
                Take::Over(scope, detail) => (scope, detail),
            };
            if !approved {
                match breaker
                    .approved(&job.request_id, lane, &digest, retries)
                    .await
                {
                    Ok(true) => {
                        tracing::info!(request_id = %job.request_id, queue = lane.as_str(), "Over the breaker's limit, approved by an operator: counted and worked");
                        approved = true;
                        continue;
                    }
                    Ok(false) => {}
                    // The table answered "over": never a reason to fail open.
                    Err(e) => {
                        gauges::unavailable(lane, false);
                        return Err(Decision::new(
                            Outcome::Retry(Reason::BreakerUnavailable),
                            format!("{detail}; whether it is approved could not be read: {e}; nothing changed"),
                        ));
                    }
                }
            }
            let hold = Hold {
                request_id: &job.request_id,
                lane,
                account: &account,
                batch_id: job.batch_id.as_deref(),
                keys: n,
                scope,
                detail: &detail,
                body,
                job_digest: &digest,
            };
            return Err(match breaker.hold(&hold, retries).await {
                Ok(Holding::New) => Decision::new(
                    Outcome::Held(match scope {
                        Scope::Account => Reason::AccountLimit,
                        Scope::Fleet => Reason::FleetLimit,
                    }),
                    format!("{detail}; nothing changed; held for a person: iam-key-revoker approve --request-id {}", job.request_id),
                ),
                Ok(Holding::Already) => Decision::new(
                    Outcome::Held(Reason::AlreadyHeld),
                    format!("{detail}; held already, waiting for a person; nothing changed"),
                ),
                // Kept, in the dead-letter queue: the held job is another message.
                Ok(Holding::Conflict) => Decision::new(
                    Outcome::Rejected(Reason::RequestIdConflict),
                    format!("request id {} is held (or approved) for another message; nothing changed", job.request_id),
                ),
                // Not durable as held: the message stays, nothing lost.
                Err(e) => Decision::new(
                    Outcome::Retry(Reason::TransientError),
                    format!("{detail}; the hold could not be recorded: {e}; nothing changed"),
                ),
            });
        }
    }

    /// Gives back what `units` counted beyond the `changed` keys; an approval the job was
    /// counted on is spent once the job has its outcome (a job that goes round again, or
    /// is carried on, keeps it).
    pub(super) async fn give_back(
        &self,
        job: &Job,
        units: &Units,
        outcome: Outcome,
        changed: usize,
        retries: &RetryCounter,
    ) {
        if let Some(breaker) = &self.breaker {
            breaker.give_back(units, changed, retries).await;
            if units.approved && outcome.is_final() {
                breaker
                    .spend_approval(&job.request_id, &table::job_digest(job), retries)
                    .await;
            }
        }
    }

    /// The table did not answer: the job's queue fails open (changes its keys uncounted)
    /// or closed (back on the queue). The worker's own credentials failing is neither.
    fn uncounted(
        &self,
        breaker: &Breaker,
        lane: Lane,
        e: AwsError,
    ) -> Result<Option<Units>, Decision> {
        if e.class == ErrorClass::Credentials {
            return Err(self.aws_failure(e, 0));
        }
        // Open only for a table that does not answer: one that refuses (no right to it,
        // no such table) is a configuration to fix, never a reason to change keys
        // uncounted.
        let open = breaker.config().limits(lane).fail_open && e.class == ErrorClass::Transient;
        gauges::unavailable(lane, open);
        if open {
            tracing::warn!(queue = lane.as_str(), error = %e, "The breaker's table could not count this job's keys: changing them uncounted (breaker.{}.fail_open)", lane.as_str());
            Ok(None)
        } else {
            Err(Decision::new(
                Outcome::Retry(Reason::BreakerUnavailable),
                format!("the breaker's table could not count the job's keys: {e}; nothing changed"),
            ))
        }
    }

    /// Reads the pause flags every `breaker.poll_seconds` until shutdown: the receive
    /// loops stop while their queue is paused, `/readyz` says why, the gauges show it.
    pub(super) async fn watch_pauses(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(breaker) = &self.breaker else {
            return;
        };
        let mut failing = false;
        loop {
            match breaker.read_pauses(&RetryCounter::default()).await {
                Ok(pauses) => {
                    if failing {
                        tracing::info!("The breaker's pause flags can be read again");
                    }
                    failing = false;
                    gauges::pauses(&pauses, unix_now());
                    self.health.set_paused(pauses.describe());
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "Could not read the breaker's pause flags: keeping the last known (every key change still checks its queue's flag)");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(breaker.poll_interval()) => {}
            }
        }
    }

    /// Waits while `lane` is paused, as last read; `false` at shutdown.
    pub(super) async fn until_resumed(&self, lane: Lane, shutdown: &CancellationToken) -> bool {
        let Some(breaker) = &self.breaker else {
            return true;
        };
        let mut pauses = breaker.pauses();
        tokio::select! {
            () = shutdown.cancelled() => false,
            _ = pauses.wait_for(|p| p.of(lane).is_none()) => true,
        }
    }
}

/// The breaker when `breaker.table_name` is set, its pauses read before the first
/// receive: a paused fleet stays paused across a restart.
pub(super) async fn build(
    config: &crate::config::Config,
    clients: &crate::aws::clients::Clients,
    policy: crate::aws::retry::BackoffPolicy,
) -> Option<Arc<Breaker>> {
    let table = config.breaker.table_name.as_ref()?;
    gauges::started(config.breaker.pause_alert_seconds);
    let breaker = Breaker::new(
        clients.dynamodb(),
        table.clone(),
        config.breaker.clone(),
        policy,
    );
    if let Err(e) = breaker.read_pauses(&RetryCounter::default()).await {
        tracing::warn!(error = %e, "Could not read the breaker's pause flags at start; every key change still checks its queue's flag");
    }
    Some(Arc::new(breaker))
}

/// One poll interval, cut short when the job's retries are called off: `false` then.
async fn wait_a_poll(breaker: &Breaker, retries: &RetryCounter) -> bool {
    let step = std::time::Duration::from_millis(250);
    let mut waited = std::time::Duration::ZERO;
    while waited < breaker.poll_interval() {
        if retries.stopped() {
            return false;
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
    !retries.stopped()
}
