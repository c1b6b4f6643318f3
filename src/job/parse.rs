//! Reading a job message (docs, "The job message"): the body exactly as the contract
//! allows it, SNS envelope included, and every rule of its fields and of how they go
//! together, into a [`Job`].

use serde::Deserialize;

use super::{Action, DeleteAfter, Job, Target};
use crate::continuation::{continuation, RawContinuation};
use crate::rules::{
    check_access_key_id, check_len, check_request_id, check_user_name, is_account_id, present,
    InvalidJob,
};

/// The message exactly as the contract allows it: unknown fields and wrong types are
/// refused by serde; `null` counts as a wrong type, not as absence.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    request_id: String,
    #[serde(default, deserialize_with = "present")]
    access_key_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    user_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    all_keys: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    action: Option<Action>,
    #[serde(default, deserialize_with = "present")]
    account_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    reason: Option<String>,
    #[serde(default, deserialize_with = "present")]
    requested_by: Option<String>,
    #[serde(default, deserialize_with = "present")]
    batch_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    revoke_sessions: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    quarantine_user: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    report_activity: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    require_status: Option<String>,
    #[serde(default, deserialize_with = "present")]
    delete_after: Option<String>,
    #[serde(default, deserialize_with = "present")]
    role_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    detected_at: Option<String>,
    #[serde(default, deserialize_with = "present")]
    continuation: Option<RawContinuation>,
}

/// The part of an SNS notification the worker reads.
#[derive(Deserialize)]
struct SnsEnvelope {
    #[serde(rename = "Message")]
    message: String,
}

/// Parses and validates a message body.
pub fn parse(body: &str) -> Result<Job, InvalidJob> {
    parse_json(body, body_json(body)?)
}

/// The body as JSON, or why it is not.
pub fn body_json(body: &str) -> Result<serde_json::Value, InvalidJob> {
    serde_json::from_str(body).map_err(|e| InvalidJob(format!("body is not JSON: {e}")))
}

/// [`parse`] for a body already read as `value` (`body_json`). The job object itself is
/// read from the text, so that a field given twice is refused rather than collapsed.
pub fn parse_json(body: &str, value: serde_json::Value) -> Result<Job, InvalidJob> {
    let inner = unwrap_sns(value)?;
    let raw: RawJob = serde_json::from_str(inner.as_deref().unwrap_or(body))
        .map_err(|e| InvalidJob(format!("not a valid job object: {e}")))?;
    validate(raw)
}

/// Returns the inner message when `value` is an SNS notification envelope.
fn unwrap_sns(value: serde_json::Value) -> Result<Option<String>, InvalidJob> {
    // Only an object with a "Type" key is considered an envelope; a job has no such field.
    let Some(kind) = value.as_object().and_then(|o| o.get("Type")) else {
        return Ok(None);
    };
    if kind != "Notification" {
        return Err(InvalidJob(
            "SNS envelope of a type other than \"Notification\"".to_owned(),
        ));
    }
    let envelope: SnsEnvelope = serde_json::from_value(value)
        .map_err(|e| InvalidJob(format!("SNS envelope without a string \"Message\": {e}")))?;
    Ok(Some(envelope.message))
}

