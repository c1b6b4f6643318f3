//! A job's facts, filled in along its path: from its body first, then from what the IAM
//! step learnt (returned by that step, written here once).

use crate::aws::revoke::IamResult;
use crate::intake::NotRevocable;
use crate::job::{self, Job, LastUsed};
use crate::outcome::JobFacts;
use crate::worker::sessions::SessionFacts;

/// What a job's path learns, step by step.
impl JobFacts {
    pub(super) fn of(job: &Job) -> Self {
        Self {
            enqueued_at_ms: job.continuation.as_ref().and_then(|c| c.enqueued_at_ms),
            last_used: job
                .continuation
                .as_ref()
                .map(|c| c.last_used.clone())
                .unwrap_or_default(),
            request_id: Some(job.request_id.clone()),
            user_name: job.user_name().map(str::to_owned),
            role_name: job.role_name().map(str::to_owned),
            role_session: match &job.target {
                crate::job::Target::Role {
                    session,
                    every_session: false,
                    ..
                } => session.clone(),
                _ => None,
            },
            access_key_ids: job.access_key_ids(),
            account_id: job.account_id.clone(),
            batch_id: job.batch_id.clone(),
            action: Some(job.action),
            origin: job.origin.clone(),
            report_activity: job.report_activity,
            detected_at_ms: job.detected_at_ms,
            ..Self::default()
        }
    }

    pub(super) fn not_revocable(event: NotRevocable) -> Self {
        Self {
            request_id: Some(event.request_id),
            user_name: event.user_name,
            access_key_ids: event.access_key_ids,
            account_id: Some(event.account_id),
            origin: Some(event.origin),
            ..Self::default()
        }
    }

    /// Only the request id, read from a body that is not a valid job.
    pub(super) fn salvaged(body: &str) -> Self {
        Self {
            request_id: job::salvage_request_id(body),
            ..Self::default()
        }
    }

    /// What the IAM step learnt: the owner IAM found, the keys concerned and changed,
    /// their last use, the session cut-off.
    pub(super) fn learn(&mut self, learnt: Learnt) {
        if learnt.account_id.is_some() {
            self.account_id = learnt.account_id;
        }
        if let Some(result) = learnt.result {
            if let Some(user) = result.user_name {
                self.user_name = Some(user);
            }
            if !result.access_key_ids.is_empty() {
                self.access_key_ids = result.access_key_ids;
            }
            self.keys_changed = result.keys_changed;
            if !result.last_used.is_empty() {
                self.last_used = result.last_used;
            }
            // One key's result is the job's own; several are listed one by one.
            if result.per_key.len() > 1 {
                self.keys = result.per_key;
            }
        }
        if !learnt.last_used.is_empty() {
            self.last_used = learnt.last_used;
        }
        if learnt.sessions.revoked_before.is_some() {
            self.sessions_revoked_before = learnt.sessions.revoked_before;
        }
        if learnt.sessions.covered.is_some() {
            self.sessions = learnt.sessions.covered;
        }
        if learnt.sessions.quarantine.is_some() {
            self.quarantine = learnt.sessions.quarantine;
        }
        if !learnt.sessions.scheduled_deletes.is_empty() {
            self.scheduled_deletes = learnt.sessions.scheduled_deletes;
        }
    }
}

/// What the IAM step learnt for the job's facts.
#[derive(Debug, Default)]
pub(super) struct Learnt {
    /// The account the job was worked in, when STS placed its key elsewhere.
    pub account_id: Option<String>,
    /// IAM's answer: owner, keys, changes, last use.
    result: Option<IamResult>,
    /// The keys' last use, where the job was handed on before any write.
    last_used: Vec<LastUsed>,
    sessions: SessionFacts,
}

impl Learnt {
    /// How many keys the step changed.
    pub(super) fn keys_changed(&self) -> usize {
        self.result.as_ref().map_or(0, |r| r.keys_changed)
    }

    pub(super) fn of(
        result: Option<IamResult>,
        last_used: Vec<LastUsed>,
        sessions: SessionFacts,
    ) -> Self {
        Self {
            account_id: None,
            result,
            last_used,
            sessions,
        }
    }
}
