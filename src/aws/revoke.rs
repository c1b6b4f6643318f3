//! The IAM action of a job, at the least cost in IAM calls:
//!
//! - User and key named: one `DeleteAccessKey`/`UpdateAccessKey` with both. IAM answers
//!   `NoSuchEntity` when the key is not that user's, so this can never touch another
//!   user's key. Only then `ListAccessKeys` of the user confirms the key is not theirs
//!   (IAM is eventually consistent: a key still listed means "try again later", never
//!   "absent"), and `GetAccessKeyLastUsed` says whether another user owns it.
//! - Keys named alone: `GetAccessKeyLastUsed` names each owner (unless the job's source
//!   named it, as a hint), then act as above, key by key (`aws::placement`). IAM's API
//!   reference documents no error of its own for `GetAccessKeyLastUsed`; a key it answers
//!   `NoSuchEntity` for is gone only where STS `GetAccessKeyInfo` places the key in the
//!   account asked (`aws::home`); a key of another account is never absent here.
//! - All keys: `ListAccessKeys` (paginated), then act on each.

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::home::{Home, KeyHome};
use crate::aws::iam::{Iam, Written};
pub use crate::aws::placement::Placement;
use crate::aws::retry::RetryCounter;
use crate::aws::verdict::{all_keys, named_key, revoked, Owner, Placed, Seen, Verdict};
pub use crate::aws::verdict::{Effect, IamResult};
use crate::job::{Action, Job, OwnerSource, Target};
use crate::outcome::{KeyResult, Reason};

/// What became of one key of a job that names keys alone.
enum KeyEnd {
    /// Changed, from this user.
    Changed(String),
    /// Not there (any more); the user it was looked for under, if any.
    Absent(Option<String>),
    /// Refused for this key, nothing changed on it.
    Refused(Option<String>, Reason, String),
    /// STS says it belongs to this other account.
    Elsewhere(String),
}

impl Iam {
    /// Carries out a validated job whose named user and key already passed the guards.
    /// Access denied becomes `Rejected(access_denied)`; any other AWS error that ends the
    /// step is [`Effect::Failed`], with what was changed before it.
    pub async fn revoke(&self, job: &Job, home: &Home, retries: &RetryCounter) -> IamResult {
        // Never a write on a key whose status was not read (the worker itself passes the
        // staging check: `Worker::staging_in_force`).
        if job.require_inactive {
            let no_check = std::future::ready(Ok(None));
            return self.revoke_required(job, home, no_check, retries).await;
        }
        let result = match &job.target {
            Target::Key {
                access_key_id,
                user_name: Some(user),
            } => {
                self.revoke_named(user, access_key_id, job.action, home, retries)
                    .await
            }
            Target::Key {
                access_key_id,
                user_name: None,
            } => {
                self.revoke_unnamed(job, std::slice::from_ref(access_key_id), home, retries)
                    .await
            }
            Target::AllKeys { user_name } => {
                self.revoke_all(user_name, job.action, &job.spared, retries)
                    .await
            }
            Target::Keys(keys) => self.revoke_unnamed(job, keys, home, retries).await,
            // The worker cuts a role's sessions off before any key step (docs, "Role
            // sessions"): a role job that came here changes nothing.
            Target::Role { role_name, .. } => {
                return IamResult {
                    effect: Effect::Rejected(
                        Reason::InvalidMessage,
                        format!("a role job names no key; role {role_name} left alone"),
                    ),
                    user_name: None,
                    access_key_ids: Vec::new(),
                    keys_changed: 0,
                    last_used: Vec::new(),
                    per_key: Vec::new(),
                    elsewhere: None,
                }
            }
        };
        match result {
            Ok(result) => result,
            Err(e) => self.failed(job, e),
        }
    }

