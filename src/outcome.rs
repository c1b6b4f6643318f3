//! Outcomes (docs, "Outcomes") and the audit line written for every finished job.

use std::time::Duration;

use crate::job::{Action, LastUsed, Origin};

/// Why a job was rejected or left for later. `as_str` gives the contract's reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The body is not a valid job.
    InvalidMessage,
    /// The user or key matches the protected list.
    Protected,
    /// IAM says the key belongs to another user than the job names.
    OwnerMismatch,
    /// No user named and the key's owner cannot be determined.
    OwnerUnknown,
    /// The worker may not act (IAM or STS said AccessDenied).
    AccessDenied,
    /// Received more often than `sqs.max_receive_count` on a queue with no redrive policy.
    TooManyReceives,
    /// AWS refused the request for a permanent reason other than access denied.
    AwsError,
    /// The request id finished recently for a job that changes something else (another
    /// key, user, account or action).
    RequestIdConflict,
    /// A security event that names nothing the worker may revoke (docs, "Security
    /// events").
    NotRevocable,
    /// The job names another account and no cross-account role is configured.
    CrossAccountDisabled,
    /// STS says the key belongs to another account than the job's, and the worker cannot
    /// act there (docs, "Which account").
    OtherAccount,
    /// A transient AWS failure outlasted the in-process backoff.
    TransientError,
    /// The worker shut down before the job finished.
    Shutdown,
    /// The worker's own credentials failed (expired, unknown, missing, clock skew): not
    /// a verdict on the job, which goes back to the queue while the worker pauses.
    Credentials,
    /// An earlier job of the same FIFO message group stays on the queue, so this one
    /// goes back too, to keep the group's order.
    GroupOrder,
    /// A job that names keys alone, whose owners IAM just named, handed on to a message
    /// of the worker's own that names them before any key is deleted (docs,
    /// "Continuations").
    Continued,
    /// IAM refused the session policy: the user's inline policies fill its quota
    /// (docs, "Revoking sessions").
    PolicyQuota,
    /// Not a job: an activity report task the worker sent itself, done (docs,
    /// "Activity reports"). Its message is deleted; no job outcome is counted.
    Reported,
    /// Not a job: an activity report task received before its time, made invisible
    /// until then.
    ReportLater,
    /// The breaker: the job's keys would exceed its queue's limit in the account.
    AccountLimit,
    /// The breaker: the job's keys would exceed its queue's limit in all accounts.
    FleetLimit,
    /// The breaker: this request was held already and waits for a person; not counted
    /// again.
    AlreadyHeld,
    /// The breaker's table did not answer and the job's queue fails closed: back on the
    /// queue, nothing changed.
    BreakerUnavailable,
}

impl Reason {
    /// The contract's reason code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidMessage => "invalid_message",
            Reason::Protected => "protected",
            Reason::OwnerMismatch => "owner_mismatch",
            Reason::OwnerUnknown => "owner_unknown",
            Reason::AccessDenied => "access_denied",
            Reason::TooManyReceives => "too_many_receives",
            Reason::AwsError => "aws_error",
            Reason::RequestIdConflict => "request_id_conflict",
            Reason::NotRevocable => "not_revocable",
            Reason::CrossAccountDisabled => "cross_account_disabled",
            Reason::OtherAccount => "other_account",
            Reason::TransientError => "transient_error",
            Reason::Shutdown => "shutdown",
            Reason::Credentials => "credentials",
            Reason::GroupOrder => "group_order",
            Reason::PolicyQuota => "policy_quota",
            Reason::Continued => "continued",
            Reason::Reported => "reported",
            Reason::ReportLater => "report_later",
            Reason::AccountLimit => "account_limit",
            Reason::FleetLimit => "fleet_limit",
            Reason::AlreadyHeld => "already_held",
            Reason::BreakerUnavailable => "breaker_unavailable",
        }
    }
}

/// How a job ended: exactly one per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The key(s) existed and were deleted.
    Deleted,
    /// The key(s) are now `Inactive`.
    Deactivated,
    /// Nothing to do: the key or user does not exist.
    AlreadyAbsent,
    /// The request id finished recently; no IAM write was made.
    Duplicate,
    /// The job required a status the key no longer has (a person reactivated it before
    /// its scheduled delete); nothing changed.
    Cancelled,
    /// A role job put the role's session cut-off; no key changed (docs, "Role sessions").
    SessionsRevoked,
    /// A permanent problem; nothing changed in IAM; the message went to the dead-letter queue.
    Rejected(Reason),
    /// Left on the queue for a later attempt.
    Retry(Reason),
    /// The breaker held the job for a person's approval; nothing changed; the hold is
    /// kept in the breaker's table and the message deleted.
    Held(Reason),
}

