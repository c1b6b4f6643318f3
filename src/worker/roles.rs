//! A role's session cut-off (docs, "Role sessions"): a job naming `role_name`, or a
//! GuardDuty finding about a role session's temporary credentials. An `ASIA…` key cannot
//! be deleted; the sessions of the role issued before a time can be denied, as the IAM
//! console's "Revoke active sessions" does (IAM User Guide, "Revoking IAM role temporary
//! security credentials",
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_revoke-sessions.html>).
//! A finding's cut-off is narrowed to the session it names (`aws:userid` = its
//! `principalId`), so the role's other sessions keep working.
//!
//! Before any write: never a protected role or one the worker itself uses (its own, from
//! STS; the configured member and scheduler roles; every `iam-key-revoker*` role), the
//! role must exist, IAM must let it be changed (not service-linked, not Identity
//! Center's), and a finding's `principalId` must be a session of the role IAM knows
//! (`GetRole`'s `RoleId`): a role deleted and made again under the same name has another
//! id, and its sessions are not the finding's.

use aws_smithy_types::DateTime;

use crate::aws::classify::AwsError;
use crate::aws::holder::Holder;
use crate::aws::iam::Iam;
use crate::aws::retry::RetryCounter;
use crate::aws::sessions::{At, InForce, Sessions};
use crate::job::{Job, Target};
use crate::metrics;
use crate::outcome::{Outcome, Reason};
use crate::sessions::ROLE_SESSIONS_COVERED;
use crate::worker::sessions::SessionFacts;
use crate::worker::settle::Decision;
use crate::worker::Worker;

/// IAM's quota on a role's inline policies, all of them together ("IAM and AWS STS
/// quotas", IAM User Guide: role policy size, 10,240 characters).
const ROLE_POLICY_QUOTA: &str = "10,240 characters";

impl Worker {
    /// Cuts off the sessions of the role `job` names, in the account of `iam`.
    pub(super) async fn cut_off_role(
        &self,
        job: &Job,
        iam: &Iam,
        retries: &RetryCounter,
    ) -> (Decision, SessionFacts) {
        let Target::Role {
            role_name,
            session,
            every_session,
        } = &job.target
        else {
            let refused = "not a role job".to_owned();
            return (
                Decision::new(Outcome::Rejected(Reason::InvalidMessage), refused),
                SessionFacts::default(),
            );
        };
        let decided =
            |outcome, detail: String| (Decision::new(outcome, detail), SessionFacts::default());
        match self.own_role(job, role_name, retries).await {
            Ok(Some(refused)) => return decided(Outcome::Rejected(Reason::Protected), refused),
            Ok(None) => {}
            // Which role is the worker's own is not known: nothing is written.
            Err(e) => return decided_failure(self, e, role_name),
        }
        let role = match iam.role(role_name, retries).await {
            Ok(Some(role)) => role,
            // A finding names a session of a role IAM does not know: not the finding's.
            Ok(None) if session.is_some() => {
                return decided(
                    Outcome::Rejected(Reason::NotRevocable),
                    format!("the finding names role {role_name}, which does not exist: nothing to cut off; nothing done"),
                )
            }
            Ok(None) => {
                return decided(
                    Outcome::AlreadyAbsent,
                    format!("role {role_name} does not exist: no sessions to cut off"),
                )
            }
            Err(e) => return decided_failure(self, e, role_name),
        };
        if let Some(why) = role.unmodifiable() {
            return decided(
                Outcome::Rejected(Reason::NotRevocable),
                format!("role {role_name} is {why}: IAM will not put a policy on it; nothing done"),
            );
        }
        if let Some(session) = session {
            let id = session.split(':').next().unwrap_or_default();
            if id != role.role_id {
                return decided(
                    Outcome::Rejected(Reason::NotRevocable),
                    format!(
                        "the finding's principalId {session} is not a session of role {role_name} as IAM knows it (RoleId {}): the role was deleted and made again since, or the finding names another; nothing done",
                        role.role_id
                    ),
                );
            }
        }
        let scope = session.as_deref().filter(|_| !every_session);
        let at = At {
            request_id: &job.request_id,
            now: DateTime::from_millis(metrics::now_ms() as i64),
            margin_seconds: self.config.sessions.margin_seconds,
        };
        match iam
            .revoke_sessions_of(Holder::Role(role_name), scope, at, retries)
            .await
        {
            Ok(Sessions::InForce(in_force)) => role_cut(role_name, scope, in_force),
            Ok(Sessions::NoUser) => decided(
                Outcome::AlreadyAbsent,
                format!("role {role_name} was deleted meanwhile: no sessions to cut off"),
            ),
            Err(e) => decided_failure(self, e, role_name),
        }
    }

