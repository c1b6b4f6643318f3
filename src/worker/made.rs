//! What the leaked key made (docs, "What the leaked key made"): from an activity report's
//! CloudTrail events (the key's own, and those of the temporary credentials it minted,
//! one level deep), each access key it created is revoked by a follow-up job of its own
//! (`contain.created_keys`: `deactivate`, `delete` or `report`), sent to the priority
//! queue (the main queue without one): a message, so a restart loses none. A follow-up
//! names the key and the user CloudTrail recorded (`CreateAccessKey`'s response
//! elements), so IAM's ownership check and the protected lists apply to it as to any
//! job; it carries the original request id as its `batch_id` and asks for no activity
//! report of its own, so it never makes follow-ups: what the created keys did is the
//! report's, one level deep. A console password it created or reset is removed by a
//! follow-up of the worker's own (`contain.login_profiles`; see `logins`). Users, roles
//! and grants are reported for a person.

use crate::activity::{ActivityReport, Made, Task};
use crate::aws::retry::RetryCounter;
use crate::aws::sqs::Outgoing;
use crate::config::ContainKeys;
use crate::job::{Action, Job, Target};
use crate::outcome::Lane;
use crate::sessions::request_digest;
use crate::worker::Worker;

/// The request id of the follow-up revoking `key`, made by the job `request_id`: the
/// same on every pass and replica, so that a second report's follow-up is the same job.
pub fn follow_up_id(request_id: &str, key: &str) -> String {
    let id = format!("{request_id}:made:{key}");
    if id.len() <= 128 {
        id
    } else {
        format!("made-{}:{key}", request_digest(request_id))
    }
}

impl Worker {
    /// Sends a follow-up job for each access key the report says the leaked key (or what
    /// it minted) created, and writes into the report what became of everything it made.
    /// `Err` says which follow-ups could not be sent: the task then goes round again.
    pub(super) async fn contain_made(
        &self,
        task: &Task,
        report: &mut ActivityReport,
        retries: &RetryCounter,
    ) -> Result<(), String> {
        let setting = self.config.contain.created_keys;
        let queue_url = self.source(Lane::Priority).queues.queue_url.clone();
        let fifo = queue_url.ends_with(".fifo");
        let mut unsent = Vec::new();
        let mut made: Vec<&mut Made> = report.activity.made.iter_mut().collect();
        for minted in report.activity.minted.iter_mut() {
            if let Some(activity) = minted.activity.as_mut() {
                made.extend(activity.made.iter_mut());
            }
        }
        // Without the worker's MAC a report task may be a producer's, naming any key whose
        // history it likes: what that history made is reported, never changed.
        let own = self.settler.mac.is_some();
        for item in made {
            // The caller's own user, when CloudTrail's record names none: only for the
            // leaked key itself, whose user the task names.
            if item.user_name.is_none() && item.made_with == task.access_key_id {
                item.user_name = task.user_name.clone();
            }
            let contained = crate::login_task::LOGIN_CALLS.contains(&item.api.as_str())
                || item.access_key_id.is_some();
            if contained && !own {
                item.containment = "reported: containing what the leaked key made needs the worker's own messages MACed (continuation.mac_key_id)".to_owned();
                continue;
            }
            if crate::login_task::LOGIN_CALLS.contains(&item.api.as_str()) {
                match self
                    .send_login_follow_up(task, item, &queue_url, retries)
                    .await
                {
                    Ok(said) => item.containment = said,
                    Err(e) => {
                        item.containment = format!("follow-up job NOT sent yet: {e}");
                        unsent.push(format!("console password of {:?}: {e}", item.user_name));
                    }
                }
                continue;
            }
            let (Some(key), Some(user)) = (item.access_key_id.clone(), item.user_name.clone())
            else {
                continue;
            };
            if key == task.access_key_id {
                continue;
            }
            let action = match setting {
                ContainKeys::Report => {
                    item.containment = "reported (contain.created_keys = \"report\")".to_owned();
                    continue;
                }
                ContainKeys::Deactivate => Action::Deactivate,
                ContainKeys::Delete => Action::Delete,
            };
            let job = self.follow_up(task, item, &key, &user, action);
            let outgoing = Outgoing {
                body: job.to_body(),
                group_id: fifo.then(|| user.clone()),
                deduplication_id: fifo.then(|| job.request_id.clone()),
                delay_seconds: None,
            };
            match self
                .sqs
                .send_batch(&queue_url, std::slice::from_ref(&outgoing), retries)
                .await
            {
                Ok(refused) if refused.is_empty() => {
                    tracing::info!(request_id = %task.request_id, follow_up = %job.request_id, access_key_id = %key, user_name = %user, action = action.as_str(), "A key the leaked key made: follow-up job sent");
                    item.containment =
                        format!("follow-up job {} ({})", job.request_id, action.as_str());
                }
                Ok(refused) => {
                    let why = refused.first().map(|r| r.code.clone()).unwrap_or_default();
                    item.containment = format!("follow-up job NOT sent yet: {why}");
                    unsent.push(format!("{key}: {why}"));
                }
                Err(e) => {
                    item.containment = format!("follow-up job NOT sent yet: {e}");
                    unsent.push(format!("{key}: {e}"));
                }
            }
        }
        match unsent.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "follow-up jobs for keys the leaked key made not sent yet ({}): the report goes round again",
                unsent.join("; ")
            )),
        }
    }

    /// The follow-up job revoking `key` of `user`, which `item` says the leaked key of
    /// `task` made: in the same account, staged when staging is configured.
    fn follow_up(&self, task: &Task, item: &Made, key: &str, user: &str, action: Action) -> Job {
        let delete_after = match action {
            Action::Deactivate => self.intake.delete_after.clone().map(Box::new),
            Action::Delete => None,
        };
        let target = Target::Key {
            access_key_id: key.to_owned(),
            user_name: Some(user.to_owned()),
        };
        Job {
            account_id: task.account_id.clone(),
            reason: Some(format!(
                "made by leaked access key {} ({} at {} in {}, with {}); job {}",
                task.access_key_id,
                item.api,
                item.time,
                item.region,
                item.made_with,
                task.request_id
            )),
            requested_by: Some("iam-key-revoker".to_owned()),
            batch_id: Some(task.request_id.chars().take(128).collect()),
            revoke_sessions: self.intake.revoke_sessions,
            // Never a report of its own (Job::new asks for none): a follow-up makes no
            // follow-ups.
            delete_after,
            ..Job::new(follow_up_id(&task.request_id, key), target, action)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follow_ups_request_id_is_stable_and_within_the_contracts_length() {
        let id = follow_up_id("aws.health:abc", "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(id, "aws.health:abc:made:AKIAIOSFODNN7EXAMPLE");
        crate::job::check_request_id(&id).unwrap();
        let long = "r".repeat(128);
        let id = follow_up_id(&long, "AKIAIOSFODNN7EXAMPLE");
        assert!(
            id.len() <= 128 && id.ends_with(":AKIAIOSFODNN7EXAMPLE"),
            "{id}"
        );
        crate::job::check_request_id(&id).unwrap();
        assert_eq!(id, follow_up_id(&long, "AKIAIOSFODNN7EXAMPLE"));
    }
}
