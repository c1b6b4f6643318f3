//! The decision tables: what IAM's answers mean for a key, a user and a job. The worker
//! acts on them (`aws::revoke`) and `plan` predicts from them (`Iam::preview`), so the
//! two cannot drift apart.

use crate::aws::classify::AwsError;
use crate::aws::home::KeyHome;
use crate::guard::Protection;
use crate::job::{Action, LastUsed};
use crate::outcome::{KeyResult, Reason};

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
pub(crate) enum Verdict {
    /// The key is this user's: act on it.
    Act(String),
    /// Not among the user's keys, and IAM places it with nobody.
    Absent,
    /// IAM contradicts itself while a change propagates (eventual consistency): look
    /// again later.
    Propagating,
    /// Refused, nothing changed.
    Refuse(Reason, String),
    /// STS says the key belongs to this other account.
    Elsewhere(String),
}

/// What IAM says about a key and the user a job names.
pub(crate) enum Seen {
    /// Among the user's keys (`ListAccessKeys`).
    Listed,
    /// Not among them (or no such user); `GetAccessKeyLastUsed` names this owner.
    NotListed(Owner),
}

/// The table for a key named with its user. `home` is where STS says the key belongs,
/// asked only when IAM could not place it (`Seen::NotListed(Owner::Unresolved)`).
pub(crate) fn named_key(key: &str, user: &str, seen: Seen, home: Option<&KeyHome>) -> Verdict {
    match seen {
        Seen::Listed => Verdict::Act(user.to_owned()),
        Seen::NotListed(Owner::User(owner)) if owner.eq_ignore_ascii_case(user) => {
            Verdict::Propagating
        }
        Seen::NotListed(Owner::User(owner)) => Verdict::Refuse(
            Reason::OwnerMismatch,
            format!("access key {key} belongs to user {owner}, not {user}"),
        ),
        Seen::NotListed(Owner::Unresolved(how, why)) => match unplaced(key, how, why, home) {
            Placed::Gone => Verdict::Absent,
            Placed::Elsewhere(account) => Verdict::Elsewhere(account),
            Placed::Unplaced(reason, detail) => Verdict::Refuse(reason, detail),
            Placed::Owner(_) | Placed::Hinted(_) => Verdict::Propagating,
        },
    }
}

/// The table for every key of a user (`None`: no such user).
pub(crate) fn all_keys(user: &str, keys: Option<&[ListedKey]>, protection: &Protection) -> Verdict {
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
pub(crate) enum Owner {
    User(String),
    /// IAM could not place the key: it named no user, said `NoSuchEntity`, or answered
    /// `AccessDenied` for the key. The text says which.
    Unresolved(Unplaced, String),
}

/// How IAM failed to place a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unplaced {
    /// `NoSuchEntity`: no such key in this account.
    NotFound,
    /// `AccessDenied` for the key.
    Denied,
    /// An answer that names no user.
    NoUser,
}

/// Where a key named alone stands before any write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placed {
    /// IAM names this owner (now, or to an earlier delivery of the job): revoke the key
    /// from them.
    Owner(String),
    /// The security event names this user: try them first, then IAM's owner lookup.
    Hinted(String),
    /// No such key in the account a security event is about (`NoSuchEntity`): gone.
    Gone,
    /// IAM cannot place it: refused for this key, the others go on.
    Unplaced(Reason, String),
    /// STS says the key belongs to this other account.
    Elsewhere(String),
}

/// The table for a key named alone, in a job from a security event or not. `home` is
/// where STS says the key belongs, asked only when IAM could not place it: `NoSuchEntity`
/// is absence only for a key of the account asked (or one STS does not know); a key of
/// another account is worked there or refused `other_account`; `AccessDenied` is the
/// worker's permission for an event, `owner_unknown` for a job message.
pub(crate) fn place(key: &str, owner: Owner, home: Option<&KeyHome>, event: bool) -> Placed {
    match owner {
        Owner::User(owner) => Placed::Owner(owner),
        Owner::Unresolved(Unplaced::Denied, why) if event && !elsewhere(home) => {
            Placed::Unplaced(
                Reason::AccessDenied,
                format!("IAM refused to say who owns access key {key} ({why}); the worker needs iam:GetAccessKeyLastUsed in the event's account"),
            )
        }
        Owner::Unresolved(Unplaced::Denied, why) if !elsewhere(home) => Placed::Unplaced(
            Reason::OwnerUnknown,
            format!(
                "IAM cannot say who owns access key {key} ({why}); name its user_name to revoke it or to confirm it is gone"
            ),
        ),
        Owner::Unresolved(how, why) => unplaced(key, how, why, home),
    }
}

