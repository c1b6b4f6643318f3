//! Continuations (README, "Continuations"): a job whose key owners only IAM's lookup
//! named is handed on, before its first delete, to a message of the worker's own that
//! names them; one that changed keys and cannot finish is carried on with what it
//! changed.

use aws_sdk_sqs::types::Message;

use crate::aws::retry::RetryCounter;
use crate::aws::revoke::{IamResult, Placement};
use crate::aws::sqs::Delivery;
use crate::job::{Action, Job};
use crate::outcome::{Outcome, Reason};
use crate::worker::settle::Decision;
use crate::worker::Worker;

impl Worker {
    /// A job that would delete keys whose owners only IAM's lookup just named first hands
    /// itself on to a message of the worker's own naming them (README, "Continuations"):
    /// if the worker then died after a delete, a redelivery of the original could no
    /// longer find the owner (to cut off its sessions, to say the key is gone rather than
    /// `owner_unknown`). The message goes to the priority queue when there is one (it is
    /// urgent work), else back to the job's queue, and does the work; the original is
    /// deleted. When it cannot be sent, the job is worked here and now. A key that is
    /// deactivated stays in IAM, and its owner can be found again.
    pub(super) async fn hand_off(
        &self,
        job: &Job,
        message: &Message,
        delivery: Delivery,
        placement: &Placement,
        retries: &RetryCounter,
    ) -> Option<Decision> {
        if job.action != Action::Delete || placement.looked_up.is_empty() {
            return None;
        }
        let learned: Vec<(String, String, Option<String>)> = placement
            .looked_up
            .iter()
            .map(|(key, user)| (key.clone(), user.clone(), None))
            .collect();
        let mut next = job.continued(&learned);
        if let Some(continuation) = next.continuation.as_mut() {
            continuation.last_used.clone_from(&placement.last_used);
        }
        let queue_url = self
            .priority_queues()
            .unwrap_or(&self.source(delivery.lane).queues)
            .queue_url
            .clone();
        let sent = self
            .settler
            .send_on(message, delivery, &mut next, &queue_url, 0, retries)
            .await;
        let id = match sent {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, request_id = %job.request_id, "Could not hand the job on; working it here");
                return None;
            }
        };
        let owners: Vec<String> = placement
            .looked_up
            .iter()
            .map(|(key, user)| format!("{key} ({user})"))
            .collect();
        Some(Decision::new(
            Outcome::Retry(Reason::Continued),
            format!(
                "IAM named the owners of {}; nothing changed yet; handed on to message {id}",
                owners.join(", ")
            ),
        ))
    }
}

/// The job as a message of the worker's own carries it on, when this delivery changed
/// keys of a job that names keys alone (README, "Continuations"): once a key is deleted,
/// a redelivery could not find its owner again to finish the job (the other keys, the
/// session policy), nor say that the job changed it.
pub(super) fn carry_on(job: &Job, result: &IamResult) -> Option<Box<Job>> {
    if !job.names_keys_alone() {
        return None;
    }
    let recorded = |key: &str| {
        job.continuation
            .as_ref()
            .is_some_and(|c| c.changed.iter().any(|(k, _)| k == key))
    };
    let learned: Vec<(String, String, Option<String>)> = result
        .per_key
        .iter()
        .filter(|k| matches!(k.result, "deleted" | "deactivated") && !k.user_name.is_empty())
        .filter(|k| !recorded(&k.access_key_id))
        .map(|k| {
            (
                k.access_key_id.clone(),
                k.user_name.clone(),
                Some(k.result.to_owned()),
            )
        })
        .collect();
    if learned.is_empty() {
        return None;
    }
    let mut next = job.continued(&learned);
    if let Some(continuation) = next.continuation.as_mut() {
        if continuation.last_used.is_empty() {
            continuation.last_used.clone_from(&result.last_used);
        }
    }
    Some(Box::new(next))
}
