//! Quarantine after the key action (docs, "Quarantine"): `quarantine.policy_arn`
//! attached to each user whose key the job revoked. Like every step after the
//! revocation, it never changes the job's outcome: a failure is retried by the retry
//! wrapper, then counted, logged and said in the outcome's `quarantine`.

use crate::aws::accounts::Accounts;
use crate::aws::iam::Iam;
use crate::aws::retry::RetryCounter;
use crate::config::Config;
use crate::config_checks::quarantine_policy_in;
use crate::metrics;
use crate::worker::Worker;

/// `quarantine.policy_arn` in the worker's partition (AWS's managed policies exist in each
/// under their name), checked once (CONTRACT §2e): at start when every security event is
/// quarantined (`intake.quarantine_user`), else before the first quarantine. `None` when
/// IAM says it does not exist, so that nobody is quarantined and the worker says so. A
/// check that cannot be made (no `iam:GetPolicy`, IAM unreachable) is logged and the
/// policy used as it is.
pub(super) async fn check_policy(accounts: &Accounts, config: &Config) -> Option<String> {
    let retries = RetryCounter::default();
    let partition = match accounts.own_identity(&retries).await {
        Ok(identity) => identity.partition.clone(),
        Err(_) => "aws".to_owned(),
    };
    let policy = quarantine_policy_in(&config.quarantine.policy_arn, &partition);
    let iam = match accounts.iam_for(None, &retries).await {
        Ok(iam) => iam,
        Err(_) => return Some(policy),
    };
    match iam.policy_exists(&policy, &retries).await {
        Ok(true) => Some(policy),
        Ok(false) => {
            tracing::warn!(policy_arn = %policy, "quarantine.policy_arn does not exist: nobody is quarantined (docs, \"Quarantine\")");
            None
        }
        Err(e) => {
            tracing::warn!(policy_arn = %policy, error = %e, "Could not check that quarantine.policy_arn exists; using it as it is");
            Some(policy)
        }
    }
}

impl Worker {
    /// The quarantine policy, checked once ([`check_policy`]).
    pub(super) async fn quarantine_policy(&self) -> Option<&String> {
        self.quarantine_policy
            .get_or_init(|| check_policy(&self.accounts, &self.config))
            .await
            .as_ref()
    }

    /// Attaches the quarantine policy to `users`; returns what became of it, one note
    /// per user. A protected user never gets it, nor a user who holds a protected key
    /// (the policy would deny that key's own calls).
    pub(super) async fn quarantine(
        &self,
        iam: &Iam,
        users: &[String],
        retries: &RetryCounter,
    ) -> String {
        let Some(policy) = self.quarantine_policy().await else {
            return format!(
                "nobody quarantined: quarantine.policy_arn {} does not exist",
                self.config.quarantine.policy_arn
            );
        };
        let name = policy.rsplit('/').next().unwrap_or(policy);
        let mut notes = Vec::new();
        for user in users {
            if self.protection.user(user) {
                notes.push(format!("user {user} is protected: not quarantined"));
                continue;
            }
            match iam.protected_key_of(user, retries).await {
                Ok(Some(key)) => {
                    notes.push(format!(
                        "user {user} holds protected access key {key}: not quarantined, since the policy would deny that key's calls too"
                    ));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    metrics::quarantine(false);
                    notes.push(format!(
                        "{name} NOT attached to {user}: whether the user holds a protected key could not be read ({e})"
                    ));
                    continue;
                }
            }
            match iam.quarantine(user, policy, retries).await {
                Ok(()) => {
                    metrics::quarantine(true);
                    tracing::info!(user_name = %user, policy_arn = %policy, "User quarantined");
                    notes.push(format!("{name} attached to {user}"));
                }
                Err(e) => {
                    metrics::quarantine(false);
                    let hint = match e.code.as_deref() {
                        // IAM and AWS STS quotas: managed policies per user, 10 by
                        // default, at most 20.
                        Some("LimitExceeded") => ": the user has as many managed policies attached as IAM's quota allows (10 by default); detach one or raise the quota, then attach it by hand",
                        Some("NoSuchEntity") => ": the user or the policy does not exist (check quarantine.policy_arn)",
                        _ if e.is_access_denied() => ": the worker needs iam:AttachUserPolicy on quarantine.policy_arn",
                        _ => "",
                    };
                    tracing::warn!(user_name = %user, policy_arn = %policy, error = %e, "Could not quarantine the user");
                    notes.push(format!("{name} NOT attached to {user}: {e}{hint}"));
                }
            }
        }
        notes.join("; ")
    }
}
