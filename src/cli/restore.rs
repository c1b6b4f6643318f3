//! `restore` (docs, "Staged revocation"): a person's undo of a staged revocation, with
//! their own credentials. It keeps the key's schedule, disabled, as the record of the
//! restore (a late delivery of the staging job then leaves the key alone, and the delete
//! is never sent), sets the key back to `Active`, lifts this revocation's session cut-off
//! when asked (never another revocation's), says whether the user is quarantined and
//! lifts that when asked, and prints one audit record. No job message can do this:
//! anyone who can send to the queue could otherwise undo a revocation.

use serde::Serialize;

use crate::aws::accounts::{AccountError, Accounts};
use crate::aws::classify::AwsError;
use crate::aws::clients::Clients;
use crate::aws::retry::RetryCounter;
use crate::aws::schedule::{Destination, Schedules};
use crate::aws::sessions::Lift;
use crate::aws::sqs::Sqs;
use crate::config::Settings;
use crate::job::{check_access_key_id, check_user_name, is_account_id};
use crate::sessions::revocation_sid;
use crate::staging::{rfc3339, schedule_name, staged_by};

/// What `restore` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub access_key_id: String,
    pub user_name: String,
    pub account_id: Option<String>,
    pub lift_session_cutoff: bool,
    /// The job that revoked the key, whose cut-off is lifted, when no staged delete
    /// names it.
    pub request_id: Option<String>,
    /// Lift every cut-off on the user when this revocation's own is not on record, and
    /// lift even when another incident may need what is lifted.
    pub force: bool,
    /// Detach the quarantine policy.
    pub lift_quarantine: bool,
    pub reason: Option<String>,
    /// The role assumed in `account_id` (default: `cross_account.restorer_role_name`).
    pub role_name: Option<String>,
}

/// The audit record `restore` prints (one JSON object) and logs.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub restored: bool,
    pub access_key_id: String,
    pub user_name: String,
    pub account_id: String,
    /// The key's status before: `Inactive`, or `Active` when it was already.
    pub previous_status: &'static str,
    pub restored_by: String,
    pub restored_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The staged delete's schedule, kept disabled; none when the key had none.
    pub schedule: Option<String>,
    /// Whether a disabled schedule records the restore (the staged delete's, or one made
    /// for the record when there was none).
    pub recorded: bool,
    pub schedule_group: String,
    /// When its delete was due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_was_due_at: Option<String>,
    /// The staging job's delete request, as the schedule held it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_delete_request_id: Option<String>,
    /// The session cut-off policies removed (`--lift-session-cutoff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_cutoffs_lifted: Option<Vec<String>>,
    /// The cut-off left in force for other revocations of the user, after a lift.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_cutoff_in_force: Option<String>,
    /// Why the cut-off asked to be lifted was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_cutoff_not_lifted: Option<String>,
    /// Whether the quarantine policy was attached to the user; `None` when it could not
    /// be read.
    pub quarantined: Option<bool>,
    /// Whether `--lift-quarantine` detached it.
    pub quarantine_lifted: bool,
    /// Why the quarantine asked to be lifted was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_not_lifted: Option<String>,
    pub detail: String,
}

impl Record {
    /// 0 when everything asked was done; 1 when the key is restored but a cut-off or the
    /// quarantine asked to be lifted was not.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.session_cutoff_not_lifted.is_some() || self.quarantine_not_lifted.is_some())
    }
}

/// Why `restore` stopped; its exit code is 2 for what the operator must change in the
/// request, 1 for anything else.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl RestoreError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RestoreError::Refused(_) => 2,
            RestoreError::Failed(_) => 1,
        }
    }
}

impl From<AwsError> for RestoreError {
    fn from(e: AwsError) -> Self {
        RestoreError::Failed(e.to_string())
    }
}

/// How far ahead the record of a restore of a key without a schedule is dated: it is
/// disabled and never runs; EventBridge Scheduler takes no time in the past.
const RECORD_DUE_SECONDS: i64 = 30 * 86_400;

