//! GuardDuty findings as EventBridge delivers them (docs, "Security events"):
//! "Creating custom responses to GuardDuty findings with Amazon EventBridge"
//! (<https://docs.aws.amazon.com/guardduty/latest/ug/guardduty_findings_eventbridge.html>)
//! and the `AccessKeyDetails` type of GuardDuty's API reference. The finding's user is a
//! hint (the name at the time of the call: IAM's owner decides); a sample finding, the
//! root user's key and a caller in an unaffiliated account change nothing.

use serde::Deserialize;

use super::{
    invalid, is_long_term_key, is_temporary_key, Envelope, Intake, IntakeRules, NotRevocable,
    GUARDDUTY,
};
use crate::job::{self, InvalidJob, Job, KnownOwner, Origin, OwnerSource, Target};
use crate::rules::present;

#[derive(Deserialize)]
struct FindingDetail {
    id: String,
    /// `arn:aws:guardduty:<region>:<account>:detector/<detector>/finding/<id>`, which is
    /// also the finding's `Id` in Security Hub.
    #[serde(default, deserialize_with = "present")]
    arn: Option<String>,
    #[serde(rename = "accountId")]
    account_id: String,
    severity: f64,
    #[serde(rename = "type")]
    finding_type: String,
    resource: FindingResource,
    #[serde(default)]
    service: FindingService,
}

/// The caller of the API call a finding is about, when it is another account
/// (GuardDuty User Guide, "Finding details": `remoteAccountDetails`, whose `affiliated`
/// says whether that account belongs to the same organization).
#[derive(Deserialize, Default)]
struct FindingService {
    #[serde(default)]
    action: Option<FindingAction>,
    /// `additionalInfo.sample` is true on the findings `CreateSampleFindings` makes
    /// (GuardDuty User Guide, "Sample findings").
    #[serde(rename = "additionalInfo", default)]
    additional_info: Option<serde_json::Value>,
    /// When GuardDuty first saw the activity: the start of the clock from exposure.
    #[serde(rename = "eventFirstSeen", default)]
    event_first_seen: Option<serde_json::Value>,
}

impl FindingService {
    /// Whether GuardDuty generated this finding as a sample: anyone with GuardDuty's
    /// rights in an account can make one, about any key they name. The mark is
    /// `additionalInfo.sample` as the User Guide's events show it, or inside
    /// `additionalInfo.value`, the JSON string of the API's `ServiceAdditionalInfo`
    /// (GuardDuty API Reference, "ServiceAdditionalInfo").
    fn is_sample(&self) -> bool {
        let Some(info) = self.additional_info.as_ref() else {
            return false;
        };
        let within = match info.get("value") {
            Some(serde_json::Value::String(value)) => {
                serde_json::from_str::<serde_json::Value>(value).ok()
            }
            _ => None,
        };
        let marked = |v: Option<&serde_json::Value>| match v {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        marked(info.get("sample")) || marked(within.as_ref().and_then(|w| w.get("sample")))
    }
}

#[derive(Deserialize)]
struct FindingAction {
    #[serde(rename = "awsApiCallAction", default)]
    aws_api_call_action: Option<ApiCallAction>,
}

#[derive(Deserialize)]
struct ApiCallAction {
    #[serde(rename = "remoteAccountDetails", default)]
    remote_account_details: Option<RemoteAccount>,
}

#[derive(Deserialize)]
struct RemoteAccount {
    #[serde(rename = "accountId")]
    account_id: String,
    #[serde(default)]
    affiliated: bool,
}

#[derive(Deserialize)]
struct FindingResource {
    #[serde(rename = "resourceType")]
    resource_type: String,
    #[serde(rename = "accessKeyDetails", default, deserialize_with = "present")]
    access_key_details: Option<AccessKeyDetails>,
}

#[derive(Deserialize)]
struct AccessKeyDetails {
    #[serde(rename = "accessKeyId")]
    access_key_id: String,
    /// For a role session, the role's name ("if a role was used the User name field will
    /// indicate the name of the role", GuardDuty User Guide, "Finding details").
    #[serde(rename = "userName")]
    user_name: String,
    #[serde(rename = "userType")]
    user_type: String,
    /// For a role session, `AROA…:<session name>` (an instance's session name is its id).
    #[serde(rename = "principalId", default)]
    principal_id: Option<String>,
}

/// What a finding about a role session says of itself.
struct RoleSession<'a> {
    request_id: &'a str,
    origin: &'a Origin,
    account_id: &'a str,
    severity: f64,
    detected_at_ms: Option<u64>,
}

