//! Where the keys of a job that names keys alone stand before any write (docs,
//! "Security events"): the owner the job's source named or IAM's owner lookup found, the
//! account STS places a key in when IAM cannot, and a protected key or owner refused on
//! its own. The first half of [`Iam::revoke`] for such a job; `aws::revoke` the second.

use crate::aws::classify::AwsError;
use crate::aws::home::Home;
use crate::aws::iam::{Iam, LastUsed};
use crate::aws::retry::RetryCounter;
use crate::aws::verdict::{place, IamResult, Owner, Placed};
use crate::job::{Job, OwnerSource};
use crate::outcome::Reason;

/// Where the keys of a job that names keys alone stand before any write.
#[derive(Debug, Default)]
pub struct Placement {
    pub(crate) places: Vec<(String, Placed)>,
    /// Each key's last use, where IAM was asked for its owner.
    pub last_used: Vec<LastUsed>,
    /// The owners IAM's lookup named (key, user): once such a key is deleted, IAM can no
    /// longer name them.
    pub looked_up: Vec<(String, String)>,
    /// Keys whose place could not be found (IAM or STS failing past the backoff): the
    /// others are revoked all the same, and the job goes round again for these.
    pub(crate) failed: Vec<(String, AwsError)>,
}

impl Iam {
    /// Where each key of a job that names keys alone stands, before any write: the
    /// owner named by the job's source or found with `GetAccessKeyLastUsed` (and, for a
    /// key IAM cannot place, the account STS says it belongs to). A protected key or
    /// owner refuses that key only (docs, "Security events": one protected key does
    /// not shield the rest); for a job of one key that is the whole job (`Err`), with
    /// nothing changed.
    pub(crate) async fn place_keys(
        &self,
        job: &Job,
        keys: &[String],
        home: &Home,
        retries: &RetryCounter,
    ) -> Result<Result<Placement, Box<IamResult>>, AwsError> {
        let event = job.origin.is_some();
        let mut placement = Placement::default();
        for key in keys {
            let hint = job.known_owner(key);
            let place = match hint {
                _ if self.protection.key(key) => {
                    Placed::Unplaced(Reason::Protected, format!("access key {key} is protected"))
                }
                Some(known) if known.source == OwnerSource::Learned => {
                    Placed::Owner(known.user_name.clone())
                }
                // The event's user is a hint: never a write on a protected name it gives;
                // IAM's owner decides whether the key is a protected user's.
                Some(known) if !self.protection.user(&known.user_name) => {
                    Placed::Hinted(known.user_name.clone())
                }
                _ => match self
                    .look_up(key, home, event, &mut placement, retries)
                    .await
                {
                    Ok(place) => place,
                    // One key's lookup failing never holds the others back.
                    Err(e) if keys.len() > 1 => {
                        placement.failed.push((key.clone(), e));
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let place = match place {
                Placed::Owner(user) if self.protection.user(&user) => Placed::Unplaced(
                    Reason::Protected,
                    format!("access key {key} belongs to protected user {user}"),
                ),
                place => place,
            };
            if let (1, Placed::Unplaced(Reason::Protected, detail)) = (keys.len(), &place) {
                let named = placement.looked_up.first().map(|(_, u)| u.as_str());
                return Ok(Err(Box::new(
                    IamResult {
                        last_used: placement.last_used,
                        ..IamResult::rejected(Reason::Protected, detail.clone(), named, None)
                    }
                    .with_keys(keys),
                )));
            }
            placement.places.push((key.clone(), place));
        }
        Ok(Ok(placement))
    }

    /// IAM's owner of `key` (`GetAccessKeyLastUsed`), placed, with its last use noted.
    async fn look_up(
        &self,
        key: &str,
        home: &Home,
        event: bool,
        placement: &mut Placement,
        retries: &RetryCounter,
    ) -> Result<Placed, AwsError> {
        let (owner, used) = self.owner(key, retries).await?;
        placement.last_used.extend(used);
        if let Owner::User(user) = &owner {
            placement.looked_up.push((key.to_owned(), user.clone()));
        }
        self.locate(key, owner, home, event, retries).await
    }

    /// Where a key IAM's owner lookup answered for stands: STS is asked which account it
    /// belongs to only when IAM could not place it.
    pub(crate) async fn locate(
        &self,
        key: &str,
        owner: Owner,
        home: &Home,
        event: bool,
        retries: &RetryCounter,
    ) -> Result<Placed, AwsError> {
        let key_home = match &owner {
            Owner::Unresolved(..) => Some(home.of(key, retries).await?),
            Owner::User(_) => None,
        };
        Ok(place(key, owner, key_home.as_ref(), event))
    }

    /// Finds the owners of the keys `job` names alone, changing nothing: the first half
    /// of [`Iam::revoke`] for such a job. `Err` is the job's result when it ends here
    /// (a protected owner, an AWS failure).
    pub async fn place(
        &self,
        job: &Job,
        home: &Home,
        retries: &RetryCounter,
    ) -> Result<Placement, IamResult> {
        let keys = job.access_key_ids();
        match self.place_keys(job, &keys, home, retries).await {
            Ok(Ok(placement)) => Ok(placement),
            Ok(Err(refused)) => Err(*refused),
            Err(e) => Err(self.failed(job, e)),
        }
    }
}
