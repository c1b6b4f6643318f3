//! What a message body asks for (docs, "The job message" and "Security events"): a
//! job message, or an EventBridge event from AWS Health or GuardDuty that becomes one.
//!
//! Events are parsed strictly: every field the worker reads must be there with its type,
//! while top-level fields it does not read are allowed (AWS adds fields to events). An
//! event from another source, or of another detail type, is not a job. An accepted event
//! that names nothing revocable (a finding about temporary credentials, a role or the
//! root user, below the severity threshold; a Health event of another type) is
//! [`Intake::NotRevocable`], and nothing is done.
//!
//! Event shapes: AWS Health, "Monitoring AWS Health events with Amazon EventBridge"
//! (<https://docs.aws.amazon.com/health/latest/ug/cloudwatch-events-health.html>);
//! GuardDuty, "Creating custom responses to GuardDuty findings with Amazon EventBridge"
//! (<https://docs.aws.amazon.com/guardduty/latest/ug/guardduty_findings_eventbridge.html>)
//! and the `AccessKeyDetails` type of GuardDuty's API reference.

use serde::Deserialize;

use sha2::{Digest, Sha256};

use crate::job::{self, Action, InvalidJob, Job, KnownOwner, Origin, OwnerSource, Target};
use crate::rules::present;

mod guardduty;
use guardduty::guardduty;

/// `source` of AWS Health events.
pub const HEALTH: &str = "aws.health";
/// `source` of GuardDuty findings.
pub const GUARDDUTY: &str = "aws.guardduty";

/// How security events become jobs (`intake.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct IntakeRules {
    /// Health event type codes that mean a key leaked.
    pub health_event_types: Vec<String>,
    pub health_action: Action,
    /// GuardDuty findings below this severity revoke nothing.
    pub guardduty_min_severity: f64,
    pub guardduty_action: Action,
    /// Whether event jobs also revoke older sessions.
    pub revoke_sessions: bool,
    /// Whether jobs from security events also attach the quarantine policy.
    pub quarantine_user: bool,
    /// Whether jobs from GuardDuty findings mark the finding in Security Hub.
    pub update_findings: bool,
    /// Whether jobs from security events report the key's activity.
    pub report_activity: bool,
    /// Staged revocation for events whose action is `deactivate`: the delete follows
    /// after this duration (docs, "Staged revocation").
    pub delete_after: Option<crate::staging::DeleteAfter>,
    /// GuardDuty finding types about a role session's temporary credentials that cut
    /// the session off (docs, "Role sessions").
    pub role_session_finding_types: Vec<String>,
    /// What such a finding cuts off: the session it names, or every session of the role.
    pub role_session_scope: RoleScope,
}

/// What a GuardDuty finding about a role session cuts off (`intake.role_session_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleScope {
    /// The session the finding names (`aws:userid` = its `principalId`): the role's other
    /// sessions, on other instances, keep working.
    #[default]
    Session,
    /// Every session of the role issued before now.
    Role,
}

impl Default for IntakeRules {
    fn default() -> Self {
        Self {
            health_event_types: [
                "AWS_RISK_CREDENTIALS_EXPOSED",
                "AWS_RISK_CREDENTIALS_COMPROMISED",
                "AWS_RISK_CREDENTIALS_EXPOSURE_SUSPECTED",
                "AWS_RISK_CREDENTIALS_COMPROMISE_SUSPECTED",
            ]
            .map(str::to_owned)
            .to_vec(),
            health_action: Action::Delete,
            guardduty_min_severity: 7.0,
            guardduty_action: Action::Deactivate,
            revoke_sessions: true,
            quarantine_user: false,
            update_findings: false,
            report_activity: true,
            delete_after: None,
            role_session_finding_types: [
                "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
                "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.InsideAWS",
            ]
            .map(str::to_owned)
            .to_vec(),
            role_session_scope: RoleScope::Session,
        }
    }
}

impl IntakeRules {
    /// `intake.delete_after` for an event whose action is `action`: only a deactivation
    /// is staged.
    fn staged(&self, action: Action) -> Option<Box<crate::staging::DeleteAfter>> {
        (action == Action::Deactivate)
            .then(|| self.delete_after.clone().map(Box::new))
            .flatten()
    }
}