/// Makes a disabled schedule the record of a restore of a key that had none: it targets
/// the job queue as a staged delete would, so it reads like one, and it never runs.
#[allow(clippy::too_many_arguments)]
async fn record(
    settings: &Settings,
    clients: &Clients,
    schedules: &Schedules,
    name: &str,
    account: &str,
    user: &str,
    key: &str,
    description: &str,
    retries: &RetryCounter,
) -> Result<(), String> {
    let Some(role_arn) = &settings.schedule.role_arn else {
        return Err("schedule.role_arn is not set".to_owned());
    };
    let sqs = Sqs::new(clients.sqs.clone(), settings.backoff);
    let queue_arn = sqs
        .queue_arn(&settings.sqs.queue_url)
        .await
        .map_err(|e| e.to_string())?;
    let dead_letter_url = match &settings.schedule.dead_letter_queue_url {
        Some(url) => url.clone(),
        None => {
            sqs.discover(
                &settings.sqs.queue_url,
                settings.sqs.dead_letter_queue_url.as_deref(),
                "sqs.dead_letter_queue_url",
            )
            .await
            .map_err(|e| e.to_string())?
            .dead_letter_queue_url
        }
    };
    let destination = Destination {
        queue_arn,
        role_arn: role_arn.clone(),
        dead_letter_arn: sqs
            .queue_arn(&dead_letter_url)
            .await
            .map_err(|e| e.to_string())?,
        fifo: settings.sqs.queue_url.ends_with(".fifo"),
    };
    // What a staged delete of the key would send, should anyone enable it.
    let input = serde_json::json!({
        "request_id": format!("restore-record.{account}-{key}"),
        "user_name": user,
        "access_key_id": key,
        "action": "delete",
        "require_status": "Inactive",
        "account_id": account,
        "reason": "the record of a restore; disabled, never sent",
    })
    .to_string();
    let due = i64::try_from(crate::metrics::now_ms() / 1000).unwrap_or(0) + RECORD_DUE_SECONDS;
    schedules
        .record(name, due, &destination, &input, description, retries)
        .await
        .map_err(|e| e.to_string())
}

