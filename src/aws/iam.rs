//! The IAM action, at the least cost in IAM calls.
//!
//! - User and key named: one `DeleteAccessKey`/`UpdateAccessKey` with both. IAM answers
//!   `NoSuchEntity` when the key is not that user's, so this can never touch another
//!   user's key. Only then `ListAccessKeys` of the user confirms the key is not theirs
//!   (IAM is eventually consistent: a key still listed means "try again later", never
//!   "absent"), and `GetAccessKeyLastUsed` says whether another user owns it.
//! - Key only: `GetAccessKeyLastUsed` names the owner, then act as above. IAM's API
//!   reference documents no error of its own for `GetAccessKeyLastUsed`; a key it cannot
//!   resolve (`NoSuchEntity`, or `AccessDenied` as IAM answers for a key it cannot place)
//!   is `owner_unknown`, never guessed to be absent: without a user there is no list that
//!   could confirm it.
//! - All keys: `ListAccessKeys` (paginated), then act on each.
//!
//! Every request waits for the shared IAM rate limiter and goes through `retry::call`.

use std::future::Future;
use std::sync::Arc;

use aws_sdk_iam::types::StatusType;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::ratelimit::AdaptiveRate;
use crate::aws::retry::{call, BackoffPolicy, RetryCounter};
use crate::guard::Protection;
use crate::job::{Action, Job, Target};
use crate::outcome::Reason;

/// What the IAM step decided.
#[derive(Debug, Clone)]
pub enum Effect {
    /// The action was applied (or the key was already in the asked-for state).
    Revoked,
    /// The key or user does not exist.
    AlreadyAbsent,
    /// Nothing was changed, for this reason.
    Rejected(Reason, String),
    /// An AWS error ended the step (transient past its backoff, the worker's credentials,
    /// or permanent). `keys_changed` says what was done before it (all-keys jobs).
    Failed(AwsError),
}

/// The IAM step's result, with what it learnt for the audit line.
#[derive(Debug, Clone)]
pub struct IamResult {
    pub effect: Effect,
    /// The user acted on (the owner IAM reported, for key-only jobs).
    pub user_name: Option<String>,
    /// The key(s) concerned.
    pub access_key_ids: Vec<String>,
    /// How many keys this job actually changed.
    pub keys_changed: usize,
}

impl IamResult {
    fn rejected(
        reason: Reason,
        detail: String,
        user_name: Option<&str>,
        key: Option<&str>,
    ) -> Self {
        Self {
            effect: Effect::Rejected(reason, detail),
            user_name: user_name.map(str::to_owned),
            access_key_ids: key.map(str::to_owned).into_iter().collect(),
            keys_changed: 0,
        }
    }

    fn absent(user_name: Option<&str>, keys: Vec<String>) -> Self {
        Self {
            effect: Effect::AlreadyAbsent,
            user_name: user_name.map(str::to_owned),
            access_key_ids: keys,
            keys_changed: 0,
        }
    }
}

/// What the worker would do with a job, as predicted from read-only calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prediction {
    /// The key(s) exist and belong to the user: the action would be applied.
    Would(Action),
    /// The key or user does not exist.
    AlreadyAbsent,
    /// The job would be rejected for this reason (`owner_mismatch`, `owner_unknown`,
    /// `protected`).
    Rejected(Reason, String),
}

/// The decision table for one key: what IAM's answers mean. The worker acts on it
/// ([`Iam::revoke`]) and `plan` predicts from it ([`Iam::preview`]), so the two cannot
/// drift apart.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// The key is this user's: act on it.
    Act(String),
    /// Not among the user's keys, and IAM places it with nobody.
    Absent,
    /// IAM contradicts itself (eventual consistency): look again later.
    Settling,
    /// Refused, nothing changed.
    Refuse(Reason, String),
}

/// What IAM says about a key and the user a job names.
enum Seen {
    /// Among the user's keys (`ListAccessKeys`).
    Listed,
    /// Not among them (or no such user); `GetAccessKeyLastUsed` names this owner.
    NotListed(Owner),
}

