//! Every metric the worker exports (docs, "Observability"): names, labels, buckets and the
//! typed functions the rest of the code records through. No other module names a
//! metric. Labels only ever hold bounded values: never a user name or key id.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::job::Action;
use crate::outcome::{Lane, Outcome, Reason};

pub const JOBS_TOTAL: &str = "iam_key_revoker_jobs_total";
pub const KEYS_REVOKED_TOTAL: &str = "iam_key_revoker_keys_revoked_total";
pub const MESSAGES_RECEIVED_TOTAL: &str = "iam_key_revoker_messages_received_total";
pub const AWS_REQUESTS_TOTAL: &str = "iam_key_revoker_aws_requests_total";
pub const AWS_RETRIES_TOTAL: &str = "iam_key_revoker_aws_retries_total";
pub const JOB_DURATION_SECONDS: &str = "iam_key_revoker_job_duration_seconds";
pub const REVOCATION_LATENCY_SECONDS: &str = "iam_key_revoker_revocation_latency_seconds";
pub const EXPOSURE_TO_REVOKE_SECONDS: &str = "iam_key_revoker_exposure_to_revoke_seconds";
pub const JOBS_IN_FLIGHT: &str = "iam_key_revoker_jobs_in_flight";
pub const LAST_RECEIVE_SUCCESS: &str = "iam_key_revoker_last_receive_success_timestamp_seconds";
pub const BUILD_INFO: &str = "iam_key_revoker_build_info";
pub const RESULTS_PUBLISH_FAILURES_TOTAL: &str = "iam_key_revoker_results_publish_failures_total";
pub const QUARANTINES_TOTAL: &str = "iam_key_revoker_quarantines_total";
pub const STAGED_REVOCATIONS_TOTAL: &str = "iam_key_revoker_staged_revocations_total";
pub const FINDINGS_UPDATED_TOTAL: &str = "iam_key_revoker_findings_updated_total";
pub const ACTIVITY_REPORTS_TOTAL: &str = "iam_key_revoker_activity_reports_total";
pub const ACTIVITY_EVENTS_READ_TOTAL: &str = "iam_key_revoker_activity_events_read_total";
pub const ACTIVITY_LOOKUPS_THROTTLED_TOTAL: &str =
    "iam_key_revoker_activity_lookups_throttled_total";
pub const IAM_RATE_LIMIT: &str = "iam_key_revoker_iam_rate_limit_requests_per_second";
pub const CREDENTIALS_FAILING: &str = "iam_key_revoker_credentials_failing";
pub const CREDENTIAL_FAILURES_TOTAL: &str = "iam_key_revoker_credential_failures_total";
pub const MEMBER_ACCOUNTS_FAILING: &str = "iam_key_revoker_member_accounts_failing";
pub const SESSIONS_REVOKED_TOTAL: &str = "iam_key_revoker_sessions_revoked_total";
pub const ROLE_SESSIONS_REVOKED_TOTAL: &str = "iam_key_revoker_role_sessions_revoked_total";
pub const QUEUE_MESSAGES: &str = "iam_key_revoker_queue_messages";
pub const IMPOSTOR_CUTOFFS_TOTAL: &str = "iam_key_revoker_impostor_cutoffs_total";
pub const UNVERIFIED_MESSAGES_TOTAL: &str = "iam_key_revoker_unverified_messages_total";
pub const DEAD_LETTERED_TOTAL: &str = "iam_key_revoker_dead_lettered_total";

