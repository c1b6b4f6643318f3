//! What a message body asks for (README, "The job message" and "Security events"): a
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

use crate::job::{self, Action, InvalidJob, Job, Origin, Target};

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
        }
    }
}

/// What a body asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Intake {
    /// A job: from a job message, or from a security event naming revocable keys.
    Job(Job),
    /// A security event that names nothing the worker may revoke; nothing is done.
    NotRevocable(NotRevocable),
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
        value => job::parse_json(body, value).map(Intake::Job),
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

#[derive(Deserialize)]
struct HealthEntities {
    #[serde(rename = "affectedEntities")]
    affected_entities: Vec<HealthEntity>,
}

#[derive(Deserialize)]
struct HealthEntity {
    #[serde(rename = "entityValue", default, deserialize_with = "present")]
    entity_value: Option<String>,
}

#[derive(Deserialize)]
struct FindingDetail {
    id: String,
    #[serde(rename = "accountId")]
    account_id: String,
    severity: f64,
    #[serde(rename = "type")]
    finding_type: String,
    resource: FindingResource,
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
    #[serde(rename = "userName")]
    user_name: String,
    #[serde(rename = "userType")]
    user_type: String,
}

/// An optional field that, when present, must have its type (`null` is refused).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
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
    let request_id = format!("{HEALTH}:{}", envelope.id);
    job::check_request_id(&request_id)?;
    let origin = Origin {
        source: HEALTH,
        event_type: detail.event_type_code.clone(),
    };
    let not_revocable = |detail: String, keys: Vec<String>| {
        Ok(Intake::NotRevocable(NotRevocable {
            request_id: request_id.clone(),
            origin: origin.clone(),
            account_id: envelope.account.clone(),
            user_name: None,
            access_key_ids: keys,
            detail,
        }))
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
    let entities: HealthEntities = serde_json::from_value(envelope.detail)
        .map_err(|e| invalid("AWS Health event detail", e))?;
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
    Ok(Intake::Job(Job {
        request_id,
        target,
        action: rules.health_action,
        account_id: Some(envelope.account),
        reason: Some(format!("AWS Health event {}", origin.event_type)),
        requested_by: Some(HEALTH.to_owned()),
        batch_id: None,
        revoke_sessions: rules.revoke_sessions,
        origin: Some(origin),
    }))
}

fn guardduty(envelope: Envelope, rules: &IntakeRules) -> Result<Intake, InvalidJob> {
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
        source: GUARDDUTY,
        event_type: finding.finding_type.clone(),
    };
    let details = finding.resource.access_key_details;
    let not_revocable = |detail: String| {
        Ok(Intake::NotRevocable(NotRevocable {
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
        }))
    };
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
    Ok(Intake::Job(Job {
        request_id,
        target: Target::Key {
            access_key_id: key.access_key_id.clone(),
            user_name: Some(key.user_name.clone()),
        },
        action: rules.guardduty_action,
        account_id: Some(finding.account_id),
        reason: Some(format!(
            "GuardDuty finding {} (severity {})",
            origin.event_type, finding.severity
        )),
        requested_by: Some(GUARDDUTY.to_owned()),
        batch_id: None,
        revoke_sessions: rules.revoke_sessions,
        origin: Some(origin),
    }))
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
}