/// The table for a key named with its user.
fn named_key(key: &str, user: &str, seen: Seen) -> Verdict {
    match seen {
        Seen::Listed => Verdict::Act(user.to_owned()),
        Seen::NotListed(Owner::User(owner)) if owner.eq_ignore_ascii_case(user) => {
            Verdict::Settling
        }
        Seen::NotListed(Owner::User(owner)) => Verdict::Refuse(
            Reason::OwnerMismatch,
            format!("access key {key} belongs to user {owner}, not {user}"),
        ),
        Seen::NotListed(Owner::Unresolved(_)) => Verdict::Absent,
    }
}

/// The table for a key named alone: IAM must name its owner, who must not be protected.
fn key_only(key: &str, owner: Owner, protection: &Protection) -> Verdict {
    match owner {
        Owner::Unresolved(why) => Verdict::Refuse(
            Reason::OwnerUnknown,
            format!(
                "IAM cannot say who owns access key {key} ({why}); name its user_name to revoke it or to confirm it is gone"
            ),
        ),
        Owner::User(owner) if protection.user(&owner) => Verdict::Refuse(
            Reason::Protected,
            format!("access key {key} belongs to protected user {owner}"),
        ),
        Owner::User(owner) => Verdict::Act(owner),
    }
}

/// The table for every key of a user (`None`: no such user).
fn all_keys(user: &str, keys: Option<&[ListedKey]>, protection: &Protection) -> Verdict {
    match keys {
        None | Some([]) => Verdict::Absent,
        Some(keys) => match keys.iter().find(|k| protection.key(&k.id)) {
            Some(protected) => Verdict::Refuse(
                Reason::Protected,
                format!("user {user} has protected access key {}", protected.id),
            ),
            None => Verdict::Act(user.to_owned()),
        },
    }
}

/// A prediction with what it learnt (the owner, the keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub prediction: Prediction,
    pub user_name: Option<String>,
    pub access_key_ids: Vec<String>,
}

/// Who IAM says owns a key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    User(String),
    /// IAM could not place the key: it named no user, said `NoSuchEntity`, or answered
    /// `AccessDenied` for the key. The text says which.
    Unresolved(String),
}

/// Result of one write.
enum Written {
    Done,
    /// IAM answered `NoSuchEntity`: no such key for that user.
    NotFound,
}

/// One key as listed.
struct ListedKey {
    id: String,
    active: bool,
}

/// IAM access for the worker: the client, the shared adaptive rate and the backoff policy.
#[derive(Debug, Clone)]
pub struct Iam {
    client: aws_sdk_iam::Client,
    rate: Arc<AdaptiveRate>,
    policy: BackoffPolicy,
    protection: Protection,
}

impl Iam {
    /// `max_requests_per_second` is shared by every job using this value (and its clones).
    pub fn new(
        client: aws_sdk_iam::Client,
        max_requests_per_second: u32,
        policy: BackoffPolicy,
        protection: Protection,
    ) -> Self {
        Self {
            client,
            rate: Arc::new(AdaptiveRate::new(max_requests_per_second)),
            policy,
            protection,
        }
    }

    /// The shared request rate, to watch from elsewhere.
    pub fn shared_rate(&self) -> Arc<AdaptiveRate> {
        Arc::clone(&self.rate)
    }

    /// One request attempt: waits for its slot in the shared rate, sends, and tells the
    /// rate whether IAM throttled.
    async fn attempt<T, E>(
        &self,
        operation: &'static str,
        request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, AwsError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.rate.acquire().await;
        let result = request.await.map_err(|e| AwsError::from_sdk(operation, e));
        match &result {
            Err(e) if e.is_throttling() => self.rate.throttled(),
            _ => self.rate.succeeded(),
        }
        result
    }

