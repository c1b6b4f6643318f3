//! The IAM step of a job (docs, "Outcomes"): the action in the account the job names,
//! or in the account STS places its one key in; then containment, the session cut-off and
//! quarantine, whatever comes after (CONTRACT §2, invariant 6); then staging. Returns the
//! job's decision and what it learnt.

use aws_sdk_sqs::types::Message;

use super::Worker;
use crate::aws::accounts::AccountError;
use crate::aws::home::Home;
use crate::aws::iam::Iam;
use crate::aws::retry::RetryCounter;
use crate::aws::revoke::{Effect, IamResult};
use crate::aws::sqs::Delivery;
use crate::job::{Action, Job};
use crate::metrics;
use crate::outcome::{Outcome, Reason};
use crate::worker::continuation::carry_on;
use crate::worker::facts::Learnt;
use crate::worker::sessions::{Cut, SessionFacts};
use crate::worker::settle::Decision;
use crate::worker::staging::Staged;

/// The IAM step of a job: its decision, the job as a continuation would carry it on, and
/// what it learnt, returned rather than written into the job's facts.
pub(super) struct Revocation {
    pub decision: Decision,
    pub carry_on: Option<Box<Job>>,
    pub learnt: Learnt,
    /// The account STS says the job's one key belongs to, when not the job's.
    elsewhere: Option<String>,
}

impl Revocation {
    /// Decided before IAM was asked anything.
    fn decided(decision: Decision) -> Self {
        Self {
            decision,
            carry_on: None,
            learnt: Learnt::default(),
            elsewhere: None,
        }
    }
}

impl Worker {
    /// The IAM action, in the account the job names, and the job as a continuation
    /// would carry it on. A job of one key named alone (a leak detector's, an event's)
    /// that STS places in another account is worked there once, when the worker may act
    /// there (docs, "Which account"); a job that names the user and the account is
    /// refused `other_account` instead: its producer named a user of that account.
    pub(super) async fn revoke(
        &self,
        job: &Job,
        message: &Message,
        delivery: Delivery,
        retries: &RetryCounter,
    ) -> Revocation {
        let revocation = Box::pin(self.revoke_in(job, message, delivery, retries)).await;
        let Some(account) = revocation.elsewhere.clone() else {
            return revocation;
        };
        if !job.names_keys_alone() {
            return revocation;
        }
        if job.account_id.as_deref() == Some(account.as_str()) {
            return revocation;
        }
        match self.accounts.iam_for(Some(&account), retries).await {
            Ok(_) => {
                tracing::info!(request_id = %job.request_id, account_id = %account, "STS places the key in another account: working the job there");
                let there = Job {
                    account_id: Some(account.clone()),
                    ..job.clone()
                };
                let mut revocation =
                    Box::pin(self.revoke_in(&there, message, delivery, retries)).await;
                revocation.learnt.account_id = Some(account);
                revocation
            }
            Err(e @ AccountError::Disabled { .. }) => {
                let detail = format!(
                    "{}; the worker cannot act there: {e}",
                    revocation.decision.detail.as_deref().unwrap_or("")
                );
                Revocation::decided(Decision::new(
                    Outcome::Rejected(Reason::OtherAccount),
                    detail,
                ))
            }
            // The role there failing (throttled, refused, down) is AWS's answer, not the
            // key's: retried or rejected as any AWS failure is.
            Err(AccountError::Aws(e)) => {
                let mut decision = self.aws_failure(e, 0);
                decision.detail = Some(format!(
                    "STS places the key in account {account}, where the worker could not act: {}",
                    decision.detail.unwrap_or_default()
                ));
                Revocation::decided(decision)
            }
        }
    }

