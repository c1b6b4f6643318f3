//! Staged revocation in the job's path (docs, "Staged revocation"): a job with
//! `delete_after` deactivates its key(s) now and leaves the delete to one EventBridge
//! Scheduler schedule per key, whose target is the queue the job came from.
//!
//! Before the IAM write, the keys a person restored after this job was sent are spared:
//! their schedule is disabled (the restore's record) and was changed after the job's
//! message was sent, so this is a late delivery of the job the restore undid. After the
//! write, each key deactivated gets its schedule; a schedule that cannot be created ends
//! the job as the failure says (`retry` when transient), the key deactivated and said so,
//! and its next delivery schedules it.

use crate::aws::classify::AwsError;
use crate::aws::clients::Clients;
use crate::aws::iam::Iam;
use crate::aws::retry::RetryCounter;
use crate::aws::revoke::{Effect, IamResult};
use crate::aws::schedule::{Destination, Put, Schedules};
use crate::aws::sqs::{Delivery, Lane, Queues, Sqs};
use crate::config::Settings;
use crate::job::{Action, Job, Target};
use crate::metrics;
use crate::outcome::{Outcome, ScheduledDelete};
use crate::staging::{rfc3339, schedule_name};
use crate::worker::settle::Decision;
use crate::worker::StartupError;
use crate::worker::Worker;

/// Staged revocation on this worker: the schedules, and where each queue's deletes go.
#[derive(Debug)]
pub(super) struct Staging {
    pub schedules: Schedules,
    pub main: Destination,
    pub priority: Option<Destination>,
}

impl Staging {
    /// Where the staged deletes of each job queue go: that queue, sent by Scheduler with
    /// `role_arn`, and what it cannot send to `schedule.dead_letter_queue_url` (or the
    /// queue's own dead-letter queue).
    pub(super) async fn build(
        sqs: &Sqs,
        clients: &Clients,
        settings: &Settings,
        role_arn: &str,
        main: &Queues,
        priority: Option<&Queues>,
    ) -> Result<Self, StartupError> {
        let configured_dlq = match &settings.schedule.dead_letter_queue_url {
            Some(url) => Some(sqs.queue_arn(url).await.map_err(StartupError::Staging)?),
            None => None,
        };
        let destination = |queues: Queues| {
            let configured_dlq = configured_dlq.clone();
            async move {
                let dead_letter_arn = match configured_dlq {
                    Some(arn) => arn,
                    None => sqs
                        .queue_arn(&queues.dead_letter_queue_url)
                        .await
                        .map_err(StartupError::Staging)?,
                };
                if dead_letter_arn.ends_with(".fifo") {
                    // EventBridge Scheduler User Guide, "Configuring a dead-letter queue": no
                    // FIFO queue as a schedule's dead-letter queue.
                    return Err(StartupError::FifoScheduleDeadLetterQueue(dead_letter_arn));
                }
                let fifo = queues.queue_url.ends_with(".fifo");
                if fifo
                    && !sqs
                        .deduplicates_by_content(&queues.queue_url)
                        .await
                        .map_err(StartupError::Staging)?
                {
                    return Err(StartupError::FifoWithoutContentDeduplication(
                        queues.queue_url.clone(),
                    ));
                }
                Ok::<_, StartupError>(Destination {
                    queue_arn: sqs
                        .queue_arn(&queues.queue_url)
                        .await
                        .map_err(StartupError::Staging)?,
                    role_arn: role_arn.to_owned(),
                    dead_letter_arn,
                    fifo,
                })
            }
        };
        let main = destination(main.clone()).await?;
        let priority = match priority {
            Some(queues) => Some(destination(queues.clone()).await?),
            None => None,
        };
        let schedules = Schedules::new(
            &clients.sdk,
            settings.backoff,
            &settings.schedule.group_name,
        );
        // GetSchedule answers a missing group as a missing schedule: a worker staging
        // into a group that is not there would schedule nothing and say little. Only
        // that answer stops the start; a look that fails otherwise is a warning (the
        // staged jobs then say what fails), never a reason to revoke nothing.
        match schedules.group_exists(&RetryCounter::default()).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(StartupError::NoScheduleGroup(
                    settings.schedule.group_name.clone(),
                ))
            }
            Err(e) => tracing::warn!(
                group = %settings.schedule.group_name,
                error = %e,
                "Could not check the schedule group of staged revocation; starting anyway"
            ),
        }
        Ok(Self {
            schedules,
            main,
            priority,
        })
    }

    fn destination(&self, lane: Lane) -> &Destination {
        match (lane, &self.priority) {
            (Lane::Priority, Some(priority)) => priority,
            _ => &self.main,
        }
    }
}