/// Every series name the worker exports (histograms by their base name).
pub const ALL: &[&str] = &[
    JOBS_TOTAL,
    KEYS_REVOKED_TOTAL,
    MESSAGES_RECEIVED_TOTAL,
    AWS_REQUESTS_TOTAL,
    AWS_RETRIES_TOTAL,
    JOB_DURATION_SECONDS,
    REVOCATION_LATENCY_SECONDS,
    EXPOSURE_TO_REVOKE_SECONDS,
    JOBS_IN_FLIGHT,
    LAST_RECEIVE_SUCCESS,
    BUILD_INFO,
    RESULTS_PUBLISH_FAILURES_TOTAL,
    IAM_RATE_LIMIT,
    CREDENTIALS_FAILING,
    CREDENTIAL_FAILURES_TOTAL,
    MEMBER_ACCOUNTS_FAILING,
    SESSIONS_REVOKED_TOTAL,
    ROLE_SESSIONS_REVOKED_TOTAL,
    QUEUE_MESSAGES,
    QUARANTINES_TOTAL,
    STAGED_REVOCATIONS_TOTAL,
    FINDINGS_UPDATED_TOTAL,
    ACTIVITY_REPORTS_TOTAL,
    ACTIVITY_EVENTS_READ_TOTAL,
    ACTIVITY_LOOKUPS_THROTTLED_TOTAL,
    IMPOSTOR_CUTOFFS_TOTAL,
    UNVERIFIED_MESSAGES_TOTAL,
    DEAD_LETTERED_TOTAL,
    crate::breaker::gauges::PAUSED,
    crate::breaker::gauges::PAUSED_SECONDS,
    crate::breaker::gauges::PAUSE_ALERT_AFTER,
    crate::breaker::gauges::UNAVAILABLE,
];

/// A job takes milliseconds (one IAM call) to about a minute (a throttled bulk run
/// spending its whole backoff budget).
const JOB_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// From enqueue to outcome: milliseconds when the queue is idle, hours when a job waited
/// out retry delays or a backlog.
const REVOCATION_LATENCY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    7200.0, 21600.0, 43200.0,
];

/// From detection to revocation: a minute or two on AWS Health's path, hours to days for
/// a leak a scanner found late.
/// Fine over the first minutes, where a quantile tells a fast path from a slow one.
const EXPOSURE_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
    900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0, 259200.0, 604800.0,
];