    /// [`Worker::revoke`] in the account `job` names: the IAM step, then containment
    /// (the session cut-off and quarantine, whatever comes after), then staging.
    async fn revoke_in(
        &self,
        job: &Job,
        message: &Message,
        delivery: Delivery,
        retries: &RetryCounter,
    ) -> Revocation {
        let account = job.account_id.as_deref();
        let iam = match self.accounts.iam_for(account, retries).await {
            Ok(iam) => iam,
            Err(e @ AccountError::Disabled { .. }) => {
                let decision = Decision::new(
                    Outcome::Rejected(Reason::CrossAccountDisabled),
                    e.to_string(),
                );
                return Revocation::decided(decision);
            }
            Err(AccountError::Aws(e)) => return Revocation::decided(self.aws_failure(e, 0)),
        };
        // A role's sessions: no key, nothing for the breaker to count.
        if job.role_name().is_some() {
            let (decision, sessions) = Box::pin(self.cut_off_role(job, &iam, retries)).await;
            return Revocation {
                decision,
                carry_on: None,
                learnt: Learnt::of(None, Vec::new(), sessions),
                elsewhere: None,
            };
        }
        let home = match self.accounts.home_for(account, retries).await {
            Ok(home) => home,
            Err(e) => return Revocation::decided(self.aws_failure(e, 0)),
        };
        // The breaker counts the job's keys before its first IAM write.
        let units = match Box::pin(self.take_units(job, message, delivery, retries)).await {
            Ok(units) => units,
            Err(decision) => return Revocation::decided(decision),
        };
        let revocation =
            Box::pin(self.revoke_counted(job, &iam, &home, message, delivery, retries)).await;
        if let Some(units) = units {
            let changed = revocation.learnt.keys_changed();
            self.give_back(job, &units, revocation.decision.outcome, changed, retries)
                .await;
        }
        revocation
    }

    /// [`Worker::revoke_in`] once the job's keys are counted.
    async fn revoke_counted(
        &self,
        job: &Job,
        iam: &Iam,
        home: &Home,
        message: &Message,
        delivery: Delivery,
        retries: &RetryCounter,
    ) -> Revocation {
        // Staging's checks and the key-only path each on the heap when a job needs them:
        // a plain job's task keeps none of their futures.
        let mut prepared = None;
        if job.delete_after.is_some() {
            match Box::pin(self.before_staging(job, iam, delivery, retries)).await {
                Ok(ready) => prepared = Some(ready),
                Err(decision) => return Revocation::decided(decision),
            }
        }
        let (problem, notes) = prepared
            .as_mut()
            .map(|p| (p.problem.take(), std::mem::take(&mut p.notes)))
            .unwrap_or_default();
        let job = prepared.as_ref().map_or(job, |p| &p.job);
        let result = if job.require_inactive {
            let still_staged = self.staging_in_force(job, retries);
            Box::pin(iam.revoke_required(job, home, still_staged, retries)).await
        } else if job.names_keys_alone() {
            let alone = Box::pin(self.revoke_alone(job, iam, home, message, delivery, retries));
            match alone.await {
                Ok(result) => result,
                Err(ended) => return *ended,
            }
        } else {
            iam.revoke(job, home, retries).await
        };
        let carry_on = carry_on(job, &result);
        // Containment first: the cut-off and quarantine never wait on the schedule.
        let (mut decision, mut sessions) = self.decide(job, iam, &result, retries).await;
        let staged = match job.delete_after.is_some() {
            true => Box::pin(self.stage(job, &result, delivery, retries)).await,
            false => Staged::default(),
        };
        sessions.scheduled_deletes = staged.scheduled;
        match (staged.failure, decision.outcome.is_remembered()) {
            // Deactivated and contained, its delete not scheduled: tried again, for it.
            (Some(e), true) => {
                let failed = self.aws_failure(e, result.keys_changed);
                decision = Decision::new(
                    failed.outcome,
                    join_details(decision.detail, failed.detail.into_iter()),
                );
            }
            // The job ends otherwise for its own reason; the schedule's failure is said.
            (Some(e), false) => {
                let note = format!("a delete could not be scheduled: {e}");
                decision.detail = Some(join_details(decision.detail, std::iter::once(note)));
            }
            (None, _) => {}
        }
        if let (Some(problem), true) = (&problem, decision.outcome.is_remembered()) {
            // Deactivated all the same; what could not be staged needs a person.
            decision = Decision::new(
                Outcome::Rejected(Reason::InvalidMessage),
                join_details(decision.detail, std::iter::once(problem.clone())),
            );
        } else if let Some(problem) = problem {
            decision.detail = Some(join_details(decision.detail, std::iter::once(problem)));
        }
        let notes = notes.into_iter().chain(staged.notes);
        decision.detail = Some(join_details(decision.detail, notes));
        let elsewhere = result.elsewhere.clone();
        Revocation {
            decision,
            carry_on,
            learnt: Learnt::of(Some(result), Vec::new(), sessions),
            elsewhere,
        }
    }

