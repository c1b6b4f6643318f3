//! Activity reports (docs, "Activity reports"): what a revoked key did, from
//! CloudTrail's event history. This module is the part without AWS: the report task a
//! worker sends itself (a message of its own, so that a restart loses no pass), the
//! events as `LookupEvents` returns them, and the report built from them.
//!
//! `LookupEvents` returns management events only: data events (S3 object reads and
//! writes, Lambda invocations) are not in the event history (CloudTrail User Guide,
//! "Working with CloudTrail event history"), and the report says so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rules::{check_access_key_id, check_request_id, check_user_name, InvalidJob};

/// What every report says of its source.
pub const MANAGEMENT_EVENTS_ONLY: &str = "CloudTrail event history (LookupEvents) holds management events only: data events (S3 object reads and writes, Lambda invocations, DynamoDB items) are not in this report";

/// API calls that leave something an attacker can come back with: identities, keys,
/// passwords, policies, roles, trust (IAM API Reference).
const PERSISTENCE: &[&str] = &[
    "CreateUser",
    "CreateAccessKey",
    "UpdateAccessKey",
    "CreateLoginProfile",
    "UpdateLoginProfile",
    "AttachUserPolicy",
    "PutUserPolicy",
    "AddUserToGroup",
    "AttachGroupPolicy",
    "PutGroupPolicy",
    "CreateRole",
    "AttachRolePolicy",
    "PutRolePolicy",
    "UpdateAssumeRolePolicy",
    "CreatePolicy",
    "CreatePolicyVersion",
    "SetDefaultPolicyVersion",
    "CreateInstanceProfile",
    "AddRoleToInstanceProfile",
    "UploadSSHPublicKey",
    "UploadSigningCertificate",
    "CreateServiceSpecificCredential",
    "CreateVirtualMFADevice",
    "EnableMFADevice",
    "CreateOpenIDConnectProvider",
    "CreateSAMLProvider",
];

/// STS calls that mint temporary credentials with the key (AWS STS API Reference).
const MINTING: &[&str] = &["GetSessionToken", "GetFederationToken", "AssumeRole"];

/// The most calls listed one by one in each list of a report (the counts cover all).
const LISTED_MAX: usize = 200;