/// Every outcome/reason pair the worker can record, created at zero on start so that
/// rates and alerts work before the first occurrence.
const OUTCOMES: &[Outcome] = &[
    Outcome::Deleted,
    Outcome::Deactivated,
    Outcome::AlreadyAbsent,
    Outcome::Duplicate,
    Outcome::Cancelled,
    Outcome::SessionsRevoked,
    Outcome::Held(Reason::AccountLimit),
    Outcome::Held(Reason::FleetLimit),
    Outcome::Rejected(Reason::InvalidMessage),
    Outcome::Rejected(Reason::Protected),
    Outcome::Rejected(Reason::OwnerMismatch),
    Outcome::Rejected(Reason::OwnerUnknown),
    Outcome::Rejected(Reason::AccessDenied),
    Outcome::Rejected(Reason::TooManyReceives),
    Outcome::Rejected(Reason::CrossAccountDisabled),
    Outcome::Rejected(Reason::OtherAccount),
    Outcome::Rejected(Reason::AwsError),
    Outcome::Rejected(Reason::RequestIdConflict),
    Outcome::Rejected(Reason::NotRevocable),
    Outcome::Rejected(Reason::PolicyQuota),
    Outcome::Retry(Reason::TransientError),
    Outcome::Retry(Reason::Shutdown),
    Outcome::Retry(Reason::Credentials),
    Outcome::Retry(Reason::GroupOrder),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same
/// handle), describes every series and creates the known label sets at zero.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(JOB_DURATION_SECONDS.into()),
                    JOB_DURATION_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(REVOCATION_LATENCY_SECONDS.into()),
                        REVOCATION_LATENCY_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(EXPOSURE_TO_REVOKE_SECONDS.into()),
                        EXPOSURE_BUCKETS,
                    )
                })
                // Cannot fail: both bucket lists above are non-empty constants.
                .expect("bucket lists are non-empty");
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is already global (an embedding program's): keep
                // rendering our own, which then stays empty, rather than fail.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(JOBS_TOTAL, "Jobs finished, by outcome and reason");
    crate::breaker::gauges::describe();
    describe_counter!(
        DEAD_LETTERED_TOTAL,
        "Messages the worker copied to a dead-letter queue, by queue and reason"
    );
    describe_counter!(
        KEYS_REVOKED_TOTAL,
        "Access keys deleted or deactivated (keys, not jobs)"
    );
    describe_counter!(
        MESSAGES_RECEIVED_TOTAL,
        "Messages received from the job queue"
    );
    describe_counter!(
        AWS_REQUESTS_TOTAL,
        "AWS request attempts, by service, operation and result"
    );
    describe_counter!(
        AWS_RETRIES_TOTAL,
        "In-process retries of transient AWS errors"
    );
    describe_counter!(
        ACTIVITY_REPORTS_TOTAL,
        "Activity reports by pass (1, 2) and result: complete, partial (some Regions not read) or error"
    );
    describe_counter!(
        ACTIVITY_EVENTS_READ_TOTAL,
        "CloudTrail events read for activity reports"
    );
    describe_counter!(
        ACTIVITY_LOOKUPS_THROTTLED_TOTAL,
        "LookupEvents calls CloudTrail throttled"
    );
    describe_counter!(
        FINDINGS_UPDATED_TOTAL,
        "Security Hub finding updates: ok, unprocessed (Security Hub refused it), refused (the finding is not in the job's account or does not name its key: not marked) or error"
    );
    describe_counter!(
        QUARANTINES_TOTAL,
        "Users the quarantine policy was attached to (result ok) or could not be (error)"
    );
    describe_counter!(
        STAGED_REVOCATIONS_TOTAL,
        "Staged revocations, key by key: a delete scheduled, a schedule that could not be created (schedule_failed), a scheduled delete that found its key Active again (cancelled), a key a person restored left alone by a late staging job (restored)"
    );
    describe_counter!(
        RESULTS_PUBLISH_FAILURES_TOTAL,
        "Outcome events a sink (results queue, SNS topic, EventBridge bus) could not publish"
    );
    describe_histogram!(
        JOB_DURATION_SECONDS,
        Unit::Seconds,
        "Time from receive to outcome"
    );
    describe_histogram!(
        REVOCATION_LATENCY_SECONDS,
        Unit::Seconds,
        "Time from enqueue (SentTimestamp) to outcome, for deleted, deactivated and already_absent jobs"
    );
    describe_histogram!(
        EXPOSURE_TO_REVOKE_SECONDS,
        Unit::Seconds,
        "Time from the exposure's detection (detected_at, AWS Health startTime, GuardDuty eventFirstSeen) to the revocation, by where that time came from; only jobs that carry one and end deleted, deactivated, already_absent or sessions_revoked"
    );
    describe_gauge!(JOBS_IN_FLIGHT, "Jobs being worked now");
    describe_gauge!(
        LAST_RECEIVE_SUCCESS,
        Unit::Seconds,
        "Unix time of the last successful receive from the job queue"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label names the running build"
    );
    describe_gauge!(
        IAM_RATE_LIMIT,
        "Current client-side IAM request rate: iam.max_requests_per_second, lowered while IAM throttles"
    );

    describe_gauge!(
        QUEUE_MESSAGES,
        "Messages in the job and dead-letter queues by state (visible, in_flight, delayed), read from SQS every 30 s"
    );
    describe_counter!(
        SESSIONS_REVOKED_TOTAL,
        "Users whose temporary credentials issued before a revocation were cut off by the session policy"
    );
    describe_counter!(
        ROLE_SESSIONS_REVOKED_TOTAL,
        "Role cut-offs put: on one session a finding named (scope session), or on every session of the role (scope role)"
    );
    describe_counter!(
        IMPOSTOR_CUTOFFS_TOTAL,
        "Policies named like a session cut-off whose document or time was not the worker's, replaced (a planted cut-off: someone with the user's rights tried to keep sessions alive)"
    );
    describe_counter!(
        UNVERIFIED_MESSAGES_TOTAL,
        "Messages claiming to be the worker's own (kind: continuation, report_task) whose MAC did not verify: a continuation is worked from its own fields, a report task refused"
    );
    describe_gauge!(
        CREDENTIALS_FAILING,
        "1 while the worker's own AWS credentials fail and it takes no new jobs, else 0"
    );
    describe_counter!(
        CREDENTIAL_FAILURES_TOTAL,
        "AWS calls refused because of the worker's own credentials, by error code (no_credentials: none could be loaded)"
    );
    describe_gauge!(
        MEMBER_ACCOUNTS_FAILING,
        "Member accounts whose role the worker cannot assume or whose role session AWS refuses now: only their jobs fail (/readyz and the logs name them)"
    );

    for lane in [Lane::Main, Lane::Priority] {
        for outcome in OUTCOMES {
            counter!(JOBS_TOTAL, "outcome" => outcome.as_str(), "reason" => outcome.reason(), "queue" => lane.as_str())
                .increment(0);
            if matches!(outcome, Outcome::Rejected(_)) {
                counter!(DEAD_LETTERED_TOTAL, "queue" => lane.as_str(), "reason" => outcome.reason())
                    .increment(0);
            }
        }
    }
    for action in [Action::Delete, Action::Deactivate] {
        counter!(KEYS_REVOKED_TOTAL, "action" => action.as_str()).increment(0);
    }
    counter!(MESSAGES_RECEIVED_TOTAL).increment(0);
    counter!(SESSIONS_REVOKED_TOTAL).increment(0);
    for scope in ["session", "role"] {
        counter!(ROLE_SESSIONS_REVOKED_TOTAL, "scope" => scope).increment(0);
    }
    counter!(IMPOSTOR_CUTOFFS_TOTAL).increment(0);
    for kind in UNVERIFIED_KINDS {
        counter!(UNVERIFIED_MESSAGES_TOTAL, "kind" => kind).increment(0);
    }
    for sink in SINKS {
        counter!(RESULTS_PUBLISH_FAILURES_TOTAL, "sink" => sink).increment(0);
    }
    for result in ["ok", "error"] {
        counter!(QUARANTINES_TOTAL, "result" => result).increment(0);
    }
    for event in STAGED_EVENTS {
        counter!(STAGED_REVOCATIONS_TOTAL, "event" => event).increment(0);
    }
    for result in ["ok", "unprocessed", "refused", "error"] {
        counter!(FINDINGS_UPDATED_TOTAL, "result" => result).increment(0);
    }
    for pass in ["1", "2"] {
        for result in ["complete", "partial", "error"] {
            counter!(ACTIVITY_REPORTS_TOTAL, "pass" => pass, "result" => result).increment(0);
        }
    }
    counter!(ACTIVITY_EVENTS_READ_TOTAL).increment(0);
    counter!(ACTIVITY_LOOKUPS_THROTTLED_TOTAL).increment(0);
    gauge!(JOBS_IN_FLIGHT).set(0.0);
    gauge!(CREDENTIALS_FAILING).set(0.0);
    gauge!(MEMBER_ACCOUNTS_FAILING).set(0.0);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// A finished job: its outcome, how long it took from receive, the enqueue-to-outcome
/// latency where it applies (to `decided_at_ms`, when the IAM step ended), and the keys
/// it changed.
pub fn job_finished(
    lane: Lane,
    outcome: Outcome,
    duration: Duration,
    sent_timestamp_ms: Option<u64>,
    decided_at_ms: Option<u64>,
    action: Option<Action>,
    keys_changed: usize,
) {
    let queue = lane.as_str();
    counter!(JOBS_TOTAL, "outcome" => outcome.as_str(), "reason" => outcome.reason(), "queue" => queue)
        .increment(1);
    histogram!(JOB_DURATION_SECONDS, "outcome" => outcome.as_str(), "queue" => queue)
        .record(duration.as_secs_f64());
    if matches!(
        outcome,
        Outcome::Deleted | Outcome::Deactivated | Outcome::AlreadyAbsent
    ) {
        if let Some(sent) = sent_timestamp_ms {
            // The key was revoked when the outcome was decided; settling the message
            // (a batched delete) comes after and is not part of it.
            let latency_ms = decided_at_ms.unwrap_or_else(now_ms).saturating_sub(sent);
            histogram!(REVOCATION_LATENCY_SECONDS, "queue" => queue)
                .record(latency_ms as f64 / 1000.0);
        }
    }
    if let (Some(action), true) = (action, keys_changed > 0) {
        counter!(KEYS_REVOKED_TOTAL, "action" => action.as_str()).increment(keys_changed as u64);
    }
}

/// From detection to the revocation of a job that carries its detection time, by where
/// that time came from (`aws.health`, `aws.guardduty`, `job`).
pub fn exposure_to_revoke(source: &'static str, seconds: f64) {
    histogram!(EXPOSURE_TO_REVOKE_SECONDS, "source" => source).record(seconds);
}

/// A rejected message copied to `lane`'s dead-letter queue, for `outcome`'s reason: what
/// the dead-letter queue holds by reason, as far as the worker put it there.
pub fn dead_lettered(lane: Lane, outcome: Outcome) {
    counter!(DEAD_LETTERED_TOTAL, "queue" => lane.as_str(), "reason" => outcome.reason())
        .increment(1);
}

/// A queue's depth, read from SQS: `queue` is `jobs`, `dead_letter`, `priority`,
/// `priority_dead_letter` or `schedule_dead_letter`.
pub fn queue_depth(queue: &'static str, depth: Depth) {
    for (state, count) in [
        ("visible", depth.visible),
        ("in_flight", depth.in_flight),
        ("delayed", depth.delayed),
    ] {
        gauge!(QUEUE_MESSAGES, "queue" => queue, "state" => state).set(count as f64);
    }
}

/// One user's older sessions cut off by the session policy.
pub fn sessions_revoked() {
    counter!(SESSIONS_REVOKED_TOTAL).increment(1);
}

/// A role's cut-off put: narrowed to one session (a finding's), or on every session.
pub fn role_sessions_revoked(one_session: bool) {
    let scope = if one_session { "session" } else { "role" };
    counter!(ROLE_SESSIONS_REVOKED_TOTAL, "scope" => scope).increment(1);
}

/// Messages handed to the worker by one receive.
pub fn messages_received(count: usize) {
    counter!(MESSAGES_RECEIVED_TOTAL).increment(count as u64);
}

/// A receive from the job queue succeeded (with or without messages).
pub fn receive_succeeded() {
    gauge!(LAST_RECEIVE_SUCCESS).set(now_ms() as f64 / 1000.0);
}

/// Counts a job in flight until the returned guard is dropped.
pub fn job_started() -> InFlightJob {
    gauge!(JOBS_IN_FLIGHT).increment(1.0);
    InFlightJob(())
}

/// Decrements the in-flight gauge when dropped, however the job ends.
#[derive(Debug)]
pub struct InFlightJob(());

impl Drop for InFlightJob {
    fn drop(&mut self) {
        gauge!(JOBS_IN_FLIGHT).decrement(1.0);
    }
}

/// One AWS request attempt and whether it succeeded.
pub fn aws_request(
    service: impl Into<::metrics::SharedString>,
    operation: impl Into<::metrics::SharedString>,
    ok: bool,
) {
    let result = if ok { "ok" } else { "error" };
    counter!(AWS_REQUESTS_TOTAL, "service" => service.into(), "operation" => operation.into(), "result" => result)
        .increment(1);
}

/// An in-process retry of a transient AWS error.
/// `error_code` is a bounded label: a code the AWS boundary knows, or `other`.
pub fn aws_retry(service: &'static str, operation: &'static str, error_code: &'static str) {
    let code = error_code;
    counter!(AWS_RETRIES_TOTAL, "service" => service, "operation" => operation, "error_code" => code)
        .increment(1);
}

/// The worker's own credentials failed with `error_code` (a bounded label:
/// `no_credentials` where none could be loaded); it stops taking jobs until they work
/// again.
pub fn credentials_failed(error_code: &'static str) {
    gauge!(CREDENTIALS_FAILING).set(1.0);
    let code = error_code;
    counter!(CREDENTIAL_FAILURES_TOTAL, "error_code" => code).increment(1);
}

/// The worker's own credentials work again.
pub fn credentials_recovered() {
    gauge!(CREDENTIALS_FAILING).set(0.0);
}

/// How many member accounts' roles fail now (no account label: an organization has a
/// thousand accounts; `/readyz` names them).
pub fn member_accounts_failing(accounts: usize) {
    gauge!(MEMBER_ACCOUNTS_FAILING).set(accounts as f64);
}

/// The adaptive IAM request rate changed.
pub fn iam_rate_limit(requests_per_second: f64) {
    gauge!(IAM_RATE_LIMIT).set(requests_per_second);
}

/// An activity report sent: `pass` 1 or 2, `result` complete, partial or error.
pub fn activity_report(pass: u8, result: &'static str) {
    let pass = if pass == 1 { "1" } else { "2" };
    counter!(ACTIVITY_REPORTS_TOTAL, "pass" => pass, "result" => result).increment(1);
}

/// CloudTrail events read for a report.
pub fn activity_events_read(count: usize) {
    counter!(ACTIVITY_EVENTS_READ_TOTAL).increment(count as u64);
}

/// A `LookupEvents` call throttled.
pub fn activity_lookup_throttled() {
    counter!(ACTIVITY_LOOKUPS_THROTTLED_TOTAL).increment(1);
}

/// Policies named like a session cut-off that were not the worker's, replaced.
pub fn impostor_cutoffs(count: usize) {
    counter!(IMPOSTOR_CUTOFFS_TOTAL).increment(count as u64);
}

/// The kinds of the worker's own messages (the `kind` label).
pub const UNVERIFIED_KINDS: [&str; 3] = ["continuation", "report_task", "login_profile"];

/// A message claiming to be the worker's own whose MAC did not verify.
pub fn unverified_message(kind: &'static str) {
    counter!(UNVERIFIED_MESSAGES_TOTAL, "kind" => kind).increment(1);
}

/// A Security Hub finding update: `ok`, `unprocessed`, `refused` (not the job's account or
/// key) or `error`.
pub fn finding_updated(result: &'static str) {
    counter!(FINDINGS_UPDATED_TOTAL, "result" => result).increment(1);
}

/// A user quarantined (`ok`), or not (`error`).
pub fn quarantine(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    counter!(QUARANTINES_TOTAL, "result" => result).increment(1);
}

/// What became of a staged key (docs, "Staged revocation"): the `event` label.
pub const STAGED_EVENTS: [&str; 4] = ["scheduled", "schedule_failed", "cancelled", "restored"];

/// A staged key's `event` (one of [`STAGED_EVENTS`]), `keys` times.
pub fn staged(event: &'static str, keys: usize) {
    counter!(STAGED_REVOCATIONS_TOTAL, "event" => event).increment(keys as u64);
}

/// The sinks of outcome events (docs, "Notifications"): the `sink` label.
pub const SINKS: [&str; 3] = ["queue", "sns", "eventbridge"];

/// Outcome events that `sink` could not publish.
pub fn results_publish_failed(sink: &'static str, count: usize) {
    counter!(RESULTS_PUBLISH_FAILURES_TOTAL, "sink" => sink).increment(count as u64);
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How many messages a queue holds, by state (`GetQueueAttributes`'
/// `ApproximateNumberOf…` attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

/// Counts every AWS request attempt, for every client it is installed on, so that no call
/// path can forget to: `iam_key_revoker_aws_requests_total{service, operation, result}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestCounter;

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_ascii_lowercase(), m.name().to_owned()))
            .unwrap_or_else(|| ("unknown".to_owned(), "unknown".to_owned()));
        aws_request(
            service,
            operation,
            matches!(context.output_or_error(), Some(Ok(_))),
        );
        Ok(())
    }
}
