//! Continuations (docs, "Continuations"): a job whose key owners only IAM's lookup
//! named is handed on, before its first delete, to a message of the worker's own that
//! names them; one that changed keys and cannot finish is carried on with what it
//! changed.

use aws_sdk_sqs::types::Message;

use crate::aws::mac::{Purpose, Verified};
use crate::aws::retry::RetryCounter;
use crate::aws::revoke::{IamResult, Placement};
use crate::aws::sqs::Delivery;
use crate::job::{Action, Job};
use crate::outcome::{Outcome, Reason};
use crate::worker::settle::Decision;
use crate::worker::Worker;

impl Worker {
    /// What a job's continuation claims (docs, "Continuations"): believed only when the
    /// worker's own MAC over the message verifies and has not expired. One that does not
    /// is worked from its own fields as a new job (its keys, named alone), none of its
    /// claims believed: owners, changes, the security event; so is one KMS cannot check
    /// now (a revocation never waits on it).
    pub(super) async fn believe(&self, job: Job, retries: &RetryCounter) -> Job {
        let Some(continuation) = &job.continuation else {
            return job;
        };
        let claims = continuation.claims()
            || job.origin.is_some()
            || !job.owners.is_empty()
            || continuation.mac.is_some();
        if !claims {
            return job;
        }
        let now = crate::metrics::now_ms();
        let verified = match (
            &self.settler.mac,
            &continuation.mac,
            continuation.expires_at_ms,
        ) {
            (None, _, _) => Verified::No(
                "this worker has no continuation.mac_key_id to verify it with".to_owned(),
            ),
            (_, None, _) => Verified::No("it carries no mac".to_owned()),
            (_, _, None) => Verified::No("it carries no expiry".to_owned()),
            (_, _, Some(expires)) if expires < now => Verified::No(format!(
                "it expired at {}",
                crate::staging::rfc3339((expires / 1000) as i64)
            )),
            (Some(mac), Some(signature), Some(_)) => {
                let canonical = job.canonical();
                let checked =
                    Box::pin(mac.verify(Purpose::Continuation, &canonical, signature, retries))
                        .await;
                // KMS not answering never holds a revocation back: the claims are dropped,
                // the keys worked (CONTRACT §1: what cannot be verified is not believed).
                match checked {
                    Ok(verified) => verified,
                    Err(e) => Verified::No(format!("KMS could not verify its mac: {e}")),
                }
            }
        };
        match verified {
            Verified::Yes => job,
            Verified::No(why) => {
                crate::metrics::unverified_message("continuation");
                tracing::warn!(
                    request_id = %job.request_id,
                    why = %why,
                    "A continuation that does not verify: worked from its own fields as a new job, none of its claims believed"
                );
                job.without_claims()
            }
        }
    }

    /// A security event naming more keys than one job holds: each further part goes on
    /// as a job of its own (docs, "Security events"), on the queue the event came from. `Err` says which part could not be sent: this delivery then works its own
    /// part here and goes round again for the rest (never a reason to revoke nothing).
    pub(super) async fn send_parts(
        &self,
        job: &Job,
        message: &Message,
        delivery: Delivery,
        retries: &RetryCounter,
    ) -> Result<(), String> {
        // The queue the job came from: its keys count on that queue's breaker limits,
        // and a bulk job's work never moves onto the priority queue ahead of leaks.
        let queue_url = self.source(delivery.lane).queues.queue_url.clone();
        for (i, keys) in job.parts.iter().enumerate() {
            let mut part = job.part(i + 2, keys);
            if let Err(e) = self
                .settler
                .send_on(message, delivery, &mut part, &queue_url, 0, retries)
                .await
            {
                tracing::warn!(request_id = %job.request_id, part = i + 2, error = %e, "Could not send a part of the event's keys; the job goes round again for it");
                return Err(format!(
                    "part {} of the event's keys (and the ones after it) not sent yet: {e}",
                    i + 2
                ));
            }
        }
        tracing::info!(request_id = %job.request_id, parts = job.parts.len() + 1, "An event naming more keys than one job holds, worked in parts");
        Ok(())
    }

    /// A job that would delete keys whose owners only IAM's lookup just named first hands
    /// itself on to a message of the worker's own naming them (docs, "Continuations"):
    /// if the worker then died after a delete, a redelivery of the original could no
    /// longer find the owner (to cut off its sessions, to say the key is gone rather than
    /// `owner_unknown`). The message goes back to the job's queue (its keys count on
    /// that queue's breaker limits) and does the work; the original is
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
        // Without a MAC key its continuation would not be believed, and with parts of an
        // event still unsent the message must stay to send them: work it here.
        if job.action != Action::Delete
            || placement.looked_up.is_empty()
            || self.settler.mac.is_none()
            || !job.parts.is_empty()
        {
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
        // The queue the job came from: its keys count on that queue's breaker limits,
        // and a bulk job's work never moves onto the priority queue ahead of leaks.
        let queue_url = self.source(delivery.lane).queues.queue_url.clone();
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
/// keys of a job that names keys alone (docs, "Continuations"): once a key is deleted,
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
