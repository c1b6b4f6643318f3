//! Quarantine (docs, "Quarantine"): attaching a managed policy, by default AWS's
//! `AWSCompromisedKeyQuarantineV4`, to the user of a leaked key, as AWS does itself when
//! it finds a key exposed. `AttachUserPolicy` of a policy already attached succeeds, so a
//! redelivered job attaches nothing twice. `restore --lift-quarantine` detaches it.

use crate::aws::classify::AwsError;
use crate::aws::iam::Iam;
use crate::aws::retry::RetryCounter;

impl Iam {
    /// Attaches `policy_arn` to `user`.
    pub async fn quarantine(
        &self,
        user: &str,
        policy_arn: &str,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        self.request("AttachUserPolicy", retries, || {
            self.client
                .attach_user_policy()
                .user_name(user)
                .policy_arn(policy_arn)
                .send()
        })
        .await
        .map(drop)
    }
}

impl Iam {
    /// Whether `policy_arn` is attached to `user` (`ListAttachedUserPolicies`); `None`
    /// when there is no such user.
    pub async fn quarantined(
        &self,
        user: &str,
        policy_arn: &str,
        retries: &RetryCounter,
    ) -> Result<Option<bool>, AwsError> {
        let pages = self
            .pages(
                "ListAttachedUserPolicies",
                retries,
                |marker| {
                    self.client
                        .list_attached_user_policies()
                        .user_name(user)
                        .set_marker(marker)
                        .send()
                },
                |page| crate::aws::iam::next_marker(page.is_truncated(), page.marker()),
            )
            .await?;
        Ok(pages.map(|pages| {
            pages
                .iter()
                .flat_map(|page| page.attached_policies())
                .any(|p| p.policy_arn() == Some(policy_arn))
        }))
    }

    /// Detaches `policy_arn` from `user` (`restore --lift-quarantine`); one that is not
    /// attached any more is fine.
    pub async fn release(
        &self,
        user: &str,
        policy_arn: &str,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        let detached = self
            .request("DetachUserPolicy", retries, || {
                self.client
                    .detach_user_policy()
                    .user_name(user)
                    .policy_arn(policy_arn)
                    .send()
            })
            .await
            .map(drop);
        match detached {
            Err(e) if e.class != crate::aws::classify::ErrorClass::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Iam {
    /// Whether the managed policy `policy_arn` exists (`GetPolicy`; `NoSuchEntity` when
    /// it does not).
    pub async fn policy_exists(
        &self,
        policy_arn: &str,
        retries: &RetryCounter,
    ) -> Result<bool, AwsError> {
        let got = self
            .request("GetPolicy", retries, || {
                self.client.get_policy().policy_arn(policy_arn).send()
            })
            .await;
        match got {
            Ok(_) => Ok(true),
            Err(e) if e.class == crate::aws::classify::ErrorClass::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
