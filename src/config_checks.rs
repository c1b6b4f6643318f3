//! Checking each section of the configuration (docs, "Configuration"): every key's
//! rule, with an error that names the key. `Config::validate` runs them all.

use std::net::SocketAddr;
use std::time::Duration;

use crate::aws::retry::{BackoffError, BackoffPolicy};
use crate::config::{
    invalid, ActivitySection, AwsSection, Config, ConfigError, ContinuationSection,
    CrossAccountSection, IamSection, IntakeSection, MetricsSection, ProtectSection,
    QuarantineSection, ResultsSection, RetrySection, ScheduleSection, SessionsSection, SqsSection,
    WorkerSection, SQS_MAX_VISIBILITY_SECONDS,
};
use crate::guard::{ProtectedList, Protection};
use crate::intake::IntakeRules;
use crate::job::Action;
use crate::job::{is_account_id, is_iam_name};

pub(crate) fn check_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(invalid(key, format!("must be an http(s) URL, not {url:?}"))),
    }
}

/// `policy_arn` in `partition`: AWS's own managed policies (`arn:aws:iam::aws:policy/…`)
/// exist in each partition under their name (`aws-cn`, `aws-us-gov`); a customer managed
/// policy's ARN is kept as configured.
pub fn quarantine_policy_in(policy_arn: &str, partition: &str) -> String {
    match policy_arn.strip_prefix("arn:aws:iam::aws:policy/") {
        Some(name) => format!("arn:{partition}:iam::aws:policy/{name}"),
        None => policy_arn.to_owned(),
    }
}

impl SessionsSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.margin_seconds > crate::sessions::MAX_MARGIN_SECONDS {
            return Err(invalid(
                "sessions.margin_seconds",
                format!("must be at most 3600, not {}", self.margin_seconds),
            ));
        }
        Ok(())
    }
}

impl ContinuationSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(key) = &self.mac_key_id {
            if key.is_empty() || key.len() > 2048 || key.chars().any(char::is_whitespace) {
                return Err(invalid(
                    "continuation.mac_key_id",
                    format!("must be a KMS key id, key ARN or alias, not {key:?}"),
                ));
            }
        }
        Ok(())
    }
}

impl AwsSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(invalid("aws.region", "must not be empty when set"));
        }
        if let Some(url) = &self.endpoint_url {
            check_url("aws.endpoint_url", url)?;
        }
        if self.request_timeout_seconds == 0 {
            return Err(invalid("aws.request_timeout_seconds", "must be at least 1"));
        }
        if self.connect_timeout_seconds == 0 {
            return Err(invalid("aws.connect_timeout_seconds", "must be at least 1"));
        }
        Ok(())
    }
}

impl SqsSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.queue_url.trim().is_empty() {
            return Err(invalid("sqs.queue_url", "must be set"));
        }
        check_url("sqs.queue_url", &self.queue_url)?;
        if let Some(url) = &self.dead_letter_queue_url {
            check_url("sqs.dead_letter_queue_url", url)?;
            if url == &self.queue_url {
                return Err(invalid(
                    "sqs.dead_letter_queue_url",
                    "must differ from sqs.queue_url",
                ));
            }
        }
        if let Some(url) = &self.priority_queue_url {
            check_url("sqs.priority_queue_url", url)?;
            if url == &self.queue_url || Some(url) == self.dead_letter_queue_url.as_ref() {
                return Err(invalid(
                    "sqs.priority_queue_url",
                    "must differ from sqs.queue_url and its dead-letter queue",
                ));
            }
        }
        if let Some(url) = &self.priority_dead_letter_queue_url {
            check_url("sqs.priority_dead_letter_queue_url", url)?;
            if self.priority_queue_url.is_none() {
                return Err(invalid(
                    "sqs.priority_dead_letter_queue_url",
                    "is set without sqs.priority_queue_url",
                ));
            }
            if Some(url) == self.priority_queue_url.as_ref() || url == &self.queue_url {
                return Err(invalid(
                    "sqs.priority_dead_letter_queue_url",
                    "must differ from the job queues",
                ));
            }
        }
        if self.wait_time_seconds > 20 {
            return Err(invalid("sqs.wait_time_seconds", "must be between 0 and 20"));
        }
        if !(2..=SQS_MAX_VISIBILITY_SECONDS).contains(&self.visibility_timeout_seconds) {
            return Err(invalid(
                "sqs.visibility_timeout_seconds",
                format!("must be between 2 and {SQS_MAX_VISIBILITY_SECONDS}"),
            ));
        }
        if self.max_receive_count == 0 {
            return Err(invalid("sqs.max_receive_count", "must be at least 1"));
        }
        Ok(())
    }
}