/// A finding about a role session's temporary credentials (docs, "Role sessions"): the
/// session (or, by `intake.role_session_scope`, the role) is cut off, once the worker has
/// verified the role against the `principalId`. `Err` is why it is not revocable.
fn role_session(
    finding: RoleSession<'_>,
    key: &AccessKeyDetails,
    rules: &IntakeRules,
) -> Result<Intake, String> {
    if !rules
        .role_session_finding_types
        .contains(&finding.origin.event_type)
    {
        return Err(format!(
            "the GuardDuty finding is about temporary credentials of role {} ({}), and its type {} is not in intake.role_session_finding_types",
            key.user_name, key.access_key_id, finding.origin.event_type
        ));
    }
    if finding.severity < rules.guardduty_min_severity {
        return Err(format!(
            "GuardDuty finding severity {} is below intake.guardduty_min_severity = {}",
            finding.severity, rules.guardduty_min_severity
        ));
    }
    if !job::is_iam_name(&key.user_name, 64) {
        return Err(format!(
            "the GuardDuty finding names {:?}, which is not a role name",
            key.user_name
        ));
    }
    let principal = key.principal_id.clone().unwrap_or_default();
    if !crate::sessions::is_role_session(&principal) {
        return Err(format!(
            "the GuardDuty finding's principalId {principal:?} is not a role session (AROA…:<session>): the worker cannot tell which session to cut off"
        ));
    }
    let target = Target::Role {
        role_name: key.user_name.clone(),
        session: Some(principal),
        every_session: rules.role_session_scope == super::RoleScope::Role,
    };
    // A role's cut-off: no key, no report, no quarantine, no staging (Job::new asks for
    // none of them).
    Ok(Intake::Job(Box::new(Job {
        account_id: Some(finding.account_id.to_owned()),
        reason: Some(format!(
            "GuardDuty finding {} (severity {})",
            finding.origin.event_type, finding.severity
        )),
        requested_by: Some(GUARDDUTY.to_owned()),
        revoke_sessions: true,
        detected_at_ms: finding.detected_at_ms,
        origin: Some(finding.origin.clone()),
        ..Job::new(
            finding.request_id.to_owned(),
            target,
            rules.guardduty_action,
        )
    })))
}

/// A severity as people write it: `8.0`, `5.3`.
fn severity_text(severity: f64) -> String {
    if severity.fract() == 0.0 {
        format!("{severity:.1}")
    } else {
        severity.to_string()
    }
}

