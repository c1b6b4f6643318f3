//! IAM access for the worker: the client (with IAM's clock read off its answers), the
//! shared adaptive rate, and the raw calls every IAM request goes through (`request`).
//! What the calls mean is in `aws::verdict`, the job's action in `aws::revoke`, the
//! session cut-off in `aws::sessions`.

use std::future::Future;
use std::sync::Arc;

use aws_sdk_iam::types::StatusType;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::clock::{ClockReader, ServerClock};
use crate::aws::home::Home;
use crate::aws::member::MemberSession;
use crate::aws::ratelimit::AdaptiveRate;
use crate::aws::retry::{call, BackoffPolicy, RetryCounter};
use crate::aws::turns::UserTurns;
use crate::aws::verdict::{
    all_keys, named_key, ListedKey, Owner, Placed, Prediction, Preview, Seen, Unplaced, Verdict,
};
use crate::guard::Protection;
use crate::job::{Action, Job, Target};
use crate::outcome::Reason;

pub use crate::job::LastUsed;
pub use crate::outcome::KeyResult;

/// Result of one write.
pub(crate) enum Written {
    Done,
    /// IAM answered `NoSuchEntity`: no such key for that user.
    NotFound,
}

/// IAM access for the worker: the client, the shared adaptive rate and the backoff policy.
#[derive(Debug, Clone)]
pub struct Iam {
    pub(super) client: aws_sdk_iam::Client,
    rate: Arc<AdaptiveRate>,
    policy: BackoffPolicy,
    pub(super) protection: Protection,
    /// IAM's own clock, read from its answers.
    pub(super) clock: Arc<ServerClock>,
    /// One session-policy change per user at a time.
    pub(super) session_turns: UserTurns,
    /// In a member account: the role session this client's credentials come from.
    member: Option<Arc<MemberSession>>,
}

impl Iam {
    /// `max_requests_per_second` is shared by every job using this value (and its clones).
    pub fn new(
        client: aws_sdk_iam::Client,
        max_requests_per_second: u32,
        policy: BackoffPolicy,
        protection: Protection,
    ) -> Self {
        let clock = Arc::new(ServerClock::default());
        // IAM's answers carry its clock in `Date`: the session cut-off is never earlier.
        let client = aws_sdk_iam::Client::from_conf(
            client
                .config()
                .to_builder()
                .interceptor(ClockReader::new(Arc::clone(&clock)))
                .build(),
        );
        Self {
            client,
            rate: Arc::new(AdaptiveRate::new(max_requests_per_second)),
            policy,
            protection,
            clock,
            session_turns: UserTurns::default(),
            member: None,
        }
    }

    /// This client with its rate starting at `start` requests a second and climbing to
    /// the account's quota, never above `max` (`iam.initial_requests_per_second`,
    /// `iam.max_requests_per_second`).
    pub fn starting_at(mut self, max: u32, start: u32) -> Self {
        self.rate = Arc::new(AdaptiveRate::starting_at(max, start));
        self
    }

    /// This client acts in a member account with `session`'s credentials: IAM refusing
    /// them is that account's failure, not the worker's own credentials'.
    pub fn in_member(self, session: Arc<MemberSession>) -> Self {
        Self {
            member: Some(session),
            ..self
        }
    }

    /// The shared request rate, to watch from elsewhere.
    pub fn shared_rate(&self) -> Arc<AdaptiveRate> {
        Arc::clone(&self.rate)
    }

