//! Configuration: declared once as serde structs, loaded from a TOML file with
//! `IAM_KEY_REVOKER__<SECTION>__<KEY>` environment overrides, validated before anything
//! else starts; every error names its key. `config/default.toml` documents every key with
//! its default; the defaults here are their one source, a test keeps the two in step.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::aws::retry::BackoffPolicy;
pub use crate::aws::visibility::SQS_MAX_VISIBILITY_SECONDS;
pub use crate::breaker::config::{BreakerSection, LaneLimits};
pub use crate::config_contain::{ContainKeys, ContainLogins};
pub(crate) use crate::config_error::invalid;
pub use crate::config_error::ConfigError;
use crate::config_lists::list_or_comma_separated;
use crate::guard::Protection;
use crate::intake::IntakeRules;
use crate::job::Action;

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "IAM_KEY_REVOKER__";

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// AWS clients.
    pub aws: AwsSection,
    /// The job queue and its dead-letter queue.
    pub sqs: SqsSection,
    /// Concurrency, deduplication and shutdown.
    pub worker: WorkerSection,
    /// IAM request budget.
    pub iam: IamSection,
    /// Backoff for transient AWS errors and for jobs left on the queue.
    pub retry: RetrySection,
    /// Users and keys that are never touched.
    pub protect: ProtectSection,
    /// Acting in other accounts.
    pub cross_account: CrossAccountSection,
    /// Security events from EventBridge.
    pub intake: IntakeSection,
    /// Outcome events.
    pub results: ResultsSection,
    /// The policy attached to a leaked key's user.
    pub quarantine: QuarantineSection,
    /// Activity reports from CloudTrail.
    pub activity: ActivitySection,
    /// Staged revocation: where its scheduled deletes are kept.
    pub schedule: ScheduleSection,
    /// Session cut-offs.
    pub sessions: SessionsSection,
    /// What the leaked key made, contained.
    pub contain: crate::config_contain::ContainSection,
    /// Proof that a message is the worker's own.
    pub continuation: ContinuationSection,
    /// The breaker: limits on keys changed, holds and pauses.
    pub breaker: BreakerSection,
    /// The metrics and health listener.
    pub metrics: MetricsSection,
    /// Logging.
    pub log: LogSection,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSection {
    /// Region for every client; unset means the SDK's usual sources (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Endpoint override for every AWS client (a local emulator); unset means AWS itself.
    pub endpoint_url: Option<String>,
    /// Upper bound on one AWS request attempt (long polls get `sqs.wait_time_seconds` on top).
    pub request_timeout_seconds: u64,
    /// Upper bound on opening a connection to an AWS endpoint.
    pub connect_timeout_seconds: u64,
}

