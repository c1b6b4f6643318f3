//! IAM for staged revocation (README, "Staged revocation"): the keys a staged job covers,
//! and `restore`'s read of a key's status and its reactivation.

use crate::aws::classify::AwsError;
use crate::aws::iam::Iam;
use crate::aws::retry::RetryCounter;

impl Iam {
    /// Whether `key` is `user`'s and `Active`: `None` when IAM does not list it for them.
    pub async fn key_active(
        &self,
        user: &str,
        key: &str,
        retries: &RetryCounter,
    ) -> Result<Option<bool>, AwsError> {
        let listed = self.list_keys(user, retries).await?;
        Ok(listed
            .unwrap_or_default()
            .iter()
            .find(|k| k.id == key)
            .map(|k| k.active))
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