impl Worker {
    /// Before the IAM write of a staged job: ends `cancelled` one whose every key a
    /// person restored since it was sent (`Err`), and returns the job with the restored
    /// keys spared otherwise. Deactivation never waits on Scheduler (docs, "Staged
    /// revocation"): a `delete_after` this worker cannot honour (staging not configured
    /// here, a time already past) and a schedule it cannot look up never stop the
    /// deactivation; the first comes back as the scheduling problem to report once the
    /// keys are deactivated, the second as a note.
    pub(super) async fn before_staging(
        &self,
        job: &Job,
        iam: &Iam,
        delivery: Delivery,
        retries: &RetryCounter,
    ) -> Result<Prepared, Decision> {
        let mut prepared = Prepared {
            job: job.clone(),
            problem: None,
            notes: Vec::new(),
        };
        let Some(after) = &job.delete_after else {
            return Ok(prepared);
        };
        let Some(staging) = &self.staging else {
            prepared.problem = Some(
                "delete_after: staged revocation is not configured on this worker (schedule.role_arn), so no delete is scheduled".to_owned(),
            );
            return Ok(prepared);
        };
        // A time that passed while an earlier delivery was retried is not the job's fault:
        // that delivery may have deactivated the key already; the delete is then
        // scheduled for the next minute ([`Worker::stage`]).
        let redelivered = delivery.receive_count > 1 || job.continuation.is_some();
        if let Err(e) = after.check_future(now_secs()) {
            if !(redelivered && after.due(now_secs()) <= now_secs()) {
                prepared.problem = Some(format!("{}, so no delete is scheduled", e.0));
                return Ok(prepared);
            }
        }
        let looked = async {
            let account = self.account_of(job, retries).await?;
            let keys = match &job.target {
                Target::Key { access_key_id, .. } => vec![access_key_id.clone()],
                Target::Keys(keys) => keys.clone(),
                Target::AllKeys { user_name } => iam.key_ids(user_name, retries).await?,
                Target::Role { .. } => Vec::new(),
            };
            let delete_id = delete_request_id(job);
            let sent_ms = sent_ms(job, delivery);
            let mut spared = Vec::new();
            for key in &keys {
                let name = schedule_name(&account, key);
                if let Some(found) = staging.schedules.get(&name, retries).await? {
                    if found.restored_since(&delete_id, sent_ms) {
                        tracing::info!(
                            request_id = %job.request_id,
                            access_key_id = %key,
                            schedule = %name,
                            "Access key restored by a person after this staging job was sent: left alone"
                        );
                        spared.push(key.clone());
                    }
                }
            }
            Ok::<_, AwsError>((keys, spared))
        };
        let (keys, spared) = match looked.await {
            Ok(looked) => looked,
            Err(e) => {
                // A restore recorded since this job was sent cannot be seen: the key is
                // deactivated all the same (a person can restore it again), never left live.
                tracing::warn!(request_id = %job.request_id, error = %e, "Could not look for restores of this staged revocation; deactivating anyway");
                prepared.notes.push(format!(
                    "restores could not be looked up before the deactivation ({e})"
                ));
                return Ok(prepared);
            }
        };
        metrics::staged("restored", spared.len());
        if !spared.is_empty() && spared.len() == keys.len() {
            return Err(Decision::new(
                Outcome::Cancelled,
                format!(
                    "access key(s) {} restored by a person after this job was sent (their schedules in {} are disabled): left alone",
                    spared.join(", "),
                    staging.schedules.group()
                ),
            ));
        }
        if let Target::Keys(keys) = &job.target {
            let left: Vec<String> = keys
                .iter()
                .filter(|k| !spared.contains(k))
                .cloned()
                .collect();
            prepared.job.target = match <[String; 1]>::try_from(left) {
                Ok([access_key_id]) => Target::Key {
                    access_key_id,
                    user_name: None,
                },
                Err(left) => Target::Keys(left),
            };
        }
        prepared.job.spared = spared;
        Ok(prepared)
    }

