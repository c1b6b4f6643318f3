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
use crate::aws::clock::{ClockReader, ServerClock};
use crate::aws::ratelimit::AdaptiveRate;
use crate::aws::retry::{call, BackoffPolicy, RetryCounter};
use crate::aws::turns::UserTurns;
use crate::guard::Protection;
use crate::job::{Action, Job, OwnerSource, Target};
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
    /// Each key's last use, where IAM was asked for its owner anyway.
    pub last_used: Vec<LastUsed>,
    /// Each key's owner and result, for jobs of several keys (each may have another
    /// owner).
    pub keys: Vec<KeyResult>,
    /// Each key's owner and result, for every job that names keys alone (one key too):
    /// what a continuation carries on.
    pub per_key: Vec<KeyResult>,
}

pub use crate::job::LastUsed;
pub use crate::outcome::KeyResult;

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
            last_used: Vec::new(),
            keys: Vec::new(),
            per_key: Vec::new(),
        }
    }

    fn absent(user_name: Option<&str>, keys: Vec<String>) -> Self {
        Self {
            effect: Effect::AlreadyAbsent,
            user_name: user_name.map(str::to_owned),
            access_key_ids: keys,
            keys_changed: 0,
            last_used: Vec::new(),
            keys: Vec::new(),
            per_key: Vec::new(),
        }
    }

    fn with_keys(mut self, keys: &[String]) -> Self {
        self.access_key_ids = keys.to_vec();
        self
    }

    /// The users whose keys the job concerned: the one user, or each key's owner.
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self.user_name.iter().cloned().collect();
        for key in self.keys.iter().chain(&self.per_key) {
            let concerned = matches!(key.result, "deleted" | "deactivated" | "already_absent");
            if concerned
                && !key.user_name.is_empty()
                && !users.iter().any(|u| u.eq_ignore_ascii_case(&key.user_name))
            {
                users.push(key.user_name.clone());
            }
        }
        users
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
        Seen::NotListed(Owner::Unresolved(..)) => Verdict::Absent,
    }
}

/// The table for a key named alone: IAM must name its owner, who must not be protected.
fn key_only(key: &str, owner: Owner, protection: &Protection) -> Verdict {
    match owner {
        Owner::Unresolved(_, why) => Verdict::Refuse(
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
    Unresolved(Unplaced, String),
}

/// How IAM failed to place a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unplaced {
    /// `NoSuchEntity`: no such key in this account.
    NotFound,
    /// `AccessDenied` for the key.
    Denied,
    /// An answer that names no user.
    NoUser,
}

/// Where a key named alone stands before any write.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placed {
    /// IAM names this owner (now, or to an earlier delivery of the job): revoke the key
    /// from them.
    Owner(String),
    /// The security event names this user: try them first, then IAM's owner lookup.
    Hinted(String),
    /// No such key in the account a security event is about (`NoSuchEntity`): gone.
    Gone,
    /// IAM cannot place it: refused for this key, the others go on.
    Unplaced(Reason, String),
}

/// The table for a key named alone, in a job from a security event or not. An event
/// names the account the key is in: `NoSuchEntity` there means the key is gone, and
/// `AccessDenied` is the worker's permission. A job message may name the wrong account,
/// so for it an unplaced key is `owner_unknown`, never guessed absent.
fn place(key: &str, owner: Owner, event: bool) -> Placed {
    match owner {
        Owner::User(owner) => Placed::Owner(owner),
        Owner::Unresolved(Unplaced::NotFound, _) if event => Placed::Gone,
        Owner::Unresolved(Unplaced::Denied, why) if event => Placed::Unplaced(
            Reason::AccessDenied,
            format!("IAM refused to say who owns access key {key} ({why}); the worker needs iam:GetAccessKeyLastUsed in the event's account"),
        ),
        Owner::Unresolved(_, why) => Placed::Unplaced(
            Reason::OwnerUnknown,
            format!(
                "IAM cannot say who owns access key {key} ({why}); name its user_name to revoke it or to confirm it is gone"
            ),
        ),
    }
}

/// Where the keys of a job that names keys alone stand before any write.
#[derive(Debug, Default)]
pub struct Placement {
    places: Vec<(String, Placed)>,
    /// Each key's last use, where IAM was asked for its owner.
    pub last_used: Vec<LastUsed>,
    /// The owners IAM's lookup named (key, user): once such a key is deleted, IAM can no
    /// longer name them.
    pub looked_up: Vec<(String, String)>,
}