fn elsewhere(home: Option<&KeyHome>) -> bool {
    matches!(home, Some(KeyHome::Elsewhere(_)))
}

/// A key IAM could not place in the account asked, with where STS says it belongs.
fn unplaced(key: &str, how: Unplaced, why: String, home: Option<&KeyHome>) -> Placed {
    match (how, home) {
        (_, Some(KeyHome::Elsewhere(account))) => Placed::Elsewhere(account.clone()),
        // IAM has no such key in the key's own account (or STS knows none): gone.
        (Unplaced::NotFound, Some(KeyHome::Here | KeyHome::Unknown)) => Placed::Gone,
        // A key of this account that IAM ties to no user.
        (Unplaced::NoUser, Some(KeyHome::Here)) => Placed::Unplaced(
            Reason::NotRevocable,
            format!(
                "IAM ties access key {key} to no user ({why}), though it belongs to this account: it may be the AWS account root user's key, which IAM cannot change and the worker never does; sign in as the root user, delete it under Security credentials, and check what it did"
            ),
        ),
        (Unplaced::Denied, _) => Placed::Unplaced(
            Reason::AccessDenied,
            format!(
                "IAM refused to say who owns access key {key} ({why}): the worker cannot confirm that it is gone; it needs iam:GetAccessKeyLastUsed"
            ),
        ),
        // Not asked, or STS and IAM disagree: never guessed absent.
        _ => Placed::Unplaced(
            Reason::OwnerUnknown,
            format!(
                "IAM cannot say who owns access key {key} ({why}); name its user_name to revoke it or to confirm it is gone"
            ),
        ),
    }
}

/// One key as listed.
pub(crate) struct ListedKey {
    pub(crate) id: String,
    pub(crate) active: bool,
}

/// What the IAM step decided.
#[derive(Debug, Clone)]
pub enum Effect {
    /// The action was applied (or the key was already in the asked-for state).
    Revoked,
    /// The key or user does not exist.
    AlreadyAbsent,
    /// The key's status is not the one the job required; nothing was changed.
    Cancelled(String),
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
    /// Each key's owner and result, for every job that names keys alone (one key too):
    /// what a continuation carries on.
    pub per_key: Vec<KeyResult>,
    /// The account STS says the job's one key belongs to, when that is not the account
    /// the job acted in (docs, "Which account"): the job may be worked there.
    pub elsewhere: Option<String>,
}

impl IamResult {
    pub(crate) fn rejected(
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
            per_key: Vec::new(),
            elsewhere: None,
        }
    }

    pub(crate) fn absent(user_name: Option<&str>, keys: Vec<String>) -> Self {
        Self {
            effect: Effect::AlreadyAbsent,
            user_name: user_name.map(str::to_owned),
            access_key_ids: keys,
            keys_changed: 0,
            last_used: Vec::new(),
            per_key: Vec::new(),
            elsewhere: None,
        }
    }

    pub(crate) fn with_keys(mut self, keys: &[String]) -> Self {
        self.access_key_ids = keys.to_vec();
        self
    }

    /// The users whose keys the job concerned: the one user, or each key's owner.
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self.user_name.iter().cloned().collect();
        for key in &self.per_key {
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

/// A job's result when it changed `changed` of `keys` of `user`.
pub(crate) fn revoked(user: &str, keys: Vec<String>, changed: usize) -> IamResult {
    IamResult {
        effect: Effect::Revoked,
        user_name: Some(user.to_owned()),
        access_key_ids: keys,
        keys_changed: changed,
        last_used: Vec::new(),
        per_key: Vec::new(),
        elsewhere: None,
    }
}