    /// Carries out a validated job whose named user and key already passed the guards.
    /// Access denied becomes `Rejected(access_denied)`; any other AWS error that ends the
    /// step is [`Effect::Failed`], with what was changed before it.
    pub async fn revoke(&self, job: &Job, retries: &RetryCounter) -> IamResult {
        let result = match &job.target {
            Target::Key {
                access_key_id,
                user_name: Some(user),
            } => {
                self.revoke_named(user, access_key_id, job.action, retries)
                    .await
            }
            Target::Key {
                access_key_id,
                user_name: None,
            } => self.revoke_by_key(access_key_id, job.action, retries).await,
            Target::AllKeys { user_name } => self.revoke_all(user_name, job.action, retries).await,
        };
        match result {
            Ok(result) => result,
            Err(e) if e.is_access_denied() => IamResult::rejected(
                Reason::AccessDenied,
                e.to_string(),
                job.user_name(),
                job.access_key_id(),
            ),
            Err(e) => IamResult {
                effect: Effect::Failed(e),
                user_name: job.user_name().map(str::to_owned),
                access_key_ids: job.access_key_id().map(str::to_owned).into_iter().collect(),
                keys_changed: 0,
            },
        }
    }

    /// Predicts, with read-only calls, what [`Iam::revoke`] would do with `job`.
    pub async fn preview(&self, job: &Job, retries: &RetryCounter) -> Result<Preview, AwsError> {
        if let Some(detail) = self.protection.refuses(job) {
            return Ok(Preview {
                prediction: Prediction::Rejected(Reason::Protected, detail),
                user_name: job.user_name().map(str::to_owned),
                access_key_ids: job.access_key_id().map(str::to_owned).into_iter().collect(),
            });
        }
        let (verdict, user, keys) = match &job.target {
            Target::Key {
                access_key_id: key,
                user_name: Some(user),
            } => {
                let seen = self.seen(user, key, retries).await?;
                (
                    named_key(key, user, seen),
                    Some(user.clone()),
                    vec![key.clone()],
                )
            }
            Target::Key {
                access_key_id: key,
                user_name: None,
            } => {
                let verdict = key_only(key, self.owner(key, retries).await?, &self.protection);
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
        };
        let prediction = match verdict {
            // IAM still settling: the worker would act once it agrees.
            Verdict::Act(_) | Verdict::Settling => Prediction::Would(job.action),
            Verdict::Absent => Prediction::AlreadyAbsent,
            Verdict::Refuse(reason, detail) => Prediction::Rejected(reason, detail),
        };
        Ok(Preview {
            prediction,
            user_name: user,
            access_key_ids: keys,
        })
    }

    /// Whether `key` is among `user`'s keys and, when it is not, whom IAM names as its
    /// owner.
    async fn seen(&self, user: &str, key: &str, retries: &RetryCounter) -> Result<Seen, AwsError> {
        let listed = self.list_keys(user, retries).await?;
        if listed.is_some_and(|keys| keys.iter().any(|k| k.id == key)) {
            return Ok(Seen::Listed);
        }
        Ok(Seen::NotListed(self.owner(key, retries).await?))
    }

    async fn revoke_named(
        &self,
        user: &str,
        key: &str,
        action: Action,
        retries: &RetryCounter,
    ) -> Result<IamResult, AwsError> {
        match self.write(user, key, action, retries).await? {
            Written::Done => Ok(revoked(user, vec![key.to_owned()], 1)),
            Written::NotFound => self.not_the_users(user, key, retries).await,
        }
    }

    /// IAM said `NoSuchEntity` to a write naming `user` and `key`. The user's own key list
    /// decides whether their key is gone; IAM's owner lookup only tells a key that is
    /// somebody else's (`owner_mismatch`) from one that is gone.
    async fn not_the_users(
        &self,
        user: &str,
        key: &str,
        retries: &RetryCounter,
    ) -> Result<IamResult, AwsError> {
        match named_key(key, user, self.seen(user, key, retries).await?) {
            // Still listed right after NoSuchEntity: IAM is settling too.
            Verdict::Act(_) | Verdict::Settling => Err(inconsistent(key)),
            Verdict::Absent => Ok(IamResult::absent(Some(user), vec![key.to_owned()])),
            Verdict::Refuse(reason, detail) => {
                Ok(IamResult::rejected(reason, detail, Some(user), Some(key)))
            }
        }
    }

    async fn revoke_by_key(
        &self,
        key: &str,
        action: Action,
        retries: &RetryCounter,
    ) -> Result<IamResult, AwsError> {
        let owner = self.owner(key, retries).await?;
        let named = match &owner {
            Owner::User(user) => Some(user.clone()),
            Owner::Unresolved(_) => None,
        };
        let owner = match key_only(key, owner, &self.protection) {
            Verdict::Act(owner) => owner,
            Verdict::Refuse(reason, detail) => {
                return Ok(IamResult::rejected(
                    reason,
                    detail,
                    named.as_deref(),
                    Some(key),
                ));
            }
            // key_only never answers these: without a user there is no list to consult.
            Verdict::Absent | Verdict::Settling => return Err(inconsistent(key)),
        };
        match self.write(&owner, key, action, retries).await? {
            Written::Done => Ok(revoked(&owner, vec![key.to_owned()], 1)),
            // Deleted by someone else between the two calls, or moved: look again.
            Written::NotFound => self.not_the_users(&owner, key, retries).await,
        }
    }

    async fn revoke_all(
        &self,
        user: &str,
        action: Action,
        retries: &RetryCounter,
    ) -> Result<IamResult, AwsError> {
        let listed = self.list_keys(user, retries).await?;
        let keys = match all_keys(user, listed.as_deref(), &self.protection) {
            Verdict::Act(_) => listed.unwrap_or_default(),
            Verdict::Refuse(reason, detail) => {
                let protected = listed
                    .iter()
                    .flatten()
                    .find(|k| self.protection.key(&k.id))
                    .map(|k| k.id.as_str());
                return Ok(IamResult::rejected(reason, detail, Some(user), protected));
            }
            Verdict::Absent | Verdict::Settling => {
                return Ok(IamResult::absent(Some(user), Vec::new()))
            }
        };
        let mut present = Vec::new();
        let mut changed = 0;
        for key in keys {
            if action == Action::Deactivate && !key.active {
                present.push(key.id);
                continue;
            }
            match self.write(user, &key.id, action, retries).await {
                Ok(Written::Done) => {
                    changed += 1;
                    present.push(key.id);
                }
                // Deleted since the listing: nothing left to do for it.
                Ok(Written::NotFound) => {}
                // Keys already changed stay in the record; the rest is done on redelivery.
                Err(e) if changed > 0 => {
                    return Ok(IamResult {
                        effect: Effect::Failed(e),
                        ..revoked(user, present, changed)
                    })
                }
                Err(e) => return Err(e),
            }
        }
        if present.is_empty() {
            Ok(IamResult::absent(Some(user), Vec::new()))
        } else {
            Ok(revoked(user, present, changed))
        }
    }

    async fn write(
        &self,
        user: &str,
        key: &str,
        action: Action,
        retries: &RetryCounter,
    ) -> Result<Written, AwsError> {
        let result = match action {
            Action::Delete => {
                call(&self.policy, retries, "iam", "DeleteAccessKey", || async {
                    self.attempt(
                        "DeleteAccessKey",
                        self.client
                            .delete_access_key()
                            .user_name(user)
                            .access_key_id(key)
                            .send(),
                    )
                    .await
                    .map(drop)
                })
                .await
            }
            Action::Deactivate => {
                call(&self.policy, retries, "iam", "UpdateAccessKey", || async {
                    self.attempt(
                        "UpdateAccessKey",
                        self.client
                            .update_access_key()
                            .user_name(user)
                            .access_key_id(key)
                            .status(StatusType::Inactive)
                            .send(),
                    )
                    .await
                    .map(drop)
                })
                .await
            }
        };
        match result {
            Ok(()) => Ok(Written::Done),
            Err(e) if e.class == ErrorClass::NotFound => Ok(Written::NotFound),
            Err(e) => Err(e),
        }
    }

    async fn owner(&self, key: &str, retries: &RetryCounter) -> Result<Owner, AwsError> {
        let result = call(
            &self.policy,
            retries,
            "iam",
            "GetAccessKeyLastUsed",
            || async {
                self.attempt(
                    "GetAccessKeyLastUsed",
                    self.client
                        .get_access_key_last_used()
                        .access_key_id(key)
                        .send(),
                )
                .await
            },
        )
        .await;
        match result {
            Ok(out) => Ok(match out.user_name() {
                Some(user) if !user.is_empty() => Owner::User(user.to_owned()),
                _ => Owner::Unresolved("GetAccessKeyLastUsed named no user".to_owned()),
            }),
            Err(e) if e.class == ErrorClass::NotFound || e.is_access_denied() => {
                Ok(Owner::Unresolved(e.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// Every key of `user`, or `None` when the user does not exist.
    async fn list_keys(
        &self,
        user: &str,
        retries: &RetryCounter,
    ) -> Result<Option<Vec<ListedKey>>, AwsError> {
        let mut keys = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = call(&self.policy, retries, "iam", "ListAccessKeys", || async {
                self.attempt(
                    "ListAccessKeys",
                    self.client
                        .list_access_keys()
                        .user_name(user)
                        .set_marker(marker.clone())
                        .send(),
                )
                .await
            })
            .await;
            let page = match page {
                Ok(page) => page,
                Err(e) if e.class == ErrorClass::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            keys.extend(page.access_key_metadata().iter().filter_map(|k| {
                Some(ListedKey {
                    id: k.access_key_id()?.to_owned(),
                    active: k.status() != Some(&StatusType::Inactive),
                })
            }));
            match page.marker() {
                Some(next) if page.is_truncated() => marker = Some(next.to_owned()),
                _ => return Ok(Some(keys)),
            }
        }
    }
}

fn revoked(user: &str, keys: Vec<String>, changed: usize) -> IamResult {
    IamResult {
        effect: Effect::Revoked,
        user_name: Some(user.to_owned()),
        access_key_ids: keys,
        keys_changed: changed,
    }
}

/// IAM contradicted itself (NoSuchEntity for a key it reports as the user's): an
/// eventual-consistency window. Try again later rather than guess.
fn inconsistent(key: &str) -> AwsError {
    AwsError {
        operation: "GetAccessKeyLastUsed",
        class: ErrorClass::Transient,
        code: Some("InconsistentOwner".to_owned()),
        message: format!("IAM reported conflicting ownership for access key {key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_iam::operation::delete_access_key::{DeleteAccessKeyError, DeleteAccessKeyOutput};
    use aws_sdk_iam::operation::get_access_key_last_used::GetAccessKeyLastUsedOutput;
    use aws_sdk_iam::operation::list_access_keys::ListAccessKeysOutput;
    use aws_sdk_iam::types::error::NoSuchEntityException;
    use aws_sdk_iam::types::AccessKeyMetadata;
    use aws_sdk_iam::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;
    use std::time::Duration;

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

    fn iam(client: Client) -> Iam {
        let policy = BackoffPolicy::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
            2.0,
            false,
            Duration::from_secs(2),
        )
        .unwrap();
        Iam::new(client, 1_000, policy, Protection::none())
    }

    fn job(user: Option<&str>) -> Job {
        Job {
            request_id: "r".into(),
            target: Target::Key {
                access_key_id: KEY.into(),
                user_name: user.map(str::to_owned),
            },
            action: Action::Delete,
            account_id: None,
            reason: None,
            requested_by: None,
            batch_id: None,
        }
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
        let user = |u: &str| Owner::User(u.to_owned());
        let unresolved = || Owner::Unresolved("GetAccessKeyLastUsed: AccessDenied: no".into());
        let named = |seen| named_key(KEY, "alice", seen);
        assert_eq!(named(Seen::Listed), Verdict::Act("alice".into()));
        assert_eq!(named(Seen::NotListed(user("Alice"))), Verdict::Settling);
        assert!(matches!(
            named(Seen::NotListed(user("bob"))),
            Verdict::Refuse(Reason::OwnerMismatch, _)
        ));
        assert_eq!(named(Seen::NotListed(unresolved())), Verdict::Absent);

        let protection = Protection::new(&["admin".into()], &["AKIAPROTECTED*".into()]).unwrap();
        assert_eq!(
            key_only(KEY, user("alice"), &protection),
            Verdict::Act("alice".into())
        );
        assert!(matches!(
            key_only(KEY, user("Admin"), &protection),
            Verdict::Refuse(Reason::Protected, _)
        ));
        assert!(matches!(
            key_only(KEY, unresolved(), &protection),
            Verdict::Refuse(Reason::OwnerUnknown, _)
        ));

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
        let result = iam(client).revoke(&job(Some("alice")), &retries).await;
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
        let result = iam.revoke(&job(Some("alice")), &retries).await;
        assert!(matches!(result.effect, Effect::Revoked));
        assert_eq!(delete.num_calls(), 4);
        assert_eq!(retries.get(), 3);
        assert_eq!(
            iam.shared_rate().current(),
            500.0,
            "the throttled answer halved the rate"
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
            .revoke(&job(Some("alice")), &retries)
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
            .revoke(&job(Some("alice")), &RetryCounter::default())
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
            .revoke(&job(Some("alice")), &RetryCounter::default())
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
                .revoke(&job(Some("alice")), &RetryCounter::default())
                .await
                .effect
            else {
                panic!("fails")
            };
            assert_eq!(err.class, ErrorClass::Transient);
            assert_eq!(list.num_calls(), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn named_user_key_gone_from_their_list_is_absent_whatever_the_owner_lookup_says() {
        // IAM documents no error of its own for GetAccessKeyLastUsed; the emulator says
        // NoSuchEntity, IAM may say AccessDenied. The user's own key list decides.
        for owner in [
            owner_error(404, "NoSuchEntity"),
            owner_error(403, "AccessDenied"),
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
                .revoke(&job(Some("alice")), &RetryCounter::default())
                .await;
            assert!(
                matches!(result.effect, Effect::AlreadyAbsent),
                "{:?}",
                result.effect
            );
            assert_eq!((list.num_calls(), owner.num_calls()), (1, 1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn key_only_that_iam_cannot_resolve_is_owner_unknown_never_absent() {
        for (status, code) in [(404, "NoSuchEntity"), (403, "AccessDenied")] {
            let owner = owner_error(status, code);
            let delete = mock!(Client::delete_access_key)
                .then_output(|| DeleteAccessKeyOutput::builder().build());
            let client = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&owner, &delete], |c| c
                .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
            let result = iam(client)
                .revoke(&job(None), &RetryCounter::default())
                .await;
            let Effect::Rejected(Reason::OwnerUnknown, detail) = &result.effect else {
                panic!("{code}: {:?}", result.effect)
            };
            assert!(
                detail.contains(&format!("GetAccessKeyLastUsed: {code}")),
                "{detail}"
            );
            assert_eq!(delete.num_calls(), 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn key_only_with_no_owner_is_owner_unknown() {
        let owner = mock!(Client::get_access_key_last_used)
            .then_output(|| GetAccessKeyLastUsedOutput::builder().build());
        let delete = mock!(Client::delete_access_key)
            .then_output(|| DeleteAccessKeyOutput::builder().build());
        let client = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&owner, &delete], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let result = iam(client)
            .revoke(&job(None), &RetryCounter::default())
            .await;
        assert!(matches!(
            result.effect,
            Effect::Rejected(Reason::OwnerUnknown, _)
        ));
        assert_eq!(delete.num_calls(), 0);
    }
}