/// What a body asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Intake {
    /// A job: from a job message, or from a security event naming revocable keys.
    Job(Box<Job>),
    /// A security event that names nothing the worker may revoke; nothing is done.
    NotRevocable(Box<NotRevocable>),
}

/// An accepted event that revokes nothing, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct NotRevocable {
    pub request_id: String,
    pub origin: Origin,
    pub account_id: String,
    pub user_name: Option<String>,
    pub access_key_ids: Vec<String>,
    pub detail: String,
}

/// Reads a message body: a job message (SNS envelope included), or a security event.
pub fn read(body: &str, rules: &IntakeRules) -> Result<Intake, InvalidJob> {
    match job::body_json(body)? {
        serde_json::Value::Object(object) if is_event(&object) => {
            event(serde_json::Value::Object(object), rules)
        }
        value => job::parse_json(body, value).map(|job| Intake::Job(Box::new(job))),
    }
}

/// A body is taken for an EventBridge event when it has an event's `detail-type`,
/// `source` or `detail`: no job message has these fields.
fn is_event(object: &serde_json::Map<String, serde_json::Value>) -> bool {
    ["detail-type", "source", "detail"]
        .iter()
        .any(|field| object.contains_key(*field))
}

/// The EventBridge envelope: every top-level field of an event, each checked; others
/// are allowed.
#[derive(Deserialize)]
struct Envelope {
    #[allow(dead_code)]
    version: String,
    id: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
    source: String,
    account: String,
    #[allow(dead_code)]
    time: String,
    detail: serde_json::Value,
}

#[derive(Deserialize)]
struct HealthDetail {
    #[serde(rename = "eventTypeCode")]
    event_type_code: String,
}

