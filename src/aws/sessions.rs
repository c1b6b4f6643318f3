//! Cutting off the temporary credentials a leaked key minted (README, "Revoking
//! sessions"): an inline user policy that denies everything to credentials issued before
//! a time T.
//!
//! - **What it covers.** `aws:TokenIssueTime` is in the context of requests signed with
//!   temporary credentials only, so the Deny leaves the user's long-term keys alone and
//!   cuts off credentials from `GetSessionToken` and `GetFederationToken` issued before
//!   T. Sessions of *roles* assumed with the key are governed by the role's policies, not
//!   the user's: they are not covered (IAM User Guide, "Disabling permissions for
//!   temporary security credentials",
//!   <https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_disable-perms.html>).
//! - **Never backwards.** IAM has no conditional put, and two jobs for one user (two
//!   queues, two replicas) may interleave. Each cut-off is a policy of its own, named for
//!   its T; a writer removes only cut-offs older than one in force (its own, just put), so
//!   no writer can remove a later one. Within a process, changes for one user take turns.
//! - **Never early.** T is not earlier than IAM's own clock, read from the `Date` of its
//!   answers, when the worker's clock is behind.
//! - **Quota.** A user's inline policies share 2,048 characters (IAM User Guide, "IAM and
//!   AWS STS quotas",
//!   <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html>); one
//!   cut-off takes about 180, and the older one is removed once the newer is in force.
//!   IAM answers `LimitExceeded` when there is no room.

use aws_smithy_types::date_time::{DateTime, Format};

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::iam::{next_marker, Iam};
use crate::aws::retry::RetryCounter;

/// The name of the session policies: alone for the one earlier versions put, followed by
/// `-` and T (`20261130T120001Z`) for each cut-off now.
pub const SESSION_POLICY_NAME: &str = "iam-key-revoker-revoke-older-sessions";

/// What cutting off a user's older sessions came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sessions {
    /// Temporary credentials issued before this time are now denied.
    Revoked(String),
    /// A cut-off at this later time is in force already; nothing was put.
    AlreadyLater(String),
    /// No such user: nothing left to cut off.
    NoUser,
}

/// What the cut-off covers, for the audit line and the outcome event.
pub const SESSIONS_COVERED: &str = "denies temporary credentials the user obtained with GetSessionToken or GetFederationToken before the cut-off; sessions of roles assumed with the key are not covered (revoke them on each role)";

/// The session policy document: deny everything to temporary credentials issued before
/// `before` (ISO 8601, UTC). Requests signed with long-term keys carry no
/// `aws:TokenIssueTime`, so the condition never matches them (IAM User Guide, the
/// `aws:TokenIssueTime` condition key,
/// <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-tokenissuetime>).
pub fn session_policy(before: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": { "DateLessThan": { "aws:TokenIssueTime": before } }
        }]
    })
    .to_string()
}

/// The name of the cut-off at `before`.
pub fn session_policy_name(before: DateTime) -> String {
    let iso = before.fmt(Format::DateTime).unwrap_or_default();
    let compact: String = iso.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{SESSION_POLICY_NAME}-{compact}")
}

/// The cut-off a policy name stands for: `Some(None)` for the unnamed one of earlier
/// versions (its time is in its document), `None` for a policy that is not ours.
fn name_time(name: &str) -> Option<Option<DateTime>> {
    if name == SESSION_POLICY_NAME {
        return Some(None);
    }
    let compact = name.strip_prefix(SESSION_POLICY_NAME)?.strip_prefix('-')?;
    // 20261130T120001Z → 2026-11-30T12:00:01Z
    let b = compact.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &compact[0..4],
        &compact[4..6],
        &compact[6..8],
        &compact[9..11],
        &compact[11..13],
        &compact[13..15]
    );
    DateTime::from_str(&iso, Format::DateTime).ok().map(Some)
}

/// The cut-off time of a session policy document. `GetUserPolicy` returns the document
/// URL-encoded (RFC 3986; IAM API reference, `GetUserPolicy`).
pub fn session_policy_time(document: &str) -> Option<DateTime> {
    let decoded = percent_encoding::percent_decode_str(document)
        .decode_utf8()
        .ok()?;
    let value: serde_json::Value = serde_json::from_str(&decoded).ok()?;
    let text = value["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"].as_str()?;
    DateTime::from_str(text, Format::DateTime).ok()
}