impl WorkerSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.max_in_flight) {
            return Err(invalid(
                "worker.max_in_flight",
                "must be between 1 and 10000",
            ));
        }
        if self.prefetch > 1_000 {
            return Err(invalid("worker.prefetch", "must be between 0 and 1000"));
        }
        if self.dedup_capacity == 0 {
            return Err(invalid("worker.dedup_capacity", "must be at least 1"));
        }
        Ok(())
    }
}

impl IamSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_requests_per_second == 0 {
            return Err(invalid("iam.max_requests_per_second", "must be at least 1"));
        }
        if self.initial_requests_per_second == 0 {
            return Err(invalid(
                "iam.initial_requests_per_second",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl RetrySection {
    pub(crate) fn validate(&self) -> Result<BackoffPolicy, ConfigError> {
        let policy = BackoffPolicy::new(
            Duration::from_millis(self.initial_delay_ms),
            Duration::from_millis(self.max_delay_ms),
            self.multiplier,
            self.jitter,
            Duration::from_secs(self.max_elapsed_seconds),
        )
        .map_err(|e| match e {
            BackoffError::InitialZero => invalid("retry.initial_delay_ms", "must be at least 1"),
            BackoffError::MaxBelowInitial => invalid(
                "retry.max_delay_ms",
                "must be at least retry.initial_delay_ms",
            ),
            BackoffError::Multiplier => invalid("retry.multiplier", "must be between 1 and 10"),
        })?;
        if self.visibility_base_seconds == 0 {
            return Err(invalid(
                "retry.visibility_base_seconds",
                "must be at least 1",
            ));
        }
        if !(self.visibility_base_seconds..=SQS_MAX_VISIBILITY_SECONDS)
            .contains(&self.visibility_max_seconds)
        {
            return Err(invalid(
                "retry.visibility_max_seconds",
                format!(
                    "must be between retry.visibility_base_seconds and {SQS_MAX_VISIBILITY_SECONDS}"
                ),
            ));
        }
        Ok(policy)
    }
}

impl Config {
    /// The roles the worker itself uses, never cut off (docs, "Role sessions"): every
    /// role the shipped stacks name (`iam-key-revoker*`: the worker's, the scheduler's,
    /// the KEDA scaler's, the member accounts'), the member roles configured, and the
    /// role Scheduler sends staged deletes with.
    pub(crate) fn own_roles(&self) -> Vec<String> {
        let configured = [
            self.cross_account.role_name.as_deref(),
            Some(self.cross_account.planner_role_name.as_str()),
            Some(self.cross_account.restorer_role_name.as_str()),
            self.schedule
                .role_arn
                .as_deref()
                .and_then(|arn| arn.rsplit('/').next()),
        ];
        // IAM names hold no glob characters: each configured name matches itself.
        std::iter::once("iam-key-revoker*")
            .chain(configured.into_iter().flatten())
            .map(str::to_owned)
            .collect()
    }
}

impl ProtectSection {
    /// The compiled patterns; `own_roles` are the roles the worker itself uses, whose
    /// sessions it never cuts off whatever `protect.roles` says.
    pub(crate) fn validate(&self, own_roles: &[String]) -> Result<Protection, ConfigError> {
        let roles: Vec<String> = self.roles.iter().chain(own_roles).cloned().collect();
        Protection::new(&self.users, &self.access_keys)
            .and_then(|p| p.with_roles(&roles))
            .map_err(|e| {
                let key = match e.list {
                    ProtectedList::Users => "protect.users",
                    ProtectedList::AccessKeys => "protect.access_keys",
                    ProtectedList::Roles => "protect.roles",
                };
                invalid(key, e.to_string())
            })
    }
}

impl ResultsSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.queue_url {
            check_url("results.queue_url", url)?;
        }
        if let Some(arn) = &self.sns_topic_arn {
            // Topic names: 1-256 of A-Za-z0-9_-, a FIFO topic's ending in .fifo (SNS API
            // Reference, "CreateTopic").
            let name_ok = |name: &str| {
                let stem = name.strip_suffix(".fifo").unwrap_or(name);
                (1..=256).contains(&name.len())
                    && stem
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            };
            if !arn_of("sns", arn).is_some_and(name_ok) {
                return Err(invalid(
                    "results.sns_topic_arn",
                    format!(
                        "must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME), not {arn:?}"
                    ),
                ));
            }
        }
        if let Some(bus) = &self.event_bus {
            // Bus names: 1-256 of A-Za-z0-9/._- (EventBridge API Reference,
            // "CreateEventBus"); PutEvents takes the name or the ARN.
            let name_ok = |name: &str| {
                (1..=256).contains(&name.len())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
            };
            let ok = match bus.strip_prefix("arn:") {
                Some(_) => arn_of("events", bus)
                    .and_then(|resource| resource.strip_prefix("event-bus/"))
                    .is_some_and(name_ok),
                None => name_ok(bus),
            };
            if !ok {
                return Err(invalid(
                    "results.event_bus",
                    format!("must be an event bus name or ARN, not {bus:?}"),
                ));
            }
        }
        Ok(())
    }
}

impl ActivitySection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(bad) = self.regions.iter().find(|r| {
            r.is_empty()
                || !r
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        }) {
            return Err(invalid(
                "activity.regions",
                format!("holds {bad:?}, which is not a Region code (e.g. eu-west-1)"),
            ));
        }
        // CloudTrail's event history keeps 90 days (CloudTrail User Guide, "Working
        // with CloudTrail event history").
        if !(1..=2160).contains(&self.lookback_hours) {
            return Err(invalid(
                "activity.lookback_hours",
                "must be from 1 to 2160 (CloudTrail keeps 90 days)",
            ));
        }
        if !(1..=100_000).contains(&self.max_events) {
            return Err(invalid("activity.max_events", "must be from 1 to 100000"));
        }
        // SQS's longest message delay is 15 minutes.
        if self.second_pass_delay_seconds > 900 {
            return Err(invalid(
                "activity.second_pass_delay_seconds",
                "must be at most 900 (SQS's longest delay)",
            ));
        }
        Ok(())
    }
}