/// The parts of a Health event's `detail` that name keys, their user and the account
/// ("Reference: AWS Health events Amazon EventBridge schema",
/// <https://docs.aws.amazon.com/health/latest/ug/aws-health-events-eventbridge-schema.html>).
/// `affectedEntities` is optional there; `affectedAccount` is the account the event is
/// about (`account` is the one it was sent to, another under an organizational view);
/// `communicationId` is shared by the backup copies and pages of one event.
#[derive(Deserialize)]
struct HealthEntities {
    #[serde(rename = "affectedEntities", default)]
    affected_entities: Vec<HealthEntity>,
    #[serde(rename = "affectedAccount", default, deserialize_with = "present")]
    affected_account: Option<String>,
    #[serde(rename = "communicationId", default, deserialize_with = "present")]
    communication_id: Option<String>,
    #[serde(rename = "eventMetadata", default, deserialize_with = "present")]
    event_metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// When the event began, in Health's own format (`Sat, 05 Jun 2016 15:10:09 GMT`):
    /// the start of the clock from exposure.
    #[serde(rename = "startTime", default)]
    start_time: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct HealthEntity {
    #[serde(rename = "entityValue", default, deserialize_with = "present")]
    entity_value: Option<String>,
}

fn invalid(what: &str, e: impl std::fmt::Display) -> InvalidJob {
    InvalidJob(format!("{what}: {e}"))
}

fn event(value: serde_json::Value, rules: &IntakeRules) -> Result<Intake, InvalidJob> {
    let envelope: Envelope =
        serde_json::from_value(value).map_err(|e| invalid("not a valid EventBridge event", e))?;
    if !job::is_account_id(&envelope.account) {
        return Err(InvalidJob(
            "event account must be exactly 12 digits".to_owned(),
        ));
    }
    match (envelope.source.as_str(), envelope.detail_type.as_str()) {
        (HEALTH, "AWS Health Event") => health(envelope, rules),
        (GUARDDUTY, "GuardDuty Finding") => guardduty(envelope, rules),
        (source, detail_type) => Err(InvalidJob(format!(
            "an EventBridge event the worker does not take: source {source:?}, detail-type {detail_type:?} (it takes AWS Health events and GuardDuty findings)"
        ))),
    }
}

/// IAM user access key ids begin with `AKIA`, temporary credentials with `ASIA` (IAM
/// User Guide, "Unique identifier prefixes",
/// <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-prefixes>).
fn is_long_term_key(value: &str) -> bool {
    value.starts_with("AKIA") && job::check_access_key_id(value).is_ok()
}

fn is_temporary_key(value: &str) -> bool {
    value.starts_with("ASIA") && job::check_access_key_id(value).is_ok()
}

fn health(envelope: Envelope, rules: &IntakeRules) -> Result<Intake, InvalidJob> {
    let detail: HealthDetail = serde_json::from_value(envelope.detail.clone())
        .map_err(|e| invalid("AWS Health event detail", e))?;
    let entities: HealthEntities = serde_json::from_value(envelope.detail)
        .map_err(|e| invalid("AWS Health event detail", e))?;
    let account = match entities.affected_account {
        Some(account) if job::is_account_id(&account) => account,
        Some(_) => {
            return Err(InvalidJob(
                "AWS Health event detail.affectedAccount must be exactly 12 digits".to_owned(),
            ))
        }
        None => envelope.account.clone(),
    };
    let origin = Origin {
        exposed_url: exposed_url(entities.event_metadata.as_ref()),
        ..Origin::new(HEALTH, detail.event_type_code.clone())
    };
    let values: Vec<String> = entities
        .affected_entities
        .into_iter()
        .filter_map(|e| e.entity_value)
        .collect();
    let mut keys: Vec<String> = Vec::new();
    for value in values.iter().filter(|v| is_long_term_key(v)) {
        if !keys.contains(value) {
            keys.push(value.clone());
        }
    }
    let request_id = health_request_id(
        &envelope.id,
        entities.communication_id.as_deref(),
        &account,
        &keys,
    );
    job::check_request_id(&request_id)?;
    let not_revocable = |detail: String, keys: Vec<String>| {
        Ok(Intake::NotRevocable(Box::new(NotRevocable {
            request_id: request_id.clone(),
            origin: origin.clone(),
            account_id: account.clone(),
            user_name: None,
            access_key_ids: keys,
            detail,
        })))
    };
    if !rules.health_event_types.contains(&detail.event_type_code) {
        return not_revocable(
            format!(
                "AWS Health event type {} is not in intake.health_event_types",
                detail.event_type_code
            ),
            Vec::new(),
        );
    }
    let owners: Vec<KnownOwner> = named_user(entities.event_metadata.as_ref(), &keys)
        .into_iter()
        .collect();
    // Every named key is a live leak: an event naming more than one job may hold is
    // worked in parts, each a job of its own (docs, "Security events").
    let parts: Vec<Vec<String>> = if keys.len() > job::MAX_KEYS {
        let rest = keys.split_off(job::MAX_KEYS);
        rest.chunks(job::MAX_KEYS).map(<[String]>::to_vec).collect()
    } else {
        Vec::new()
    };
    let target = match keys.len() {
        0 => {
            let temporary: Vec<String> =
                values.into_iter().filter(|v| is_temporary_key(v)).collect();
            let detail = if temporary.is_empty() {
                "the AWS Health event names no access key id".to_owned()
            } else {
                "the AWS Health event names only temporary credentials (ASIA…), which expire by themselves and cannot be deleted".to_owned()
            };
            return not_revocable(detail, temporary);
        }
        1 => Target::Key {
            access_key_id: keys.remove(0),
            user_name: None,
        },
        _ => Target::Keys(keys),
    };
    Ok(Intake::Job(Box::new(Job {
        request_id,
        target,
        action: rules.health_action,
        account_id: Some(account),
        reason: Some(format!("AWS Health event {}", origin.event_type)),
        requested_by: Some(HEALTH.to_owned()),
        batch_id: None,
        revoke_sessions: rules.revoke_sessions,
        quarantine_user: rules.quarantine_user,
        report_activity: rules.report_activity,
        require_inactive: false,
        delete_after: rules.staged(rules.health_action),
        detected_at_ms: entities
            .start_time
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .and_then(crate::detection::health_start),
        spared: Vec::new(),
        origin: Some(origin),
        owners,
        continuation: None,
        parts,
    })))
}

/// The request id of a Health event. Backup copies and pages of one event share its
/// `communicationId`, each with a new EventBridge `id`; the schema names the
/// communicationId with the account as the way to recognise them. So the id is the
/// communicationId, the affected account and the keys this copy names: a backup copy has
/// the same id (and ends `duplicate`), a page naming other keys another. An event without
/// a communicationId is known by its EventBridge `id`.
fn health_request_id(
    event_id: &str,
    communication_id: Option<&str>,
    account: &str,
    keys: &[String],
) -> String {
    let Some(communication) = communication_id.filter(|c| !c.is_empty()) else {
        return format!("{HEALTH}:{event_id}");
    };
    let readable = communication.len() <= 64
        && communication
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    let communication = if readable {
        communication.to_owned()
    } else {
        short_hash([communication])
    };
    let mut sorted: Vec<&str> = keys.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    format!("{HEALTH}:{communication}:{account}:{}", short_hash(sorted))
}

/// 16 hex digits of SHA-256 over the parts, each ended by a newline: stable across
/// builds and replicas, unlike `std`'s hasher.
fn short_hash<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The user a credential-exposure event names for one of its keys: AWS's own responders
/// read `eventMetadata.userName` and `publicKey` (aws-samples
/// notify-and-remediate-exposed-access-key, which trims `publicKey`). Taken only when
/// both are there, the user name is a valid IAM name and the key is one the event names
/// in `affectedEntities`; the worker still falls back to IAM's owner lookup when IAM
/// does not know the user.
fn named_user(
    metadata: Option<&serde_json::Map<String, serde_json::Value>>,
    keys: &[String],
) -> Option<KnownOwner> {
    let metadata = metadata?;
    let user = metadata.get("userName")?.as_str()?.trim();
    let key = metadata.get("publicKey")?.as_str()?.trim();
    if job::check_user_name(user).is_err() || !keys.iter().any(|k| k == key) {
        return None;
    }
    Some(KnownOwner {
        access_key_id: key.to_owned(),
        user_name: user.to_owned(),
        source: OwnerSource::Event,
    })
}

/// Where a Health event says the key was exposed: `eventMetadata.exposedUrl`, when it is
/// a string of at most 2,048 characters.
fn exposed_url(metadata: Option<&serde_json::Map<String, serde_json::Value>>) -> Option<String> {
    metadata?
        .get("exposedUrl")?
        .as_str()
        .filter(|url| !url.is_empty() && url.chars().count() <= 2048)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health_event(kind: &str, entities: &[&str]) -> String {
        let entities: Vec<serde_json::Value> = entities
            .iter()
            .map(|e| serde_json::json!({ "entityValue": e }))
            .collect();
        serde_json::json!({
            "version": "0",
            "id": "7bf73129-1428-4cd3-a780-95db273d1602",
            "detail-type": "AWS Health Event",
            "source": "aws.health",
            "account": "123456789012",
            "time": "2016-06-05T06:27:57Z",
            "region": "us-east-1",
            "resources": [],
            "detail": {
                "eventArn": format!("arn:aws:health:global::event/RISK/{kind}/{kind}_ABC123"),
                "service": "RISK",
                "eventTypeCode": kind,
                "eventTypeCategory": "issue",
                "startTime": "Sat, 05 Jun 2016 15:10:09 GMT",
                "eventDescription": [{ "language": "en_US", "latestDescription": "A key was found in public code." }],
                "affectedEntities": entities
            }
        })
        .to_string()
    }

    #[test]
    fn a_health_event_names_its_keys_and_is_key_only() {
        let body = health_event(
            "AWS_RISK_CREDENTIALS_EXPOSED",
            &[
                "AKIAIOSFODNN7EXAMPLE",
                "AKIAI44QH8DHBEXAMPLE",
                "AKIAIOSFODNN7EXAMPLE",
            ],
        );
        let Intake::Job(job) = read(&body, &IntakeRules::default()).unwrap() else {
            panic!("not a job")
        };
        assert_eq!(
            job.request_id,
            "aws.health:7bf73129-1428-4cd3-a780-95db273d1602"
        );
        assert_eq!(
            job.target,
            Target::Keys(vec![
                "AKIAIOSFODNN7EXAMPLE".into(),
                "AKIAI44QH8DHBEXAMPLE".into()
            ])
        );
        assert_eq!(job.action, Action::Delete);
        assert!(job.revoke_sessions);
        assert_eq!(job.account_id.as_deref(), Some("123456789012"));
        assert_eq!(
            job.origin.unwrap().event_type,
            "AWS_RISK_CREDENTIALS_EXPOSED"
        );
    }

    #[test]
    fn a_health_event_of_another_type_or_without_a_key_revokes_nothing() {
        for body in [
            health_event("AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED", &["i-0123456789"]),
            health_event("AWS_RISK_CREDENTIALS_EXPOSED", &["123456789012"]),
            health_event("AWS_RISK_CREDENTIALS_EXPOSED", &["ASIAIOSFODNN7EXAMPLE"]),
        ] {
            assert!(
                matches!(
                    read(&body, &IntakeRules::default()),
                    Ok(Intake::NotRevocable(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn other_events_and_broken_fields_are_invalid() {
        let good = health_event("AWS_RISK_CREDENTIALS_EXPOSED", &["AKIAIOSFODNN7EXAMPLE"]);
        let mut value: serde_json::Value = serde_json::from_str(&good).unwrap();
        value["source"] = "aws.ec2".into();
        assert!(read(&value.to_string(), &IntakeRules::default()).is_err());
        for field in ["version", "id", "account", "time", "detail"] {
            let mut value: serde_json::Value = serde_json::from_str(&good).unwrap();
            value.as_object_mut().unwrap().remove(field);
            assert!(
                read(&value.to_string(), &IntakeRules::default()).is_err(),
                "{field}"
            );
        }
        let mut value: serde_json::Value = serde_json::from_str(&good).unwrap();
        value["detail"]["affectedEntities"] = "AKIAIOSFODNN7EXAMPLE".into();
        assert!(read(&value.to_string(), &IntakeRules::default()).is_err());
        // A job message read through the intake still refuses a field given twice.
        let twice = r#"{"request_id":"r","access_key_id":"AKIAIOSFODNN7EXAMPLE","access_key_id":"AKIAI44QH8DHBEXAMPLE"}"#;
        assert!(read(twice, &IntakeRules::default()).is_err());
        assert!(matches!(
            read(
                r#"{"request_id":"r","access_key_id":"AKIAIOSFODNN7EXAMPLE"}"#,
                &IntakeRules::default()
            ),
            Ok(Intake::Job(_))
        ));
        // Top-level fields the worker does not read are fine.
        let mut value: serde_json::Value = serde_json::from_str(&good).unwrap();
        value["replay-name"] = "x".into();
        assert!(matches!(
            read(&value.to_string(), &IntakeRules::default()),
            Ok(Intake::Job(_))
        ));
    }

    fn health_with(detail: serde_json::Value, keys: &[&str]) -> String {
        let mut value: serde_json::Value =
            serde_json::from_str(&health_event("AWS_RISK_CREDENTIALS_EXPOSED", keys)).unwrap();
        for (field, v) in detail.as_object().unwrap() {
            value["detail"][field] = v.clone();
        }
        value.to_string()
    }

    fn job_of(body: &str) -> Job {
        match read(body, &IntakeRules::default()) {
            Ok(Intake::Job(job)) => *job,
            other => panic!("not a job: {other:?}"),
        }
    }

    #[test]
    fn what_the_event_said_travels_with_the_job_and_its_continuation() {
        let body = health_with(
            serde_json::json!({
                "eventMetadata": {"exposedUrl": "https://github.com/o/r/blob/main/.env"},
                "startTime": "Sat, 05 Jun 2016 15:10:09 GMT"
            }),
            &["AKIAIOSFODNN7EXAMPLE"],
        );
        let job = job_of(&body);
        // The clock from exposure starts at the event's startTime, in Health's format.
        assert_eq!(job.detected_at_ms, Some(1_465_139_409_000));
        let origin = job.origin.clone().expect("from an event");
        assert_eq!(
            origin.exposed_url.as_deref(),
            Some("https://github.com/o/r/blob/main/.env")
        );
        let mut value: serde_json::Value =
            serde_json::from_str(&finding(serde_json::json!({}), "IAMUser")).unwrap();
        value["detail"]["arn"] =
            "arn:aws:guardduty:us-east-1:123456789012:detector/d1/finding/f1".into();
        value["detail"]["service"]["eventFirstSeen"] = "2020-02-05T16:29:08.000Z".into();
        let finding_job = job_of(&value.to_string());
        assert_eq!(finding_job.detected_at_ms, Some(1_580_920_148_000));
        // A time that does not read leaves the clock out; the finding is worked all the same.
        value["detail"]["service"]["eventFirstSeen"] = "yesterday".into();
        assert_eq!(job_of(&value.to_string()).detected_at_ms, None);
        let origin = finding_job.origin.clone().expect("from an event");
        assert_eq!(origin.severity.as_deref(), Some("8.0"));
        assert_eq!(
            origin.finding_arn.as_deref(),
            Some("arn:aws:guardduty:us-east-1:123456789012:detector/d1/finding/f1")
        );
        // A continuation carries them on.
        for job in [job, finding_job] {
            let next = job.continued(&[]);
            let back = crate::job::parse(&next.to_body()).expect("the continuation parses");
            assert_eq!(back.origin, job.origin);
            assert_eq!(back.detected_at_ms, job.detected_at_ms);
        }
    }

    #[test]
    fn a_health_event_is_worked_in_the_affected_account() {
        let body = health_with(
            serde_json::json!({"affectedAccount": "210987654321"}),
            &["AKIAIOSFODNN7EXAMPLE"],
        );
        assert_eq!(job_of(&body).account_id.as_deref(), Some("210987654321"));
        let body = health_with(
            serde_json::json!({"affectedAccount": "AKIAIOSFODNN7EXAMPLE"}),
            &["AKIAIOSFODNN7EXAMPLE"],
        );
        assert!(read(&body, &IntakeRules::default()).is_err());
    }

    #[test]
    fn affected_entities_are_optional_and_at_most_a_hundred_keys_are_taken() {
        let mut value: serde_json::Value = serde_json::from_str(&health_event(
            "AWS_RISK_CREDENTIALS_EXPOSED",
            &["AKIAIOSFODNN7EXAMPLE"],
        ))
        .unwrap();
        value["detail"]
            .as_object_mut()
            .unwrap()
            .remove("affectedEntities");
        assert!(matches!(
            read(&value.to_string(), &IntakeRules::default()),
            Ok(Intake::NotRevocable(_))
        ));
        // Every named key is a live leak: more than one job holds are worked in parts.
        let keys: Vec<String> = (0..250).map(|i| format!("AKIA{i:016}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let many = job_of(&health_event("AWS_RISK_CREDENTIALS_EXPOSED", &keys));
        assert_eq!(many.access_key_ids(), keys[..100]);
        assert_eq!(many.parts.len(), 2);
        assert_eq!(many.parts[0], keys[100..200]);
        assert_eq!(many.parts[1], keys[200..]);
        let part = many.part(3, &many.parts[1]);
        assert_eq!(part.request_id, format!("{}:part3", many.request_id));
        assert_eq!(part.access_key_ids(), keys[200..]);
        assert!(part.parts.is_empty() && part.origin == many.origin);
        assert!(crate::job::check_request_id(&part.request_id).is_ok());
        assert!(matches!(
            read(
                &health_event("AWS_RISK_CREDENTIALS_EXPOSED", &keys[..100]),
                &IntakeRules::default()
            ),
            Ok(Intake::Job(_))
        ));
    }

    #[test]
    fn copies_of_one_event_share_a_request_id_and_pages_of_other_keys_do_not() {
        let copy = |id: &str, keys: &[&str], account: &str| {
            let mut value: serde_json::Value = serde_json::from_str(&health_with(
                serde_json::json!({"communicationId": "1a2b3c4d5e6f-1", "affectedAccount": account, "backupEvent": true}),
                keys,
            ))
            .unwrap();
            value["id"] = id.into();
            job_of(&value.to_string()).request_id
        };
        let k1 = "AKIAIOSFODNN7EXAMPLE";
        let k2 = "AKIAI44QH8DHBEXAMPLE";
        let first = copy("e-1", &[k1, k2], "111122223333");
        assert_eq!(copy("e-2", &[k2, k1], "111122223333"), first);
        assert!(
            first.starts_with("aws.health:1a2b3c4d5e6f-1:111122223333:"),
            "{first}"
        );
        assert_ne!(copy("e-3", &[k1], "111122223333"), first, "another page");
        assert_ne!(
            copy("e-4", &[k1, k2], "444455556666"),
            first,
            "another account"
        );
    }

    #[test]
    fn the_user_the_event_names_is_taken_only_for_a_key_it_names() {
        let body = health_with(
            serde_json::json!({"eventMetadata": {"userName": "alice", "publicKey": " AKIAIOSFODNN7EXAMPLE\n"}}),
            &["AKIAIOSFODNN7EXAMPLE", "AKIAI44QH8DHBEXAMPLE"],
        );
        let job = job_of(&body);
        assert_eq!(
            job.owners,
            vec![KnownOwner {
                access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                user_name: "alice".into(),
                source: OwnerSource::Event,
            }]
        );
        for metadata in [
            serde_json::json!({"userName": "alice", "publicKey": "AKIAOTHERKEY00000000"}),
            serde_json::json!({"userName": "not a user!", "publicKey": "AKIAIOSFODNN7EXAMPLE"}),
            serde_json::json!({"publicKey": "AKIAIOSFODNN7EXAMPLE"}),
        ] {
            let body = health_with(
                serde_json::json!({ "eventMetadata": metadata }),
                &["AKIAIOSFODNN7EXAMPLE"],
            );
            assert!(job_of(&body).owners.is_empty(), "{metadata}");
        }
    }

    fn finding(service: serde_json::Value, user_type: &str) -> String {
        serde_json::json!({
            "version": "0", "id": "e1", "detail-type": "GuardDuty Finding",
            "source": "aws.guardduty", "account": "123456789012", "time": "2026-11-28T08:55:11Z",
            "detail": {
                "accountId": "123456789012", "id": "f1", "type": "UnauthorizedAccess:IAMUser/MaliciousIPCaller",
                "severity": 8.0,
                "resource": {"resourceType": "AccessKey", "accessKeyDetails": {
                    "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": "alice", "userType": user_type}},
                "service": service
            }
        })
        .to_string()
    }

    #[test]
    fn a_finding_about_another_accounts_caller_acts_there_only_when_affiliated() {
        let remote = |affiliated: bool| serde_json::json!({"action": {"awsApiCallAction": {"remoteAccountDetails": {"accountId": "999988887777", "affiliated": affiliated}}}});
        assert_eq!(
            job_of(&finding(remote(true), "IAMUser"))
                .account_id
                .as_deref(),
            Some("999988887777")
        );
        assert!(matches!(
            read(&finding(remote(false), "IAMUser"), &IntakeRules::default()),
            Ok(Intake::NotRevocable(_))
        ));
        assert_eq!(
            job_of(&finding(serde_json::json!({}), "IAMUser"))
                .account_id
                .as_deref(),
            Some("123456789012")
        );
        assert!(matches!(
            read(
                &finding(serde_json::json!({}), "Root"),
                &IntakeRules::default()
            ),
            Ok(Intake::NotRevocable(_))
        ));
    }

    #[test]
    fn a_finding_about_a_role_session_cuts_off_that_session_or_by_setting_the_role() {
        let mut value: serde_json::Value =
            serde_json::from_str(&finding(serde_json::json!({}), "AssumedRole")).unwrap();
        value["detail"]["type"] =
            "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.InsideAWS".into();
        let details = &mut value["detail"]["resource"]["accessKeyDetails"];
        details["accessKeyId"] = "ASIAIOSFODNN7EXAMPLE".into();
        details["userName"] = "web".into();
        details["principalId"] = "AROAEXAMPLEID1234567:i-0123456789abcdef0".into();
        let job = job_of(&value.to_string());
        assert_eq!(
            job.target,
            Target::Role {
                role_name: "web".into(),
                session: Some("AROAEXAMPLEID1234567:i-0123456789abcdef0".into()),
                every_session: false,
            }
        );
        assert!(job.access_key_ids().is_empty() && !job.report_activity);
        let rules = IntakeRules {
            role_session_scope: RoleScope::Role,
            ..IntakeRules::default()
        };
        let Ok(Intake::Job(every)) = read(&value.to_string(), &rules) else {
            panic!("a role job")
        };
        assert!(matches!(
            every.target,
            Target::Role {
                every_session: true,
                ..
            }
        ));
        // No principalId, or one that is no role session: nothing to cut off.
        for principal in [serde_json::Value::Null, "AIDAEXAMPLE:alice".into()] {
            value["detail"]["resource"]["accessKeyDetails"]["principalId"] = principal;
            assert!(matches!(
                read(&value.to_string(), &IntakeRules::default()),
                Ok(Intake::NotRevocable(_))
            ));
        }
    }
}