/// What became of one key of a job that names keys alone.
enum KeyEnd {
    /// Changed, from this user.
    Changed(String),
    /// Not there (any more); the user it was looked for under, if any.
    Absent(Option<String>),
    /// Refused for this key, nothing changed on it.
    Refused(Option<String>, Reason, String),
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
    pub(super) client: aws_sdk_iam::Client,
    rate: Arc<AdaptiveRate>,
    policy: BackoffPolicy,
    protection: Protection,
    /// IAM's own clock, read from its answers.
    pub(super) clock: Arc<ServerClock>,
    /// One session-policy change per user at a time.
    pub(super) session_turns: UserTurns,
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
    async fn attempt<T, E, Fut>(
        &self,
        operation: &'static str,
        send: impl FnOnce() -> Fut,
    ) -> Result<T, AwsError>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.rate.acquire().await;
        let result = send().await.map_err(|e| AwsError::from_sdk(operation, e));
        match &result {
            Err(e) if e.is_throttling() => self.rate.throttled(),
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
            } => {
                self.revoke_unnamed(job, std::slice::from_ref(access_key_id), retries)
                    .await
            }
            Target::AllKeys { user_name } => self.revoke_all(user_name, job.action, retries).await,
            Target::Keys(keys) => self.revoke_unnamed(job, keys, retries).await,
        };
        match result {
            Ok(result) => result,
            Err(e) => self.failed(job, e),
        }
    }

    /// The result of a job an AWS error ended before it changed anything: access denied
    /// is `Rejected(access_denied)`, anything else [`Effect::Failed`].
    fn failed(&self, job: &Job, e: AwsError) -> IamResult {
        IamResult {
            effect: if e.is_access_denied() {
                Effect::Rejected(Reason::AccessDenied, e.to_string())
            } else {
                Effect::Failed(e)
            },
            user_name: job.user_name().map(str::to_owned),
            access_key_ids: job.access_key_ids(),
            keys_changed: 0,
            last_used: Vec::new(),
            keys: Vec::new(),
            per_key: Vec::new(),
        }
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
                let verdict = key_only(key, self.owner(key, retries).await?.0, &self.protection);
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
                    verdict = key_only(key, self.owner(key, retries).await?.0, &self.protection);
                    match &verdict {
                        Verdict::Act(owner) if !owners.contains(owner) => {
                            owners.push(owner.clone())
                        }
                        Verdict::Act(_) => {}
                        _ => break,
                    }
                }
                let user = (owners.len() == 1).then(|| owners.remove(0));
                (verdict, user, keys.clone())
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
        Ok(Seen::NotListed(self.owner(key, retries).await?.0))
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

    /// Keys named alone (a key-only job, a security event): every owner is found and
    /// judged before any key is changed, so a protected owner refuses the job with
    /// nothing changed. A key IAM cannot place is refused on its own and never blocks the
    /// others; each placed key is revoked from its own owner, and a failure on one key
    /// does not stop the next. A key an earlier delivery changed (README,
    /// "Continuations") counts as changed by the job once IAM confirms it is gone.
    async fn revoke_unnamed(
        &self,
        job: &Job,
        keys: &[String],
        retries: &RetryCounter,
    ) -> Result<IamResult, AwsError> {
        match self.place_keys(job, keys, retries).await? {
            Ok(placement) => self.revoke_placed(job, keys, placement, retries).await,
            Err(refused) => Ok(*refused),
        }
    }

    /// Where each key of a job that names keys alone stands, before any write: the
    /// owner named by the job's source or found with `GetAccessKeyLastUsed`. A protected
    /// owner refuses the whole job (`Err`), with nothing changed.
    async fn place_keys(
        &self,
        job: &Job,
        keys: &[String],
        retries: &RetryCounter,
    ) -> Result<Result<Placement, Box<IamResult>>, AwsError> {
        let event = job.origin.is_some();
        let mut placement = Placement::default();
        for key in keys {
            let place = match job.known_owner(key) {
                Some(known) if known.source == OwnerSource::Learned => {
                    Placed::Owner(known.user_name.clone())
                }
                Some(known) => Placed::Hinted(known.user_name.clone()),
                None => {
                    let (owner, used) = self.owner(key, retries).await?;
                    placement.last_used.extend(used);
                    if let Owner::User(user) = &owner {
                        placement.looked_up.push((key.clone(), user.clone()));
                    }
                    place(key, owner, event)
                }
            };
            if let Placed::Owner(user) | Placed::Hinted(user) = &place {
                if self.protection.user(user) {
                    let detail = format!("access key {key} belongs to protected user {user}");
                    let named = (keys.len() == 1).then_some(user.as_str());
                    return Ok(Err(Box::new(
                        IamResult {
                            last_used: placement.last_used,
                            ..IamResult::rejected(Reason::Protected, detail, named, None)
                        }
                        .with_keys(keys),
                    )));
                }
            }
            placement.places.push((key.clone(), place));
        }
        Ok(Ok(placement))
    }

    /// Finds the owners of the keys `job` names alone, changing nothing: the first half
    /// of [`Iam::revoke`] for such a job. `Err` is the job's result when it ends here
    /// (a protected owner, an AWS failure).
    pub async fn place(&self, job: &Job, retries: &RetryCounter) -> Result<Placement, IamResult> {
        let keys = job.access_key_ids();
        match self.place_keys(job, &keys, retries).await {
            Ok(Ok(placement)) => Ok(placement),
            Ok(Err(refused)) => Err(*refused),
            Err(e) => Err(self.failed(job, e)),
        }
    }

    /// The second half: revokes each placed key from its owner.
    pub async fn revoke_placement(
        &self,
        job: &Job,
        placement: Placement,
        retries: &RetryCounter,
    ) -> IamResult {
        let keys = job.access_key_ids();
        match self.revoke_placed(job, &keys, placement, retries).await {
            Ok(result) => result,
            Err(e) => self.failed(job, e),
        }
    }

    /// Revokes each placed key from its owner; a failure on one key does not stop the
    /// next.
    async fn revoke_placed(
        &self,
        job: &Job,
        keys: &[String],
        placement: Placement,
        retries: &RetryCounter,
    ) -> Result<IamResult, AwsError> {
        let event = job.origin.is_some();
        let Placement {
            places: placed,
            last_used,
            ..
        } = placement;
        let mut results = Vec::with_capacity(placed.len());
        let mut changed = 0;
        let mut refused: Option<(Reason, String)> = None;
        let mut failed: Option<AwsError> = None;
        for (key, place) in placed {
            let end = match place {
                Placed::Owner(user) => self.revoke_from(&user, &key, job.action, retries).await,
                Placed::Hinted(user) => {
                    self.revoke_hinted(&user, &key, job.action, event, retries)
                        .await
                }
                Placed::Gone => Ok(KeyEnd::Absent(None)),
                Placed::Unplaced(reason, detail) => Ok(KeyEnd::Refused(None, reason, detail)),
            };
            let earlier = job
                .continuation
                .as_ref()
                .and_then(|c| c.changed.iter().find(|(k, _)| *k == key))
                .map(|(_, how)| how.as_str());
            let (user, result, reason) = match end {
                Ok(KeyEnd::Changed(user)) => {
                    changed += 1;
                    (Some(user), action_result(job.action), None)
                }
                // Gone now, changed by an earlier delivery of this job: the job's doing.
                Ok(KeyEnd::Absent(user)) if earlier.is_some() => {
                    changed += 1;
                    (user, action_result(job.action), None)
                }
                Ok(KeyEnd::Absent(user)) => (user, "already_absent", None),
                Ok(KeyEnd::Refused(user, reason, detail)) => {
                    refused.get_or_insert((reason, detail));
                    (user, "rejected", Some(reason.as_str()))
                }
                Err(e) => {
                    let user = match job.known_owner(&key) {
                        Some(known) if known.source == OwnerSource::Learned => {
                            Some(known.user_name.clone())
                        }
                        _ => None,
                    };
                    failed.get_or_insert(e);
                    (user, "failed", None)
                }
            };
            results.push(KeyResult {
                access_key_id: key,
                user_name: user.unwrap_or_default(),
                result,
                reason,
            });
        }
        let mut owners: Vec<&str> = results
            .iter()
            .map(|k| k.user_name.as_str())
            .filter(|u| !u.is_empty())
            .collect();
        owners.sort_unstable();
        owners.dedup();
        let user_name = (owners.len() == 1).then(|| owners[0].to_owned());
        let effect = match (failed, refused) {
            (Some(e), _) if changed == 0 => return Err(e),
            (Some(e), _) => Effect::Failed(e),
            (None, Some((reason, detail))) if changed > 0 => Effect::Rejected(
                reason,
                format!(
                    "{detail}; the job changed {changed} other key(s) first: {}",
                    changed_keys(&results)
                ),
            ),
            (None, Some((reason, detail))) => Effect::Rejected(reason, detail),
            (None, None) if changed > 0 => Effect::Revoked,
            (None, None) => Effect::AlreadyAbsent,
        };
        Ok(IamResult {
            effect,
            user_name,
            access_key_ids: keys.to_vec(),
            keys_changed: changed,
            last_used,
            // One key's result is the job's own; several are listed one by one.
            keys: if keys.len() > 1 {
                results.clone()
            } else {
                Vec::new()
            },
            per_key: results,
        })
    }

    /// Revokes `key` from `user`, whom IAM names as its owner: a write naming both, and
    /// when IAM answers `NoSuchEntity`, the user's own key list decides.
    async fn revoke_from(
        &self,
        user: &str,
        key: &str,
        action: Action,
        retries: &RetryCounter,
    ) -> Result<KeyEnd, AwsError> {
        match self.write(user, key, action, retries).await? {
            Written::Done => Ok(KeyEnd::Changed(user.to_owned())),
            Written::NotFound => Ok(key_end(self.not_the_users(user, key, retries).await?)),
        }
    }

    /// Revokes `key` from the user a security event names. When IAM answers
    /// `NoSuchEntity`, that alone never makes the key absent: IAM's owner lookup decides
    /// (a renamed or stale user falls back to the owner IAM reports).
    async fn revoke_hinted(
        &self,
        user: &str,
        key: &str,
        action: Action,
        event: bool,
        retries: &RetryCounter,
    ) -> Result<KeyEnd, AwsError> {
        if let Written::Done = self.write(user, key, action, retries).await? {
            return Ok(KeyEnd::Changed(user.to_owned()));
        }
        let (owner, _) = self.owner(key, retries).await?;
        match place(key, owner, event) {
            Placed::Owner(owner) if owner.eq_ignore_ascii_case(user) => Err(inconsistent(key)),
            Placed::Owner(owner) if self.protection.user(&owner) => Ok(KeyEnd::Refused(
                Some(owner.clone()),
                Reason::Protected,
                format!("access key {key} belongs to protected user {owner}"),
            )),
            Placed::Owner(owner) => self.revoke_from(&owner, key, action, retries).await,
            Placed::Gone => Ok(KeyEnd::Absent(None)),
            // The event's user may be stale or another of the same name: only IAM's own
            // `NoSuchEntity` for the key says it is gone.
            Placed::Unplaced(reason, detail) => Ok(KeyEnd::Refused(None, reason, detail)),
            // `place` names no hint.
            Placed::Hinted(_) => Err(inconsistent(key)),
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

    /// Who IAM says owns `key`, and the key's last use when IAM told it.
    async fn owner(
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
    async fn list_keys(
        &self,
        user: &str,
        retries: &RetryCounter,
    ) -> Result<Option<Vec<ListedKey>>, AwsError> {
        let mut keys = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .request("ListAccessKeys", retries, || {
                    self.client
                        .list_access_keys()
                        .user_name(user)
                        .set_marker(marker.clone())
                        .send()
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
        last_used: Vec::new(),
        keys: Vec::new(),
        per_key: Vec::new(),
    }
}

/// The result a changed key reports for `action`.
fn action_result(action: Action) -> &'static str {
    action.outcome_name()
}

/// What [`Iam::not_the_users`] decided, for one key of several.
fn key_end(result: IamResult) -> KeyEnd {
    match result.effect {
        Effect::Rejected(reason, detail) => KeyEnd::Refused(result.user_name, reason, detail),
        _ => KeyEnd::Absent(result.user_name),
    }
}

/// The keys a job changed, for a detail: `AKIA… (alice)`.
fn changed_keys(results: &[KeyResult]) -> String {
    results
        .iter()
        .filter(|k| k.result == "deleted" || k.result == "deactivated")
        .map(|k| format!("{} {} ({})", k.access_key_id, k.result, k.user_name))
        .collect::<Vec<_>>()
        .join(", ")
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
            revoke_sessions: false,
            origin: None,
            owners: Vec::new(),
            continuation: None,
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
        let unresolved = || {
            Owner::Unresolved(
                Unplaced::Denied,
                "GetAccessKeyLastUsed: AccessDenied: no".into(),
            )
        };
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
            event_job.origin = Some(crate::job::Origin {
                source: "aws.health",
                event_type: "AWS_RISK_CREDENTIALS_EXPOSED".into(),
            });
            event_job.owners = vec![crate::job::KnownOwner {
                access_key_id: KEY.into(),
                user_name: "alice".into(),
                source: OwnerSource::Event,
            }];
            let result = iam(client)
                .revoke(&event_job, &RetryCounter::default())
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
            let result = iam(client).revoke(&job(None), &RetryCounter::default()).await;
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
