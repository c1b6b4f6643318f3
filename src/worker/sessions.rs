//! The session cut-off after the key action (README, "Revoking sessions"), and what its
//! failure means for the job.

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::iam::Iam;
use crate::aws::retry::RetryCounter;
use crate::aws::sessions::{Sessions, SESSIONS_COVERED};
use crate::metrics;
use crate::outcome::{Outcome, Reason};
use crate::worker::settle::Decision;
use crate::worker::Worker;

/// What the steps after the key action came to, for the job's facts.
#[derive(Debug, Default)]
pub(super) struct SessionFacts {
    /// The cut-off in force (ISO 8601, UTC).
    pub revoked_before: Option<String>,
    /// What it covers, and for whom there is none and why.
    pub covered: Option<String>,
    /// What became of the quarantine policy, user by user.
    pub quarantine: Option<String>,
    /// The deletes a staged revocation scheduled.
    pub scheduled_deletes: Vec<crate::outcome::ScheduledDelete>,
}

impl Worker {
    /// After the key action (also when the key was already absent): the session policy
    /// on each user whose key the job concerned (README, "Revoking sessions"). The cut-off
    /// is the time of the revocation, rounded up to the second so that nothing minted
    /// before it escapes. A user the protected list names never gets it.
    pub(super) async fn revoke_sessions(
        &self,
        iam: &Iam,
        users: &[String],
        decision: Decision,
        keys_changed: usize,
        retries: &RetryCounter,
    ) -> (Decision, SessionFacts) {
        let mut facts = SessionFacts::default();
        let now_ms = metrics::now_ms();
        let before = aws_smithy_types::DateTime::from_secs(now_ms.div_ceil(1000) as i64);
        let mut notes = Vec::new();
        let mut skipped = Vec::new();
        for user in users {
            if self.protection.user(user) {
                notes.push(format!("user {user} is protected: sessions left alone"));
                skipped.push(format!("user {user} is protected"));
                continue;
            }
            // A cut-off would also end the sessions minted with the protected key.
            match iam.protected_key_of(user, retries).await {
                Ok(Some(key)) => {
                    notes.push(format!(
                        "user {user} holds protected access key {key}: sessions left alone, since a cut-off would end the sessions that key minted too"
                    ));
                    skipped.push(format!("user {user} holds protected access key {key}"));
                    continue;
                }
                Ok(None) => {}
                Err(e) => return (self.sessions_failure(e, decision, keys_changed), facts),
            }
            match iam.revoke_sessions(user, before, retries).await {
                Ok(Sessions::Revoked(at)) => {
                    metrics::sessions_revoked();
                    notes.push(format!("sessions of {user} issued before {at} revoked"));
                    facts.revoked_before = Some(at);
                    facts.covered = Some(SESSIONS_COVERED.to_owned());
                }
                Ok(Sessions::AlreadyLater(at)) => {
                    notes.push(format!(
                        "sessions of {user} already revoked up to {at}, later than now"
                    ));
                    facts.revoked_before = Some(at);
                    facts.covered = Some(SESSIONS_COVERED.to_owned());
                }
                Ok(Sessions::NoUser) => {
                    notes.push(format!("user {user} does not exist: no sessions to revoke"));
                }
                Err(e) => return (self.sessions_failure(e, decision, keys_changed), facts),
            }
        }
        if !skipped.is_empty() {
            let why = format!("no cut-off: {}", skipped.join("; "));
            facts.covered = Some(match facts.covered.take() {
                Some(covered) => format!("{covered}; {why}"),
                None => why,
            });
        }
        let detail = match decision.detail {
            Some(detail) => format!("{detail}; {}", notes.join("; ")),
            None => notes.join("; "),
        };
        (Decision::new(decision.outcome, detail), facts)
    }

    /// The key action is done but the session policy could not be put. Transient and
    /// credential failures leave the job on the queue (its redelivery finds the key gone
    /// and puts the policy). A refusal dead-letters it with what was done, so that an
    /// operator who grants `iam:PutUserPolicy` can move it back.
    fn sessions_failure(&self, e: AwsError, done: Decision, keys_changed: usize) -> Decision {
        let did = format!(
            "{} ({keys_changed} key(s) changed), but older sessions were not revoked",
            done.outcome.as_str()
        );
        match e.class {
            ErrorClass::Credentials | ErrorClass::Transient => {
                let mut decision = self.aws_failure(e, 0);
                decision.detail = Some(format!("{did}: {}", decision.detail.unwrap_or_default()));
                decision
            }
            _ if e.is_access_denied() => Decision::new(
                Outcome::Rejected(Reason::AccessDenied),
                format!(
                    "{did}: {e}. The worker needs iam:ListUserPolicies, iam:PutUserPolicy, iam:DeleteUserPolicy and iam:GetUserPolicy to revoke sessions; grant them (README, \"Revoking sessions\") and move this message back, or send jobs without revoke_sessions"
                ),
            ),
            // IAM and AWS STS quotas: a user's inline policies share 2,048 characters.
            _ if e.code.as_deref() == Some("LimitExceeded") => Decision::new(
                Outcome::Rejected(Reason::PolicyQuota),
                format!(
                    "{did}: {e}. The user's inline policies fill IAM's quota of 2,048 characters per user; delete or shorten one of them (aws iam list-user-policies) and move this message back"
                ),
            ),
            _ => Decision::new(Outcome::Rejected(Reason::AwsError), format!("{did}: {e}")),
        }
    }
}