    /// The result of a job an AWS error ended before it changed anything: access denied
    /// is `Rejected(access_denied)`, anything else [`Effect::Failed`].
    pub(crate) fn failed(&self, job: &Job, e: AwsError) -> IamResult {
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
            per_key: Vec::new(),
            elsewhere: None,
        }
    }

    pub(crate) async fn revoke_named(
        &self,
        user: &str,
        key: &str,
        action: Action,
        home: &Home,
        retries: &RetryCounter,
    ) -> Result<IamResult, AwsError> {
        match self.write(user, key, action, retries).await? {
            Written::Done => Ok(revoked(user, vec![key.to_owned()], 1)),
            Written::NotFound => self.not_the_users(user, key, home, retries).await,
        }
    }

    /// IAM said `NoSuchEntity` to a write naming `user` and `key`. The user's own key list
    /// decides whether their key is gone; IAM's owner lookup only tells a key that is
    /// somebody else's (`owner_mismatch`) from one that is gone.
    pub(crate) async fn not_the_users(
        &self,
        user: &str,
        key: &str,
        home: &Home,
        retries: &RetryCounter,
    ) -> Result<IamResult, AwsError> {
        let seen = self.seen(user, key, retries).await?;
        let key_home = match &seen {
            Seen::NotListed(Owner::Unresolved(..)) => Some(home.of(key, retries).await?),
            _ => None,
        };
        match named_key(key, user, seen, key_home.as_ref()) {
            // Still listed right after NoSuchEntity: IAM is settling too.
            Verdict::Act(_) => Err(inconsistent(key)),
            // IAM names this user as the owner of a key it says the user does not hold:
            // settling, unless the key is not this account's at all.
            Verdict::Propagating => match home.of(key, retries).await? {
                KeyHome::Elsewhere(account) => Ok(IamResult {
                    elsewhere: Some(account.clone()),
                    ..IamResult::rejected(
                        Reason::OtherAccount,
                        other_account(key, &account, home),
                        Some(user),
                        Some(key),
                    )
                }),
                _ => Err(inconsistent(key)),
            },
            Verdict::Absent => Ok(IamResult::absent(Some(user), vec![key.to_owned()])),
            Verdict::Refuse(reason, detail) => {
                Ok(IamResult::rejected(reason, detail, Some(user), Some(key)))
            }
            Verdict::Elsewhere(account) => Ok(IamResult {
                elsewhere: Some(account.clone()),
                ..IamResult::rejected(
                    Reason::OtherAccount,
                    other_account(key, &account, home),
                    Some(user),
                    Some(key),
                )
            }),
        }
    }

    /// Keys named alone (a key-only job, a security event): every owner is found and
    /// judged before any key is changed, so a protected owner refuses the job with
    /// nothing changed. A key IAM cannot place is refused on its own and never blocks the
    /// others; each placed key is revoked from its own owner, and a failure on one key
    /// does not stop the next. A key an earlier delivery changed (docs,
    /// "Continuations") counts as changed by the job once IAM confirms it is gone.
    async fn revoke_unnamed(
        &self,
        job: &Job,
        keys: &[String],
        home: &Home,
        retries: &RetryCounter,
    ) -> Result<IamResult, AwsError> {
        match self.place_keys(job, keys, home, retries).await? {
            Ok(placement) => {
                self.revoke_placed(job, keys, placement, home, retries)
                    .await
            }
            Err(refused) => Ok(*refused),
        }
    }

    /// The second half: revokes each placed key from its owner.
    pub async fn revoke_placement(
        &self,
        job: &Job,
        placement: Placement,
        home: &Home,
        retries: &RetryCounter,
    ) -> IamResult {
        let keys = job.access_key_ids();
        match self
            .revoke_placed(job, &keys, placement, home, retries)
            .await
        {
            Ok(result) => result,
            Err(e) => self.failed(job, e),
        }
    }

    /// Revokes each placed key from its owner; a failure on one key does not stop the
    /// next.
    pub(crate) async fn revoke_placed(
        &self,
        job: &Job,
        keys: &[String],
        placement: Placement,
        home: &Home,
        retries: &RetryCounter,
    ) -> Result<IamResult, AwsError> {
        let event = job.origin.is_some();
        let Placement {
            places,
            last_used,
            failed: unplaced,
            ..
        } = placement;
        let mut results = Vec::with_capacity(places.len() + unplaced.len());
        let mut changed = 0;
        let mut refused: Option<(Reason, String)> = None;
        let mut failed: Option<AwsError> = None;
        let mut elsewhere = None;
        // The keys placed, then those whose place could not be found (each a failure of
        // its own: the job goes round again for them).
        let placed = places.into_iter().map(|(key, place)| (key, Ok(place)));
        let placed = placed.chain(unplaced.into_iter().map(|(key, e)| (key, Err(e))));
        for (key, place) in placed {
            let end = match place {
                Ok(Placed::Owner(user)) => {
                    self.revoke_from(&user, &key, job.action, home, retries)
                        .await
                }
                Ok(Placed::Hinted(user)) => {
                    self.revoke_hinted(&user, &key, job.action, event, home, retries)
                        .await
                }
                Ok(Placed::Gone) => Ok(KeyEnd::Absent(None)),
                Ok(Placed::Unplaced(reason, detail)) => Ok(KeyEnd::Refused(None, reason, detail)),
                Ok(Placed::Elsewhere(account)) => Ok(KeyEnd::Elsewhere(account)),
                Err(e) => Err(e),
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
                Ok(KeyEnd::Elsewhere(account)) => {
                    let reason = Reason::OtherAccount;
                    refused.get_or_insert((reason, other_account(&key, &account, home)));
                    elsewhere = Some(account);
                    (None, "rejected", Some(reason.as_str()))
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
            per_key: results,
            // Only a job of one key goes on in the key's account as a whole.
            elsewhere: elsewhere.filter(|_| keys.len() == 1),
        })
    }

    /// Revokes `key` from `user`, whom IAM names as its owner: a write naming both, and
    /// when IAM answers `NoSuchEntity`, the user's own key list decides.
    async fn revoke_from(
        &self,
        user: &str,
        key: &str,
        action: Action,
        home: &Home,
        retries: &RetryCounter,
    ) -> Result<KeyEnd, AwsError> {
        match self.write(user, key, action, retries).await? {
            Written::Done => Ok(KeyEnd::Changed(user.to_owned())),
            Written::NotFound => Ok(key_end(self.not_the_users(user, key, home, retries).await?)),
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
        home: &Home,
        retries: &RetryCounter,
    ) -> Result<KeyEnd, AwsError> {
        if let Written::Done = self.write(user, key, action, retries).await? {
            return Ok(KeyEnd::Changed(user.to_owned()));
        }
        let (owner, _) = self.owner(key, retries).await?;
        match self.locate(key, owner, home, event, retries).await? {
            Placed::Owner(owner) if owner.eq_ignore_ascii_case(user) => Err(inconsistent(key)),
            Placed::Owner(owner) if self.protection.user(&owner) => Ok(KeyEnd::Refused(
                Some(owner.clone()),
                Reason::Protected,
                format!("access key {key} belongs to protected user {owner}"),
            )),
            Placed::Owner(owner) => self.revoke_from(&owner, key, action, home, retries).await,
            Placed::Gone => Ok(KeyEnd::Absent(None)),
            Placed::Elsewhere(account) => Ok(KeyEnd::Elsewhere(account)),
            // The event's user may be stale or another of the same name: only IAM's own
            // `NoSuchEntity` for the key says it is gone.
            Placed::Unplaced(reason, detail) => Ok(KeyEnd::Refused(None, reason, detail)),
            // `place` names no hint.
            Placed::Hinted(_) => Err(inconsistent(key)),
        }
    }

    /// Every key of `user` but the `spared` ones (keys a person restored since a staged
    /// job was sent).
    async fn revoke_all(
        &self,
        user: &str,
        action: Action,
        spared: &[String],
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
            // `all_keys` never answers `Elsewhere`: a user's own list names no account.
            Verdict::Absent | Verdict::Propagating | Verdict::Elsewhere(_) => {
                return Ok(IamResult::absent(Some(user), Vec::new()))
            }
        };
        let mut present = Vec::new();
        let mut changed = 0;
        for key in keys {
            if spared.contains(&key.id) {
                continue;
            }
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
}

/// The result a changed key reports for `action`.
fn action_result(action: Action) -> &'static str {
    action.outcome_name()
}

/// What [`Iam::not_the_users`] decided, for one key of several.
fn key_end(result: IamResult) -> KeyEnd {
    match (result.effect, result.elsewhere) {
        (_, Some(account)) => KeyEnd::Elsewhere(account),
        (Effect::Rejected(reason, detail), None) => {
            KeyEnd::Refused(result.user_name, reason, detail)
        }
        _ => KeyEnd::Absent(result.user_name),
    }
}

/// The detail of a key STS places in another account than the job's.
fn other_account(key: &str, account: &str, home: &Home) -> String {
    format!(
        "STS says access key {key} belongs to account {account}, not {}, where the job acted: it was not changed there",
        home.account()
    )
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
        unanswered: false,
    }
}