    /// One request attempt: waits for its slot in the shared rate, sends, and tells the
    /// rate whether IAM throttled.
    ///
    /// `send` makes the request once the slot is granted, so the request's future (the
    /// SDK's are kilobytes) is stored once in this one and not also as its argument.
    pub(super) async fn attempt<T, E, Fut>(
        &self,
        operation: &'static str,
        send: impl FnOnce() -> Fut,
    ) -> Result<T, AwsError>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let sent = self.rate.acquire().await;
        let result = send().await.map_err(|e| {
            let answered = matches!(e, SdkError::ServiceError(_));
            let mut error = AwsError::from_sdk(operation, e);
            if let (Some(session), true) = (&self.member, answered) {
                session.refused(&mut error);
            }
            error
        });
        match &result {
            Err(e) if e.is_throttling() => self.rate.throttled(sent),
            _ => self.rate.succeeded(),
        }
        result
    }

    /// One IAM operation: its attempts under the shared rate, retried as the policy
    /// says. `operation` names it once for the retry, the rate and the error.
    pub(super) async fn request<T, E, Fut>(
        &self,
        operation: &'static str,
        retries: &RetryCounter,
        send: impl Fn() -> Fut,
    ) -> Result<T, AwsError>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        call(&self.policy, retries, "iam", operation, || {
            self.attempt(operation, &send)
        })
        .await
    }

    /// A protected key `user` holds, if any: such a user gets no session cut-off. Asks
    /// IAM only when some access key is protected.
    pub async fn protected_key_of(
        &self,
        user: &str,
        retries: &RetryCounter,
    ) -> Result<Option<String>, AwsError> {
        if !self.protection.protects_keys() {
            return Ok(None);
        }
        let listed = self.list_keys(user, retries).await?;
        Ok(listed
            .into_iter()
            .flatten()
            .find(|k| self.protection.key(&k.id))
            .map(|k| k.id))
    }

    /// Predicts, with read-only calls, what [`Iam::revoke`] would do with `job` in
    /// `home`'s account.
    pub async fn preview(
        &self,
        job: &Job,
        home: &Home,
        retries: &RetryCounter,
    ) -> Result<Preview, AwsError> {
        if let Some(detail) = self.protection.refuses(job) {
            return Ok(Preview {
                prediction: Prediction::Rejected(Reason::Protected, detail),
                user_name: job.user_name().map(str::to_owned),
                access_key_ids: job.access_key_id().map(str::to_owned).into_iter().collect(),
            });
        }
        let (verdict, user, keys) = match &job.target {
            Target::Role { role_name, .. } => {
                let detail = format!(
                    "plan predicts key jobs; this job cuts off the sessions of role {role_name}"
                );
                return Ok(Preview {
                    prediction: Prediction::Rejected(Reason::InvalidMessage, detail),
                    user_name: None,
                    access_key_ids: Vec::new(),
                });
            }
            Target::Key {
                access_key_id: key,
                user_name: Some(user),
            } => {
                let seen = self.seen(user, key, retries).await?;
                let key_home = match &seen {
                    Seen::NotListed(Owner::Unresolved(..)) => Some(home.of(key, retries).await?),
                    _ => None,
                };
                (
                    named_key(key, user, seen, key_home.as_ref()),
                    Some(user.clone()),
                    vec![key.clone()],
                )
            }
            Target::Key {
                access_key_id: key,
                user_name: None,
            } => {
                let verdict = self.key_alone(job, key, home, retries).await?;
                let owner = match &verdict {
                    Verdict::Act(owner) => Some(owner.clone()),
                    _ => None,
                };
                (verdict, owner, vec![key.clone()])
            }
            Target::AllKeys { user_name: user } => {
                let listed = self.list_keys(user, retries).await?;
                let keys = listed.iter().flatten().map(|k| k.id.clone()).collect();
                let verdict = all_keys(user, listed.as_deref(), &self.protection);
                (verdict, Some(user.clone()), keys)
            }
            Target::Keys(keys) => {
                let mut owners: Vec<String> = Vec::new();
                let mut verdict = Verdict::Absent;
                for key in keys {
                    verdict = self.key_alone(job, key, home, retries).await?;
                    match &verdict {
                        Verdict::Act(owner) if !owners.contains(owner) => {
                            owners.push(owner.clone())
                        }
                        Verdict::Act(_) | Verdict::Absent => {}
                        _ => break,
                    }
                }
                let user = (owners.len() == 1).then(|| owners.remove(0));
                (verdict, user, keys.clone())
            }
        };
        let prediction = match verdict {
            // IAM still settling: the worker would act once it agrees.
            Verdict::Act(_) | Verdict::Propagating => Prediction::Would(job.action),
            Verdict::Absent => Prediction::AlreadyAbsent,
            Verdict::Refuse(reason, detail) => Prediction::Rejected(reason, detail),
            Verdict::Elsewhere(account) => Prediction::Rejected(
                Reason::OtherAccount,
                format!(
                    "STS says the key belongs to account {account}: the worker works it there when cross_account.role_name lets it"
                ),
            ),
        };
        Ok(Preview {
            prediction,
            user_name: user,
            access_key_ids: keys,
        })
    }

    /// The verdict for a key named alone (`plan`): as the worker places it, a protected
    /// key or owner refused.
    async fn key_alone(
        &self,
        job: &Job,
        key: &str,
        home: &Home,
        retries: &RetryCounter,
    ) -> Result<Verdict, AwsError> {
        if self.protection.key(key) {
            let detail = format!("access key {key} is protected");
            return Ok(Verdict::Refuse(Reason::Protected, detail));
        }
        let owner = self.owner(key, retries).await?.0;
        Ok(
            match self
                .locate(key, owner, home, job.origin.is_some(), retries)
                .await?
            {
                Placed::Owner(owner) | Placed::Hinted(owner) if self.protection.user(&owner) => {
                    Verdict::Refuse(
                        Reason::Protected,
                        format!("access key {key} belongs to protected user {owner}"),
                    )
                }
                Placed::Owner(owner) | Placed::Hinted(owner) => Verdict::Act(owner),
                Placed::Gone => Verdict::Absent,
                Placed::Unplaced(reason, detail) => Verdict::Refuse(reason, detail),
                Placed::Elsewhere(account) => Verdict::Elsewhere(account),
            },
        )
    }

    /// Whether `key` is among `user`'s keys and, when it is not, whom IAM names as its
    /// owner.
    pub(super) async fn seen(
        &self,
        user: &str,
        key: &str,
        retries: &RetryCounter,
    ) -> Result<Seen, AwsError> {
        let listed = self.list_keys(user, retries).await?;
        if listed.is_some_and(|keys| keys.iter().any(|k| k.id == key)) {
            return Ok(Seen::Listed);
        }
        Ok(Seen::NotListed(self.owner(key, retries).await?.0))
    }

    pub(super) async fn write(
        &self,
        user: &str,
        key: &str,
        action: Action,
        retries: &RetryCounter,
    ) -> Result<Written, AwsError> {
        // A pause read since the job's keys were counted stops its next key write.
        if !retries.unpaused().await {
            return Err(AwsError {
                operation: "UpdateAccessKey",
                class: ErrorClass::Transient,
                code: None,
                message: "key changes paused until shutdown; nothing changed".to_owned(),
                unanswered: false,
            });
        }
        let result = match action {
            Action::Delete => self
                .request("DeleteAccessKey", retries, || {
                    self.client
                        .delete_access_key()
                        .user_name(user)
                        .access_key_id(key)
                        .send()
                })
                .await
                .map(drop),
            Action::Deactivate => self
                .request("UpdateAccessKey", retries, || {
                    self.client
                        .update_access_key()
                        .user_name(user)
                        .access_key_id(key)
                        .status(StatusType::Inactive)
                        .send()
                })
                .await
                .map(drop),
        };
        match result {
            Ok(()) => Ok(Written::Done),
            Err(e) if e.class == ErrorClass::NotFound => Ok(Written::NotFound),
            Err(e) => Err(e),
        }
    }

    /// `UpdateAccessKey` to `Active`.
    pub(super) async fn set_active(
        &self,
        user: &str,
        key: &str,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        self.request("UpdateAccessKey", retries, || {
            self.client
                .update_access_key()
                .user_name(user)
                .access_key_id(key)
                .status(StatusType::Active)
                .send()
        })
        .await
        .map(drop)
    }

    /// Who IAM says owns `key`, and the key's last use when IAM told it.
    pub(super) async fn owner(
        &self,
        key: &str,
        retries: &RetryCounter,
    ) -> Result<(Owner, Option<LastUsed>), AwsError> {
        let result = self
            .request("GetAccessKeyLastUsed", retries, || {
                self.client
                    .get_access_key_last_used()
                    .access_key_id(key)
                    .send()
            })
            .await;
        match result {
            Ok(out) => {
                let last_used = out.access_key_last_used().map(|used| LastUsed {
                    access_key_id: key.to_owned(),
                    date: used
                        .last_used_date()
                        .and_then(|d| d.fmt(aws_smithy_types::date_time::Format::DateTime).ok()),
                    // IAM writes "N/A" where a key was never used.
                    service: Some(used.service_name())
                        .filter(|s| !s.is_empty() && *s != "N/A")
                        .map(str::to_owned),
                    region: Some(used.region())
                        .filter(|s| !s.is_empty() && *s != "N/A")
                        .map(str::to_owned),
                });
                let owner = match out.user_name() {
                    Some(user) if !user.is_empty() => Owner::User(user.to_owned()),
                    _ => Owner::Unresolved(
                        Unplaced::NoUser,
                        "GetAccessKeyLastUsed named no user".to_owned(),
                    ),
                };
                Ok((owner, last_used))
            }
            Err(e) if e.class == ErrorClass::NotFound => {
                Ok((Owner::Unresolved(Unplaced::NotFound, e.to_string()), None))
            }
            Err(e) if e.is_access_denied() => {
                Ok((Owner::Unresolved(Unplaced::Denied, e.to_string()), None))
            }
            Err(e) => Err(e),
        }
    }

    /// Every key of `user`, or `None` when the user does not exist.
    pub(super) async fn list_keys(
        &self,
        user: &str,
        retries: &RetryCounter,
    ) -> Result<Option<Vec<ListedKey>>, AwsError> {
        let pages = self
            .pages(
                "ListAccessKeys",
                retries,
                |marker| {
                    self.client
                        .list_access_keys()
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
                .flat_map(|page| page.access_key_metadata())
                .filter_map(|k| {
                    Some(ListedKey {
                        id: k.access_key_id()?.to_owned(),
                        active: k.status() != Some(&StatusType::Inactive),
                    })
                })
                .collect()
        }))
    }

    /// Every page of a listing of one user's things (IAM's `Marker`/`IsTruncated`
    /// pagination), or `None` when IAM says there is no such user. `send` asks for the
    /// page after a marker; `next` reads the marker of the page after this one.
    pub(super) async fn pages<T, E, Fut>(
        &self,
        operation: &'static str,
        retries: &RetryCounter,
        send: impl Fn(Option<String>) -> Fut,
        next: impl Fn(&T) -> Option<String>,
    ) -> Result<Option<Vec<T>>, AwsError>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut pages = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = match self
                .request(operation, retries, || send(marker.clone()))
                .await
            {
                Ok(page) => page,
                Err(e) if e.class == ErrorClass::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            marker = next(&page);
            pages.push(page);
            if marker.is_none() {
                return Ok(Some(pages));
            }
        }
    }
}