impl QuarantineSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        // A managed policy: arn:PARTITION:iam::aws:policy/NAME (AWS's) or
        // arn:PARTITION:iam::ACCOUNT:policy/PATH/NAME (the account's own).
        let parts: Vec<&str> = self.policy_arn.splitn(6, ':').collect();
        let ok = match parts.as_slice() {
            ["arn", partition, "iam", "", owner, resource] => {
                !partition.is_empty()
                    && (*owner == "aws" || is_account_id(owner))
                    && resource.strip_prefix("policy/").is_some_and(|name| {
                        !name.is_empty()
                            && !name.ends_with('/')
                            && name
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c))
                    })
            }
            _ => false,
        };
        if !ok {
            return Err(invalid(
                "quarantine.policy_arn",
                format!(
                    "must be a managed policy ARN (arn:aws:iam::aws:policy/NAME), not {:?}",
                    self.policy_arn
                ),
            ));
        }
        Ok(())
    }
}

impl IntakeSection {
    pub(crate) fn validate(&self) -> Result<IntakeRules, ConfigError> {
        if let Some(bad) = self.health_event_types.iter().find(|t| {
            t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        }) {
            return Err(invalid(
                "intake.health_event_types",
                format!("holds {bad:?}, which is not an AWS Health event type code (A-Z, 0-9, _)"),
            ));
        }
        // GuardDuty severities run from 1.0 to 8.9 (GuardDuty User Guide, "Severity
        // levels of GuardDuty findings").
        if let Some(bad) = self.role_session_finding_types.iter().find(|t| {
            t.is_empty() || t.len() > 256 || t.chars().any(|c| c.is_whitespace() || c.is_control())
        }) {
            return Err(invalid(
                "intake.role_session_finding_types",
                format!("holds {bad:?}, which is not a GuardDuty finding type"),
            ));
        }
        if !(0.0..=10.0).contains(&self.guardduty_min_severity) {
            return Err(invalid(
                "intake.guardduty_min_severity",
                "must be a number from 0 to 10",
            ));
        }
        let delete_after = match self.delete_after.as_deref() {
            None => None,
            Some(text) => match crate::staging::DeleteAfter::parse(text) {
                Ok(after @ crate::staging::DeleteAfter::In { .. }) => Some(after),
                Ok(crate::staging::DeleteAfter::At { .. }) => {
                    return Err(invalid(
                        "intake.delete_after",
                        "must be a duration (30d, 12h, 90m): every event's delete follows its own deactivation",
                    ))
                }
                Err(e) => return Err(invalid("intake.delete_after", e.0)),
            },
        };
        if delete_after.is_some()
            && self.health_action != Action::Deactivate
            && self.guardduty_action != Action::Deactivate
        {
            return Err(invalid(
                "intake.delete_after",
                "stages deactivations, but neither intake.health_action nor intake.guardduty_action is \"deactivate\"",
            ));
        }
        Ok(IntakeRules {
            delete_after,
            health_event_types: self.health_event_types.clone(),
            health_action: self.health_action,
            guardduty_min_severity: self.guardduty_min_severity,
            guardduty_action: self.guardduty_action,
            revoke_sessions: self.revoke_sessions,
            quarantine_user: self.quarantine_user,
            update_findings: self.update_findings,
            report_activity: self.report_activity,
            role_session_finding_types: self.role_session_finding_types.clone(),
            role_session_scope: self.role_session_scope,
        })
    }
}