pub(super) fn guardduty(envelope: Envelope, rules: &IntakeRules) -> Result<Intake, InvalidJob> {
    let finding: FindingDetail = serde_json::from_value(envelope.detail)
        .map_err(|e| invalid("GuardDuty finding detail", e))?;
    let request_id = format!("{GUARDDUTY}:{}", finding.id);
    job::check_request_id(&request_id)?;
    if !job::is_account_id(&finding.account_id) {
        return Err(InvalidJob(
            "GuardDuty finding accountId must be exactly 12 digits".to_owned(),
        ));
    }
    if !finding.severity.is_finite() {
        return Err(InvalidJob(
            "GuardDuty finding severity is not a number".to_owned(),
        ));
    }
    let origin = Origin {
        severity: Some(severity_text(finding.severity)),
        finding_arn: finding
            .arn
            .clone()
            .filter(|arn| arn.starts_with("arn:") && arn.len() <= 512),
        ..Origin::new(GUARDDUTY, finding.finding_type.clone())
    };
    let sample = finding.service.is_sample();
    let first_seen = finding
        .service
        .event_first_seen
        .as_ref()
        .and_then(serde_json::Value::as_str)
        .and_then(crate::detection::guardduty_first_seen);
    let remote = finding
        .service
        .action
        .and_then(|a| a.aws_api_call_action)
        .and_then(|a| a.remote_account_details);
    let details = finding.resource.access_key_details;
    let not_revocable = |detail: String| {
        Ok(Intake::NotRevocable(Box::new(NotRevocable {
            request_id: request_id.clone(),
            origin: origin.clone(),
            account_id: finding.account_id.clone(),
            user_name: details.as_ref().map(|d| d.user_name.clone()),
            access_key_ids: details
                .as_ref()
                .map(|d| d.access_key_id.clone())
                .into_iter()
                .collect(),
            detail,
        })))
    };
    if sample {
        return not_revocable(
            "the GuardDuty finding is a sample (service.additionalInfo.sample, made by CreateSampleFindings): samples never change a key".to_owned(),
        );
    }
    if finding.resource.resource_type != "AccessKey" {
        return not_revocable(format!(
            "the GuardDuty finding is about a {} resource, not an access key",
            finding.resource.resource_type
        ));
    }
    let Some(key) = &details else {
        return Err(InvalidJob(
            "GuardDuty finding about an AccessKey without resource.accessKeyDetails".to_owned(),
        ));
    };
    if key.user_type == "Root" {
        return not_revocable(format!(
            "the GuardDuty finding is about access key {} of the AWS account root user of {}: IAM cannot change a root user's keys, and the worker never does; sign in as the root user, delete the key (Security credentials), and check what it did",
            key.access_key_id, finding.account_id
        ));
    }
    if key.user_type == "AssumedRole" {
        let session = RoleSession {
            request_id: &request_id,
            origin: &origin,
            account_id: &finding.account_id,
            severity: finding.severity,
            detected_at_ms: first_seen,
        };
        return role_session(session, key, rules).or_else(&not_revocable);
    }
    if key.user_type != "IAMUser" {
        return not_revocable(format!(
            "the GuardDuty finding is about a {} principal, not an IAM user's access key",
            key.user_type
        ));
    }
    if is_temporary_key(&key.access_key_id) {
        return not_revocable(
            "the GuardDuty finding is about temporary credentials (ASIA…), which expire by themselves and cannot be deleted".to_owned(),
        );
    }
    if finding.severity < rules.guardduty_min_severity {
        return not_revocable(format!(
            "GuardDuty finding severity {} is below intake.guardduty_min_severity = {}",
            finding.severity, rules.guardduty_min_severity
        ));
    }
    if !is_long_term_key(&key.access_key_id) {
        return Err(InvalidJob(format!(
            "GuardDuty finding accessKeyId {:?} is not an IAM user access key id",
            key.access_key_id
        )));
    }
    job::check_user_name(&key.user_name)?;
    // A caller from another account: its key lives there, never in the finding's account
    // (a user of the same name there is somebody else).
    let account_id = match remote {
        None => finding.account_id.clone(),
        Some(remote) if !job::is_account_id(&remote.account_id) => {
            return Err(InvalidJob(
                "GuardDuty finding remoteAccountDetails.accountId must be exactly 12 digits"
                    .to_owned(),
            ))
        }
        Some(remote) if remote.affiliated => remote.account_id,
        Some(remote) => {
            return not_revocable(format!(
                "the GuardDuty finding's caller is in account {}, which is not affiliated with the organization: the worker cannot act there",
                remote.account_id
            ))
        }
    };
    Ok(Intake::Job(Box::new(Job {
        request_id,
        // The finding's user is the name at the time of the call: a hint, as a Health
        // event's is. The key's holder may have renamed the user since; IAM's owner
        // decides (and protection is checked against it).
        target: Target::Key {
            access_key_id: key.access_key_id.clone(),
            user_name: None,
        },
        action: rules.guardduty_action,
        account_id: Some(account_id),
        reason: Some(format!(
            "GuardDuty finding {} (severity {})",
            origin.event_type, finding.severity
        )),
        requested_by: Some(GUARDDUTY.to_owned()),
        batch_id: None,
        revoke_sessions: rules.revoke_sessions,
        quarantine_user: rules.quarantine_user,
        report_activity: rules.report_activity,
        require_inactive: false,
        delete_after: rules.staged(rules.guardduty_action),
        detected_at_ms: first_seen,
        spared: Vec::new(),
        origin: Some(origin),
        owners: vec![KnownOwner {
            access_key_id: key.access_key_id.clone(),
            user_name: key.user_name.clone(),
            source: OwnerSource::Event,
        }],
        continuation: None,
        parts: Vec::new(),
    })))
}
