//! The session cut-off after the key action (docs, "Revoking sessions"), and what its
//! failure means for the job.

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::iam::Iam;
use crate::aws::retry::RetryCounter;
use crate::aws::sessions::{InForce, Sessions, SESSIONS_COVERED};
use crate::metrics;
use crate::outcome::{Outcome, Reason};
use crate::worker::settle::Decision;
use crate::worker::Worker;
use aws_smithy_types::DateTime;

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

/// Which revocation a cut-off serves, and what it changed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cut<'a> {
    /// The job's request id: the cut-off records it (docs, "Revoking sessions").
    pub request_id: &'a str,
    pub keys_changed: usize,
    /// The users IAM tied to a key the job changed: the only ones the quota's fallback
    /// quarantines (docs, "Quarantine": a typo must not lock a colleague out).
    pub tied: &'a [String],
}

impl Worker {
    /// After the key action (also when the key was already absent, or when a job of
    /// several keys changed some and then failed): the session policy on each user whose
    /// key the job concerned (docs, "Revoking sessions"). The cut-off is the time of the
    /// revocation, rounded up to the second, plus `sessions.margin_seconds`. A user the
    /// protected list names, or who holds a protected key, never gets it. One user's
    /// failure never keeps the others from theirs: the first failure decides the job
    /// once every user has been tried.
    pub(super) async fn revoke_sessions(
        &self,
        iam: &Iam,
        users: &[String],
        decision: Decision,
        cut: Cut<'_>,
        retries: &RetryCounter,
    ) -> (Decision, SessionFacts) {
        let mut facts = SessionFacts::default();
        let now = DateTime::from_millis(metrics::now_ms() as i64);
        let margin = self.config.sessions.margin_seconds;
        let mut notes = Vec::new();
        let mut skipped = Vec::new();
        let mut failed: Option<Decision> = None;
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
                Err(e) => {
                    notes.push(format!("sessions of {user} NOT revoked: {e}"));
                    let failure = self.sessions_failure(e, &decision, cut.keys_changed);
                    failed.get_or_insert(failure);
                    continue;
                }
            }
            match iam
                .revoke_sessions(user, cut.request_id, now, margin, retries)
                .await
            {
                Ok(Sessions::InForce(in_force)) => {
                    let InForce {
                        at,
                        later,
                        impostors,
                        folded,
                    } = in_force;
                    if later {
                        notes.push(format!(
                            "sessions of {user} already revoked up to {at}, later than this revocation's cut-off"
                        ));
                    } else {
                        metrics::sessions_revoked();
                        notes.push(format!("sessions of {user} issued before {at} revoked"));
                    }
                    if !impostors.is_empty() {
                        metrics::impostor_cutoffs(impostors.len());
                        notes.push(format!(
                            "replaced on {user} what was named like a cut-off but was not the worker's: {}",
                            impostors.join("; ")
                        ));
                    }
                    if folded {
                        notes.push(format!(
                            "the cut-off on {user} was put without its record of revocations (IAM's inline policy quota left no room): a restore lifts it only with --force"
                        ));
                    }
                    facts.revoked_before = Some(at);
                    facts.covered = Some(SESSIONS_COVERED.to_owned());
                }
                Ok(Sessions::NoUser) => {
                    notes.push(format!("user {user} does not exist: no sessions to revoke"));
                }
                Err(e) if e.code.as_deref() == Some("LimitExceeded") => {
                    let tied = cut.tied.iter().any(|t| t.eq_ignore_ascii_case(user));
                    let (failure, quarantine) = self
                        .quota_full(iam, user, tied, e, &decision, cut.keys_changed, retries)
                        .await;
                    notes.push(format!(
                        "sessions of {user} NOT revoked: IAM's inline policy quota is full"
                    ));
                    facts.quarantine = Some(match facts.quarantine.take() {
                        Some(earlier) => format!("{earlier}; {quarantine}"),
                        None => quarantine,
                    });
                    failed.get_or_insert(failure);
                }
                Err(e) => {
                    notes.push(format!("sessions of {user} NOT revoked: {e}"));
                    let failure = self.sessions_failure(e, &decision, cut.keys_changed);
                    failed.get_or_insert(failure);
                }
            }
        }
        if !skipped.is_empty() {
            let why = format!("no cut-off: {}", skipped.join("; "));
            facts.covered = Some(match facts.covered.take() {
                Some(covered) => format!("{covered}; {why}"),
                None => why,
            });
        }
        let (outcome, detail) = match failed {
            Some(failed) => (failed.outcome, failed.detail),
            None => (decision.outcome, decision.detail),
        };
        let detail = match detail {
            Some(detail) => format!("{detail}; {}", notes.join("; ")),
            None => notes.join("; "),
        };
        (Decision::new(outcome, detail), facts)
    }

    /// IAM refused the cut-off for its quota even after the worker made what room it may
    /// (its own older cut-offs and impostors): the user's own policies fill the 2,048
    /// characters, possibly on purpose. Contained as far as IAM allows: the quarantine
    /// policy, which IAM enforces on the user's sessions too, attached instead (a managed
    /// policy; 10 per user by default). `rejected/policy_quota` pages, and a redrive once
    /// room is made puts the cut-off.
    #[allow(clippy::too_many_arguments)]
    async fn quota_full(
        &self,
        iam: &Iam,
        user: &str,
        tied: bool,
        e: AwsError,
        done: &Decision,
        keys_changed: usize,
        retries: &RetryCounter,
    ) -> (Decision, String) {
        if !tied {
            let detail = format!(
                "{} ({keys_changed} key(s) changed), but older sessions of {user} were not revoked: {e}. The user's inline policies fill IAM's quota of 2,048 characters per user; {user} is not quarantined instead, since IAM tied no key this job changed to them. Delete or shorten one of their inline policies (aws iam list-user-policies) and move this message back",
                done.outcome.as_str()
            );
            let note = format!("{user} not quarantined: IAM tied no key this job changed to them");
            return (
                Decision::new(Outcome::Rejected(Reason::PolicyQuota), detail),
                note,
            );
        }
        let Some(policy) = self.quarantine_policy().await else {
            let detail = format!(
                "{} ({keys_changed} key(s) changed), but older sessions were not revoked: {e}. The user's inline policies fill IAM's quota of 2,048 characters per user, and quarantine.policy_arn {} does not exist: NOTHING contains the sessions minted with the key; act now (delete or shorten one of the user's inline policies and move this message back)",
                done.outcome.as_str(),
                self.config.quarantine.policy_arn
            );
            let note = "not quarantined: quarantine.policy_arn does not exist".to_owned();
            return (
                Decision::new(Outcome::Rejected(Reason::PolicyQuota), detail),
                note,
            );
        };
        let name = policy.rsplit('/').next().unwrap_or(policy);
        let fallback = match iam.quarantine(user, policy, retries).await {
            Ok(()) => {
                metrics::quarantine(true);
                tracing::warn!(user_name = %user, policy_arn = %policy, "Session cut-off refused for IAM's quota: quarantine policy attached instead");
                format!(
                    "contained as far as IAM allows: {name} attached to {user} instead (IAM enforces it on the user's sessions too, but it denies a list of abuse-prone actions, not reads)"
                )
            }
            Err(attach) => {
                metrics::quarantine(false);
                tracing::error!(user_name = %user, policy_arn = %policy, error = %attach, "Neither the session cut-off nor the quarantine policy could be put");
                format!(
                    "the quarantine policy {name} could not be attached either ({attach}; a user has at most 10 managed policies by default): NOTHING contains the sessions minted with the key; act now (delete one of {user}'s inline or attached policies, or attach a Deny yourself)"
                )
            }
        };
        let detail = format!(
            "{} ({keys_changed} key(s) changed), but older sessions were not revoked: {e}. The user's inline policies fill IAM's quota of 2,048 characters per user; {fallback}. Delete or shorten one of them (aws iam list-user-policies) and move this message back",
            done.outcome.as_str()
        );
        (
            Decision::new(Outcome::Rejected(Reason::PolicyQuota), detail),
            fallback,
        )
    }

    /// The key action is done but the session policy could not be put. Transient and
    /// credential failures leave the job on the queue (its redelivery finds the key gone
    /// and puts the policy). A refusal dead-letters it with what was done, so that an
    /// operator who grants `iam:PutUserPolicy` can move it back.
    fn sessions_failure(&self, e: AwsError, done: &Decision, keys_changed: usize) -> Decision {
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
                    "{did}: {e}. The worker needs iam:ListUserPolicies, iam:PutUserPolicy, iam:DeleteUserPolicy and iam:GetUserPolicy to revoke sessions; grant them (docs, \"Revoking sessions\") and move this message back, or send jobs without revoke_sessions"
                ),
            ),
            _ => Decision::new(Outcome::Rejected(Reason::AwsError), format!("{did}: {e}")),
        }
    }
}