    /// After the IAM write of a staged job, and after its containment: one schedule per
    /// key it deactivated (all of them, or those a job of several keys changed before one
    /// was refused). Returns the deletes scheduled, notes for the job's detail, and the
    /// failure that left a deactivated key without its schedule (the job is then tried
    /// again for it).
    pub(super) async fn stage(
        &self,
        job: &Job,
        result: &IamResult,
        delivery: Delivery,
        retries: &RetryCounter,
    ) -> Staged {
        let mut staged_result = Staged::default();
        let (Some(after), Some(staging)) = (&job.delete_after, &self.staging) else {
            return staged_result;
        };
        let staged: Vec<(String, String)> = match &result.effect {
            Effect::Revoked => result
                .access_key_ids
                .iter()
                .filter(|key| !job.spared.contains(key))
                .filter_map(|key| {
                    let owner = result.user_name.clone().or_else(|| {
                        result
                            .per_key
                            .iter()
                            .find(|k| k.access_key_id == *key)
                            .map(|k| k.user_name.clone())
                    });
                    owner
                        .filter(|u| !u.is_empty())
                        .map(|user| (key.clone(), user))
                })
                .collect(),
            // Refused or failed after changing some keys: those are deactivated and get
            // their schedule all the same.
            _ => result
                .per_key
                .iter()
                .filter(|k| k.result == "deactivated" && !k.user_name.is_empty())
                .map(|k| (k.access_key_id.clone(), k.user_name.clone()))
                .collect(),
        };
        if staged.is_empty() {
            return staged_result;
        }
        // Due already (the time passed while the job was retried): in a minute, the
        // soonest a one-time schedule runs.
        let due = after.due(now_secs()).max(now_secs() + 60);
        let destination = staging.destination(delivery.lane);
        let sent_ms = sent_ms(job, delivery);
        let Staged {
            scheduled,
            notes,
            failure,
        } = &mut staged_result;
        let failed = async {
            let account = self.account_of(job, retries).await?;
            for (key, user) in staged {
                let delete = scheduled_delete(job, &user, &key, due);
                let input = |due| scheduled_delete(job, &user, &key, due).to_body();
                let name = schedule_name(&account, &key);
                let description =
                    crate::staging::staged_description(&key, &user, &account, &job.request_id);
                let put = staging
                    .schedules
                    .put(
                        &name,
                        due,
                        destination,
                        &delete.request_id,
                        &input,
                        &description,
                        sent_ms,
                        retries,
                    )
                    .await;
                match put {
                    Ok((Put::Restored, _)) => {
                        // A person restored the key between this job's look at its
                        // schedule and its write: the record stays, no delete follows.
                        metrics::staged("restored", 1);
                        tracing::warn!(
                            request_id = %job.request_id,
                            access_key_id = %key,
                            schedule = %name,
                            "A person restored this key while the job deactivated it: no delete is scheduled; restore it again if that was meant"
                        );
                        notes.push(format!(
                            "access key {key} was restored by a person while this job deactivated it: no delete is scheduled (its schedule stays disabled); restore it again if that was meant"
                        ));
                    }
                    Ok((put, at)) => {
                        if put != Put::Kept {
                            metrics::staged("scheduled", 1);
                        }
                        tracing::info!(
                            request_id = %job.request_id,
                            access_key_id = %key,
                            user_name = %user,
                            schedule = %name,
                            delete_at = %rfc3339(at),
                            put = ?put,
                            "Delete scheduled"
                        );
                        scheduled.push(ScheduledDelete {
                            access_key_id: key.clone(),
                            user_name: user,
                            at: rfc3339(at),
                            schedule: name,
                            group: staging.schedules.group().to_owned(),
                        });
                    }
                    Err(e) => {
                        metrics::staged("schedule_failed", 1);
                        tracing::warn!(
                            request_id = %job.request_id,
                            access_key_id = %key,
                            schedule = %name,
                            error = %e,
                            "Could not schedule the delete of a staged key"
                        );
                        return Err(e);
                    }
                }
            }
            Ok::<(), AwsError>(())
        }
        .await;
        if let Err(e) = failed {
            let e = AwsError {
                message: format!(
                    "{} (the key is deactivated; its delete is not scheduled yet)",
                    e.message
                ),
                ..e
            };
            match &result.effect {
                // Deactivated and contained: the delete is scheduled on the next delivery.
                Effect::Revoked => *failure = Some(e),
                _ => notes.push(e.to_string()),
            }
        }
        staged_result
    }