/// One report pass a worker sends itself: the continuation of a job that revoked a key
/// (docs, "Activity reports", for its shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub request_id: String,
    pub access_key_id: String,
    pub user_name: Option<String>,
    pub account_id: Option<String>,
    /// 1: right after the revocation; 2: after CloudTrail's delivery delay.
    pub pass: u8,
    /// When the key was revoked (Unix milliseconds).
    pub revoked_at_ms: u64,
    /// Not before this time (Unix milliseconds): a pass received early waits.
    pub not_before_ms: u64,
    pub event_source: Option<String>,
    pub event_type: Option<String>,
    /// Until when the worker vouches for the task (Unix milliseconds; its MAC covers it).
    pub expires_at_ms: Option<u64>,
    /// The worker's MAC over the task (docs, "Continuations"), base64.
    pub mac: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaskMessage {
    request_id: String,
    access_key_id: String,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    account_id: Option<String>,
    continuation: RawTaskContinuation,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaskContinuation {
    activity_report: RawTask,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    pass: u8,
    revoked_at_ms: u64,
    not_before_ms: u64,
    #[serde(default)]
    event_source: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    expires_at_ms: Option<u64>,
    #[serde(default)]
    mac: Option<String>,
}

impl Task {
    /// The text the worker's MAC covers: the body without the MAC.
    pub fn canonical(&self) -> String {
        Task {
            mac: None,
            ..self.clone()
        }
        .to_body()
    }

    /// The task a body holds: `None` when the body is no report task (a job, an event),
    /// an error when it is one that breaks a rule.
    pub fn of(body: &str) -> Option<Result<Task, InvalidJob>> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        value.get("continuation")?.get("activity_report")?;
        Some(Self::parse(body))
    }

    fn parse(body: &str) -> Result<Task, InvalidJob> {
        let raw: RawTaskMessage = serde_json::from_str(body)
            .map_err(|e| InvalidJob(format!("not a valid activity report task: {e}")))?;
        check_request_id(&raw.request_id)?;
        check_access_key_id(&raw.access_key_id)?;
        if let Some(user) = &raw.user_name {
            check_user_name(user)?;
        }
        if raw
            .account_id
            .as_deref()
            .is_some_and(|a| !crate::rules::is_account_id(a))
        {
            return Err(InvalidJob(
                "account_id must be exactly 12 digits".to_owned(),
            ));
        }
        let task = raw.continuation.activity_report;
        if !(1..=2).contains(&task.pass) {
            return Err(InvalidJob("activity_report.pass must be 1 or 2".to_owned()));
        }
        for (field, value) in [
            ("event_source", &task.event_source),
            ("event_type", &task.event_type),
            ("mac", &task.mac),
        ] {
            crate::rules::check_len(field, value.as_deref(), 256)?;
        }
        Ok(Task {
            request_id: raw.request_id,
            access_key_id: raw.access_key_id,
            user_name: raw.user_name,
            account_id: raw.account_id,
            pass: task.pass,
            revoked_at_ms: task.revoked_at_ms,
            not_before_ms: task.not_before_ms,
            event_source: task.event_source,
            event_type: task.event_type,
            expires_at_ms: task.expires_at_ms,
            mac: task.mac,
        })
    }

    /// The message body of this task.
    pub fn to_body(&self) -> String {
        let mut report = serde_json::json!({
            "pass": self.pass,
            "revoked_at_ms": self.revoked_at_ms,
            "not_before_ms": self.not_before_ms,
        });
        if let Some(source) = &self.event_source {
            report["event_source"] = source.clone().into();
        }
        if let Some(kind) = &self.event_type {
            report["event_type"] = kind.clone().into();
        }
        if let Some(at) = self.expires_at_ms {
            report["expires_at_ms"] = at.into();
        }
        if let Some(mac) = &self.mac {
            report["mac"] = mac.clone().into();
        }
        let mut body = serde_json::json!({
            "request_id": self.request_id,
            "access_key_id": self.access_key_id,
            "continuation": {"activity_report": report},
        });
        if let Some(user) = &self.user_name {
            body["user_name"] = user.clone().into();
        }
        if let Some(account) = &self.account_id {
            body["account_id"] = account.clone().into();
        }
        body.to_string()
    }
}

/// One event as `LookupEvents` returns it, read from its `CloudTrailEvent` (the record
/// as a JSON string; CloudTrail User Guide, "CloudTrail record contents").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailEvent {
    pub time: String,
    pub region: String,
    pub service: String,
    pub api: String,
    pub source_ip: String,
    pub user_agent: String,
    pub error_code: Option<String>,
    pub read_only: bool,
    /// `TYPE NAME` of each resource CloudTrail named.
    pub resources: Vec<String>,
    /// The access key id of the temporary credentials the call minted.
    pub minted_key: Option<String>,
    /// The role an `AssumeRole` call assumed.
    pub role_arn: Option<String>,
    /// The access key a `CreateAccessKey` call created (its response elements; the
    /// secret is never in CloudTrail).
    pub created_key: Option<String>,
    /// The user an IAM call made something for or on: the response's, else the request's.
    pub target_user: Option<String>,
}

impl TrailEvent {
    /// The event of a `CloudTrailEvent` string, with the resources `LookupEvents` listed
    /// beside it; `None` when the string is not a record.
    pub fn parse(record: &str, resources: Vec<String>) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(record).ok()?;
        let text = |pointer: &str| {
            value
                .pointer(pointer)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let read_only = match value.get("readOnly") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        Some(Self {
            time: text("/eventTime")?,
            region: text("/awsRegion").unwrap_or_default(),
            service: text("/eventSource").unwrap_or_default(),
            api: text("/eventName")?,
            source_ip: text("/sourceIPAddress").unwrap_or_default(),
            user_agent: text("/userAgent").unwrap_or_default(),
            error_code: text("/errorCode"),
            read_only,
            resources,
            minted_key: text("/responseElements/credentials/accessKeyId"),
            role_arn: text("/requestParameters/roleArn"),
            created_key: text("/responseElements/accessKey/accessKeyId"),
            target_user: text("/responseElements/accessKey/userName")
                .or_else(|| text("/responseElements/loginProfile/userName"))
                .or_else(|| text("/responseElements/user/userName"))
                .or_else(|| text("/requestParameters/userName")),
        })
    }

