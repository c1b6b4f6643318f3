//! A user's console password (`GetLoginProfile`, `DeleteLoginProfile`; IAM API
//! Reference): what a follow-up of the leaked key's `CreateLoginProfile` or
//! `UpdateLoginProfile` removes (docs, "What the leaked key made").

use aws_smithy_types::DateTime;

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::iam::Iam;
use crate::aws::retry::RetryCounter;

impl Iam {
    /// When `user`'s console password was created; `None` when the user has none (or
    /// there is no such user).
    pub async fn login_profile_created(
        &self,
        user: &str,
        retries: &RetryCounter,
    ) -> Result<Option<DateTime>, AwsError> {
        let got = self
            .request("GetLoginProfile", retries, || {
                self.client.get_login_profile().user_name(user).send()
            })
            .await;
        match got {
            Ok(out) => Ok(out.login_profile().map(|p| *p.create_date())),
            Err(e) if e.class == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes `user`'s console password; `false` when there was none.
    pub async fn delete_login_profile(
        &self,
        user: &str,
        retries: &RetryCounter,
    ) -> Result<bool, AwsError> {
        let deleted = self
            .request("DeleteLoginProfile", retries, || {
                self.client.delete_login_profile().user_name(user).send()
            })
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(e) if e.class == ErrorClass::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