impl ScheduleSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        // EventBridge Scheduler API Reference, CreateScheduleGroup: a group name is 1-64
        // characters of [0-9a-zA-Z-_.].
        if !crate::staging::is_schedule_name(&self.group_name) {
            return Err(invalid(
                "schedule.group_name",
                format!(
                    "must be 1 to 64 characters of 0-9, a-z, A-Z, -, _ and . (EventBridge Scheduler's rule), not {:?}",
                    self.group_name
                ),
            ));
        }
        if let Some(role) = &self.role_arn {
            let parts: Vec<&str> = role.splitn(6, ':').collect();
            let ok = matches!(parts.as_slice(),
                ["arn", partition, "iam", "", account, resource]
                    if !partition.is_empty()
                        && is_account_id(account)
                        && resource.strip_prefix("role/").is_some_and(|n| !n.is_empty()));
            if !ok {
                return Err(invalid(
                    "schedule.role_arn",
                    format!(
                        "must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME), not {role:?}"
                    ),
                ));
            }
        }
        if let Some(url) = &self.dead_letter_queue_url {
            check_url("schedule.dead_letter_queue_url", url)?;
            // EventBridge Scheduler User Guide, "Configuring a dead-letter queue": a FIFO
            // queue cannot be a schedule's dead-letter queue.
            if url.ends_with(".fifo") {
                return Err(invalid(
                    "schedule.dead_letter_queue_url",
                    "is a FIFO queue, which EventBridge Scheduler does not take as a dead-letter queue: give a standard queue",
                ));
            }
        }
        Ok(())
    }
}

/// The resource part of an ARN of `service` with a Region and an account, if `arn` is one.
fn arn_of<'a>(service: &str, arn: &'a str) -> Option<&'a str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, s, region, account, resource]
            if !partition.is_empty()
                && *s == service
                && !region.is_empty()
                && is_account_id(account) =>
        {
            Some(resource)
        }
        _ => None,
    }
}

impl CrossAccountSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(role) = &self.role_name {
            if !is_iam_name(role, 64) {
                return Err(invalid(
                    "cross_account.role_name",
                    "must be an IAM role name (1-64 of A-Za-z0-9+=,.@_-)",
                ));
            }
        }
        for (key, role) in [
            ("cross_account.planner_role_name", &self.planner_role_name),
            ("cross_account.restorer_role_name", &self.restorer_role_name),
        ] {
            if !is_iam_name(role, 64) {
                return Err(invalid(
                    key,
                    "must be an IAM role name (1-64 of A-Za-z0-9+=,.@_-)",
                ));
            }
        }
        if let Some(id) = &self.external_id {
            let ok = (2..=1224).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c));
            if !ok {
                return Err(invalid(
                    "cross_account.external_id",
                    "must be 2-1224 of A-Za-z0-9+=,.@:/-_",
                ));
            }
        }
        Ok(())
    }
}

impl MetricsSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "metrics.listen",
                format!(
                    "must be an address such as 0.0.0.0:9090, not {:?}",
                    self.listen
                ),
            ));
        }
        if self.ready_max_receive_age_seconds == 0 {
            return Err(invalid(
                "metrics.ready_max_receive_age_seconds",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