    fn call(&self) -> Call {
        Call {
            time: self.time.clone(),
            region: self.region.clone(),
            service: self.service.clone(),
            api: self.api.clone(),
            source_ip: self.source_ip.clone(),
            resources: self.resources.clone(),
            error_code: self.error_code.clone(),
        }
    }
}

/// One call, as a report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Call {
    pub time: String,
    pub region: String,
    pub service: String,
    pub api: String,
    pub source_ip: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

/// Something the leaked key made that is a way back in (docs, "What the leaked key
/// made"): a key, a console password, a user, a grant, a role. Keys and passwords are
/// contained by follow-up jobs (by setting); the rest is for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Made {
    pub time: String,
    pub region: String,
    pub api: String,
    /// The user it was made for or on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// The access key it created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// The credentials that made it: the leaked key, or temporary credentials it minted.
    pub made_with: String,
    /// What the worker does about it: a follow-up job (its request id and action), or
    /// `reported`, for a person.
    pub containment: String,
}

/// Temporary credentials the key minted, and what they did (one level deep).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Minted {
    pub time: String,
    pub api: String,
    pub region: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// What the minted credentials did, where the worker could follow them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<Box<KeyActivity>>,
    /// Why they were not followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_followed: Option<String>,
}

/// What one key did, from its events.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct KeyActivity {
    pub access_key_id: String,
    pub events_read: usize,
    /// Reading stopped at `activity.max_events`: there may be more.
    pub capped: bool,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub by_region: BTreeMap<String, usize>,
    pub by_service: BTreeMap<String, usize>,
    /// `service:API` → calls.
    pub by_api: BTreeMap<String, usize>,
    /// Calls that were not read-only (succeeded or not).
    pub changes: Vec<Call>,
    pub errors: BTreeMap<String, usize>,
    pub source_ips: BTreeMap<String, usize>,
    pub user_agents: BTreeMap<String, usize>,
    /// Calls CloudTrail recorded after the revocation (IAM is eventually consistent).
    pub after_revocation: Vec<Call>,
    /// Calls that succeeded and leave something behind: users, keys, passwords,
    /// policies, roles.
    pub persistence: Vec<Call>,
    /// Temporary credentials minted with the key.
    pub minted: Vec<Minted>,
    /// What the key made that is a way back in, and what the worker does about it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub made: Vec<Made>,
}