/// The marker of the next page, when IAM says there is one.
pub(crate) fn next_marker(is_truncated: bool, marker: Option<&str>) -> Option<String> {
    marker.filter(|_| is_truncated).map(str::to_owned)
}

/// For unit tests with mocked clients: short backoff, a generous rate, nothing protected.
#[cfg(test)]
impl Iam {
    pub(crate) fn for_tests(client: aws_sdk_iam::Client) -> Self {
        let policy = BackoffPolicy::new(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_millis(100),
            2.0,
            false,
            std::time::Duration::from_secs(2),
        )
        .unwrap();
        Iam::new(client, 1_000, policy, Protection::none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::revoke::Effect;
    use crate::job::OwnerSource;
    use aws_sdk_iam::operation::delete_access_key::{DeleteAccessKeyError, DeleteAccessKeyOutput};
    use aws_sdk_iam::operation::get_access_key_last_used::GetAccessKeyLastUsedOutput;
    use aws_sdk_iam::operation::list_access_keys::ListAccessKeysOutput;
    use aws_sdk_iam::types::error::NoSuchEntityException;
    use aws_sdk_iam::types::AccessKeyMetadata;
    use aws_sdk_iam::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

    const ACCOUNT: &str = "111122223333";

    /// The account a job acts in, where STS places every key asked about in `account`.
    fn home_answering(account: &'static str) -> Home {
        let info = mock!(aws_sdk_sts::Client::get_access_key_info).then_output(move || {
            aws_sdk_sts::operation::get_access_key_info::GetAccessKeyInfoOutput::builder()
                .account(account)
                .build()
        });
        let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&info], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        Home::new(ACCOUNT, sts, crate::aws::retry::quick_policy())
    }

    /// STS places every key in the job's own account.
    fn here() -> Home {
        home_answering(ACCOUNT)
    }

    fn iam(client: Client) -> Iam {
        Iam::for_tests(client)
    }

    fn job(user: Option<&str>) -> Job {
        let target = Target::Key {
            access_key_id: KEY.into(),
            user_name: user.map(str::to_owned),
        };
        Job::new("r".into(), target, Action::Delete)
    }

    fn no_such_entity() -> DeleteAccessKeyError {
        DeleteAccessKeyError::NoSuchEntityException(
            NoSuchEntityException::builder()
                .message("not found")
                .meta(ErrorMetadata::builder().code("NoSuchEntity").build())
                .build(),
        )
    }

    /// An IAM query-protocol error body, as IAM sends it.
    fn error_xml(code: &str) -> String {
        format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>m</Message></Error><RequestId>1</RequestId></ErrorResponse>"
        )
    }