    /// Right before a scheduled delete (a job that requires its key `Inactive`) deletes:
    /// whether its staging is still in force (docs, "Staged revocation"). `Some(why)`
    /// cancels the delete: past its due time by more than [`LATE_DELETE_SECONDS`] (a late
    /// or redriven copy), a restore recorded (its schedule kept disabled), or its
    /// schedule now sending another staging's delete. A schedule that is gone ran and
    /// deleted itself (`ActionAfterCompletion: DELETE`): in force. A delete that carries
    /// its due time came from a schedule; a worker that cannot look at schedules refuses
    /// it (`Err`) rather than delete on trust.
    pub(super) async fn staging_in_force(
        &self,
        job: &Job,
        retries: &RetryCounter,
    ) -> Result<Option<String>, AwsError> {
        let due = job.continuation.as_ref().and_then(|c| c.due_at);
        if let Some(due) = due {
            let late = now_secs().saturating_sub(due);
            if late > LATE_DELETE_SECONDS {
                return Ok(Some(format!(
                    "this scheduled delete was due at {} and comes {} h late (more than {} h): a late or redriven copy of a staging that may have been undone; stage the key again or delete it by hand",
                    rfc3339(due),
                    late / 3600,
                    LATE_DELETE_SECONDS / 3600
                )));
            }
        }
        let Some(staging) = &self.staging else {
            return match due {
                Some(_) => Err(AwsError {
                    operation: "GetSchedule",
                    class: crate::aws::classify::ErrorClass::Permanent,
                    code: None,
                    message: "this worker has no staged revocation configured (schedule.role_arn), so it cannot check that this scheduled delete's staging is still in force; move it to a queue whose workers have it".to_owned(),
                    unanswered: false,
                }),
                None => Ok(None),
            };
        };
        let Some(key) = job.access_key_id() else {
            return Ok(None);
        };
        let account = self.account_of(job, retries).await?;
        let name = schedule_name(&account, key);
        let found = staging.schedules.get(&name, retries).await?;
        Ok(match found {
            None => None,
            Some(found) if !found.enabled => Some(format!(
                "its schedule {name} in {} is disabled: a person restored the key (the record of the restore)",
                staging.schedules.group()
            )),
            Some(found) if found.request_id().as_deref() == Some(job.request_id.as_str()) => None,
            Some(found) => Some(format!(
                "its schedule {name} now sends another staging's delete ({}): this one is superseded",
                found.request_id().unwrap_or_default()
            )),
        })
    }

    /// The account a job's keys are in, for their schedules' names: the one it names,
    /// or the worker's own.
    async fn account_of(&self, job: &Job, retries: &RetryCounter) -> Result<String, AwsError> {
        match &job.account_id {
            Some(account) => Ok(account.clone()),
            None => Ok(self.accounts.own_identity(retries).await?.account.clone()),
        }
    }
}

/// How late after its due time a scheduled delete may still delete: Scheduler retries
/// delivery for a day (then its dead-letter queue), and the job queue retries it for
/// hours; a copy later than this is a redrive of a staging that may have been undone.
pub(super) const LATE_DELETE_SECONDS: i64 = 48 * 3600;

/// A staged job ready for its IAM write.
#[derive(Debug)]
pub(super) struct Prepared {
    /// The job, with the keys a person restored since it was sent spared.
    pub job: Job,
    /// Why its delete cannot be scheduled here, said once its keys are deactivated.
    pub problem: Option<String>,
    /// What could not be looked at.
    pub notes: Vec<String>,
}

