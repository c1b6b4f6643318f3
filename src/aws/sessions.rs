//! Cutting off the temporary credentials a leaked key minted (docs, "Revoking
//! sessions"): an inline user policy that denies everything to credentials issued before
//! a time T. Its document, its record of the revocations it serves and how an impostor is
//! told from it are in [`crate::sessions`]; this module reads and writes it in IAM.
//!
//! - **What it covers.** `aws:TokenIssueTime` is in the context of requests signed with
//!   temporary credentials only, so the Deny leaves the user's long-term keys alone and
//!   cuts off credentials from `GetSessionToken` and `GetFederationToken` issued before
//!   T. Sessions of *roles* assumed with the key are governed by the role's policies, not
//!   the user's: they are not covered (IAM User Guide, "Disabling permissions for
//!   temporary security credentials",
//!   <https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_disable-perms.html>:
//!   "It might take a few minutes for policy updates to take effect").
//! - **A margin.** IAM is eventually consistent (IAM User Guide, "Changes that I make are
//!   not always immediately visible"): a key deleted now may still mint a session for a
//!   moment, issued after the revocation. T is the revocation's time plus
//!   `sessions.margin_seconds`, so those are cut off too (and so are the user's own
//!   temporary credentials issued within the margin).
//! - **Never backwards, never early.** IAM has no conditional put, and two jobs for one
//!   user (two queues, two replicas) may interleave. A cut-off is named for its latest T;
//!   a writer merges the cut-offs in force into its own and removes only the ones it
//!   merged. T is not earlier than IAM's own clock, read from the `Date` of its answers.
//! - **Quota.** A user's inline policies share 2,048 characters (IAM User Guide, "IAM and
//!   AWS STS quotas"); IAM answers `LimitExceeded` when there is no room. The worker then
//!   removes impostors, puts the cut-off without its record, and at last replaces its
//!   older cut-offs; what still does not fit is the caller's to contain otherwise.

use aws_smithy_types::date_time::DateTime;

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::holder::Holder;
use crate::aws::iam::Iam;
use crate::aws::retry::RetryCounter;
use crate::sessions::{
    cutoff_policy, fmt, is_cutoff_name, latest, legacy_policy_name, policy_name, read_cutoff,
    revocation_sid, to_fold, Cutoff, FOLDED_SID, FUTURE_TOLERANCE_SECONDS, MAX_MARGIN_SECONDS,
};
pub use crate::sessions::{session_policy, SESSIONS_COVERED, SESSION_POLICY_NAME};

/// The name an earlier version gave the cut-off at `at` (one without a revocation).
pub fn session_policy_name(at: DateTime) -> String {
    legacy_policy_name(at)
}

/// Which revocation a cut-off serves and when: the request id it records, the time of the
/// revocation, and `sessions.margin_seconds`.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub request_id: &'a str,
    pub now: DateTime,
    pub margin_seconds: u32,
}

/// What cutting off a user's older sessions came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sessions {
    /// A cut-off is in force.
    InForce(InForce),
    /// No such user: nothing left to cut off.
    NoUser,
}

/// The cut-off in force after a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InForce {
    /// Credentials issued before this (ISO 8601, UTC) are denied.
    pub at: String,
    /// A later cut-off was in force already (this revocation's is put all the same, so
    /// that lifting the later one leaves it).
    pub later: bool,
    /// Policies with the worker's name that were not its cut-offs, each with why:
    /// replaced.
    pub impostors: Vec<String>,
    /// This revocation's cut-off was folded with older ones (IAM's quota left no room for
    /// one of its own): a restore lifts it only with `--force`.
    pub folded: bool,
}

/// What lifting a revocation's cut-off came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lift {
    /// Done: the cut-off policies removed, and the one left in force for other
    /// revocations, if any.
    Lifted {
        removed: Vec<String>,
        in_force: Option<String>,
        /// Policies with the worker's name that are not its cut-offs: left as they are.
        impostors: Vec<String>,
    },
    /// Not done, and why.
    Refused(String),
}

/// The policies with the worker's name on a user: its cut-offs and the impostors.
#[derive(Debug, Default)]
struct Found {
    cutoffs: Vec<Cutoff>,
    /// Name, and why it is not a cut-off of the worker's.
    impostors: Vec<(String, String)>,
    /// A role's cut-offs of other sessions that deny nothing any more: every credential
    /// issued before them has expired. Removed, so that a role's quota never fills with
    /// them.
    expired: Vec<String>,
}

impl Found {
    fn impostor_notes(&self) -> Vec<String> {
        self.impostors
            .iter()
            .map(|(name, why)| format!("{name} ({why})"))
            .collect()
    }
}