    #[test]
    fn the_decision_table() {
        use crate::aws::home::KeyHome;
        use crate::aws::verdict::place;
        let user = |u: &str| Owner::User(u.to_owned());
        let unresolved = |how| Owner::Unresolved(how, "GetAccessKeyLastUsed: said so".into());
        let here = Some(&KeyHome::Here);
        let elsewhere = KeyHome::Elsewhere("444455556666".into());
        let named = |seen, home| named_key(KEY, "alice", seen, home);
        assert_eq!(named(Seen::Listed, None), Verdict::Act("alice".into()));
        assert_eq!(
            named(Seen::NotListed(user("Alice")), None),
            Verdict::Propagating
        );
        assert!(matches!(
            named(Seen::NotListed(user("bob")), None),
            Verdict::Refuse(Reason::OwnerMismatch, _)
        ));
        // Not listed, IAM places it nowhere: absent only where STS says it lives here.
        let gone = || Seen::NotListed(unresolved(Unplaced::NotFound));
        assert_eq!(named(gone(), here), Verdict::Absent);
        assert_eq!(named(gone(), Some(&KeyHome::Unknown)), Verdict::Absent);
        assert_eq!(
            named(gone(), Some(&elsewhere)),
            Verdict::Elsewhere("444455556666".into())
        );
        assert!(matches!(
            named(Seen::NotListed(unresolved(Unplaced::Denied)), here),
            Verdict::Refuse(Reason::AccessDenied, _)
        ));

        // Keys named alone: NoSuchEntity is gone for an event and a job message alike, once
        // STS says the key is this account's; a key IAM ties to no user here is the root
        // user's, maybe: not revocable.
        for event in [true, false] {
            assert_eq!(
                place(KEY, user("alice"), None, event),
                Placed::Owner("alice".into())
            );
            assert_eq!(
                place(KEY, unresolved(Unplaced::NotFound), here, event),
                Placed::Gone
            );
            assert_eq!(
                place(KEY, unresolved(Unplaced::NotFound), Some(&elsewhere), event),
                Placed::Elsewhere("444455556666".into())
            );
            assert!(matches!(
                place(KEY, unresolved(Unplaced::NoUser), here, event),
                Placed::Unplaced(Reason::NotRevocable, _)
            ));
            assert!(matches!(
                place(KEY, unresolved(Unplaced::NotFound), None, event),
                Placed::Unplaced(Reason::OwnerUnknown, _)
            ));
        }
        assert!(matches!(
            place(KEY, unresolved(Unplaced::Denied), here, true),
            Placed::Unplaced(Reason::AccessDenied, _)
        ));
        assert!(matches!(
            place(KEY, unresolved(Unplaced::Denied), here, false),
            Placed::Unplaced(Reason::OwnerUnknown, _)
        ));

        let protection = Protection::new(&["admin".into()], &["AKIAPROTECTED*".into()]).unwrap();
        let listed = |id: &str| ListedKey {
            id: id.to_owned(),
            active: true,
        };
        assert_eq!(all_keys("alice", None, &protection), Verdict::Absent);
        assert_eq!(all_keys("alice", Some(&[]), &protection), Verdict::Absent);
        assert_eq!(
            all_keys("alice", Some(&[listed(KEY)]), &protection),
            Verdict::Act("alice".into())
        );
        assert!(matches!(
            all_keys(
                "alice",
                Some(&[listed(KEY), listed("AKIAPROTECTED01")]),
                &protection
            ),
            Verdict::Refuse(Reason::Protected, _)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn happy_path_is_exactly_one_call() {
        let delete = mock!(Client::delete_access_key)
            .match_requests(|r| r.user_name() == Some("alice") && r.access_key_id() == Some(KEY))
            .then_output(|| DeleteAccessKeyOutput::builder().build());
        let client = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&delete], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let retries = RetryCounter::default();
        let result = iam(client)
            .revoke(&job(Some("alice")), &here(), &retries)
            .await;
        assert!(matches!(result.effect, Effect::Revoked));
        assert_eq!(result.keys_changed, 1);
        assert_eq!(delete.num_calls(), 1);
        assert_eq!(retries.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_and_5xx_are_retried_until_success() {
        let delete = mock!(Client::delete_access_key)
            .sequence()
            .http_status(400, Some(error_xml("Throttling")))
            .http_status(503, None)
            .http_status(500, Some(error_xml("ServiceFailure")))
            .output(|| DeleteAccessKeyOutput::builder().build())
            .build();
        let client = mock_client!(aws_sdk_iam, RuleMode::Sequential, [&delete], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let retries = RetryCounter::default();
        let iam = iam(client);
        let result = iam.revoke(&job(Some("alice")), &here(), &retries).await;
        assert!(matches!(result.effect, Effect::Revoked));
        assert_eq!(delete.num_calls(), 4);
        assert_eq!(retries.get(), 3);
        // Throttled before IAM had accepted anything: the rate goes to its floor (5% of
        // the configured 1000 a second) and climbs back from there.
        assert_eq!(
            iam.shared_rate().current(),
            50.0,
            "the throttled answer lowered the rate to what IAM accepted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn endless_throttling_gives_up_as_transient_after_the_budget() {
        let delete = mock!(Client::delete_access_key)
            .sequence()
            .http_status(400, Some(error_xml("Throttling")))
            .repeatedly()
            .build();
        let client = mock_client!(aws_sdk_iam, RuleMode::Sequential, [&delete], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let retries = RetryCounter::default();
        let start = tokio::time::Instant::now();
        let Effect::Failed(err) = iam(client)
            .revoke(&job(Some("alice")), &here(), &retries)
            .await
            .effect
        else {
            panic!("fails")
        };
        assert_eq!(err.class, ErrorClass::Transient);
        assert_eq!(err.code.as_deref(), Some("Throttling"));
        assert!(start.elapsed() <= std::time::Duration::from_secs(2));
        assert!(retries.get() >= 5, "{}", retries.get());
    }

    #[tokio::test(start_paused = true)]
    async fn access_denied_is_rejected_without_retry() {
        let delete = mock!(Client::delete_access_key)
            .sequence()
            .http_status(403, Some(error_xml("AccessDenied")))
            .repeatedly()
            .build();
        let client = mock_client!(aws_sdk_iam, RuleMode::Sequential, [&delete], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let result = iam(client)
            .revoke(&job(Some("alice")), &here(), &RetryCounter::default())
            .await;
        assert!(matches!(
            result.effect,
            Effect::Rejected(Reason::AccessDenied, _)
        ));
        assert_eq!(delete.num_calls(), 1);
    }

    fn listed(keys: &'static [&'static str]) -> aws_smithy_mocks::Rule {
        mock!(Client::list_access_keys).then_output(move || {
            let mut out = ListAccessKeysOutput::builder().set_access_key_metadata(Some(Vec::new()));
            for key in keys {
                out = out.access_key_metadata(
                    AccessKeyMetadata::builder()
                        .access_key_id(*key)
                        .user_name("alice")
                        .build(),
                );
            }
            out.build().unwrap()
        })
    }

    fn owned_by(user: &'static str) -> aws_smithy_mocks::Rule {
        mock!(Client::get_access_key_last_used).then_output(move || {
            GetAccessKeyLastUsedOutput::builder()
                .user_name(user)
                .build()
        })
    }

    /// GetAccessKeyLastUsed answering with an IAM query-protocol error, as IAM sends it.
    fn owner_error(status: u16, code: &str) -> aws_smithy_mocks::Rule {
        mock!(Client::get_access_key_last_used)
            .sequence()
            .http_status(status, Some(error_xml(code)))
            .repeatedly()
            .build()
    }

    /// IAM's pagination (`IsTruncated`, `Marker`): every page is read, with the marker
    /// of the page before.
    #[tokio::test(start_paused = true)]
    async fn every_page_of_a_users_keys_is_read() {
        let key = |id: &str| {
            AccessKeyMetadata::builder()
                .access_key_id(id)
                .user_name("alice")
                .build()
        };
        let first = mock!(Client::list_access_keys)
            .match_requests(|r| r.marker().is_none())
            .then_output(move || {
                ListAccessKeysOutput::builder()
                    .access_key_metadata(key("AKIAPAGEONE000000001"))
                    .is_truncated(true)
                    .marker("m-1")
                    .build()
                    .unwrap()
            });
        // Matched only when asked from the first page's marker.
        let second = mock!(Client::list_access_keys)
            .match_requests(|r| r.marker() == Some("m-1"))
            .then_output(move || {
                ListAccessKeysOutput::builder()
                    .access_key_metadata(key("AKIAPAGETWO000000002"))
                    .is_truncated(false)
                    .build()
                    .unwrap()
            });
        let client = mock_client!(aws_sdk_iam, RuleMode::Sequential, [&first, &second], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let keys = iam(client)
            .list_keys("alice", &RetryCounter::default())
            .await
            .unwrap()
            .unwrap();
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["AKIAPAGEONE000000001", "AKIAPAGETWO000000002"]);
        assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
    }

    /// A key named alone by a security event, with IAM's own answers to the owner lookup
    /// (IAM API reference, common errors): `NoSuchEntity` (404) means the key is not in
    /// the event's account, `already_absent`; `AccessDenied` (403) is `access_denied`,
    /// never absent. For a job message both stay `owner_unknown` (tested above).
    #[tokio::test(start_paused = true)]
    async fn an_event_key_iam_cannot_find_is_absent_and_one_it_refuses_is_access_denied() {
        for (status, code, absent) in [(404, "NoSuchEntity", true), (403, "AccessDenied", false)] {
            let owner = owner_error(status, code);
            let delete = mock!(Client::delete_access_key)
                .then_output(|| DeleteAccessKeyOutput::builder().build());
            let client = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&owner, &delete], |c| c
                .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
            let mut event_job = job(None);
            event_job.origin = Some(crate::job::Origin::new(
                "aws.health",
                "AWS_RISK_CREDENTIALS_EXPOSED".into(),
            ));
            let result = iam(client)
                .revoke(&event_job, &here(), &RetryCounter::default())
                .await;
            if absent {
                assert!(
                    matches!(result.effect, Effect::AlreadyAbsent),
                    "{code}: {:?}",
                    result.effect
                );
            } else {
                assert!(
                    matches!(result.effect, Effect::Rejected(Reason::AccessDenied, _)),
                    "{code}: {:?}",
                    result.effect
                );
            }
            assert_eq!(delete.num_calls(), 0, "{code}");
        }
    }

    /// The user a Health event names does not hold the key, and IAM refuses to say who
    /// does: that is `access_denied` for the key, never `already_absent` (the user may be
    /// stale, or another of the same name). Only `NoSuchEntity` for the key says it is
    /// gone.
    #[tokio::test(start_paused = true)]
    async fn a_named_user_without_the_key_and_a_denied_lookup_is_never_absent() {
        for (status, code, expected) in [
            (403, "AccessDenied", Some(Reason::AccessDenied)),
            (404, "NoSuchEntity", None),
        ] {
            let delete = mock!(Client::delete_access_key).then_error(no_such_entity);
            let list = listed(&["AKIAOTHERKEY00000000"]);
            let owner = owner_error(status, code);
            let client = mock_client!(
                aws_sdk_iam,
                RuleMode::MatchAny,
                [&delete, &list, &owner],
                |c| c.retry_config(aws_smithy_types::retry::RetryConfig::disabled())
            );
            let mut event_job = job(None);
            event_job.origin = Some(crate::job::Origin::new(
                "aws.health",
                "AWS_RISK_CREDENTIALS_EXPOSED".into(),
            ));
            event_job.owners = vec![crate::job::KnownOwner {
                access_key_id: KEY.into(),
                user_name: "alice".into(),
                source: OwnerSource::Event,
            }];
            let result = iam(client)
                .revoke(&event_job, &here(), &RetryCounter::default())
                .await;
            match expected {
                Some(reason) => assert!(
                    matches!(&result.effect, Effect::Rejected(r, _) if *r == reason),
                    "{code}: {:?}",
                    result.effect
                ),
                None => assert!(
                    matches!(result.effect, Effect::AlreadyAbsent),
                    "{code}: {:?}",
                    result.effect
                ),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_then_other_owner_is_owner_mismatch() {
        let delete = mock!(Client::delete_access_key).then_error(no_such_entity);
        let list = listed(&[]);
        let owner = owned_by("bob");
        let client = mock_client!(
            aws_sdk_iam,
            RuleMode::MatchAny,
            [&delete, &list, &owner],
            |c| c.retry_config(aws_smithy_types::retry::RetryConfig::disabled())
        );
        let result = iam(client)
            .revoke(&job(Some("alice")), &here(), &RetryCounter::default())
            .await;
        assert!(matches!(
            result.effect,
            Effect::Rejected(Reason::OwnerMismatch, _)
        ));
        assert_eq!((delete.num_calls(), owner.num_calls()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_but_still_listed_or_reported_as_the_users_is_retried_not_absent() {
        for (list, owner) in [
            (listed(&[KEY]), owned_by("nobody")),
            (listed(&[]), owned_by("alice")),
        ] {
            let delete = mock!(Client::delete_access_key).then_error(no_such_entity);
            let client = mock_client!(
                aws_sdk_iam,
                RuleMode::MatchAny,
                [&delete, &list, &owner],
                |c| c.retry_config(aws_smithy_types::retry::RetryConfig::disabled())
            );
            let Effect::Failed(err) = iam(client)
                .revoke(&job(Some("alice")), &here(), &RetryCounter::default())
                .await
                .effect
            else {
                panic!("fails")
            };
            assert_eq!(err.class, ErrorClass::Transient);
            assert_eq!(list.num_calls(), 1);
        }
    }

    /// A named user's key gone from their own list is absent when IAM places it with
    /// nobody and STS says it is this account's; when IAM refuses the owner lookup the
    /// worker cannot tell it from another user's key: `access_denied`, never absent.
    #[tokio::test(start_paused = true)]
    async fn named_user_key_gone_from_their_list_is_absent_only_where_iam_says_so() {
        for (owner, absent) in [
            (owner_error(404, "NoSuchEntity"), true),
            (owner_error(403, "AccessDenied"), false),
        ] {
            let delete = mock!(Client::delete_access_key).then_error(no_such_entity);
            let list = listed(&["AKIAOTHERKEY00000001"]);
            let client = mock_client!(
                aws_sdk_iam,
                RuleMode::MatchAny,
                [&delete, &list, &owner],
                |c| c.retry_config(aws_smithy_types::retry::RetryConfig::disabled())
            );
            let result = iam(client)
                .revoke(&job(Some("alice")), &here(), &RetryCounter::default())
                .await;
            if absent {
                assert!(
                    matches!(result.effect, Effect::AlreadyAbsent),
                    "{:?}",
                    result.effect
                );
            } else {
                assert!(
                    matches!(result.effect, Effect::Rejected(Reason::AccessDenied, _)),
                    "{:?}",
                    result.effect
                );
            }
            assert_eq!((list.num_calls(), owner.num_calls()), (1, 1));
        }
    }

    /// A key named alone that IAM cannot find in the job's account (`NoSuchEntity`) is
    /// gone only where STS `GetAccessKeyInfo` says the key is that account's; a lookup
    /// IAM refuses is `owner_unknown` for a job message, never absent.
    #[tokio::test(start_paused = true)]
    async fn key_only_that_iam_cannot_find_is_absent_only_in_its_own_account() {
        for (status, code) in [(404, "NoSuchEntity"), (403, "AccessDenied")] {
            let owner = owner_error(status, code);
            let delete = mock!(Client::delete_access_key)
                .then_output(|| DeleteAccessKeyOutput::builder().build());
            let client = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&owner, &delete], |c| c
                .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
            let result = iam(client)
                .revoke(&job(None), &here(), &RetryCounter::default())
                .await;
            match code {
                "NoSuchEntity" => assert!(
                    matches!(result.effect, Effect::AlreadyAbsent),
                    "{:?}",
                    result.effect
                ),
                _ => {
                    let Effect::Rejected(Reason::OwnerUnknown, detail) = &result.effect else {
                        panic!("{code}: {:?}", result.effect)
                    };
                    assert!(
                        detail.contains(&format!("GetAccessKeyLastUsed: {code}")),
                        "{detail}"
                    );
                }
            }
            assert_eq!(delete.num_calls(), 0);
        }
    }

    /// STS places the key in another account: never `already_absent` here; the result
    /// names that account, for the worker to act there or refuse `other_account`.
    #[tokio::test(start_paused = true)]
    async fn a_key_of_another_account_is_never_absent_here() {
        for named in [None, Some("alice")] {
            let owner = owner_error(404, "NoSuchEntity");
            let delete = mock!(Client::delete_access_key).then_error(no_such_entity);
            let list = listed(&[]);
            let client = mock_client!(
                aws_sdk_iam,
                RuleMode::MatchAny,
                [&owner, &delete, &list],
                |c| c.retry_config(aws_smithy_types::retry::RetryConfig::disabled())
            );
            let result = iam(client)
                .revoke(
                    &job(named),
                    &home_answering("444455556666"),
                    &RetryCounter::default(),
                )
                .await;
            let Effect::Rejected(Reason::OtherAccount, detail) = &result.effect else {
                panic!("{named:?}: {:?}", result.effect)
            };
            assert!(detail.contains("444455556666"), "{detail}");
            assert_eq!(result.elsewhere.as_deref(), Some("444455556666"));
        }
    }

    /// STS failing (throttled past the budget, refused) is never taken for absence: the
    /// job is tried again. A key STS says does not exist (a deleted key may answer so) is
    /// absent with IAM's `NoSuchEntity`.
    #[tokio::test(start_paused = true)]
    async fn an_sts_failure_is_retried_and_its_not_found_is_absent() {
        let sts_error = |status: u16, code: &str| {
            let body = format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>m</Message></Error><RequestId>1</RequestId></ErrorResponse>"
            );
            mock!(aws_sdk_sts::Client::get_access_key_info)
                .sequence()
                .http_status(status, Some(body))
                .repeatedly()
                .build()
        };
        for (status, code, absent) in [
            (400, "Throttling", false),
            (403, "AccessDenied", false),
            (400, "InvalidAccessKeyId", false),
            (404, "NoSuchEntity", true),
        ] {
            let info = sts_error(status, code);
            let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&info], |c| c
                .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
            let home = Home::new(ACCOUNT, sts, crate::aws::retry::quick_policy());
            let owner = owner_error(404, "NoSuchEntity");
            let client = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&owner], |c| c
                .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
            let result = iam(client)
                .revoke(&job(None), &home, &RetryCounter::default())
                .await;
            if absent {
                assert!(matches!(result.effect, Effect::AlreadyAbsent), "{code}");
            } else {
                let Effect::Failed(e) = &result.effect else {
                    panic!("{code}: {:?}", result.effect)
                };
                assert_eq!(
                    e.class,
                    ErrorClass::Transient,
                    "{code}: retried, never absent"
                );
            }
        }
    }

    /// IAM answers the owner lookup with no user for a key STS says is this account's:
    /// it may be the root user's key, which is `not_revocable` and said so.
    #[tokio::test(start_paused = true)]
    async fn a_key_iam_ties_to_no_user_may_be_the_root_users() {
        let owner = mock!(Client::get_access_key_last_used)
            .then_output(|| GetAccessKeyLastUsedOutput::builder().build());
        let delete = mock!(Client::delete_access_key)
            .then_output(|| DeleteAccessKeyOutput::builder().build());
        let client = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&owner, &delete], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let result = iam(client)
            .revoke(&job(None), &here(), &RetryCounter::default())
            .await;
        let Effect::Rejected(Reason::NotRevocable, detail) = &result.effect else {
            panic!("{:?}", result.effect)
        };
        assert!(detail.contains("root user"), "{detail}");
        assert_eq!(delete.num_calls(), 0);
    }

    /// An IAM query-protocol success answer, as IAM sends it.
    fn answer(operation: &str, result: &str) -> String {
        format!(
            "<{operation}Response xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><{operation}Result>{result}</{operation}Result><ResponseMetadata><RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ResponseMetadata></{operation}Response>"
        )
    }

    /// GetAccessKeyLastUsed as the IAM API reference shows it: a used key names date,
    /// service and Region; a never-used one answers `N/A` for both and no date.
    #[tokio::test(start_paused = true)]
    async fn the_last_use_iam_reports_is_kept_and_n_a_means_none() {
        for (last_used, expected) in [
            (
                "<Region>us-west-2</Region><LastUsedDate>2015-03-13T10:45:00Z</LastUsedDate><ServiceName>s3</ServiceName>",
                (Some("2015-03-13T10:45:00Z"), Some("s3"), Some("us-west-2")),
            ),
            (
                "<Region>N/A</Region><ServiceName>N/A</ServiceName>",
                (None, None, None),
            ),
        ] {
            let owner = mock!(Client::get_access_key_last_used)
                .sequence()
                .http_status(
                    200,
                    Some(answer(
                        "GetAccessKeyLastUsed",
                        &format!("<AccessKeyLastUsed>{last_used}</AccessKeyLastUsed><UserName>bob</UserName>"),
                    )),
                )
                .build();
            let delete = mock!(Client::delete_access_key)
                .then_output(|| DeleteAccessKeyOutput::builder().build());
            let client = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&owner, &delete], |c| c
                .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
            let result = iam(client).revoke(&job(None), &here(), &RetryCounter::default()).await;
            assert!(matches!(result.effect, Effect::Revoked));
            assert_eq!(result.user_name.as_deref(), Some("bob"));
            let used = &result.last_used[0];
            assert_eq!(used.access_key_id, KEY);
            assert_eq!(
                (used.date.as_deref(), used.service.as_deref(), used.region.as_deref()),
                expected
            );
        }
    }
}
