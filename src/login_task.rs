//! The follow-up that removes a console password the leaked key created or reset (docs,
//! "What the leaked key made"): a message of the worker's own, MACed, that names the user
//! and what CloudTrail recorded (the call, when, and with which credentials). No job
//! message can ask for it: without the worker's MAC it is not believed.

use serde::Deserialize;

use crate::rules::{check_len, check_request_id, check_user_name, is_account_id, InvalidJob};

/// The calls that set a console password.
pub const LOGIN_CALLS: &[&str] = &["CreateLoginProfile", "UpdateLoginProfile"];

/// One console password to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginTask {
    pub request_id: String,
    pub user_name: String,
    pub account_id: Option<String>,
    /// The request id of the job whose report found it.
    pub made_by: String,
    /// The credentials CloudTrail says made the call.
    pub made_with: String,
    /// `CreateLoginProfile` or `UpdateLoginProfile`.
    pub api: String,
    /// When, as CloudTrail recorded it (ISO 8601, UTC).
    pub at: String,
    pub expires_at_ms: Option<u64>,
    pub mac: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    request_id: String,
    user_name: String,
    #[serde(default)]
    account_id: Option<String>,
    continuation: RawContinuation,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContinuation {
    login_profile: RawTask,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    made_by: String,
    made_with: String,
    api: String,
    at: String,
    #[serde(default)]
    expires_at_ms: Option<u64>,
    #[serde(default)]
    mac: Option<String>,
}

impl LoginTask {
    /// The task a body holds: `None` when it is none (a job, an event, a report task),
    /// an error when it is one that breaks a rule.
    pub fn of(body: &str) -> Option<Result<Self, InvalidJob>> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        value.get("continuation")?.get("login_profile")?;
        Some(Self::parse(body))
    }

    fn parse(body: &str) -> Result<Self, InvalidJob> {
        let raw: RawMessage = serde_json::from_str(body)
            .map_err(|e| InvalidJob(format!("not a valid console password follow-up: {e}")))?;
        check_request_id(&raw.request_id)?;
        check_user_name(&raw.user_name)?;
        if raw.account_id.as_deref().is_some_and(|a| !is_account_id(a)) {
            return Err(InvalidJob(
                "account_id must be exactly 12 digits".to_owned(),
            ));
        }
        let task = raw.continuation.login_profile;
        check_request_id(&task.made_by)?;
        if !LOGIN_CALLS.contains(&task.api.as_str()) {
            return Err(InvalidJob(format!(
                "login_profile.api must be one of {LOGIN_CALLS:?}"
            )));
        }
        if crate::activity::parse_iso_ms(&task.at).is_none() {
            return Err(InvalidJob(
                "login_profile.at must be an ISO 8601 time".to_owned(),
            ));
        }
        check_len("made_with", Some(&task.made_with), 128)?;
        check_len("mac", task.mac.as_deref(), 256)?;
        Ok(Self {
            request_id: raw.request_id,
            user_name: raw.user_name,
            account_id: raw.account_id,
            made_by: task.made_by,
            made_with: task.made_with,
            api: task.api,
            at: task.at,
            expires_at_ms: task.expires_at_ms,
            mac: task.mac,
        })
    }

    /// The text the worker's MAC covers: the body without the MAC.
    pub fn canonical(&self) -> String {
        Self {
            mac: None,
            ..self.clone()
        }
        .to_body()
    }

    /// The message body.
    pub fn to_body(&self) -> String {
        let mut task = serde_json::json!({
            "made_by": self.made_by,
            "made_with": self.made_with,
            "api": self.api,
            "at": self.at,
        });
        if let Some(at) = self.expires_at_ms {
            task["expires_at_ms"] = at.into();
        }
        if let Some(mac) = &self.mac {
            task["mac"] = mac.clone().into();
        }
        let mut body = serde_json::json!({
            "request_id": self.request_id,
            "user_name": self.user_name,
            "continuation": {"login_profile": task},
        });
        if let Some(account) = &self.account_id {
            body["account_id"] = account.clone().into();
        }
        body.to_string()
    }
}

/// The request id of the follow-up removing the console password the call at `at` set on
/// `user`, found by the job `request_id`: the same on every pass and replica, and another
/// for each call (a password set, removed and set again is two follow-ups).
pub fn login_follow_up_id(request_id: &str, user: &str, at: &str) -> String {
    let when: String = at.chars().filter(char::is_ascii_alphanumeric).collect();
    let id = format!("{request_id}:login:{user}:{when}");
    if id.len() <= 128 && check_request_id(&id).is_ok() {
        id
    } else {
        format!(
            "login-{}-{}",
            crate::sessions::request_digest(request_id),
            crate::sessions::request_digest(&format!("{}\n{at}", user.to_ascii_lowercase()))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> LoginTask {
        LoginTask {
            request_id: login_follow_up_id("aws.health:e-1", "bob", "2026-11-30T11:04:00Z"),
            user_name: "bob".into(),
            account_id: Some("111122223333".into()),
            made_by: "aws.health:e-1".into(),
            made_with: "AKIAIOSFODNN7EXAMPLE".into(),
            api: "CreateLoginProfile".into(),
            at: "2026-11-30T11:04:00Z".into(),
            expires_at_ms: Some(1_900_000_000_000),
            mac: Some("c2lnbmVk".into()),
        }
    }

    #[test]
    fn a_task_round_trips_and_a_job_is_none() {
        let task = task();
        assert_eq!(LoginTask::of(&task.to_body()).unwrap().unwrap(), task);
        assert!(!task.canonical().contains("c2lnbmVk"));
        assert!(
            LoginTask::of(r#"{"request_id":"r","access_key_id":"AKIAIOSFODNN7EXAMPLE"}"#).is_none()
        );
        // A user name with a character IAM refuses (user+name@x is fine; a space is not),
        // or another call, is no task.
        let mut bad = task.clone();
        bad.user_name = "bob smith".into();
        assert!(LoginTask::of(&bad.to_body()).unwrap().is_err());
        let mut other = task;
        other.api = "DeleteUser".into();
        assert!(LoginTask::of(&other.to_body()).unwrap().is_err());
    }

    #[test]
    fn the_follow_up_id_is_stable_and_a_valid_request_id() {
        let at = "2026-11-30T11:04:00Z";
        assert_eq!(
            login_follow_up_id("r-1", "bob", at),
            "r-1:login:bob:20261130T110400Z"
        );
        // Set, removed and set again: two follow-ups.
        assert_ne!(
            login_follow_up_id("r-1", "bob", at),
            login_follow_up_id("r-1", "bob", "2026-11-30T11:09:00Z")
        );
        // IAM names may hold characters a request id may not (+=,@).
        let id = login_follow_up_id("r-1", "bob+ops@example.com", at);
        check_request_id(&id).unwrap();
        assert_eq!(id, login_follow_up_id("r-1", "bob+ops@example.com", at));
    }
}