impl Iam {
    /// Cuts off `user`'s temporary credentials issued before `now` (or IAM's clock, when
    /// later) plus `margin_seconds`, for the revocation of `request_id`:
    /// `ListUserPolicies` and, for each policy with the worker's name, `GetUserPolicy`;
    /// then `PutUserPolicy` of this revocation's cut-off (unless it is in force already),
    /// and `DeleteUserPolicy` of its own older one and of impostors. Past
    /// [`crate::sessions::RECORDED_MAX`] revocations, the oldest are folded into one.
    pub async fn revoke_sessions(
        &self,
        user: &str,
        request_id: &str,
        now: DateTime,
        margin_seconds: u32,
        retries: &RetryCounter,
    ) -> Result<Sessions, AwsError> {
        let at = At {
            request_id,
            now,
            margin_seconds,
        };
        self.revoke_sessions_of(Holder::User(user), None, at, retries)
            .await
    }

    /// [`Iam::revoke_sessions`] on `holder`, a user or a role (docs, "Role sessions"),
    /// narrowed to the role session `scope` when there is one: only the holder's cut-offs
    /// of the same scope are merged, folded or replaced; another session's stay as they are.
    pub async fn revoke_sessions_of(
        &self,
        holder: Holder<'_>,
        scope: Option<&str>,
        at: At<'_>,
        retries: &RetryCounter,
    ) -> Result<Sessions, AwsError> {
        let At {
            request_id,
            now,
            margin_seconds,
        } = at;
        let user = holder.name();
        let _turn = self.session_turns.take(&holder.turn()).await;
        let Some(names) = self.policy_names(holder, retries).await? else {
            return Ok(Sessions::NoUser);
        };
        let before = self.cutoff_time(now, margin_seconds);
        let found = self
            .read_cutoffs(holder, scope, &names, self.latest_allowed(now), retries)
            .await?;
        for name in &found.expired {
            if let Err(e) = self.delete_inline_policy(holder, name, retries).await {
                tracing::warn!(error = %e, holder = holder.name(), policy = %name, "Could not remove an expired session cut-off");
            }
        }
        let sid = revocation_sid(request_id);
        let own = found
            .cutoffs
            .iter()
            .filter(|c| c.sid.as_deref() == Some(sid.as_str()))
            .max_by_key(|c| c.before.secs());
        let mut gone: Vec<String> = Vec::new();
        let mut folded = false;
        let mine = match own {
            // A redelivery: this revocation's cut-off is in force, at its time or later.
            Some(own) if own.before.secs() >= before.secs() => own.clone(),
            _ => {
                let name = policy_name(before, &sid);
                let put = self.put_cutoff(holder, &name, &sid, before, scope, retries);
                match put.await {
                    Ok(()) => Cutoff {
                        name,
                        sid: Some(sid.clone()),
                        before,
                        scope: scope.map(str::to_owned),
                    },
                    Err(e) if e.class == ErrorClass::NotFound => return Ok(Sessions::NoUser),
                    Err(e) if e.code.as_deref() == Some("LimitExceeded") => {
                        let put = self
                            .make_room(
                                holder,
                                Cutoff {
                                    name,
                                    sid: Some(sid.clone()),
                                    before,
                                    scope: scope.map(str::to_owned),
                                },
                                &found,
                                &mut gone,
                                e,
                                retries,
                            )
                            .await?;
                        folded = put.sid.is_none();
                        put
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        // This revocation's older cut-off, and what was not the worker's.
        let stale = found
            .cutoffs
            .iter()
            .filter(|c| c.sid == mine.sid && c.sid.is_some() && c.name != mine.name)
            .map(|c| &c.name)
            .chain(found.impostors.iter().map(|(n, _)| n))
            .filter(|n| **n != mine.name && !gone.contains(n))
            .cloned()
            .collect::<Vec<_>>();
        for name in &stale {
            if let Err(e) = self.delete_inline_policy(holder, name, retries).await {
                tracing::warn!(error = %e, user, policy = %name, "Could not remove a policy with the worker's name; the cut-off just put is in force");
            }
        }
        for (impostor, why) in &found.impostors {
            tracing::warn!(user, policy = %impostor, why = %why, "A policy named like a session cut-off was not the worker's: replaced");
        }
        let mut left: Vec<Cutoff> = found
            .cutoffs
            .iter()
            .filter(|c| !stale.contains(&c.name) && !gone.contains(&c.name) && c.name != mine.name)
            .cloned()
            .collect();
        left.push(mine.clone());
        // A role session's cut-offs are never folded: each is narrowed to its session.
        if !folded && scope.is_none() {
            self.fold(holder, &left, &sid, retries).await;
        }
        let at = latest(&left).map_or(before, |c| c.before);
        Ok(Sessions::InForce(InForce {
            at: fmt(at),
            later: at.secs() > mine.before.secs(),
            impostors: found.impostor_notes(),
            folded,
        }))
    }

    /// Keeps at most [`crate::sessions::RECORDED_MAX`] revocations' cut-offs on a user:
    /// the older ones (never `keep`'s) become one folded cut-off at their latest time, put
    /// before they are removed. A failure leaves them as they are (they still cut off).
    async fn fold(
        &self,
        holder: Holder<'_>,
        cutoffs: &[Cutoff],
        keep: &str,
        retries: &RetryCounter,
    ) {
        let user = holder.name();
        let older = to_fold(cutoffs, keep);
        let Some(at) = older.iter().map(|c| c.before).max_by_key(DateTime::secs) else {
            return;
        };
        let name = policy_name(at, FOLDED_SID);
        if let Err(e) = self
            .put_cutoff(holder, &name, FOLDED_SID, at, None, retries)
            .await
        {
            tracing::warn!(error = %e, user, "Could not fold older session cut-offs; they stay in force");
            return;
        }
        for cutoff in older.iter().filter(|c| c.name != name) {
            if let Err(e) = self
                .delete_inline_policy(holder, &cutoff.name, retries)
                .await
            {
                tracing::warn!(error = %e, user, policy = %cutoff.name, "Could not remove a folded session cut-off");
            }
        }
    }

    /// IAM refused the cut-off for its quota: room is made, step by step, and a cut-off
    /// put again; returns what was put. Removed are, in turn, the impostors (never the
    /// user's own policies); then the worker's cut-offs, one at a time from the earliest,
    /// until one cut-off at the latest time of them all fits (put back when it never
    /// does).
    #[allow(clippy::too_many_arguments)]
    async fn make_room(
        &self,
        holder: Holder<'_>,
        wanted: Cutoff,
        found: &Found,
        gone: &mut Vec<String>,
        refused: AwsError,
        retries: &RetryCounter,
    ) -> Result<Cutoff, AwsError> {
        let sid = wanted.sid.clone().unwrap_or_else(|| FOLDED_SID.to_owned());
        let scope = wanted.scope.clone();
        if !found.impostors.is_empty() {
            for (impostor, _) in &found.impostors {
                self.delete_inline_policy(holder, impostor, retries).await?;
                gone.push(impostor.clone());
            }
            let put = self.put_cutoff(
                holder,
                &wanted.name,
                &sid,
                wanted.before,
                scope.as_deref(),
                retries,
            );
            match put.await {
                Ok(()) => return Ok(wanted),
                Err(e) if e.code.as_deref() == Some("LimitExceeded") => {}
                Err(e) => return Err(e),
            }
        }
        // The worker's cut-offs give way, one at a time and the earliest first, to one
        // that covers them all: the latest stays in force until the very last step. A
        // role session's are never folded: the quota stays refused.
        if found.cutoffs.is_empty() || scope.is_some() {
            return Err(refused);
        }
        let at = found
            .cutoffs
            .iter()
            .map(|c| c.before)
            .chain([wanted.before])
            .max_by_key(DateTime::secs)
            .unwrap_or(wanted.before);
        let name = policy_name(at, FOLDED_SID);
        let mut earliest_first: Vec<&Cutoff> = found.cutoffs.iter().collect();
        earliest_first.sort_by_key(|c| c.before.secs());
        let mut deleted: Vec<&Cutoff> = Vec::new();
        let mut last = refused;
        for cutoff in earliest_first {
            if let Err(e) = self
                .delete_inline_policy(holder, &cutoff.name, retries)
                .await
            {
                last = e;
                break;
            }
            gone.push(cutoff.name.clone());
            deleted.push(cutoff);
            match self
                .put_cutoff(holder, &name, FOLDED_SID, at, None, retries)
                .await
            {
                Ok(()) => {
                    return Ok(Cutoff {
                        name,
                        sid: None,
                        before: at,
                        scope: None,
                    })
                }
                Err(e) if e.code.as_deref() == Some("LimitExceeded") => last = e,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        // Nothing fitted: what was deleted goes back.
        for cutoff in deleted {
            let sid = cutoff.sid.as_deref().unwrap_or(FOLDED_SID);
            let back = self
                .put_cutoff(holder, &cutoff.name, sid, cutoff.before, None, retries)
                .await;
            match back {
                Ok(()) => gone.retain(|g| g != &cutoff.name),
                Err(back) => {
                    tracing::error!(holder = holder.name(), policy = %cutoff.name, error = %back, "Could not put back a session cut-off")
                }
            }
        }
        Err(last)
    }

    /// Lifts the cut-off of the revocation whose Sid is `revocation`
    /// ([`crate::sessions::revocation_sid`]) from `user` (`restore --lift-session-cutoff`;
    /// docs, "Staged revocation"): its policy is deleted, and the latest cut-off another
    /// revocation needs stays in force. Refused when the cut-offs in force do not record
    /// it (put by earlier versions, or folded with older ones) or when the revocation is
    /// not known, unless `force`: then every cut-off of the worker's on the user goes.
    /// Only `ListUserPolicies`, `GetUserPolicy` and `DeleteUserPolicy`: lifting needs no
    /// right to write a policy.
    pub async fn lift_session_cutoff(
        &self,
        user: &str,
        revocation: Option<&str>,
        force: bool,
        now: DateTime,
        retries: &RetryCounter,
    ) -> Result<Lift, AwsError> {
        let _turn = self.session_turns.take(&Holder::User(user).turn()).await;
        let found = self.found_on(user, now, retries).await?;
        let impostors = found.impostor_notes();
        let lifted: Vec<&Cutoff> = match (revocation, force) {
            (_, true) => found.cutoffs.iter().collect(),
            _ if found.cutoffs.is_empty() => Vec::new(),
            (None, false) => {
                let all: Vec<&str> = found.cutoffs.iter().map(|c| c.name.as_str()).collect();
                return Ok(Lift::Refused(format!(
                    "which revocation's cut-off to lift is not known (no staged delete names it): give --request-id of the job that revoked the key, or --force to lift every cut-off on {user} ({})",
                    all.join(", ")
                )));
            }
            (Some(sid), false) => {
                let mine: Vec<&Cutoff> = found
                    .cutoffs
                    .iter()
                    .filter(|c| c.sid.as_deref() == Some(sid))
                    .collect();
                if mine.is_empty() && found.cutoffs.iter().any(|c| c.sid.is_none()) {
                    return Ok(Lift::Refused(format!(
                        "the cut-offs on {user} do not record this revocation ({sid}) one by one (put by an earlier version, or folded with older revocations): lifting them could reopen another incident; --force lifts every cut-off on the user"
                    )));
                }
                mine
            }
        };
        let mut removed = Vec::new();
        for cutoff in &lifted {
            self.delete_inline_policy(Holder::User(user), &cutoff.name, retries)
                .await?;
            removed.push(cutoff.name.clone());
        }
        let left: Vec<Cutoff> = found
            .cutoffs
            .iter()
            .filter(|c| !removed.contains(&c.name))
            .cloned()
            .collect();
        Ok(Lift::Lifted {
            removed,
            in_force: latest(&left).map(|c| c.name.clone()),
            impostors,
        })
    }

    /// The worker's cut-offs on `user` that serve another revocation than `revocation`
    /// (folded ones and those of earlier versions included): while one stays, another
    /// incident may need what a restore would lift. Reads only.
    pub async fn other_cutoffs(
        &self,
        user: &str,
        revocation: Option<&str>,
        now: DateTime,
        retries: &RetryCounter,
    ) -> Result<Vec<String>, AwsError> {
        let found = self.found_on(user, now, retries).await?;
        Ok(found
            .cutoffs
            .into_iter()
            .filter(|c| c.sid.is_none() || c.sid.as_deref() != revocation)
            .map(|c| c.name)
            .collect())
    }

    /// What the worker's name is on among `user`'s policies, at `now` (none for a user
    /// that does not exist).
    async fn found_on(
        &self,
        user: &str,
        now: DateTime,
        retries: &RetryCounter,
    ) -> Result<Found, AwsError> {
        let holder = Holder::User(user);
        let names = self
            .policy_names(holder, retries)
            .await?
            .unwrap_or_default();
        self.read_cutoffs(holder, None, &names, self.latest_allowed(now), retries)
            .await
    }

    /// The latest time a cut-off of the worker's can carry: IAM's clock plus the largest
    /// margin allowed plus the replicas' tolerance (`crate::sessions`, "Impostors").
    fn latest_allowed(&self, now: DateTime) -> DateTime {
        let at = self.cutoff_time(now, MAX_MARGIN_SECONDS);
        DateTime::from_secs(at.secs() + FUTURE_TOLERANCE_SECONDS)
    }

    /// T for a cut-off at `now`: IAM's clock when later, to the second up, plus the
    /// margin.
    fn cutoff_time(&self, now: DateTime, margin_seconds: u32) -> DateTime {
        let now = self.clock.at_least(now);
        let up = now.secs() + i64::from(now.subsec_nanos() > 0);
        DateTime::from_secs(up + i64::from(margin_seconds))
    }

    /// Reads each policy of `names` with the worker's name: a cut-off of the worker's
    /// of `scope`, or an impostor (docs, "Revoking sessions"). On a role, another
    /// session's cut-off is left out, as it is; on a user, a narrowed cut-off is an
    /// impostor (the worker never narrows a user's).
    async fn read_cutoffs(
        &self,
        holder: Holder<'_>,
        scope: Option<&str>,
        names: &[String],
        allowed: DateTime,
        retries: &RetryCounter,
    ) -> Result<Found, AwsError> {
        let mut found = Found::default();
        let expired_before = allowed.secs()
            - crate::sessions::LONGEST_SESSION_SECONDS
            - 2 * i64::from(MAX_MARGIN_SECONDS)
            - FUTURE_TOLERANCE_SECONDS;
        for name in names.iter().filter(|n| is_cutoff_name(n)) {
            let Some(document) = self.inline_policy(holder, name, retries).await? else {
                continue;
            };
            match read_cutoff(name, &document, allowed) {
                Ok(cutoff) if cutoff.scope.as_deref() == scope => found.cutoffs.push(cutoff),
                Ok(cutoff) if matches!(holder, Holder::Role(_)) => {
                    if cutoff.before.secs() < expired_before {
                        found.expired.push(name.clone());
                    }
                }
                Ok(_) => found.impostors.push((
                    name.clone(),
                    "it is narrowed to one session, which the worker never puts on a user"
                        .to_owned(),
                )),
                Err(why) => found.impostors.push((name.clone(), why)),
            }
        }
        Ok(found)
    }

    async fn put_cutoff(
        &self,
        holder: Holder<'_>,
        name: &str,
        sid: &str,
        before: DateTime,
        scope: Option<&str>,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        let document = cutoff_policy(sid, before, scope);
        self.put_inline_policy(holder, name, &document, retries)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_iam::Client;
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use std::sync::{Arc, Mutex};

    const DATE: &str = "Fri, 15 Jan 2027 08:00:00 GMT";
    /// 2027-01-15T08:00:00Z, IAM's and the worker's clock in these tests.
    const NOW: i64 = 1_800_000_000;

    fn iam(rules: &[&Rule]) -> Iam {
        let client = mock_client!(aws_sdk_iam, RuleMode::MatchAny, rules, |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        Iam::for_tests(client)
    }

    impl Iam {
        /// `revoke_sessions` at `NOW` with a margin of 300 seconds.
        async fn cut_off(&self, user: &str, request_id: &str) -> Result<Sessions, AwsError> {
            let now = DateTime::from_secs(NOW);
            self.revoke_sessions(user, request_id, now, 300, &RetryCounter::default())
                .await
        }
    }

    /// An IAM query-protocol answer, as IAM sends it, with IAM's `Date`.
    fn answer(status: u16, operation: &str, result: &str, date: &str) -> HttpResponse {
        let body = if status == 200 {
            format!(
                "<{operation}Response xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><{operation}Result>{result}</{operation}Result><ResponseMetadata><RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ResponseMetadata></{operation}Response>"
            )
        } else {
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{result}</Code><Message>Cannot exceed quota for UserPolicySize: 2048</Message></Error><RequestId>1</RequestId></ErrorResponse>"
            )
        };
        let mut response =
            HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
        response.headers_mut().insert("date", date.to_owned());
        response
    }

    /// `ListUserPolicies` naming `names`.
    fn listing(names: Vec<String>) -> Rule {
        mock!(Client::list_user_policies).then_http_response(move || {
            let members: String = names
                .iter()
                .map(|n| format!("<member>{n}</member>"))
                .collect();
            answer(
                200,
                "ListUserPolicies",
                &format!("<PolicyNames>{members}</PolicyNames><IsTruncated>false</IsTruncated>"),
                DATE,
            )
        })
    }

    /// `GetUserPolicy` answering `documents` by name, URL-encoded as IAM returns them.
    fn documents(documents: Vec<(String, String)>) -> Rule {
        let asked = Arc::new(Mutex::new(String::new()));
        let seen = Arc::clone(&asked);
        mock!(Client::get_user_policy)
            .match_requests(move |r| {
                *seen.lock().unwrap() = r.policy_name().unwrap_or_default().to_owned();
                true
            })
            .then_http_response(move || {
                let name = asked.lock().unwrap().clone();
                let document = documents
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, d)| d.clone())
                    .unwrap_or_default();
                let encoded = percent_encoding::utf8_percent_encode(
                    &document,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                answer(
                    200,
                    "GetUserPolicy",
                    &format!("<UserName>alice</UserName><PolicyName>{name}</PolicyName><PolicyDocument>{encoded}</PolicyDocument>"),
                    DATE,
                )
            })
    }

    /// What each `PutUserPolicy` put: (name, document).
    type Put = Arc<Mutex<Vec<(String, String)>>>;

    /// `PutUserPolicy` answering `status` (refusing with `LimitExceeded` otherwise), and
    /// what each call put.
    fn puts(statuses: Vec<u16>) -> (Rule, Put) {
        let put = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&put);
        let calls = Arc::new(Mutex::new(0usize));
        let rule = mock!(Client::put_user_policy)
            .match_requests(move |r| {
                seen.lock().unwrap().push((
                    r.policy_name().unwrap_or_default().to_owned(),
                    r.policy_document().unwrap_or_default().to_owned(),
                ));
                true
            })
            .then_http_response(move || {
                let mut n = calls.lock().unwrap();
                let status = statuses.get(*n).copied().unwrap_or(200);
                *n += 1;
                match status {
                    200 => answer(200, "PutUserPolicy", "", DATE),
                    _ => answer(409, "PutUserPolicy", "LimitExceeded", DATE),
                }
            });
        (rule, put)
    }

    /// `DeleteUserPolicy`, and the names deleted.
    fn deletes() -> (Rule, Arc<Mutex<Vec<String>>>) {
        let deleted = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&deleted);
        let rule = mock!(Client::delete_user_policy)
            .match_requests(move |r| {
                seen.lock()
                    .unwrap()
                    .push(r.policy_name().unwrap_or_default().to_owned());
                true
            })
            .then_http_response(|| answer(200, "DeleteUserPolicy", "", DATE));
        (rule, deleted)
    }

    /// A user holding the worker's cut-offs of these revocations at these times: their
    /// names, and IAM's `ListUserPolicies` and `GetUserPolicy` for them.
    fn held(cutoffs: &[(&str, i64)]) -> (Vec<String>, Rule, Rule) {
        let held: Vec<(String, String)> = cutoffs
            .iter()
            .map(|(request, secs)| {
                let (sid, at) = (revocation_sid(request), DateTime::from_secs(*secs));
                (policy_name(at, &sid), cutoff_policy(&sid, at, None))
            })
            .collect();
        let names: Vec<String> = held.iter().map(|(n, _)| n.clone()).collect();
        (names.clone(), listing(names), documents(held))
    }

    /// The cut-off a document the worker put denies: its Sid and time.
    fn read(document: &str) -> (String, String) {
        let value: serde_json::Value = serde_json::from_str(document).unwrap();
        let statement = &value["Statement"][0];
        (
            statement["Sid"].as_str().unwrap().to_owned(),
            statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    }

    fn at(secs: i64) -> String {
        fmt(DateTime::from_secs(secs))
    }

    /// The worker's clock is a minute behind IAM's: the cut-off is IAM's time (the second
    /// after its `Date`) plus the margin, not the worker's.
    #[tokio::test]
    async fn the_cutoff_is_iams_clock_plus_the_margin() {
        let list = mock!(Client::list_user_policies).then_http_response(|| {
            answer(
                200,
                "ListUserPolicies",
                "<PolicyNames/><IsTruncated>false</IsTruncated>",
                "Fri, 15 Jan 2027 08:01:00 GMT",
            )
        });
        let (put, put_docs) = puts(vec![200]);
        let sessions = iam(&[&list, &put]).cut_off("alice", "r-1").await.unwrap();
        let Sessions::InForce(in_force) = sessions else {
            panic!("{sessions:?}")
        };
        assert_eq!(in_force.at, "2027-01-15T08:06:01Z");
        assert!(!in_force.later && in_force.impostors.is_empty() && !in_force.folded);
        let put = put_docs.lock().unwrap().clone();
        assert_eq!(put.len(), 1);
        let sid = revocation_sid("r-1");
        assert_eq!(
            put[0].0,
            format!("iam-key-revoker-revoke-older-sessions-20270115T080601Z-{sid}")
        );
        assert_eq!(read(&put[0].1), (sid, at(NOW + 361)));
    }

    /// A later cut-off of another revocation stays the time in force, and this
    /// revocation gets its own all the same, so that lifting the other leaves this one's.
    #[tokio::test]
    async fn a_later_cutoff_in_force_stays_and_this_revocation_gets_its_own() {
        let other = revocation_sid("other");
        let later = DateTime::from_secs(NOW + 400);
        let name = policy_name(later, &other);
        let list = listing(vec!["Other".into(), name.clone()]);
        let get = documents(vec![(name.clone(), cutoff_policy(&other, later, None))]);
        let (put, put_docs) = puts(vec![200]);
        let (delete, deleted) = deletes();
        let sessions = iam(&[&list, &get, &put, &delete])
            .cut_off("alice", "r-2")
            .await
            .unwrap();
        let Sessions::InForce(in_force) = sessions else {
            panic!("{sessions:?}")
        };
        assert_eq!(in_force.at, fmt(later));
        assert!(in_force.later);
        let put = put_docs.lock().unwrap().clone();
        assert_eq!(put.len(), 1);
        assert_eq!(read(&put[0].1), (revocation_sid("r-2"), at(NOW + 301)));
        assert!(
            deleted.lock().unwrap().is_empty(),
            "the other revocation's and the user's own stay"
        );

        // A redelivery of r-2 finds its cut-off in force: nothing is put.
        let own = policy_name(DateTime::from_secs(NOW + 301), &revocation_sid("r-2"));
        let list = listing(vec![name.clone(), own.clone()]);
        let get = documents(vec![
            (name.clone(), cutoff_policy(&other, later, None)),
            (
                own,
                cutoff_policy(&revocation_sid("r-2"), DateTime::from_secs(NOW + 301), None),
            ),
        ]);
        let (put, put_docs) = puts(vec![200]);
        iam(&[&list, &get, &put])
            .revoke_sessions(
                "alice",
                "r-2",
                DateTime::from_secs(NOW - 10),
                300,
                &RetryCounter::default(),
            )
            .await
            .unwrap();
        assert!(put_docs.lock().unwrap().is_empty());
    }

    /// The key's holder planted a policy with the worker's name, a harmless document and
    /// a time in 2099, hoping every later revocation takes it for a cut-off in force: it
    /// is replaced by a real one and reported.
    #[tokio::test]
    async fn a_planted_cutoff_is_replaced_and_reported() {
        let far = DateTime::from_secs(4_102_444_799); // 2099-12-31T23:59:59Z
        let sid = revocation_sid("x");
        let harmless = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:GetCallerIdentity","Resource":"*"}]}"#;
        for (planted, document) in [
            (legacy_policy_name(far), harmless.to_owned()),
            (SESSION_POLICY_NAME.to_owned(), harmless.to_owned()),
            // A time far ahead in the worker's exact shape is an impostor too.
            (policy_name(far, &sid), cutoff_policy(&sid, far, None)),
        ] {
            let list = listing(vec![planted.clone()]);
            let get = documents(vec![(planted.clone(), document)]);
            let (put, put_docs) = puts(vec![200]);
            let (delete, deleted) = deletes();
            let sessions = iam(&[&list, &get, &put, &delete])
                .cut_off("alice", "r-3")
                .await
                .unwrap();
            let Sessions::InForce(in_force) = sessions else {
                panic!("{sessions:?}")
            };
            assert_eq!(in_force.at, "2027-01-15T08:05:01Z", "{planted}");
            assert!(!in_force.later);
            assert_eq!(in_force.impostors.len(), 1);
            assert!(
                in_force.impostors[0].contains(&planted),
                "{:?}",
                in_force.impostors
            );
            let put = put_docs.lock().unwrap().clone();
            assert_eq!(read(&put[0].1), (revocation_sid("r-3"), at(NOW + 301)));
            assert_eq!(deleted.lock().unwrap().clone(), vec![planted.clone()]);
        }
    }

    /// IAM refuses the cut-off for its quota: the impostors the holder planted go first,
    /// then the worker's own cut-offs fold into one, before the caller is told.
    #[tokio::test]
    async fn a_full_quota_makes_room_from_impostors_then_folds_the_cutoffs() {
        let planted = legacy_policy_name(DateTime::from_secs(4_102_444_799));
        let list = listing(vec![planted.clone()]);
        let get = documents(vec![(planted.clone(), "{}".to_owned())]);
        // Refused, then accepted once the impostor is gone.
        let (put, put_docs) = puts(vec![409, 200]);
        let (delete, deleted) = deletes();
        let sessions = iam(&[&list, &get, &put, &delete])
            .cut_off("alice", "r-4")
            .await
            .unwrap();
        assert!(
            matches!(&sessions, Sessions::InForce(f) if !f.folded),
            "{sessions:?}"
        );
        assert_eq!(deleted.lock().unwrap().clone(), vec![planted.clone()]);
        assert_eq!(put_docs.lock().unwrap().len(), 2);

        // No impostor, an older cut-off: both fold into one at the latest time. Two
        // older ones: the earliest gives way first, and once the folded one fits the later
        // stays (never a moment without a cut-off in force).
        let cases: [(&[(&str, i64)], usize); 2] = [
            (&[("old", NOW - 60)], 0),
            (&[("late", NOW - 60), ("early", NOW - 600)], 1),
        ];
        for (cutoffs, gives_way) in cases {
            let (names, list, get) = held(cutoffs);
            let (put, put_docs) = puts(vec![409, 200]);
            let (delete, deleted) = deletes();
            let sessions = iam(&[&list, &get, &put, &delete])
                .cut_off("alice", "r-5")
                .await
                .unwrap();
            assert!(
                matches!(&sessions, Sessions::InForce(f) if f.folded),
                "{sessions:?}"
            );
            let put = put_docs.lock().unwrap().clone();
            assert_eq!(read(&put[1].1), (FOLDED_SID.to_owned(), at(NOW + 301)));
            assert_eq!(
                deleted.lock().unwrap().clone(),
                vec![names[gives_way].clone()]
            );
        }

        // Even with both gone nothing fits: both are put back.
        let (names, list, get) = held(&[("late", NOW - 60), ("early", NOW - 600)]);
        let (late, early) = (names[0].clone(), names[1].clone());
        let (put, put_docs) = puts(vec![409, 409, 409, 200, 200]);
        let (delete, deleted) = deletes();
        let refused = iam(&[&list, &get, &put, &delete])
            .cut_off("alice", "r-8")
            .await
            .unwrap_err();
        assert_eq!(refused.code.as_deref(), Some("LimitExceeded"));
        assert_eq!(
            deleted.lock().unwrap().clone(),
            vec![early.clone(), late.clone()]
        );
        let put_back: Vec<String> = put_docs.lock().unwrap()[3..]
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        assert_eq!(put_back, vec![early, late]);

        // Refused whatever is done: the caller's to contain otherwise.
        let list = listing(Vec::new());
        let (put, _) = puts(vec![409, 409, 409]);
        let refused = iam(&[&list, &put])
            .cut_off("alice", "r-6")
            .await
            .unwrap_err();
        assert_eq!(refused.code.as_deref(), Some("LimitExceeded"));
    }

    /// Two revocations of one user: lifting the first (a restore) leaves the second's
    /// cut-off in force, and the reverse; nothing is put. The cut-offs of earlier versions
    /// record no revocation, and are lifted only with force.
    #[tokio::test]
    async fn a_lift_deletes_only_its_revocations_cutoff() {
        let (staged, incident) = (revocation_sid("staged"), revocation_sid("incident"));
        let first = policy_name(DateTime::from_secs(NOW - 86_400), &staged);
        let second = policy_name(DateTime::from_secs(NOW - 3_600), &incident);
        let list = listing(vec![first.clone(), second.clone()]);
        let get = documents(vec![
            (
                first.clone(),
                cutoff_policy(&staged, DateTime::from_secs(NOW - 86_400), None),
            ),
            (
                second.clone(),
                cutoff_policy(&incident, DateTime::from_secs(NOW - 3_600), None),
            ),
        ]);
        for (lift, removed, kept) in [(&staged, &first, &second), (&incident, &second, &first)] {
            let (put, put_docs) = puts(vec![200]);
            let (delete, deleted) = deletes();
            let result = iam(&[&list, &get, &put, &delete])
                .lift_session_cutoff(
                    "alice",
                    Some(lift),
                    false,
                    DateTime::from_secs(NOW),
                    &RetryCounter::default(),
                )
                .await
                .unwrap();
            assert_eq!(
                result,
                Lift::Lifted {
                    removed: vec![removed.clone()],
                    in_force: Some(kept.clone()),
                    impostors: Vec::new()
                }
            );
            assert!(
                put_docs.lock().unwrap().is_empty(),
                "a lift writes no policy"
            );
            assert_eq!(deleted.lock().unwrap().clone(), vec![removed.clone()]);
        }

        // An earlier version's cut-off: no record, refused without force.
        let old = legacy_policy_name(DateTime::from_secs(NOW - 600));
        let list = listing(vec![old.clone()]);
        let get = documents(vec![(old.clone(), session_policy(&at(NOW - 600)))]);
        let (delete, deleted) = deletes();
        let lift = iam(&[&list, &get, &delete])
            .lift_session_cutoff(
                "alice",
                Some(&staged),
                false,
                DateTime::from_secs(NOW),
                &RetryCounter::default(),
            )
            .await
            .unwrap();
        assert!(
            matches!(lift, Lift::Refused(ref why) if why.contains("--force")),
            "{lift:?}"
        );
        assert!(deleted.lock().unwrap().is_empty());
        let lift = iam(&[&list, &get, &delete])
            .lift_session_cutoff(
                "alice",
                None,
                true,
                DateTime::from_secs(NOW),
                &RetryCounter::default(),
            )
            .await
            .unwrap();
        assert!(matches!(lift, Lift::Lifted { ref removed, .. } if *removed == vec![old.clone()]));
    }

    /// A role's inline policies are full (IAM's 10,240 characters): a session's cut-off
    /// that does not fit is refused as it is. Never folded: the other session's cut-off,
    /// narrowed to its own session, is neither removed nor widened.
    #[tokio::test]
    async fn a_role_sessions_cutoff_that_does_not_fit_is_refused_and_touches_no_other() {
        let other = "AROAEXAMPLEID1234567:i-0fedcba9876543210";
        let mine = "AROAEXAMPLEID1234567:i-0123456789abcdef0";
        let sid = revocation_sid("aws.guardduty:f-other");
        let at = DateTime::from_secs(NOW - 3_600);
        let held = policy_name(at, &sid);
        let document = cutoff_policy(&sid, at, Some(other));
        let names = held.clone();
        let list = mock!(Client::list_role_policies).then_http_response(move || {
            answer(
                200,
                "ListRolePolicies",
                &format!("<PolicyNames><member>{names}</member></PolicyNames><IsTruncated>false</IsTruncated>"),
                DATE,
            )
        });
        let get = mock!(Client::get_role_policy).then_http_response(move || {
            let encoded = percent_encoding::utf8_percent_encode(
                &document,
                percent_encoding::NON_ALPHANUMERIC,
            );
            answer(
                200,
                "GetRolePolicy",
                &format!("<RoleName>web</RoleName><PolicyName>{held}</PolicyName><PolicyDocument>{encoded}</PolicyDocument>"),
                DATE,
            )
        });
        let put = mock!(Client::put_role_policy)
            .then_http_response(|| answer(409, "PutRolePolicy", "LimitExceeded", DATE));
        let delete = mock!(Client::delete_role_policy)
            .then_http_response(|| answer(200, "DeleteRolePolicy", "", DATE));
        let iam = iam(&[&list, &get, &put, &delete]);
        let at = At {
            request_id: "aws.guardduty:f-mine",
            now: DateTime::from_secs(NOW),
            margin_seconds: 300,
        };
        let refused = iam
            .revoke_sessions_of(
                Holder::Role("web"),
                Some(mine),
                at,
                &RetryCounter::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code.as_deref(), Some("LimitExceeded"));
        assert_eq!(put.num_calls(), 1, "put once, never folded");
        assert_eq!(delete.num_calls(), 0, "the other session's cut-off stays");
    }
}