impl KeyActivity {
    /// The activity of `key` from `events` (any order); `revoked_at` is ISO 8601 UTC.
    pub fn build(key: &str, events: &[TrailEvent], capped: bool, revoked_at: &str) -> Self {
        let mut events: Vec<&TrailEvent> = events.iter().collect();
        events.sort_by(|a, b| a.time.cmp(&b.time));
        let mut activity = KeyActivity {
            access_key_id: key.to_owned(),
            events_read: events.len(),
            capped,
            first_seen: events.first().map(|e| e.time.clone()),
            last_seen: events.last().map(|e| e.time.clone()),
            ..Self::default()
        };
        let bump = |map: &mut BTreeMap<String, usize>, key: &str| {
            if !key.is_empty() {
                *map.entry(key.to_owned()).or_default() += 1;
            }
        };
        for event in events {
            bump(&mut activity.by_region, &event.region);
            bump(&mut activity.by_service, &event.service);
            bump(
                &mut activity.by_api,
                &format!("{}:{}", event.service, event.api),
            );
            bump(&mut activity.source_ips, &event.source_ip);
            bump(&mut activity.user_agents, &event.user_agent);
            if let Some(code) = &event.error_code {
                bump(&mut activity.errors, code);
            }
            let listed = |list: &Vec<Call>| list.len() < LISTED_MAX;
            if !event.read_only && listed(&activity.changes) {
                activity.changes.push(event.call());
            }
            // ISO 8601 UTC times of one format compare as text.
            if event.time.as_str() > revoked_at && listed(&activity.after_revocation) {
                activity.after_revocation.push(event.call());
            }
            let succeeded = event.error_code.is_none();
            let iam_call = succeeded
                && event.service == "iam.amazonaws.com"
                && PERSISTENCE.contains(&event.api.as_str());
            if iam_call && listed(&activity.persistence) {
                activity.persistence.push(event.call());
            }
            // Keys and passwords are contained, however many other calls came first.
            let contained = matches!(
                event.api.as_str(),
                "CreateAccessKey" | "CreateLoginProfile" | "UpdateLoginProfile"
            );
            if iam_call && (contained || activity.made.len() < LISTED_MAX) {
                activity.made.push(Made {
                    time: event.time.clone(),
                    region: event.region.clone(),
                    api: event.api.clone(),
                    user_name: event.target_user.clone(),
                    access_key_id: event
                        .created_key
                        .clone()
                        .filter(|_| event.api == "CreateAccessKey"),
                    resources: event.resources.clone(),
                    made_with: key.to_owned(),
                    containment: "reported".to_owned(),
                });
            }
            if succeeded
                && event.service == "sts.amazonaws.com"
                && MINTING.contains(&event.api.as_str())
            {
                activity.minted.push(Minted {
                    time: event.time.clone(),
                    api: event.api.clone(),
                    region: event.region.clone(),
                    access_key_id: event.minted_key.clone(),
                    role_arn: event.role_arn.clone(),
                    activity: None,
                    not_followed: None,
                });
            }
        }
        activity
    }

    /// A one-line account of the activity, for the summary and the audit line.
    pub fn headline(&self) -> String {
        if self.events_read == 0 {
            return "no management events in CloudTrail".to_owned();
        }
        let changes = self.changes.len();
        let mut line = format!(
            "{} event(s) from {} source IP(s), {} change(s), {} error(s)",
            self.events_read,
            self.source_ips.len(),
            changes,
            self.errors.values().sum::<usize>()
        );
        if !self.persistence.is_empty() {
            line.push_str(&format!(", {} persistence call(s)", self.persistence.len()));
        }
        if !self.minted.is_empty() {
            line.push_str(&format!(
                ", {} temporary credential(s) minted",
                self.minted.len()
            ));
        }
        let made_keys = self
            .made
            .iter()
            .filter(|m| m.access_key_id.is_some())
            .count();
        if made_keys > 0 {
            line.push_str(&format!(", {made_keys} access key(s) made"));
        }
        if !self.after_revocation.is_empty() {
            line.push_str(&format!(
                ", {} call(s) after the revocation",
                self.after_revocation.len()
            ));
        }
        line
    }
}

/// Regions whose history could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionFailure {
    pub region: String,
    pub error: String,
}

/// The activity report of one key: sent to the sinks as its own kind of event and
/// logged as one line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivityReport {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub summary: String,
    pub request_id: String,
    pub access_key_id: String,
    pub user_name: Option<String>,
    pub account_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    pub pass: u8,
    pub revoked_at: String,
    pub window_start: String,
    pub window_end: String,
    pub regions: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_regions: Vec<RegionFailure>,
    /// Regions where CloudTrail refused lookups before (an SCP denying the Region): not
    /// read, and not a failure of this report (`activity.regions` leaves them out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_regions: Vec<String>,
    pub source: &'static str,
    pub activity: KeyActivity,
}

impl ActivityReport {
    /// `complete` (every Region read), `partial` (some not, or the Regions could not be
    /// listed) or `error` (none read).
    pub fn result(&self) -> &'static str {
        let unread = |region: &String| self.failed_regions.iter().any(|f| &f.region == region);
        if self.regions.is_empty() || self.regions.iter().all(unread) {
            "error"
        } else if self.failed_regions.is_empty() {
            "complete"
        } else {
            "partial"
        }
    }

    /// The summary line of a report.
    pub fn summarize(&mut self) {
        let mut line = format!("Activity of access key {}", self.access_key_id);
        if let Some(user) = &self.user_name {
            line.push_str(&format!(" of {user}"));
        }
        if let Some(account) = &self.account_id {
            line.push_str(&format!(" in {account}"));
        }
        line.push_str(&format!(
            " (pass {}, {} Region(s)",
            self.pass,
            self.regions.len()
        ));
        if !self.failed_regions.is_empty() {
            line.push_str(&format!(", {} not read", self.failed_regions.len()));
        }
        if !self.skipped_regions.is_empty() {
            line.push_str(&format!(
                ", {} refused before and skipped",
                self.skipped_regions.len()
            ));
        }
        if self.result() == "error" {
            line.push_str("): CloudTrail could not be read");
        } else {
            line.push_str(&format!("): {}", self.activity.headline()));
        }
        self.summary = line;
    }
}