/// Restores the key; the record says what was done.
pub async fn restore(
    settings: &Settings,
    clients: &Clients,
    request: Request,
) -> Result<Record, RestoreError> {
    let Request {
        access_key_id: key,
        user_name: user,
        account_id,
        lift_session_cutoff,
        request_id,
        force,
        lift_quarantine,
        reason,
        role_name,
    } = request;
    if let Some(id) = &request_id {
        crate::job::check_request_id(id).map_err(|e| RestoreError::Refused(e.0))?;
    }
    check_access_key_id(&key).map_err(|e| RestoreError::Refused(e.0))?;
    check_user_name(&user).map_err(|e| RestoreError::Refused(e.0))?;
    if account_id.as_deref().is_some_and(|a| !is_account_id(a)) {
        return Err(RestoreError::Refused(
            "--account-id must be exactly 12 digits".to_owned(),
        ));
    }
    if settings.protection.user(&user) {
        return Err(RestoreError::Refused(format!(
            "user {user} is protected (protect.users): iam-key-revoker never changes it"
        )));
    }
    if settings.protection.key(&key) {
        return Err(RestoreError::Refused(format!(
            "access key {key} is protected (protect.access_keys): iam-key-revoker never changes it"
        )));
    }
    let retries = RetryCounter::default();
    let caller = clients
        .sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("GetCallerIdentity", e))?;
    let restored_by = caller.arn().unwrap_or_default().to_owned();
    let account = match &account_id {
        Some(account) => account.clone(),
        None => caller.account().unwrap_or_default().to_owned(),
    };
    let role = role_name
        .as_deref()
        .unwrap_or(&settings.cross_account.restorer_role_name);
    let accounts = Accounts::from_settings(settings, clients).with_role(role);
    let iam = accounts
        .iam_for(account_id.as_deref(), &retries)
        .await
        .map_err(|e| match e {
            AccountError::Disabled { .. } => RestoreError::Refused(e.to_string()),
            AccountError::Aws(e) => e.into(),
        })?;
    let statuses = iam.key_statuses(&user, &retries).await?;
    let Some(active) = statuses.iter().find(|(id, _)| *id == key).map(|(_, a)| *a) else {
        return Err(RestoreError::Failed(format!(
            "IAM lists no access key {key} for user {user} in {account} (deleted already, or not theirs): nothing to restore"
        )));
    };
    let schedules = Schedules::new(
        &clients.sdk,
        settings.backoff,
        &settings.schedule.group_name,
    );
    let name = schedule_name(&account, &key);
    let restored_at = rfc3339(i64::try_from(crate::metrics::now_ms() / 1000).unwrap_or(0));
    let description: String = format!(
        "iam-key-revoker: restored to Active by {restored_by} at {restored_at}{}; the delete will not be sent",
        reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
    )
    .chars()
    .take(512)
    .collect();
    // Which revocation's cut-off is lifted: the one the operator names, else the staging
    // job the key's schedule names (its description, written by the worker, read before
    // the restore's record replaces it).
    let staged = schedules.get(&name, &retries).await?;
    let revocation = match (
        &request_id,
        staged.as_ref().and_then(|f| f.description.as_deref()),
    ) {
        (Some(id), _) => Some(revocation_sid(id)),
        (None, Some(description)) => staged_by(description).map(revocation_sid),
        (None, None) => None,
    };
    let now = aws_smithy_types::DateTime::from_millis(crate::metrics::now_ms() as i64);
    if (lift_session_cutoff || lift_quarantine) && !force {
        // Before anything changes: what is lifted must not be what another incident of
        // the user still needs (docs, "Staged revocation"). A key of the user left
        // Inactive is one: its sessions stay cut off only by a cut-off of its own
        // revocation; the quarantine, one per user, serves every incident.
        if lift_session_cutoff && revocation.is_none() {
            return Err(RestoreError::Refused(format!(
                "--lift-session-cutoff: no staged delete of {key} names the revocation whose cut-off to lift; give --request-id (the job that revoked the key), or --force to lift every cut-off on {user}; nothing was changed"
            )));
        }
        let inactive: Vec<&str> = statuses
            .iter()
            .filter(|(id, active)| *id != key && !active)
            .map(|(id, _)| id.as_str())
            .collect();
        let others = match lift_quarantine || !inactive.is_empty() {
            true => {
                iam.other_cutoffs(&user, revocation.as_deref(), now, &retries)
                    .await?
            }
            false => Vec::new(),
        };
        if lift_quarantine && !(inactive.is_empty() && others.is_empty()) {
            let why = match (inactive.is_empty(), others.is_empty()) {
                (false, _) => format!("{user}'s other access key(s) {} are Inactive", inactive.join(", ")),
                _ => format!(
                    "{user} has session cut-offs this revocation is not known to have put alone ({})",
                    others.join(", ")
                ),
            };
            return Err(RestoreError::Refused(format!(
                "--lift-quarantine: {why}: another incident may need the quarantine; check it and give --force (with --request-id when the key was not staged), or restore without --lift-quarantine; nothing was changed"
            )));
        }
        if lift_session_cutoff && !inactive.is_empty() && others.is_empty() {
            return Err(RestoreError::Refused(format!(
                "--lift-session-cutoff: {user}'s other access key(s) {} are Inactive and no other revocation's cut-off is on the user: this revocation's cut-off is what ends the sessions minted with them; restore those keys first, or check and give --force; nothing was changed",
                inactive.join(", ")
            )));
        }
    }
    // The record first: from here a late staging job leaves the key alone.
    let found = schedules.disable(&name, &description, &retries).await?;
    let recorded = match &found {
        Some(_) => Ok(()),
        None => {
            record(
                settings,
                clients,
                &schedules,
                &name,
                &account,
                &user,
                &key,
                &description,
                &retries,
            )
            .await
        }
    };
    if !active {
        iam.reactivate(&user, &key, &retries).await?;
    }
    // From here the key is Active again: a failure is said in the record (exit 1), never
    // an error that hides what was done.
    // This revocation's cut-off only: the latest one another revocation of the user
    // needs stays in force.
    let lift = match lift_session_cutoff {
        true => Some(
            iam.lift_session_cutoff(&user, revocation.as_deref(), force, now, &retries)
                .await
                .unwrap_or_else(|e| Lift::Refused(format!("IAM failed: {e}"))),
        ),
        false => None,
    };
    let partition = caller
        .arn()
        .and_then(|arn| arn.split(':').nth(1))
        .unwrap_or("aws");
    let policy =
        crate::config_checks::quarantine_policy_in(&settings.quarantine.policy_arn, partition);
    let quarantined = match iam.quarantined(&user, &policy, &retries).await {
        Ok(attached) => attached,
        Err(e) => {
            tracing::warn!(error = %e, user_name = %user, "Could not read the user's attached policies");
            None
        }
    };
    let (mut quarantine_lifted, mut quarantine_not_lifted) = (false, None);
    if lift_quarantine {
        match quarantined {
            Some(true) => match iam.release(&user, &policy, &retries).await {
                Ok(()) => quarantine_lifted = true,
                Err(e) => quarantine_not_lifted = Some(format!("IAM failed: {e}")),
            },
            Some(false) => {}
            None => {
                quarantine_not_lifted =
                    Some("whether the user is quarantined could not be read".to_owned())
            }
        }
    }
    let mut detail = Vec::new();
    detail.push(if active {
        format!("access key {key} of {user} was Active already")
    } else {
        format!("access key {key} of {user} set Active")
    });
    detail.push(match (&found, &recorded) {
        (Some(_), _) => format!(
            "its schedule {name} in {} is kept, disabled: the delete will not be sent",
            schedules.group()
        ),
        (None, Ok(())) => format!(
            "no staged delete found (not staged, its schedule not created, or its delete sent already); a disabled schedule {name} in {} is kept as the record, so a late staging job leaves the key alone",
            schedules.group()
        ),
        (None, Err(why)) => format!(
            "no staged delete found (not staged, its schedule not created, or its delete sent already); no record kept ({why}): a late staging job could deactivate the key again"
        ),
    });
    let (mut lifted, mut in_force, mut not_lifted) = (None, None, None);
    match lift {
        Some(Lift::Lifted {
            removed,
            in_force: kept,
            impostors,
        }) => {
            detail.push(match (&kept, removed.is_empty()) {
                (None, true) => "no session cut-off of this revocation to lift".to_owned(),
                (None, false) => format!("session cut-off lifted ({})", removed.join(", ")),
                (Some(kept), _) => format!(
                    "this revocation's session cut-off lifted; {kept} stays in force for the user's other revocations"
                ),
            });
            if !impostors.is_empty() {
                detail.push(format!(
                    "left alone, named like a cut-off but not the worker's: {}",
                    impostors.join("; ")
                ));
            }
            lifted = Some(removed);
            in_force = kept;
        }
        Some(Lift::Refused(why)) => {
            detail.push(format!("session cut-off NOT lifted: {why}"));
            not_lifted = Some(why);
        }
        None => {}
    }
    let policy_name = policy.rsplit('/').next().unwrap_or(&policy);
    match (quarantined, quarantine_lifted) {
        (_, true) => detail.push(format!("{policy_name} detached from {user}")),
        _ if quarantine_not_lifted.is_some() => detail.push(format!(
            "{policy_name} NOT detached from {user}: {}",
            quarantine_not_lifted.as_deref().unwrap_or_default()
        )),
        (Some(true), false) => detail.push(format!(
            "{user} is still quarantined ({policy_name} attached; --lift-quarantine detaches it, unless another incident needs it)"
        )),
        (Some(false), _) => detail.push(format!("{user} is not quarantined")),
        (None, _) => detail.push(format!(
            "whether {user} is quarantined could not be read (iam:ListAttachedUserPolicies)"
        )),
    }
    let record = Record {
        recorded: found.is_some() || recorded.is_ok(),
        restored: true,
        access_key_id: key,
        user_name: user,
        account_id: account,
        previous_status: if active { "Active" } else { "Inactive" },
        restored_by,
        restored_at,
        reason,
        schedule: found.as_ref().map(|_| name),
        schedule_group: schedules.group().to_owned(),
        delete_was_due_at: found.as_ref().and_then(|f| f.due).map(rfc3339),
        scheduled_delete_request_id: found.as_ref().and_then(|f| f.request_id()),
        session_cutoffs_lifted: lifted,
        session_cutoff_in_force: in_force,
        session_cutoff_not_lifted: not_lifted,
        quarantined,
        quarantine_lifted,
        quarantine_not_lifted,
        detail: detail.join("; "),
    };
    tracing::info!(
        target: "audit",
        access_key_id = %record.access_key_id,
        user_name = %record.user_name,
        account_id = %record.account_id,
        restored_by = %record.restored_by,
        schedule = record.schedule.as_deref().unwrap_or(""),
        detail = %record.detail,
        "Access key restored"
    );
    Ok(record)
}