impl Outcome {
    /// The contract's outcome name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deleted => "deleted",
            Outcome::Deactivated => "deactivated",
            Outcome::AlreadyAbsent => "already_absent",
            Outcome::Duplicate => "duplicate",
            Outcome::Cancelled => "cancelled",
            Outcome::SessionsRevoked => "sessions_revoked",
            Outcome::Rejected(_) => "rejected",
            Outcome::Retry(_) => "retry",
            Outcome::Held(_) => "held",
        }
    }

    /// The reason code, `none` where no reason applies.
    pub fn reason(self) -> &'static str {
        match self {
            Outcome::Rejected(reason) | Outcome::Retry(reason) | Outcome::Held(reason) => {
                reason.as_str()
            }
            _ => "none",
        }
    }

    /// Whether the message leaves the queue for good (deleted, or dead-lettered then
    /// deleted).
    pub fn is_final(self) -> bool {
        !matches!(self, Outcome::Retry(_))
    }

    /// Whether the outcome closes an exposure (docs, "The clock from exposure"): the key
    /// revoked or gone, a role's sessions cut off.
    pub fn closes_exposure(self) -> bool {
        matches!(
            self,
            Outcome::Deleted
                | Outcome::Deactivated
                | Outcome::AlreadyAbsent
                | Outcome::SessionsRevoked
        )
    }

    /// Whether a later delivery of the same job may end `duplicate`: only when this one
    /// left IAM as the job asked. A rejected job is never remembered, so once an operator
    /// fixes the cause and moves it back from the dead-letter queue it is worked again.
    pub fn is_remembered(self) -> bool {
        matches!(
            self,
            Outcome::Deleted | Outcome::Deactivated | Outcome::AlreadyAbsent
        )
    }
}

/// One key of a job of several keys: its owner and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyResult {
    pub access_key_id: String,
    /// Empty where IAM could not place the key.
    pub user_name: String,
    /// `deleted`, `deactivated`, `already_absent`, `rejected` (with a reason) or `failed`
    /// (a transient error: the job is retried).
    pub result: &'static str,
    /// Why the key was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// Which job queue a message came from (docs, "The priority queue").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lane {
    /// `sqs.queue_url`: bulk work when a priority queue is configured.
    #[default]
    Main,
    /// `sqs.priority_queue_url`: urgent jobs, always served first.
    Priority,
}

impl Lane {
    /// The `queue` label of the job series.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Main => "main",
            Lane::Priority => "priority",
        }
    }
}

/// What is known of a job, from its body and then from IAM; filled in along its path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFacts {
    pub request_id: Option<String>,
    pub user_name: Option<String>,
    /// The role of a role job (docs, "Role sessions").
    pub role_name: Option<String>,
    /// The one session of it the cut-off is narrowed to (`principalId`), if it is.
    pub role_session: Option<String>,
    /// A follow-up about the user's console password, not a key (docs, "What the leaked
    /// key made").
    pub console_password: bool,
    /// The key(s) acted on or named.
    pub access_key_ids: Vec<String>,
    pub account_id: Option<String>,
    pub batch_id: Option<String>,
    pub action: Option<Action>,
    /// How many keys this job changed (deleted or deactivated).
    pub keys_changed: usize,
    /// The security event the job came from.
    pub origin: Option<Origin>,
    /// The cut-off time of the session policy put on the user(s) (ISO 8601, UTC).
    pub sessions_revoked_before: Option<String>,
    /// What the cut-off covers, and for which users there is none and why.
    pub sessions: Option<String>,
    /// Whether the job asked for an activity report (docs, "Activity reports").
    pub report_activity: bool,
    /// When the job's first message was enqueued, for a job carried on by a message of
    /// the worker's own (Unix milliseconds).
    pub enqueued_at_ms: Option<u64>,
    /// What became of the quarantine policy (docs, "Quarantine").
    pub quarantine: Option<String>,
    /// When the exposure was detected (Unix milliseconds), where the job carries it.
    pub detected_at_ms: Option<u64>,
    /// From detection to the revocation, for a job that carries its detection time and
    /// closed the exposure (docs, "The clock from exposure").
    pub exposure_to_revoke_seconds: Option<f64>,
    /// What became of the GuardDuty finding in Security Hub (docs, "Closing the
    /// finding").
    pub finding_update: Option<String>,
    /// The keys' last use, where IAM was asked for the owner anyway.
    pub last_used: Vec<LastUsed>,
    /// Each key's owner and result, for jobs of several keys.
    pub keys: Vec<KeyResult>,
    /// The deletes a staged revocation scheduled (docs, "Staged revocation").
    pub scheduled_deletes: Vec<ScheduledDelete>,
}