/// Unix milliseconds of an ISO 8601 UTC time as CloudTrail writes it.
pub fn parse_iso_ms(text: &str) -> Option<u64> {
    aws_smithy_types::DateTime::from_str(text, aws_smithy_types::date_time::Format::DateTime)
        .ok()
        .and_then(|t| t.to_millis().ok())
        .and_then(|ms| u64::try_from(ms).ok())
}

/// `ms` (Unix milliseconds) as ISO 8601 UTC to the second, as CloudTrail writes times.
pub fn iso(ms: u64) -> String {
    aws_smithy_types::DateTime::from_millis(ms as i64)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .map(|t| {
            // CloudTrail's records say 2026-11-30T12:00:01Z: no fractions.
            match t.split_once('.') {
                Some((seconds, _)) => format!("{seconds}Z"),
                None => t,
            }
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(time: &str, api: &str, service: &str, extra: serde_json::Value) -> String {
        let mut value = serde_json::json!({
            "eventVersion": "1.08",
            "userIdentity": {"type": "IAMUser", "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": "alice"},
            "eventTime": time, "eventSource": service, "eventName": api,
            "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.7",
            "userAgent": "aws-cli/2.15.0", "readOnly": true, "eventType": "AwsApiCall"
        });
        for (k, v) in extra.as_object().unwrap() {
            value[k] = v.clone();
        }
        value.to_string()
    }

    #[test]
    fn a_report_counts_lists_changes_persistence_and_minted_credentials() {
        let events: Vec<TrailEvent> = [
            record("2026-11-30T11:00:00Z", "GetCallerIdentity", "sts.amazonaws.com", serde_json::json!({})),
            record("2026-11-30T11:01:00Z", "ListBuckets", "s3.amazonaws.com", serde_json::json!({"awsRegion": "eu-west-1", "sourceIPAddress": "198.51.100.9"})),
            record("2026-11-30T11:02:00Z", "CreateUser", "iam.amazonaws.com", serde_json::json!({"readOnly": false})),
            record("2026-11-30T11:03:00Z", "RunInstances", "ec2.amazonaws.com", serde_json::json!({"readOnly": false, "errorCode": "UnauthorizedOperation"})),
            record("2026-11-30T11:04:00Z", "GetSessionToken", "sts.amazonaws.com", serde_json::json!({"responseElements": {"credentials": {"accessKeyId": "ASIAIOSFODNN7EXAMPLE", "expiration": "Dec 1, 2026, 11:04:00 PM"}}})),
            record("2026-11-30T12:00:05Z", "ListUsers", "iam.amazonaws.com", serde_json::json!({"errorCode": "InvalidClientTokenId"})),
        ]
        .iter()
        .map(|r| TrailEvent::parse(r, vec!["AWS::IAM::User mallory".into()]).expect("a record"))
        .collect();
        let activity = KeyActivity::build(
            "AKIAIOSFODNN7EXAMPLE",
            &events,
            false,
            "2026-11-30T12:00:01Z",
        );
        assert_eq!(activity.events_read, 6);
        assert_eq!(activity.first_seen.as_deref(), Some("2026-11-30T11:00:00Z"));
        assert_eq!(activity.last_seen.as_deref(), Some("2026-11-30T12:00:05Z"));
        assert_eq!(activity.by_region["us-east-1"], 5);
        assert_eq!(activity.by_region["eu-west-1"], 1);
        assert_eq!(activity.by_api["iam.amazonaws.com:CreateUser"], 1);
        assert_eq!(activity.by_service["sts.amazonaws.com"], 2);
        assert_eq!(
            activity
                .changes
                .iter()
                .map(|c| c.api.as_str())
                .collect::<Vec<_>>(),
            ["CreateUser", "RunInstances"]
        );
        assert_eq!(activity.errors["UnauthorizedOperation"], 1);
        assert_eq!(activity.source_ips["198.51.100.9"], 1);
        assert_eq!(activity.user_agents["aws-cli/2.15.0"], 6);
        assert_eq!(
            activity
                .persistence
                .iter()
                .map(|c| c.api.as_str())
                .collect::<Vec<_>>(),
            ["CreateUser"],
            "only calls that succeeded"
        );
        assert_eq!(activity.after_revocation.len(), 1);
        assert_eq!(activity.after_revocation[0].api, "ListUsers");
        assert_eq!(activity.minted.len(), 1);
        assert_eq!(
            activity.minted[0].access_key_id.as_deref(),
            Some("ASIAIOSFODNN7EXAMPLE")
        );
        assert_eq!(
            activity.changes[0].resources,
            vec!["AWS::IAM::User mallory"]
        );
        assert!(activity
            .headline()
            .contains("1 temporary credential(s) minted"));
    }

    #[test]
    fn a_task_round_trips_and_a_job_is_no_task() {
        let task = Task {
            request_id: "aws.guardduty:f1".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            user_name: Some("alice".into()),
            account_id: Some("111122223333".into()),
            pass: 2,
            revoked_at_ms: 1_796_040_001_000,
            not_before_ms: 1_796_040_901_000,
            event_source: Some("aws.guardduty".into()),
            event_type: Some("UnauthorizedAccess:IAMUser/MaliciousIPCaller".into()),
            expires_at_ms: None,
            mac: None,
        };
        assert_eq!(Task::of(&task.to_body()), Some(Ok(task.clone())));
        assert_eq!(
            Task::of(r#"{"request_id":"r","access_key_id":"AKIAIOSFODNN7EXAMPLE"}"#),
            None
        );
        let bad = task.to_body().replace("\"pass\":2", "\"pass\":3");
        assert!(matches!(Task::of(&bad), Some(Err(_))));
        let extra = task
            .to_body()
            .replace("\"pass\":2", "\"pass\":2,\"action\":\"delete\"");
        assert!(
            matches!(Task::of(&extra), Some(Err(_))),
            "nothing but the task's fields"
        );
    }

    #[test]
    fn a_report_is_complete_partial_or_an_error_by_the_regions_it_read() {
        let failure = |region: &str| RegionFailure {
            region: region.into(),
            error: "AccessDenied".into(),
        };
        let mut report = ActivityReport {
            kind: "activity_report",
            summary: String::new(),
            request_id: "r".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            user_name: None,
            account_id: None,
            event_source: None,
            event_type: None,
            pass: 1,
            revoked_at: String::new(),
            window_start: String::new(),
            window_end: String::new(),
            regions: vec!["us-east-1".into(), "eu-west-1".into()],
            failed_regions: Vec::new(),
            skipped_regions: Vec::new(),
            source: MANAGEMENT_EVENTS_ONLY,
            activity: KeyActivity::default(),
        };
        assert_eq!(report.result(), "complete");
        report.failed_regions.push(failure("eu-west-1"));
        assert_eq!(report.result(), "partial");
        report.failed_regions.push(failure("us-east-1"));
        assert_eq!(report.result(), "error");
        report.summarize();
        assert!(
            report
                .summary
                .ends_with("2 not read): CloudTrail could not be read"),
            "{}",
            report.summary
        );
        // The Regions could not be listed, the fallback was read: partial.
        report.regions = vec!["us-east-1".into()];
        report.failed_regions = vec![failure("*")];
        assert_eq!(report.result(), "partial");
    }

    #[test]
    fn times_are_written_as_cloudtrail_writes_them() {
        assert_eq!(iso(1_796_040_001_123), "2026-11-30T12:00:01Z");
        assert_eq!(
            parse_iso_ms("2026-11-30T12:00:01Z"),
            Some(1_796_040_001_000)
        );
    }
}