impl Iam {
    /// Cuts off `user`'s temporary credentials issued before `before` (or IAM's clock,
    /// when later). `ListUserPolicies`, then `PutUserPolicy` of a policy named for T
    /// unless a later cut-off is in force, then `DeleteUserPolicy` of the older ones.
    /// An unnamed policy of earlier versions is read with `GetUserPolicy`.
    pub async fn revoke_sessions(
        &self,
        user: &str,
        before: DateTime,
        retries: &RetryCounter,
    ) -> Result<Sessions, AwsError> {
        let _turn = self.session_turns.take(user).await;
        let Some(names) = self.user_policy_names(user, retries).await? else {
            return Ok(Sessions::NoUser);
        };
        let before = self.clock.at_least(before);
        let mut ours: Vec<(String, DateTime)> = Vec::new();
        for name in names {
            match name_time(&name) {
                Some(Some(at)) => ours.push((name, at)),
                Some(None) => {
                    if let Some(at) = self.legacy_cutoff(user, retries).await? {
                        ours.push((name, at));
                    }
                }
                None => {}
            }
        }
        if let Some((_, later)) = ours
            .iter()
            .filter(|(_, at)| at.secs() >= before.secs())
            .max_by_key(|(_, at)| at.secs())
        {
            return Ok(Sessions::AlreadyLater(fmt(*later)));
        }
        let name = session_policy_name(before);
        let document = session_policy(&fmt(before));
        let put = self
            .request("PutUserPolicy", retries, || {
                self.client
                    .put_user_policy()
                    .user_name(user)
                    .policy_name(&name)
                    .policy_document(&document)
                    .send()
            })
            .await
            .map(drop);
        match put {
            Ok(()) => {}
            Err(e) if e.class == ErrorClass::NotFound => return Ok(Sessions::NoUser),
            Err(e) => return Err(e),
        }
        // Older cut-offs are covered by the one just put: room for the next one.
        for (older, _) in ours.iter().filter(|(_, at)| at.secs() < before.secs()) {
            if let Err(e) = self.delete_user_policy(user, older, retries).await {
                tracing::warn!(error = %e, user, policy = %older, "Could not remove an older session cut-off; the newer one is in force");
            }
        }
        Ok(Sessions::Revoked(fmt(before)))
    }