    /// The IAM step of a job that names keys alone: each key placed (IAM's owner, STS's
    /// account), handed on when its owners were looked up, then revoked. `Err` is how the
    /// job ended before any key was revoked.
    async fn revoke_alone(
        &self,
        job: &Job,
        iam: &Iam,
        home: &Home,
        message: &Message,
        delivery: Delivery,
        retries: &RetryCounter,
    ) -> Result<IamResult, Box<Revocation>> {
        let placement = match iam.place(job, home, retries).await {
            Ok(placement) => placement,
            Err(ended) => {
                let elsewhere = ended.elsewhere.clone();
                let (decision, sessions) = self.decide(job, iam, &ended, retries).await;
                return Err(Box::new(Revocation {
                    decision,
                    carry_on: None,
                    learnt: Learnt::of(Some(ended), Vec::new(), sessions),
                    elsewhere,
                }));
            }
        };
        if let Some(handed) = self
            .hand_off(job, message, delivery, &placement, retries)
            .await
        {
            return Err(Box::new(Revocation {
                decision: handed,
                carry_on: None,
                learnt: Learnt::of(None, placement.last_used, SessionFacts::default()),
                elsewhere: None,
            }));
        }
        Ok(iam.revoke_placement(job, placement, home, retries).await)
    }

    /// What the IAM step's result means for the job, with containment: once a key of a
    /// user is changed, that user's older sessions are cut off (when asked) and the user
    /// quarantined (when asked) in this same delivery, whatever else fails after (CONTRACT
    /// §2, invariant 6). A job that ends well (or finds its key gone) cuts off too.
    async fn decide(
        &self,
        job: &Job,
        iam: &Iam,
        result: &IamResult,
        retries: &RetryCounter,
    ) -> (Decision, SessionFacts) {
        let decision = match &result.effect {
            Effect::Revoked => {
                self.health.credentials_proven();
                let outcome = match job.action {
                    Action::Delete => Outcome::Deleted,
                    Action::Deactivate => Outcome::Deactivated,
                };
                Decision::new(outcome, format!("{} key(s) changed", result.keys_changed))
            }
            Effect::AlreadyAbsent => {
                self.health.credentials_proven();
                Decision::new(Outcome::AlreadyAbsent, None)
            }
            Effect::Cancelled(detail) => {
                self.health.credentials_proven();
                metrics::staged("cancelled", 1);
                Decision::new(Outcome::Cancelled, detail.clone())
            }
            Effect::Rejected(reason, detail) => {
                Decision::new(Outcome::Rejected(*reason), detail.clone())
            }
            Effect::Failed(e) => self.aws_failure(e.clone(), result.keys_changed),
        };
        let contain = decision.outcome.is_remembered() || result.keys_changed > 0;
        let tied = tied_users(result);
        let (decision, mut facts) = if job.revoke_sessions && contain {
            let cut = Cut {
                request_id: &job.request_id,
                keys_changed: result.keys_changed,
                tied: &tied,
            };
            // On the heap, as each step below: kilobytes of IAM futures a plain job never
            // needs in its task.
            let users = result.users();
            Box::pin(self.revoke_sessions(iam, &users, decision, cut, retries)).await
        } else {
            (decision, SessionFacts::default())
        };
        if job.quarantine_user && !tied.is_empty() {
            facts.quarantine = Some(Box::pin(self.quarantine(iam, &tied, retries)).await);
        }
        (decision, facts)
    }
}

/// The users IAM tied to a key this job changed (in this delivery, or in an earlier one a
/// verified continuation records): the only ones quarantined. A key that was never there
/// names nobody, and neither does a producer's claim.
fn tied_users(result: &IamResult) -> Vec<String> {
    let changed = |r: &str| matches!(r, "deleted" | "deactivated");
    let mut users: Vec<String> = Vec::new();
    if result.per_key.is_empty() {
        if result.keys_changed > 0 {
            users.extend(result.user_name.clone());
        }
        return users;
    }
    for key in result.per_key.iter().filter(|k| changed(k.result)) {
        if !key.user_name.is_empty()
            && !users.iter().any(|u| u.eq_ignore_ascii_case(&key.user_name))
        {
            users.push(key.user_name.clone());
        }
    }
    users
}

/// `detail` followed by `more`, joined with `; `.
fn join_details(detail: Option<String>, more: impl Iterator<Item = String>) -> String {
    detail
        .into_iter()
        .chain(more)
        .filter(|d| !d.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
