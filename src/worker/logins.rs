//! Console passwords the leaked key created or reset (docs, "What the leaked key made"):
//! the follow-up the activity report sends (`contain.login_profiles = "delete"`), and its
//! work. The follow-up is a message of the worker's own, MACed: a console password is
//! removed only on the worker's word that CloudTrail recorded the leaked key setting it,
//! never on a producer's. A password created after the leaked key's `CreateLoginProfile`
//! or `UpdateLoginProfile` is not the one it set, and is left alone.

use crate::activity::{Made, Task};
use crate::aws::mac::{Purpose, Verified};
use crate::aws::retry::RetryCounter;
use crate::aws::sqs::Outgoing;
use crate::config::ContainLogins;
use crate::login_task::{login_follow_up_id, LoginTask};
use crate::metrics;
use crate::outcome::{Outcome, Reason};
use crate::worker::settle::{Decision, CONTINUATION_TTL_MS};
use crate::worker::Worker;

/// How much later than the leaked key's `CreateLoginProfile` a password's creation time
/// may be and still be that call's (IAM's clock and CloudTrail's record differ a little).
const SAME_CALL_MS: u64 = 60_000;

impl Worker {
    /// The follow-up removing the console password `item` says the leaked key of `task`
    /// set, sent to `queue_url`; what the report says of it.
    pub(super) async fn send_login_follow_up(
        &self,
        task: &Task,
        item: &Made,
        queue_url: &str,
        retries: &RetryCounter,
    ) -> Result<String, String> {
        let Some(user) = item.user_name.clone() else {
            return Ok("reported: CloudTrail named no user".to_owned());
        };
        if self.config.contain.login_profiles == ContainLogins::Report {
            return Ok("reported (contain.login_profiles = \"report\")".to_owned());
        }
        let Some(mac) = &self.settler.mac else {
            return Ok(
                "reported: removing a console password needs the worker's own message, MACed (continuation.mac_key_id)".to_owned(),
            );
        };
        let mut follow_up = LoginTask {
            request_id: login_follow_up_id(&task.request_id, &user, &item.time),
            user_name: user.clone(),
            account_id: task.account_id.clone(),
            made_by: task.request_id.clone(),
            made_with: item.made_with.clone(),
            api: item.api.clone(),
            at: item.time.clone(),
            expires_at_ms: Some(metrics::now_ms() + CONTINUATION_TTL_MS),
            mac: None,
        };
        let canonical = follow_up.canonical();
        let signature = Box::pin(mac.sign(Purpose::LoginProfile, &canonical, retries))
            .await
            .map_err(|e| e.to_string())?;
        follow_up.mac = Some(signature);
        let fifo = queue_url.ends_with(".fifo");
        let outgoing = Outgoing {
            body: follow_up.to_body(),
            group_id: fifo.then(|| user.clone()),
            deduplication_id: fifo.then(|| follow_up.request_id.clone()),
            delay_seconds: None,
        };
        match self
            .sqs
            .send_batch(queue_url, std::slice::from_ref(&outgoing), retries)
            .await
        {
            Ok(refused) if refused.is_empty() => {
                tracing::info!(request_id = %task.request_id, follow_up = %follow_up.request_id, user_name = %user, "A console password the leaked key set: follow-up job sent");
                Ok(format!(
                    "follow-up job {} (delete the console password)",
                    follow_up.request_id
                ))
            }
            Ok(refused) => Err(refused.first().map(|r| r.code.clone()).unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Works a console password follow-up: the worker's own (its MAC verifies), a user
    /// not protected, the password still the one the leaked key set; then deleted.
    pub(super) async fn remove_login(&self, task: &LoginTask, retries: &RetryCounter) -> Decision {
        if let Err(refused) = self.own_login_task(task, retries).await {
            return refused;
        }
        let user = &task.user_name;
        if self.protection.user(user) {
            return Decision::new(
                Outcome::Rejected(Reason::Protected),
                format!("user {user} is protected: console password left alone"),
            );
        }
        let iam = match self
            .accounts
            .iam_for(task.account_id.as_deref(), retries)
            .await
        {
            Ok(iam) => iam,
            Err(e) => {
                return Decision::new(
                    Outcome::Rejected(Reason::CrossAccountDisabled),
                    e.to_string(),
                )
            }
        };
        let made = format!(
            "{} by {} at {} (job {})",
            task.api, task.made_with, task.at, task.made_by
        );
        let created = match iam.login_profile_created(user, retries).await {
            Ok(Some(created)) => created,
            Ok(None) => {
                return Decision::new(
                    Outcome::AlreadyAbsent,
                    format!("{user} has no console password (it was set with {made})"),
                )
            }
            Err(e) => return self.aws_failure(e, 0),
        };
        let at_ms = crate::activity::parse_iso_ms(&task.at).unwrap_or(0);
        let created_ms = created.to_millis().ok().and_then(|m| u64::try_from(m).ok());
        // A password created after the call is not the one it set (or reset).
        if created_ms.is_some_and(|c| c > at_ms + SAME_CALL_MS) {
            return Decision::new(
                Outcome::Cancelled,
                format!(
                    "{user}'s console password was made again at {}, after {made}: not the one the leaked key set; left alone",
                    crate::activity::iso(created_ms.unwrap_or(0))
                ),
            );
        }
        match iam.delete_login_profile(user, retries).await {
            Ok(true) => {
                tracing::warn!(user_name = %user, made_by = %task.made_by, "Deleted a console password the leaked key set");
                Decision::new(
                    Outcome::Deleted,
                    format!("console password of {user} deleted (set with {made})"),
                )
            }
            Ok(false) => Decision::new(
                Outcome::AlreadyAbsent,
                format!("{user} has no console password any more (it was set with {made})"),
            ),
            Err(e) => self.aws_failure(e, 0),
        }
    }

    /// Whether a console password follow-up is the worker's own: only with a MAC key, and
    /// only when its MAC verifies within its time.
    async fn own_login_task(
        &self,
        task: &LoginTask,
        retries: &RetryCounter,
    ) -> Result<(), Decision> {
        let refused = |why: String| {
            metrics::unverified_message("login_profile");
            tracing::warn!(request_id = %task.request_id, why = %why, "A console password follow-up that does not verify: refused");
            Decision::new(
                Outcome::Rejected(Reason::InvalidMessage),
                format!("a console password follow-up that is not the worker's own ({why}); nothing done"),
            )
        };
        let Some(mac) = &self.settler.mac else {
            return Err(refused(
                "the worker has no continuation.mac_key_id to tell".to_owned(),
            ));
        };
        let claims = (task.mac.as_deref(), task.expires_at_ms);
        let canonical = task.canonical();
        let verified = mac
            .verify_within(
                Purpose::LoginProfile,
                &canonical,
                claims,
                metrics::now_ms(),
                retries,
            )
            .await
            .map_err(|e| self.aws_failure(e, 0))?;
        match verified {
            Verified::Yes => Ok(()),
            Verified::No(why) => Err(refused(why)),
        }
    }
}