    /// Lifts `user`'s session cut-offs (README, "Staged revocation": `restore
    /// --lift-session-cutoff`): deletes the inline policies of this worker's on the user
    /// whose cut-off is at or after `since` (every one of them without it); returns their
    /// names. Other inline policies, and older cut-offs (another revocation's), stay.
    pub async fn lift_session_cutoffs(
        &self,
        user: &str,
        since: Option<DateTime>,
        retries: &RetryCounter,
    ) -> Result<Vec<String>, AwsError> {
        let _turn = self.session_turns.take(user).await;
        let names = self
            .user_policy_names(user, retries)
            .await?
            .unwrap_or_default();
        let ours: Vec<String> = names
            .into_iter()
            .filter(|name| match (name_time(name), since) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(Some(at)), Some(since)) => at.secs() >= since.secs(),
                // The unnamed cut-off of earlier versions: its time is in its document.
                (Some(None), Some(_)) => false,
            })
            .collect();
        for name in &ours {
            self.delete_user_policy(user, name, retries).await?;
        }
        Ok(ours)
    }

    /// The names of `user`'s inline policies; `None` when there is no such user.
    async fn user_policy_names(
        &self,
        user: &str,
        retries: &RetryCounter,
    ) -> Result<Option<Vec<String>>, AwsError> {
        let pages = self
            .pages(
                "ListUserPolicies",
                retries,
                |marker| {
                    self.client
                        .list_user_policies()
                        .user_name(user)
                        .set_marker(marker)
                        .send()
                },
                |page| next_marker(page.is_truncated(), page.marker()),
            )
            .await?;
        Ok(pages.map(|pages| {
            pages
                .iter()
                .flat_map(|page| page.policy_names().iter().cloned())
                .collect()
        }))
    }

    /// The cut-off of the unnamed policy earlier versions put, if it can be read.
    async fn legacy_cutoff(
        &self,
        user: &str,
        retries: &RetryCounter,
    ) -> Result<Option<DateTime>, AwsError> {
        let got = self
            .request("GetUserPolicy", retries, || {
                self.client
                    .get_user_policy()
                    .user_name(user)
                    .policy_name(SESSION_POLICY_NAME)
                    .send()
            })
            .await;
        match got {
            Ok(out) => Ok(session_policy_time(out.policy_document())),
            Err(e) if e.class == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn delete_user_policy(
        &self,
        user: &str,
        name: &str,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        let deleted = self
            .request("DeleteUserPolicy", retries, || {
                self.client
                    .delete_user_policy()
                    .user_name(user)
                    .policy_name(name)
                    .send()
            })
            .await
            .map(drop);
        match deleted {
            Err(e) if e.class != ErrorClass::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn fmt(at: DateTime) -> String {
    at.fmt(Format::DateTime).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_iam::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    fn iam(client: Client) -> Iam {
        Iam::for_tests(client)
    }

    /// An IAM query-protocol success answer, as IAM sends it, with IAM's `Date`.
    fn answer(operation: &str, result: &str, date: &str) -> HttpResponse {
        let body = format!(
            "<{operation}Response xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><{operation}Result>{result}</{operation}Result><ResponseMetadata><RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ResponseMetadata></{operation}Response>"
        );
        let mut response =
            HttpResponse::new(StatusCode::try_from(200).unwrap(), SdkBody::from(body));
        response.headers_mut().insert("date", date.to_owned());
        response
    }

    #[test]
    fn a_cutoff_is_named_for_its_time_and_read_back_from_the_name() {
        let at = DateTime::from_secs(1_800_000_000);
        let name = session_policy_name(at);
        assert_eq!(
            name,
            "iam-key-revoker-revoke-older-sessions-20270115T080000Z"
        );
        assert_eq!(name_time(&name), Some(Some(at)));
        assert_eq!(name_time(SESSION_POLICY_NAME), Some(None));
        for other in [
            "AdminAccess",
            "iam-key-revoker-revoke-older-sessions-2027",
            "iam-key-revoker-revoke-older-sessions-20271315T080000Z",
        ] {
            assert_eq!(name_time(other), None, "{other}");
        }
        let encoded = percent_encoding::utf8_percent_encode(
            &session_policy("2027-01-15T08:00:00Z"),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        assert_eq!(session_policy_time(&encoded), Some(at));
    }

    /// The worker's clock is a minute behind IAM's: the cut-off is IAM's time (the second
    /// after its `Date`), not the worker's.
    #[tokio::test]
    async fn the_cutoff_is_never_earlier_than_iams_clock() {
        let worker_now = DateTime::from_secs(1_800_000_000); // 2027-01-15T08:00:00Z
        let list = mock!(Client::list_user_policies).then_http_response(|| {
            answer(
                "ListUserPolicies",
                "<PolicyNames/><IsTruncated>false</IsTruncated>",
                "Fri, 15 Jan 2027 08:01:00 GMT",
            )
        });
        let put = mock!(Client::put_user_policy)
            .then_http_response(|| answer("PutUserPolicy", "", "Fri, 15 Jan 2027 08:01:00 GMT"));
        let client = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&list, &put], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));

        let sessions = iam(client)
            .revoke_sessions("alice", worker_now, &RetryCounter::default())
            .await
            .unwrap();

        assert_eq!(sessions, Sessions::Revoked("2027-01-15T08:01:01Z".into()));
        assert_eq!(put.num_calls(), 1);
    }

    /// A later cut-off in force (named, or the unnamed one of earlier versions) is kept:
    /// nothing is put or removed.
    #[tokio::test]
    async fn a_later_cutoff_in_force_is_kept() {
        let now = DateTime::from_secs(1_800_000_000);
        let later = DateTime::from_secs(1_900_000_000);
        let name = session_policy_name(later);
        let list = mock!(Client::list_user_policies).then_http_response(move || {
            answer(
                "ListUserPolicies",
                &format!("<PolicyNames><member>Other</member><member>{name}</member></PolicyNames><IsTruncated>false</IsTruncated>"),
                "Fri, 15 Jan 2027 08:00:00 GMT",
            )
        });
        let put = mock!(Client::put_user_policy)
            .then_http_response(|| answer("PutUserPolicy", "", "Fri, 15 Jan 2027 08:00:00 GMT"));
        let delete = mock!(Client::delete_user_policy)
            .then_http_response(|| answer("DeleteUserPolicy", "", "Fri, 15 Jan 2027 08:00:00 GMT"));
        let client = mock_client!(
            aws_sdk_iam,
            RuleMode::MatchAny,
            [&list, &put, &delete],
            |c| c.retry_config(aws_smithy_types::retry::RetryConfig::disabled())
        );

        let sessions = iam(client)
            .revoke_sessions("alice", now, &RetryCounter::default())
            .await
            .unwrap();

        assert_eq!(sessions, Sessions::AlreadyLater(fmt(later)));
        assert_eq!(put.num_calls() + delete.num_calls(), 0);
    }
}