    /// Why the worker may not cut off `role` because it uses it itself: the role its own
    /// credentials are a session of (STS says which), in its own account. STS not
    /// answering is an error: the worker does not write on a role it cannot tell apart
    /// from its own.
    async fn own_role(
        &self,
        job: &Job,
        role: &str,
        retries: &RetryCounter,
    ) -> Result<Option<String>, AwsError> {
        let own = self.accounts.own_identity(retries).await?;
        let here = job.account_id.as_deref().is_none_or(|a| a == own.account);
        let mine = own
            .role
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(role));
        Ok((here && mine).then(|| {
            format!("role {role} is the worker's own: the worker never cuts off its own sessions")
        }))
    }
}

/// The cut-off in force: the job's outcome, its facts and what its detail says.
fn role_cut(role: &str, scope: Option<&str>, in_force: InForce) -> (Decision, SessionFacts) {
    let InForce {
        at,
        later,
        impostors,
        ..
    } = in_force;
    let mut notes = Vec::new();
    let whose = match scope {
        Some(session) => format!("session {session} of role {role}"),
        None => format!("every session of role {role}"),
    };
    if later {
        notes.push(format!(
            "{whose} already cut off up to {at}, later than this revocation's cut-off"
        ));
    } else {
        metrics::role_sessions_revoked(scope.is_some());
        notes.push(format!("{whose}: credentials issued before {at} denied"));
    }
    if scope.is_some() {
        notes.push(
            "the instance itself is denied too until EC2 rotates its credentials: its metadata service hands out the same ones until then (EC2 makes new credentials available at least five minutes before the old expire, which may be hours away), and only credentials issued after the cut-off work; isolate or replace the instance to end it sooner".to_owned(),
        );
    }
    if !impostors.is_empty() {
        metrics::impostor_cutoffs(impostors.len());
        notes.push(format!(
            "replaced on role {role} what was named like a cut-off but was not the worker's: {}",
            impostors.join("; ")
        ));
    }
    let facts = SessionFacts {
        revoked_before: Some(at),
        covered: Some(ROLE_SESSIONS_COVERED.to_owned()),
        ..SessionFacts::default()
    };
    (
        Decision::new(Outcome::SessionsRevoked, notes.join("; ")),
        facts,
    )
}

/// What an AWS failure of a role's cut-off means for the job.
fn decided_failure(worker: &Worker, e: AwsError, role: &str) -> (Decision, SessionFacts) {
    let decision = match e.code.as_deref() {
        Some("LimitExceeded") => Decision::new(
            Outcome::Rejected(Reason::PolicyQuota),
            format!(
                "role {role}'s sessions NOT cut off: {e}. The role's inline policies fill IAM's quota of {ROLE_POLICY_QUOTA}; NOTHING contains its sessions: delete or shorten one of its inline policies (aws iam list-role-policies) and move this message back"
            ),
        ),
        Some("UnmodifiableEntity") => Decision::new(
            Outcome::Rejected(Reason::NotRevocable),
            format!("role {role} cannot be changed in IAM: {e}; nothing done"),
        ),
        _ if e.is_access_denied() => Decision::new(
            Outcome::Rejected(Reason::AccessDenied),
            format!(
                "role {role}'s sessions NOT cut off: {e}. The worker needs iam:GetRole, iam:ListRolePolicies, iam:GetRolePolicy, iam:PutRolePolicy and iam:DeleteRolePolicy on the role: the stacks grant them when RevokeRoleSessions is true (docs, \"Role sessions\"); grant them and move this message back"
            ),
        ),
        _ => worker.aws_failure(e, 0),
    };
    (decision, SessionFacts::default())
}