fn validate(mut raw: RawJob) -> Result<Job, InvalidJob> {
    check_request_id(&raw.request_id)?;
    let role = match raw.role_name.take() {
        Some(role) => Some(role_job(&raw, role)?),
        None => None,
    };
    if let Some(key) = &raw.access_key_id {
        check_access_key_id(key)?;
    }
    if let Some(user) = &raw.user_name {
        check_user_name(user)?;
    }
    if let Some(account) = &raw.account_id {
        if !is_account_id(account) {
            return Err(InvalidJob(
                "account_id must be exactly 12 digits".to_owned(),
            ));
        }
    }
    let detected_at_ms = raw
        .detected_at
        .as_deref()
        .map(crate::detection::read_detected_at)
        .transpose()?;
    check_len("reason", raw.reason.as_deref(), 1024)?;
    check_len("requested_by", raw.requested_by.as_deref(), 256)?;
    check_len("batch_id", raw.batch_id.as_deref(), 128)?;

    let require_inactive = match raw.require_status.as_deref() {
        None => false,
        // The scheduled delete of a staged revocation names both: the worker knew the
        // owner when it staged the key.
        Some("Inactive") if raw.access_key_id.is_some() && raw.user_name.is_some() => true,
        Some("Inactive") => {
            return Err(InvalidJob(
                "require_status is for a job that names its user_name and access_key_id".to_owned(),
            ))
        }
        Some(other) => {
            return Err(InvalidJob(format!(
                "require_status must be \"Inactive\", not {other:?}"
            )))
        }
    };
    let delete_after = raw
        .delete_after
        .as_deref()
        .map(DeleteAfter::parse)
        .transpose()?
        .map(Box::new);
    if delete_after.is_some() {
        if raw.action != Some(Action::Deactivate) {
            return Err(InvalidJob(
                "delete_after is for a job with action: \"deactivate\" (deactivate now, delete then)".to_owned(),
            ));
        }
        if require_inactive {
            return Err(InvalidJob(
                "delete_after and require_status are exclusive: the scheduled delete is not staged again".to_owned(),
            ));
        }
    }
    let continued = raw.continuation.map(continuation).transpose()?;
    if let (true, Some((_, owners, c, origin))) = (require_inactive, &continued) {
        // A scheduled delete carries its due time, nothing else.
        if !owners.is_empty() || c.claims() || origin.is_some() || c.mac.is_some() {
            return Err(InvalidJob(
                "require_status takes a continuation with its due_at only".to_owned(),
            ));
        }
    }
    if let Some((keys, _, _, _)) = &continued {
        if raw.all_keys == Some(true) {
            return Err(InvalidJob(
                "continuation is for jobs that name keys, not all_keys".to_owned(),
            ));
        }
        match &raw.access_key_id {
            Some(key) if keys.len() != 1 || keys[0] != *key => {
                return Err(InvalidJob(
                    "continuation.keys must name exactly the job's access_key_id".to_owned(),
                ))
            }
            None if keys.len() < 2 => {
                return Err(InvalidJob(
                    "a continuation without access_key_id names at least two keys".to_owned(),
                ))
            }
            _ => {}
        }
        if raw.user_name.is_some() && keys.len() > 1 {
            return Err(InvalidJob(
                "a continuation of several keys names no user_name".to_owned(),
            ));
        }
    }
    let target = match (
        raw.all_keys.unwrap_or(false),
        raw.access_key_id,
        raw.user_name,
    ) {
        (_, None, None) if role.is_some() => role.unwrap_or(Target::Keys(Vec::new())),
        (true, Some(_), _) => {
            return Err(InvalidJob(
                "access_key_id and all_keys: true are mutually exclusive".to_owned(),
            ))
        }
        (true, None, Some(user_name)) => Target::AllKeys { user_name },
        (true, None, None) => {
            return Err(InvalidJob("all_keys: true requires user_name".to_owned()))
        }
        (false, Some(access_key_id), user_name) => Target::Key {
            access_key_id,
            user_name,
        },
        (false, None, None) if continued.is_some() => Target::Keys(
            continued
                .as_ref()
                .map(|(keys, ..)| keys.clone())
                .unwrap_or_default(),
        ),
        (false, None, _) => {
            return Err(InvalidJob(
                "access_key_id is required unless all_keys is true".to_owned(),
            ))
        }
    };
    let (owners, continuation, origin) = match continued {
        Some((_, owners, continuation, origin)) => (owners, Some(continuation), origin),
        None => (Vec::new(), None, None),
    };
    Ok(Job {
        request_id: raw.request_id,
        target,
        action: raw.action.unwrap_or_default(),
        account_id: raw.account_id,
        reason: raw.reason,
        requested_by: raw.requested_by,
        batch_id: raw.batch_id,
        revoke_sessions: raw.revoke_sessions.unwrap_or(false),
        quarantine_user: raw.quarantine_user.unwrap_or(false),
        report_activity: raw.report_activity.unwrap_or(false),
        require_inactive,
        delete_after,
        detected_at_ms,
        spared: Vec::new(),
        origin,
        owners,
        continuation,
        parts: Vec::new(),
    })
}

/// The target of a job that names `role` (docs, "Role sessions"): the role alone, which
/// is the job's one target, and nothing that acts on a key.
fn role_job(raw: &RawJob, role: String) -> Result<Target, InvalidJob> {
    if !crate::rules::is_iam_name(&role, 64) {
        return Err(InvalidJob(
            "role_name must be 1-64 characters of A-Za-z0-9+=,.@_-".to_owned(),
        ));
    }
    let keyed = [
        ("access_key_id", raw.access_key_id.is_some()),
        ("user_name", raw.user_name.is_some()),
        ("all_keys", raw.all_keys.is_some()),
        ("action", raw.action.is_some()),
        ("delete_after", raw.delete_after.is_some()),
        ("require_status", raw.require_status.is_some()),
        ("quarantine_user", raw.quarantine_user.is_some()),
        ("report_activity", raw.report_activity.is_some()),
        ("continuation", raw.continuation.is_some()),
    ];
    if let Some((field, _)) = keyed.iter().find(|(_, given)| *given) {
        return Err(InvalidJob(format!(
            "a job names exactly one target: role_name cuts off a role's sessions and takes no {field}"
        )));
    }
    if raw.revoke_sessions == Some(false) {
        return Err(InvalidJob(
            "a job that names role_name cuts off the role's sessions: revoke_sessions cannot be false".to_owned(),
        ));
    }
    Ok(Target::Role {
        role_name: role,
        session: None,
        every_session: true,
    })
}

/// Best-effort request id of a body that failed validation, for the dead-letter copy's
/// `revoker-request-id` attribute: present only when the body (or its SNS message) is a
/// JSON object whose `request_id` is a non-empty string without control characters.
pub fn salvage_request_id(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let object = value.as_object()?;
    let id = match object.get("Message").and_then(|m| m.as_str()) {
        Some(inner) if object.get("Type").is_some() => {
            let inner: serde_json::Value = serde_json::from_str(inner).ok()?;
            inner.get("request_id")?.as_str()?.to_owned()
        }
        _ => object.get("request_id")?.as_str()?.to_owned(),
    };
    let usable = !id.is_empty() && id.chars().count() <= 256 && !id.chars().any(char::is_control);
    usable.then_some(id)
}