/// A delete a staged revocation scheduled: which key, when, and the schedule that sends
/// it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScheduledDelete {
    pub access_key_id: String,
    pub user_name: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// The schedule's name and group in EventBridge Scheduler.
    pub schedule: String,
    pub group: String,
}

impl JobFacts {
    /// The security event's `source`, for jobs that came from one.
    pub fn event_source(&self) -> Option<&'static str> {
        self.origin.as_ref().map(|o| o.source)
    }

    /// The Health event type code or GuardDuty finding type.
    pub fn event_type(&self) -> Option<&str> {
        self.origin.as_ref().map(|o| o.event_type.as_str())
    }

    /// Where the detection time came from, the `source` label of the exposure series:
    /// the security event's source, or `job` for a producer's `detected_at`.
    pub fn detection_source(&self) -> &'static str {
        self.event_source().unwrap_or("job")
    }
}

/// Everything known about a finished job: the audit line's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    /// The SQS message id.
    pub message_id: String,
    pub outcome: Outcome,
    /// Human-readable detail (why it was rejected, what failed).
    pub detail: Option<String>,
    pub facts: JobFacts,
    /// Which delivery of the message this was (`ApproximateReceiveCount`).
    pub attempts: u32,
    /// In-process retries of transient AWS errors.
    pub retries: u32,
    /// From receive to outcome.
    pub duration: Duration,
    /// Whether the message was settled on the queue as the outcome requires (deleted,
    /// dead-lettered then deleted, or released); false means SQS will redeliver it.
    pub settled: bool,
}

impl JobReport {
    /// Writes the audit line: one structured line per finished job.
    pub fn log(&self) {
        let facts = &self.facts;
        tracing::info!(
            target: "audit",
            message_id = %self.message_id,
            request_id = facts.request_id.as_deref().unwrap_or(""),
            outcome = self.outcome.as_str(),
            reason = self.outcome.reason(),
            detail = self.detail.as_deref().unwrap_or(""),
            user_name = facts.user_name.as_deref().unwrap_or(""),
            role_name = facts.role_name.as_deref().unwrap_or(""),
            role_session = facts.role_session.as_deref().unwrap_or(""),
            access_key_ids = %facts.access_key_ids.join(","),
            account_id = facts.account_id.as_deref().unwrap_or(""),
            batch_id = facts.batch_id.as_deref().unwrap_or(""),
            action = facts.action.map_or("", Action::as_str),
            keys_changed = facts.keys_changed,
            event_source = facts.event_source().unwrap_or(""),
            event_type = facts.event_type().unwrap_or(""),
            sessions_revoked_before = facts.sessions_revoked_before.as_deref().unwrap_or(""),
            sessions = facts.sessions.as_deref().unwrap_or(""),
            quarantine = facts.quarantine.as_deref().unwrap_or(""),
            detected_at = facts.detected_at_ms.map(crate::detection::text).unwrap_or_default(),
            exposure_to_revoke_seconds = facts.exposure_to_revoke_seconds,
            finding_update = facts.finding_update.as_deref().unwrap_or(""),
            last_used = %json_or_empty(&facts.last_used),
            keys = %json_or_empty(&facts.keys),
            scheduled_deletes = %json_or_empty(&facts.scheduled_deletes),
            attempts = self.attempts,
            retries = self.retries,
            duration_ms = self.duration.as_millis() as u64,
            settled = self.settled,
            summary = %self.summary(),
            "Job finished"
        );
    }
}

/// A list as one JSON array for the audit line; empty when there is nothing in it.
fn json_or_empty<T: serde::Serialize>(items: &[T]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        serde_json::to_string(items).unwrap_or_default()
    }
}