/// What scheduling a staged job's deletes came to.
#[derive(Debug, Default)]
pub(super) struct Staged {
    pub scheduled: Vec<ScheduledDelete>,
    pub notes: Vec<String>,
    /// A deactivated key left without its schedule: the job goes round again for it.
    pub failure: Option<AwsError>,
}

/// The delete a staged revocation schedules for `key` of `user` (docs, "Staged
/// revocation"): that key of that user, deleted only while IAM lists it `Inactive`, in
/// the same account, with the staging job's requester and batch. Its request id is
/// the staging job's with `.delete` (or, for an id too long for that, a digest of it),
/// so a delete never conflicts with the job that staged it.
pub(crate) fn scheduled_delete(job: &Job, user: &str, key: &str, due: i64) -> Job {
    let request_id = if job.request_id.len() + ".delete".len() <= 128 {
        format!("{}.delete", job.request_id)
    } else {
        format!(
            "staged-{}.delete",
            crate::sessions::request_digest(&job.request_id)
        )
    };
    Job {
        request_id,
        target: Target::Key {
            access_key_id: key.to_owned(),
            user_name: Some(user.to_owned()),
        },
        action: Action::Delete,
        account_id: job.account_id.clone(),
        reason: Some(format!(
            "scheduled delete of the staged revocation {}",
            job.request_id
        )),
        requested_by: job.requested_by.clone(),
        batch_id: job.batch_id.clone(),
        revoke_sessions: false,
        quarantine_user: false,
        report_activity: false,
        require_inactive: true,
        delete_after: None,
        detected_at_ms: None,
        spared: Vec::new(),
        origin: None,
        owners: Vec::new(),
        // Its due time: a copy far later than that is cancelled.
        continuation: Some(crate::job::Continuation {
            due_at: Some(due),
            ..Default::default()
        }),
        parts: Vec::new(),
    }
}

/// The request id of the delete a staged job schedules (the same for each of its keys).
fn delete_request_id(job: &Job) -> String {
    scheduled_delete(job, "", "", 0).request_id
}

/// When the job's first message was sent: a continuation carries it, else SQS's
/// `SentTimestamp`.
fn sent_ms(job: &Job, delivery: Delivery) -> u64 {
    job.continuation
        .as_ref()
        .and_then(|c| c.enqueued_at_ms)
        .or(delivery.sent_timestamp_ms)
        .unwrap_or(0)
}

fn now_secs() -> i64 {
    i64::try_from(metrics::now_ms() / 1000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{check_request_id, parse, DeleteAfter};

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

    #[test]
    fn a_staged_job_round_trips_and_its_delete_is_that_key_only_while_inactive() {
        let body = format!(
            r#"{{"request_id":"st-1","access_key_id":"{KEY}","user_name":"alice","action":"deactivate","delete_after":"30d","batch_id":"b","requested_by":"soc"}}"#
        );
        let job = parse(&body).unwrap();
        assert_eq!(
            job.delete_after.as_deref().map(DeleteAfter::text),
            Some("30d")
        );
        assert_eq!(
            parse(&job.to_body()).unwrap(),
            job,
            "to_body keeps delete_after"
        );
        // Another grace period is another job: the same request id conflicts.
        let other = parse(&body.replace("30d", "7d")).unwrap();
        assert_ne!(job.digest(), other.digest());

        let delete = scheduled_delete(&job, "alice", KEY, 0);
        assert_eq!(delete.request_id, "st-1.delete");
        assert_eq!(delete.action, Action::Delete);
        assert!(delete.require_inactive && delete.delete_after.is_none());
        assert_eq!(delete.batch_id.as_deref(), Some("b"));
        assert_eq!(
            parse(&delete.to_body()).unwrap(),
            delete,
            "a valid job message"
        );
        // A request id too long to take the suffix: a digest of it, still valid.
        let long = Job {
            request_id: "r".repeat(128),
            ..job.clone()
        };
        let delete = scheduled_delete(&long, "alice", KEY, 0);
        assert!(delete.request_id.starts_with("staged-") && delete.request_id.len() <= 128);
        assert!(check_request_id(&delete.request_id).is_ok());
        assert_ne!(
            delete.request_id,
            scheduled_delete(&job, "alice", KEY, 0).request_id
        );
    }
}
