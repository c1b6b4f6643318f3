//! Quarantine after the key action (README, "Quarantine"): `quarantine.policy_arn`
//! attached to each user whose key the job revoked. Like every step after the
//! revocation, it never changes the job's outcome: a failure is retried by the retry
//! wrapper, then counted, logged and said in the outcome's `quarantine`.

use crate::aws::iam::Iam;
use crate::aws::retry::RetryCounter;
use crate::metrics;
use crate::worker::Worker;

impl Worker {
    /// Attaches the quarantine policy to `users`; returns what became of it, one note
    /// per user. A protected user never gets it.
    pub(super) async fn quarantine(
        &self,
        iam: &Iam,
        users: &[String],
        retries: &RetryCounter,
    ) -> String {
        let policy = &self.config.quarantine.policy_arn;
        let name = policy.rsplit('/').next().unwrap_or(policy);
        let mut notes = Vec::new();
        for user in users {
            if self.protection.user(user) {
                notes.push(format!("user {user} is protected: not quarantined"));
                continue;
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