impl Default for AwsSection {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            request_timeout_seconds: 10,
            connect_timeout_seconds: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqsSection {
    /// URL of the job queue (required).
    pub queue_url: String,
    /// Where rejected jobs go; unset means the queue's `RedrivePolicy` target.
    pub dead_letter_queue_url: Option<String>,
    /// A second job queue for urgent jobs, always served first.
    pub priority_queue_url: Option<String>,
    /// Where the priority queue's rejected jobs go; unset means its `RedrivePolicy` target.
    pub priority_dead_letter_queue_url: Option<String>,
    /// Long-poll wait of each receive, 0 to 20.
    pub wait_time_seconds: u32,
    /// Visibility timeout asked for on receive, and renewed by the heartbeat.
    pub visibility_timeout_seconds: u32,
    /// Only where the queue has no redrive policy: a message received more often than
    /// this is dead-lettered with `too_many_receives` instead of being worked again.
    pub max_receive_count: u32,
}

impl Default for SqsSection {
    fn default() -> Self {
        Self {
            queue_url: String::new(),
            dead_letter_queue_url: None,
            priority_queue_url: None,
            priority_dead_letter_queue_url: None,
            wait_time_seconds: 20,
            visibility_timeout_seconds: 60,
            max_receive_count: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Jobs processed concurrently.
    pub max_in_flight: usize,
    /// Messages received ahead of a free job slot, so the next job starts the moment one
    /// ends instead of after a receive round trip. A waiting message is kept invisible
    /// like a running one; on shutdown it is released at once. The worker never holds
    /// more than `max_in_flight + prefetch` messages. 0 receives only for free slots.
    pub prefetch: usize,
    /// How long in-flight jobs may finish after SIGTERM/SIGINT.
    pub shutdown_grace_seconds: u64,
    /// How many finished request ids are remembered to recognise redeliveries.
    pub dedup_capacity: usize,
    /// How long a finished request id is remembered.
    pub dedup_ttl_seconds: u64,
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            max_in_flight: 16,
            prefetch: 10,
            shutdown_grace_seconds: 25,
            dedup_capacity: 100_000,
            dedup_ttl_seconds: 86_400,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IamSection {
    /// Client-side limit on IAM requests per second, shared by every job of one account:
    /// the most the rate ever climbs to.
    pub max_requests_per_second: u32,
    /// Where each account's rate starts; it doubles each second while jobs wait for it
    /// until IAM first throttles, then stays just under the quota it learnt.
    pub initial_requests_per_second: u32,
}

impl Default for IamSection {
    fn default() -> Self {
        Self {
            max_requests_per_second: 100,
            initial_requests_per_second: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// First backoff delay after a transient AWS error.
    pub initial_delay_ms: u64,
    /// Largest single backoff delay.
    pub max_delay_ms: u64,
    /// Growth factor between delays, at least 1.
    pub multiplier: f32,
    /// Add random jitter to each delay (recommended: spreads retries of concurrent jobs).
    pub jitter: bool,
    /// Total backoff a job may spend in-process before it ends `retry`.
    pub max_elapsed_seconds: u64,
    /// Visibility delay of a job that ends `retry` on its first receive; doubles with
    /// each further receive.
    pub visibility_base_seconds: u32,
    /// Cap on that delay (at most SQS's 43200).
    pub visibility_max_seconds: u32,
}

impl Default for RetrySection {
    fn default() -> Self {
        Self {
            initial_delay_ms: 100,
            max_delay_ms: 5_000,
            multiplier: 2.0,
            jitter: true,
            max_elapsed_seconds: 20,
            visibility_base_seconds: 30,
            visibility_max_seconds: SQS_MAX_VISIBILITY_SECONDS,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtectSection {
    /// Glob patterns of user names never touched (matched case-insensitively, as IAM
    /// user names are).
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub users: Vec<String>,
    /// Glob patterns of access key ids never touched.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub access_keys: Vec<String>,
    /// Glob patterns of role names whose sessions are never cut off (matched
    /// case-insensitively). The worker's own roles are never touched whatever this says.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrossAccountSection {
    /// Role assumed in `account_id` for jobs that name another account.
    pub role_name: Option<String>,
    /// External id the member accounts' trust policies require, if any.
    pub external_id: Option<String>,
    /// Role `plan` assumes in another account: read rights only, never the worker's.
    pub planner_role_name: String,
    /// Role `restore` assumes in another account: what restore does, never the worker's.
    pub restorer_role_name: String,
}

impl Default for CrossAccountSection {
    fn default() -> Self {
        Self {
            role_name: None,
            external_id: None,
            planner_role_name: "iam-key-revoker-planner".into(),
            restorer_role_name: "iam-key-revoker-restorer".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeSection {
    /// AWS Health event type codes that revoke the keys they name.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub health_event_types: Vec<String>,
    /// What Health events do to the keys.
    pub health_action: Action,
    /// GuardDuty findings below this severity revoke nothing.
    pub guardduty_min_severity: f64,
    /// What GuardDuty findings do to the key.
    pub guardduty_action: Action,
    /// Whether jobs from security events also revoke the user's older sessions.
    pub revoke_sessions: bool,
    /// Whether jobs from security events also attach the quarantine policy.
    pub quarantine_user: bool,
    /// Whether jobs from GuardDuty findings mark the finding in Security Hub.
    pub update_findings: bool,
    /// Whether jobs from security events report the key's activity from CloudTrail.
    pub report_activity: bool,
    /// Staged revocation for events whose action is `deactivate`: delete the key this
    /// long after (`30d`, `12h`, `90m`); unset: no delete follows.
    pub delete_after: Option<String>,
    /// GuardDuty finding types about a role session's temporary credentials that cut the
    /// session off.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub role_session_finding_types: Vec<String>,
    /// `session` (default): cut off the session the finding names; `role`: every session
    /// of the role.
    pub role_session_scope: crate::intake::RoleScope,
}

impl Default for IntakeSection {
    fn default() -> Self {
        let rules = IntakeRules::default();
        Self {
            health_event_types: rules.health_event_types,
            health_action: rules.health_action,
            guardduty_min_severity: rules.guardduty_min_severity,
            guardduty_action: rules.guardduty_action,
            revoke_sessions: rules.revoke_sessions,
            quarantine_user: rules.quarantine_user,
            update_findings: rules.update_findings,
            report_activity: rules.report_activity,
            delete_after: None,
            role_session_finding_types: rules.role_session_finding_types,
            role_session_scope: rules.role_session_scope,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResultsSection {
    /// Queue that receives one JSON outcome event per finished job.
    pub queue_url: Option<String>,
    /// SNS topic that receives them too, with message attributes to filter on.
    pub sns_topic_arn: Option<String>,
    /// EventBridge bus (name or ARN) that receives them too, as `Key Revocation Outcome`
    /// events from `iam-key-revoker`.
    pub event_bus: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivitySection {
    /// Regions whose CloudTrail is read; empty: every Region enabled in the account.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub regions: Vec<String>,
    /// How far back the report reads.
    pub lookback_hours: u32,
    /// The most events read per key.
    pub max_events: u32,
    /// When the second pass reads again, after CloudTrail's delivery delay.
    pub second_pass_delay_seconds: u32,
}

impl Default for ActivitySection {
    fn default() -> Self {
        Self {
            regions: Vec::new(),
            lookback_hours: 168,
            max_events: 1000,
            second_pass_delay_seconds: 900,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSection {
    /// The EventBridge Scheduler schedule group that holds the staged deletes.
    pub group_name: String,
    /// The role EventBridge Scheduler assumes to send a staged delete to the job queue;
    /// unset: jobs with `delete_after` are refused.
    pub role_arn: Option<String>,
    /// Where Scheduler puts a staged delete it could not send; unset: the job queue's
    /// dead-letter queue.
    pub dead_letter_queue_url: Option<String>,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        Self {
            group_name: "iam-key-revoker".to_owned(),
            role_arn: None,
            dead_letter_queue_url: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsSection {
    /// Seconds added to a revocation's time for its session cut-off, for IAM's propagation
    /// (docs, "Revoking sessions", says its cost). At most 3600.
    pub margin_seconds: u32,
}

impl Default for SessionsSection {
    fn default() -> Self {
        Self {
            margin_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContinuationSection {
    /// The KMS HMAC key (id, ARN or alias) that MACs the messages the worker sends itself
    /// (docs, "Continuations"). Unset: no continuation's claims are believed.
    pub mac_key_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineSection {
    /// The managed policy attached to a user with `quarantine_user`.
    pub policy_arn: String,
}

/// AWS's newest quarantine policy (AWS Managed Policy Reference,
/// "AWSCompromisedKeyQuarantineV4", November 2026), in the worker's partition at run time.
pub const QUARANTINE_POLICY_ARN: &str = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV4";

impl Default for QuarantineSection {
    fn default() -> Self {
        Self {
            policy_arn: QUARANTINE_POLICY_ARN.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Address of the metrics and health listener.
    pub listen: String,
    /// `/readyz` answers 503 once the last successful receive is older than this.
    pub ready_max_receive_age_seconds: u64,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9090".to_owned(),
            ready_max_receive_age_seconds: 60,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `json` or `pretty`.
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `debug`, `iam_key_revoker=debug,info`, ...
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }
}

impl Config {
    /// Reads `file` (when given) and applies the process's `IAM_KEY_REVOKER__*`
    /// variables on top, then `queue_url` (a command-line flag) over `sqs.queue_url`
    /// from every other source. Not yet validated: see [`Settings::new`].
    pub fn read(file: Option<&Path>, queue_url: Option<&str>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let mut figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        if let Some(url) = queue_url {
            figment = figment.merge(Serialized::default("sqs.queue_url", url));
        }
        figment.extract().map_err(load_error)
    }

    /// Parses a TOML document (no environment) and validates it.
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let config: Config = Figment::from(Toml::string(text))
            .extract()
            .map_err(load_error)?;
        Settings::new(config)
    }

    /// Checks every rule a value must satisfy, section by section, and returns the
    /// values that need parsing (the backoff policy, the protected patterns), parsed
    /// once. The error names the key.
    fn parse(&self) -> Result<Parsed, ConfigError> {
        self.aws.validate()?;
        self.sqs.validate()?;
        self.worker.validate()?;
        self.iam.validate()?;
        let backoff = self.retry.validate()?;
        let protection = self.protect.validate(&self.own_roles())?;
        self.cross_account.validate()?;
        let intake = self.intake.validate()?;
        self.results.validate()?;
        self.quarantine.validate()?;
        self.activity.validate()?;
        self.schedule.validate()?;
        self.sessions.validate()?;
        self.continuation.validate()?;
        self.breaker.validate()?;
        if intake.delete_after.is_some() && self.schedule.role_arn.is_none() {
            return Err(invalid(
                "intake.delete_after",
                "stages revocations on EventBridge Scheduler: set schedule.role_arn (the role Scheduler sends the delete with)",
            ));
        }
        self.metrics.validate()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", format!("is not a valid filter: {e}")));
        }
        Ok(Parsed {
            backoff,
            protection,
            intake,
        })
    }
}

/// A configuration that has been validated, with the values parsed from it: the one
/// form the worker and the commands take, so it is checked once per process. Only
/// [`Settings::new`] makes one. Reads as the [`Config`] it holds.
#[derive(Debug, Clone)]
pub struct Settings {
    config: Config,
    /// `retry.*` as a backoff policy for transient AWS errors.
    pub backoff: BackoffPolicy,
    /// `protect.*` as compiled patterns.
    pub protection: Protection,
    /// `intake.*`: how security events become jobs.
    pub intake: IntakeRules,
}

/// The values of [`Config::parse`].
struct Parsed {
    backoff: BackoffPolicy,
    protection: Protection,
    intake: IntakeRules,
}

impl Settings {
    /// Validates `config`; the error names the key.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let Parsed {
            backoff,
            protection,
            intake,
        } = config.parse()?;
        Ok(Self {
            config,
            backoff,
            protection,
            intake,
        })
    }

    /// The configuration as read.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl std::ops::Deref for Settings {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}

/// Renders figment's errors as "`section.key`: problem (source)", whatever the source
/// (environment keys arrive in upper case).
fn load_error(errors: figment::Error) -> ConfigError {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("`{key}`: {}{source}", e.kind)
            }
        })
        .collect();
    ConfigError::Load(lines.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [sqs]
        queue_url = "http://127.0.0.1:5000/123456789012/jobs"
    "#;

    #[test]
    fn default_toml_documents_exactly_the_defaults() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"))
                .expect("config/default.toml exists");
        let parsed: toml::Value = toml::from_str(&text).expect("default.toml parses");
        let mut defaults = Config::default();
        // The one required key has no default; the file shows an example value.
        defaults.sqs.queue_url = parsed["sqs"]["queue_url"].as_str().unwrap().to_owned();
        let expected = toml::Value::try_from(&defaults).expect("defaults serialise");
        assert_eq!(
            parsed, expected,
            "config/default.toml must list every key with its default"
        );
    }

    #[test]
    fn minimal_file_loads_with_defaults() {
        let config = Config::from_toml(MINIMAL).expect("valid");
        assert_eq!(config.worker.max_in_flight, 16);
        assert_eq!(config.sqs.wait_time_seconds, 20);
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn staged_revocation_settings_are_checked() {
        let bad = |extra: &str| {
            let text = format!("{MINIMAL}\n{extra}\n");
            Config::from_toml(&text).expect_err(extra).to_string()
        };
        assert!(bad("[schedule]\ngroup_name = \"a/b\"").contains("schedule.group_name"));
        assert!(bad("[schedule]\nrole_arn = \"scheduler\"").contains("schedule.role_arn"));
        assert!(bad(
            "[schedule]\ndead_letter_queue_url = \"https://sqs.eu-west-1.amazonaws.com/1/d.fifo\""
        )
        .contains("FIFO"));
        // intake.delete_after: a duration, a worker that can stage, an action it stages.
        let role = "[schedule]\nrole_arn = \"arn:aws:iam::111122223333:role/s\"";
        assert!(bad("[intake]\ndelete_after = \"7d\"").contains("schedule.role_arn"));
        assert!(bad(&format!(
            "[intake]\ndelete_after = \"2030-01-01T00:00:00Z\"\n{role}"
        ))
        .contains("must be a duration"));
        assert!(bad(&format!(
            "[intake]\ndelete_after = \"7d\"\nguardduty_action = \"delete\"\n{role}"
        ))
        .contains("neither"));
        let text = format!("{MINIMAL}\n[intake]\ndelete_after = \"7d\"\n{role}\n");
        let settings = Config::from_toml(&text).expect("valid");
        assert_eq!(
            settings.intake.delete_after.as_ref().map(|d| d.due(0)),
            Some(7 * 86_400)
        );
    }

    #[test]
    fn comma_separated_lists_are_split() {
        let text = format!("{MINIMAL}\n[protect]\nusers = \"admin, break-glass-*\"\naccess_keys = [\"AKIAPROTECTED*\"]\n");
        let config = Config::from_toml(&text).expect("valid");
        assert_eq!(config.protect.users, vec!["admin", "break-glass-*"]);
        assert_eq!(config.protect.access_keys, vec!["AKIAPROTECTED*"]);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("", "sqs.queue_url"),
            ("[sqs]\nqueue_url = \"not a url\"", "sqs.queue_url"),
            (
                &format!("{MINIMAL}wait_time_seconds = 21"),
                "sqs.wait_time_seconds",
            ),
            (
                &format!("{MINIMAL}visibility_timeout_seconds = 1"),
                "sqs.visibility_timeout_seconds",
            ),
            (
                &format!("{MINIMAL}[worker]\nmax_in_flight = 0"),
                "worker.max_in_flight",
            ),
            (
                &format!("{MINIMAL}[worker]\nprefetch = 1001"),
                "worker.prefetch",
            ),
            (
                &format!("{MINIMAL}[retry]\nmultiplier = 0.5"),
                "retry.multiplier",
            ),
            (
                &format!("{MINIMAL}[retry]\ninitial_delay_ms = 0"),
                "retry.initial_delay_ms",
            ),
            (
                &format!("{MINIMAL}[retry]\nmax_delay_ms = 1\ninitial_delay_ms = 10"),
                "retry.max_delay_ms",
            ),
            (
                &format!("{MINIMAL}[retry]\nvisibility_max_seconds = 50000"),
                "retry.visibility_max_seconds",
            ),
            (
                &format!("{MINIMAL}[protect]\nusers = [\"a[\"]"),
                "protect.users",
            ),
            (
                &format!("{MINIMAL}[metrics]\nlisten = \"nowhere\""),
                "metrics.listen",
            ),
            (&format!("{MINIMAL}[log]\nlevel = \"=bad=\""), "log.level"),
            (
                &format!("{MINIMAL}[intake]\nguardduty_min_severity = 11.0"),
                "intake.guardduty_min_severity",
            ),
            (
                &format!("{MINIMAL}[intake]\nhealth_event_types = [\"aws risk\"]"),
                "intake.health_event_types",
            ),
            (
                &format!("{MINIMAL}[intake]\nhealth_action = \"destroy\""),
                "intake.health_action",
            ),
            (
                &format!("{MINIMAL}priority_queue_url = \"not a url\""),
                "sqs.priority_queue_url",
            ),
            (
                &format!("{MINIMAL}priority_dead_letter_queue_url = \"http://q/dlq\""),
                "sqs.priority_dead_letter_queue_url",
            ),
            (
                &format!("{MINIMAL}[iam]\nmax_requests_per_second = 0"),
                "iam.max_requests_per_second",
            ),
            (
                &format!("{MINIMAL}[cross_account]\nrole_name = \"no spaces\""),
                "cross_account.role_name",
            ),
            (
                &format!("{MINIMAL}[aws]\nendpoint_url = \"localhost:5000\""),
                "aws.endpoint_url",
            ),
            (
                &format!("{MINIMAL}[results]\nsns_topic_arn = \"revocations\""),
                "results.sns_topic_arn",
            ),
            (
                &format!("{MINIMAL}[results]\nsns_topic_arn = \"arn:aws:sqs:us-east-1:123456789012:q\""),
                "results.sns_topic_arn",
            ),
            (
                &format!("{MINIMAL}[results]\nevent_bus = \"has space\""),
                "results.event_bus",
            ),
            (
                &format!("{MINIMAL}[results]\nevent_bus = \"arn:aws:events:us-east-1:123456789012:rule/x\""),
                "results.event_bus",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(text).expect_err(text).to_string();
            assert!(
                err.contains(key),
                "error for {text:?} should name {key}: {err}"
            );
        }
    }

    #[test]
    fn topic_and_bus_take_their_names_and_arns() {
        for results in [
            "sns_topic_arn = \"arn:aws:sns:eu-west-1:123456789012:iam-key-revoker\"",
            "sns_topic_arn = \"arn:aws-us-gov:sns:us-gov-west-1:123456789012:outcomes.fifo\"",
            "event_bus = \"iam-key-revoker\"",
            "event_bus = \"arn:aws:events:us-east-2:123456789012:event-bus/security\"",
        ] {
            let text = format!("{MINIMAL}[results]\n{results}");
            assert!(Config::from_toml(&text).is_ok(), "{text}");
        }
    }

    #[test]
    fn an_empty_protected_list_from_a_string_is_refused_but_an_explicit_one_is_not() {
        for key in ["users", "access_keys"] {
            let err = Config::from_toml(&format!("{MINIMAL}[protect]\n{key} = \" , \"\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("protect.{key}")), "{err}");
            assert!(err.contains("empty"), "{err}");
        }
        let config = Config::from_toml(&format!("{MINIMAL}[protect]\nusers = []\n")).unwrap();
        assert!(config.protect.users.is_empty());
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_with_their_path() {
        let err = Config::from_toml(&format!("{MINIMAL}queue_ur1 = \"x\"")).unwrap_err();
        assert!(err.to_string().contains("queue_ur1"), "{err}");
        let err =
            Config::from_toml(&format!("{MINIMAL}[worker]\nmax_in_flight = \"many\"")).unwrap_err();
        assert!(err.to_string().contains("worker.max_in_flight"), "{err}");
    }
}
