//! IAM for staged revocation (docs, "Staged revocation"): the keys a staged job covers,
//! the scheduled delete that requires its key `Inactive`, and `restore`'s read of a key's
//! status and its reactivation.

use crate::aws::classify::AwsError;
use crate::aws::home::Home;
use crate::aws::iam::Iam;
use crate::aws::retry::RetryCounter;
use crate::aws::verdict::{Effect, IamResult};
use crate::job::{Job, Target};
use crate::outcome::Reason;

impl Iam {
    /// A job that requires its key `Inactive` (the scheduled delete of a staged
    /// revocation; such a job names its user): the owner's key list: a key listed `Active`
    /// ends the job `cancelled` with nothing changed (a person restored it); a key not
    /// listed is absent; for an `Inactive` key, `still_staged` is asked right before the
    /// write (`Some(why)`: the staging was undone, `cancelled`), then the job's action. IAM
    /// has no conditional delete: a reactivation between the list and the delete is not
    /// seen (docs, "Required status", says how long that can be).
    pub async fn revoke_required(
        &self,
        job: &Job,
        home: &Home,
        still_staged: impl std::future::Future<Output = Result<Option<String>, AwsError>>,
        retries: &RetryCounter,
    ) -> IamResult {
        let Target::Key {
            access_key_id: key, ..
        } = &job.target
        else {
            // Parsing refuses such a job: require_status names one key.
            return IamResult::rejected(
                Reason::InvalidMessage,
                "require_status needs one access_key_id".to_owned(),
                job.user_name(),
                None,
            );
        };
        match self
            .if_inactive(job, key, home, still_staged, retries)
            .await
        {
            Ok(result) => result,
            Err(e) => self.failed(job, e),
        }
    }

    async fn if_inactive(
        &self,
        job: &Job,
        key: &str,
        home: &Home,
        still_staged: impl std::future::Future<Output = Result<Option<String>, AwsError>>,
        retries: &RetryCounter,
    ) -> Result<IamResult, AwsError> {
        let Some(user) = job.user_name().map(str::to_owned) else {
            // Parsing refuses such a job; never act on a key whose status was not read.
            return Ok(IamResult::rejected(
                Reason::InvalidMessage,
                "require_status needs user_name".to_owned(),
                None,
                Some(key),
            ));
        };
        if self.protection.user(&user) {
            let detail = format!("access key {key} belongs to protected user {user}");
            return Ok(IamResult::rejected(
                Reason::Protected,
                detail,
                Some(&user),
                Some(key),
            ));
        }
        let cancelled = |detail: String| IamResult {
            effect: Effect::Cancelled(detail),
            ..IamResult::absent(Some(&user), vec![key.to_owned()])
        };
        let listed = self.list_keys(&user, retries).await?;
        match listed.unwrap_or_default().iter().find(|k| k.id == key) {
            None => self.not_the_users(&user, key, home, retries).await,
            Some(listed) if listed.active => Ok(cancelled(format!(
                "access key {key} of {user} is Active again, not Inactive as the job requires: left alone"
            ))),
            Some(_) => match still_staged.await? {
                Some(why) => Ok(cancelled(format!(
                    "access key {key} of {user} left alone: {why}"
                ))),
                None => {
                    self.revoke_named(&user, key, job.action, home, retries)
                        .await
                }
            },
        }
    }

    /// `user`'s keys, each with whether it is `Active` (`ListAccessKeys`); none when the
    /// user does not exist.
    pub async fn key_statuses(
        &self,
        user: &str,
        retries: &RetryCounter,
    ) -> Result<Vec<(String, bool)>, AwsError> {
        let listed = self.list_keys(user, retries).await?;
        Ok(listed
            .unwrap_or_default()
            .into_iter()
            .map(|k| (k.id, k.active))
            .collect())
    }

    /// Sets `key` of `user` back to `Active` (the operator's `restore`; no job message
    /// can do this).
    pub async fn reactivate(
        &self,
        user: &str,
        key: &str,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        self.set_active(user, key, retries).await
    }

    /// The ids of `user`'s keys; none when the user does not exist.
    pub async fn key_ids(
        &self,
        user: &str,
        retries: &RetryCounter,
    ) -> Result<Vec<String>, AwsError> {
        Ok(self
            .list_keys(user, retries)
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(|k| k.id)
            .collect())
    }
}
