//! Which account a key belongs to (docs, "Which account"): IAM answering
//! `NoSuchEntity` in the account a job names proves the key absent only if the key
//! belongs to that account. STS `GetAccessKeyInfo` says which account a key id belongs
//! to; the worker asks it only where IAM could not find a key, before it concludes
//! anything from that.
//!
//! From the AWS STS API Reference, `GetAccessKeyInfo`: it "returns the ID of the AWS
//! account to which the keys belong", for a key of any account; it "does not indicate the
//! state of the access key. The key might be active, inactive, or deleted", and
//! "providing a deleted access key might return an error that the key doesn't exist". No
//! error code is documented for that: an answer classified not-found is taken for it,
//! and any other failure is never taken for absence (the job is retried or refused).

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::retry::{call, BackoffPolicy, RetryCounter};

/// Where STS says a key belongs, seen from the account a job acts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyHome {
    /// The job's own account.
    Here,
    /// Another account.
    Elsewhere(String),
    /// STS says there is no such key (a deleted key may answer so).
    Unknown,
}

/// The account a job acts in, and STS to ask about keys IAM cannot find there.
#[derive(Debug, Clone)]
pub struct Home {
    account: String,
    sts: aws_sdk_sts::Client,
    policy: BackoffPolicy,
}

impl Home {
    pub fn new(account: &str, sts: aws_sdk_sts::Client, policy: BackoffPolicy) -> Self {
        Self {
            account: account.to_owned(),
            sts,
            policy,
        }
    }

    /// The account the job acts in.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Where `key` belongs.
    pub async fn of(&self, key: &str, retries: &RetryCounter) -> Result<KeyHome, AwsError> {
        let result = call(&self.policy, retries, "sts", "GetAccessKeyInfo", || async {
            self.sts
                .get_access_key_info()
                .access_key_id(key)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("GetAccessKeyInfo", e))
        })
        .await
        .map_err(about_the_key);
        match result {
            Ok(out) => match out.account() {
                Some(account) if account == self.account => Ok(KeyHome::Here),
                Some(account) if crate::job::is_account_id(account) => {
                    Ok(KeyHome::Elsewhere(account.to_owned()))
                }
                _ => Err(AwsError {
                    operation: "GetAccessKeyInfo",
                    class: ErrorClass::Transient,
                    code: None,
                    message: format!("STS named no account for access key {key}"),
                    unanswered: false,
                }),
            },
            Err(e) if e.class == ErrorClass::NotFound => Ok(KeyHome::Unknown),
            Err(e) => Err(e),
        }
    }
}

/// What an STS failure means here: never absence, and never a verdict on the job (CONTRACT
/// §1a: any STS error but not-found leaves the job for a retry). `InvalidAccessKeyId` may be
/// STS's word on the key in the request, so it is not taken for the worker's own
/// credentials failing (which would pause the worker); a refusal (`AccessDenied`: the
/// worker lacks `sts:GetAccessKeyInfo`) is retried too, and says so.
fn about_the_key(e: AwsError) -> AwsError {
    match e.class {
        ErrorClass::NotFound | ErrorClass::Transient => e,
        ErrorClass::Credentials if e.code.as_deref() != Some("InvalidAccessKeyId") => e,
        _ if e.is_access_denied() => AwsError {
            class: ErrorClass::Transient,
            message: format!(
                "{} (the worker needs sts:GetAccessKeyInfo to tell which account a key it cannot find belongs to)",
                e.message
            ),
            ..e
        },
        _ => AwsError {
            class: ErrorClass::Transient,
            ..e
        },
    }
}
