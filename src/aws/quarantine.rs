//! Quarantine (README, "Quarantine"): attaching a managed policy, by default AWS's
//! `AWSCompromisedKeyQuarantineV3`, to the user of a leaked key, as AWS does itself when
//! it finds a key exposed. `AttachUserPolicy` of a policy already attached succeeds, so a
//! redelivered job attaches nothing twice.

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
