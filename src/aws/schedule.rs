//! EventBridge Scheduler, for staged revocation (docs, "Staged revocation"): one
//! one-time schedule per key, in `schedule.group_name`, whose target is the job queue and
//! whose input is the delete job.
//!
//! What is relied on, from EventBridge Scheduler's API Reference and User Guide:
//! - `CreateSchedule` answers `ConflictException` when a schedule of that name exists in
//!   the group; `GetSchedule` answers `ResourceNotFoundException` when none does.
//! - `UpdateSchedule` replaces the whole schedule: "we recommend that you call GetSchedule
//!   … to get the current parameters"; an optional field left out takes its default. So
//!   an update always sends the expression, the time window, the target and the action
//!   after completion again.
//! - `ActionAfterCompletion: DELETE`: a one-time schedule is deleted once it has invoked
//!   its target ("Deleting a schedule": deletion after schedule completion).
//! - A target's `RetryPolicy` and `DeadLetterConfig` (an SQS queue ARN): an invocation that
//!   still fails goes there ("Configuring a dead-letter queue for EventBridge Scheduler").
//! - A FIFO queue target takes `SqsParameters.MessageGroupId`, and the queue must have
//!   content-based deduplication (API Reference, `SqsParameters`).
//! - A disabled schedule never invokes its target (`State: DISABLED`).

use aws_config::SdkConfig;
use aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode,
    RetryPolicy, ScheduleState, SqsParameters, Target,
};

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::retry::{call, BackoffPolicy, RetryCounter};
use crate::metrics::RequestCounter;
use crate::staging::{at_expression, parse_at_expression};

/// How long Scheduler keeps trying to send a delete, and how often (its own retries;
/// then the dead-letter queue): a day, 185 tries, Scheduler's defaults.
const MAX_EVENT_AGE_SECONDS: i32 = 86_400;
const MAX_RETRY_ATTEMPTS: i32 = 185;

/// Where the scheduled delete goes and with what.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The job queue the staging job came from.
    pub queue_arn: String,
    /// The role Scheduler assumes to send to it.
    pub role_arn: String,
    /// Where Scheduler puts a delete it could not send.
    pub dead_letter_arn: String,
    /// A FIFO job queue's message group.
    pub fifo: bool,
}

/// A schedule as `GetSchedule` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub enabled: bool,
    /// When it is due, Unix seconds (a one-time schedule's `at()`).
    pub due: Option<i64>,
    /// The delete job it sends.
    pub input: Option<String>,
    pub description: Option<String>,
    /// When it was last created or updated, Unix milliseconds.
    pub modified_ms: Option<u64>,
    /// When it was created, Unix milliseconds.
    pub created_ms: Option<u64>,
    /// Its target's queue.
    pub queue_arn: String,
}

impl Found {
    /// The request id of the job the schedule sends.
    pub fn request_id(&self) -> Option<String> {
        let input: serde_json::Value = serde_json::from_str(self.input.as_deref()?).ok()?;
        Some(input.get("request_id")?.as_str()?.to_owned())
    }

    /// Whether this schedule is the record of a restore that undid the staging job whose
    /// delete is `request_id`, its message sent at `sent_ms`: disabled, and either that
    /// job's own delete or disabled after the job was sent.
    pub fn restored_since(&self, request_id: &str, sent_ms: u64) -> bool {
        !self.enabled
            && (self.request_id().as_deref() == Some(request_id)
                || self.modified_ms.unwrap_or(u64::MAX) >= sent_ms)
    }
}

/// What [`Schedules::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// A new schedule.
    Created,
    /// The schedule of another staging job of the key (or a restore's record) now sends
    /// this one's delete.
    Replaced,
    /// This job's delete was scheduled already (a redelivery): left as it is.
    Kept,
    /// A person restored the key since this job was sent (the schedule is the record of
    /// that restore): left disabled, no delete scheduled.
    Restored,
}

/// The staged deletes' schedules, in one group.
#[derive(Debug, Clone)]
pub struct Schedules {
    client: aws_sdk_scheduler::Client,
    policy: BackoffPolicy,
    group: String,
}

impl Schedules {
    /// Scheduler with `sdk`'s credentials, in its Region, for `group`.
    pub fn new(sdk: &SdkConfig, policy: BackoffPolicy, group: &str) -> Self {
        let client = aws_sdk_scheduler::Client::from_conf(
            aws_sdk_scheduler::config::Builder::from(sdk)
                .interceptor(RequestCounter)
                .build(),
        );
        Self::with_client(client, policy, group)
    }

    pub fn with_client(
        client: aws_sdk_scheduler::Client,
        policy: BackoffPolicy,
        group: &str,
    ) -> Self {
        Self {
            client,
            policy,
            group: group.to_owned(),
        }
    }

    /// The group the schedules are in.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The schedule `name`, if there is one.
    pub async fn get(&self, name: &str, retries: &RetryCounter) -> Result<Option<Found>, AwsError> {
        Ok(self.read(name, retries).await?.map(|out| found(&out)))
    }

    async fn read(
        &self,
        name: &str,
        retries: &RetryCounter,
    ) -> Result<Option<GetScheduleOutput>, AwsError> {
        let out = call(
            &self.policy,
            retries,
            "scheduler",
            "GetSchedule",
            || async {
                self.client
                    .get_schedule()
                    .group_name(&self.group)
                    .name(name)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("GetSchedule", e))
            },
        )
        .await;
        match out {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.code.as_deref() == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Schedules `input` (the delete job of `request_id`, whose staging message was sent
    /// at `sent_ms`) for `due` under `name`: a new schedule, or the existing one of the
    /// key replaced (at the earlier time of the two), unless it already sends this very
    /// job (a redelivery keeps the time it set) or is the record of a restore made since
    /// the job was sent (left disabled).
    #[allow(clippy::too_many_arguments)]
    pub async fn put(
        &self,
        name: &str,
        due: i64,
        destination: &Destination,
        request_id: &str,
        input: &(dyn Fn(i64) -> String + Sync),
        description: &str,
        sent_ms: u64,
        retries: &RetryCounter,
    ) -> Result<(Put, i64), AwsError> {
        // A name taken is `ConflictException`; the schedule found may then have run and
        // deleted itself, or be changed by another replica at that moment (Scheduler
        // answers `ConflictException` to a concurrent change too): look again, a few times.
        let mut last = None;
        for _ in 0..PUT_ATTEMPTS {
            let created = self
                .write(
                    Write::Create,
                    name,
                    due,
                    &target(destination, name, &input(due)),
                    ScheduleState::Enabled,
                    description,
                    retries,
                )
                .await;
            match created {
                Ok(()) => return Ok((Put::Created, due)),
                Err(e) if is_conflict(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
            let Some(found) = self.get(name, retries).await? else {
                continue;
            };
            if found.restored_since(request_id, sent_ms) {
                return Ok((Put::Restored, found.due.unwrap_or(due)));
            }
            if found.enabled && found.request_id().as_deref() == Some(request_id) {
                return Ok((Put::Kept, found.due.unwrap_or(due)));
            }
            // Another staging job of the key: its delete, at the earlier of the two times
            // (a repeated event never pushes a delete later).
            let due = match (found.enabled, found.due) {
                (true, Some(earlier)) => earlier.min(due),
                _ => due,
            };
            let updated = self
                .write(
                    Write::Update,
                    name,
                    due,
                    &target(destination, name, &input(due)),
                    ScheduleState::Enabled,
                    description,
                    retries,
                )
                .await;
            match updated {
                Ok(()) => return Ok((Put::Replaced, due)),
                Err(e)
                    if is_conflict(&e)
                        || e.code.as_deref() == Some("ResourceNotFoundException") =>
                {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        // Still changing under it: a transient state, tried again with the job.
        Err(AwsError {
            class: ErrorClass::Transient,
            ..last.unwrap_or_else(|| kept_changing(name))
        })
    }

    /// Sends the schedule `name` with CreateSchedule or UpdateSchedule: both take every
    /// field (UpdateSchedule replaces the schedule whole), and the SDK gives their
    /// builders no common trait, so one macro fills either.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        write: Write,
        name: &str,
        due: i64,
        target: &Target,
        state: ScheduleState,
        description: &str,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        macro_rules! fields {
            ($builder:expr) => {
                $builder
                    .group_name(&self.group)
                    .name(name)
                    .schedule_expression(at_expression(due))
                    .schedule_expression_timezone("UTC")
                    .flexible_time_window(off())
                    .target(target.clone())
                    .action_after_completion(ActionAfterCompletion::Delete)
                    .state(state.clone())
                    .description(description)
            };
        }
        // Each operation's name written out where its error is made: tests/deploy.rs
        // reads them to check the worker's policy grants every action the code calls.
        let operation = match write {
            Write::Create => "CreateSchedule",
            Write::Update => "UpdateSchedule",
        };
        call(&self.policy, retries, "scheduler", operation, || async {
            match write {
                Write::Create => fields!(self.client.create_schedule())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::from_sdk("CreateSchedule", e)),
                Write::Update => fields!(self.client.update_schedule())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::from_sdk("UpdateSchedule", e)),
            }
        })
        .await
    }

    /// Creates the schedule `name` disabled, as the record of a restore of a key that had
    /// none (its staging job could not schedule the delete): a late delivery of that job
    /// then finds it and leaves the key alone. It never runs.
    pub async fn record(
        &self,
        name: &str,
        due: i64,
        destination: &Destination,
        input: &str,
        description: &str,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        let target = target(destination, name, input);
        self.write(
            Write::Create,
            name,
            due,
            &target,
            ScheduleState::Disabled,
            description,
            retries,
        )
        .await
    }

    /// Whether the group exists (`GetScheduleGroup`): `GetSchedule` answers
    /// `ResourceNotFoundException` for a missing group as for a missing schedule.
    pub async fn group_exists(&self, retries: &RetryCounter) -> Result<bool, AwsError> {
        let got = call(
            &self.policy,
            retries,
            "scheduler",
            "GetScheduleGroup",
            || async {
                self.client
                    .get_schedule_group()
                    .name(&self.group)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("GetScheduleGroup", e))
            },
        )
        .await;
        match got {
            Ok(_) => Ok(true),
            Err(e) if e.code.as_deref() == Some("ResourceNotFoundException") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Keeps the schedule `name`, disabled, as the record of a restore: same time, target
    /// and input, `description` saying who restored the key and when. `Ok(None)`: there
    /// is no such schedule.
    pub async fn disable(
        &self,
        name: &str,
        description: &str,
        retries: &RetryCounter,
    ) -> Result<Option<Found>, AwsError> {
        let Some(out) = self.read(name, retries).await? else {
            return Ok(None);
        };
        let found = found(&out);
        let (Some(due), Some(target)) = (found.due, out.target().cloned()) else {
            return Err(AwsError {
                operation: "GetSchedule",
                class: ErrorClass::Permanent,
                code: None,
                message: format!(
                    "schedule {name} in group {} is not a staged delete (no at() time or no target); left as it is",
                    self.group
                ),
                unanswered: false,
            });
        };
        self.write(
            Write::Update,
            name,
            due,
            &target,
            ScheduleState::Disabled,
            description,
            retries,
        )
        .await?;
        Ok(Some(found))
    }
}

/// Scheduler's two writes of a whole schedule.
#[derive(Debug, Clone, Copy)]
enum Write {
    Create,
    Update,
}

/// How often [`Schedules::put`] looks again when the schedule changes under it.
const PUT_ATTEMPTS: usize = 3;

fn is_conflict(e: &AwsError) -> bool {
    e.code.as_deref() == Some("ConflictException")
}

/// The error of a put whose every attempt met a conflict.
fn kept_changing(name: &str) -> AwsError {
    AwsError {
        operation: "CreateSchedule",
        class: ErrorClass::Transient,
        code: Some("ConflictException".to_owned()),
        message: format!("schedule {name} kept changing"),
        unanswered: false,
    }
}

/// A schedule as read.
fn found(out: &GetScheduleOutput) -> Found {
    Found {
        enabled: out.state() != Some(&ScheduleState::Disabled),
        due: out.schedule_expression().and_then(parse_at_expression),
        input: out.target().and_then(|t| t.input()).map(str::to_owned),
        description: out.description().map(str::to_owned),
        modified_ms: out
            .last_modification_date()
            .and_then(|d| d.to_millis().ok())
            .and_then(|ms| u64::try_from(ms).ok()),
        created_ms: out
            .creation_date()
            .and_then(|d| d.to_millis().ok())
            .and_then(|ms| u64::try_from(ms).ok()),
        queue_arn: out.target().map(|t| t.arn().to_owned()).unwrap_or_default(),
    }
}

/// No flexible window: the delete is sent at its time.
fn off() -> FlexibleTimeWindow {
    FlexibleTimeWindow::builder()
        .mode(FlexibleTimeWindowMode::Off)
        .build()
        .expect("mode is set")
}

/// The schedule's target: the job queue, the delete job as the message body.
fn target(destination: &Destination, name: &str, input: &str) -> Target {
    let mut target = Target::builder()
        .arn(&destination.queue_arn)
        .role_arn(&destination.role_arn)
        .input(input)
        .retry_policy(
            RetryPolicy::builder()
                .maximum_event_age_in_seconds(MAX_EVENT_AGE_SECONDS)
                .maximum_retry_attempts(MAX_RETRY_ATTEMPTS)
                .build(),
        )
        .dead_letter_config(
            DeadLetterConfig::builder()
                .arn(&destination.dead_letter_arn)
                .build(),
        );
    if destination.fifo {
        // A group per key (its schedule's name): one delete waiting never holds up
        // another; the queue's content-based deduplication keeps a resent one from
        // running twice.
        target = target.sqs_parameters(SqsParameters::builder().message_group_id(name).build());
    }
    target.build().expect("arn and role are set")
}

#[cfg(test)]
mod tests {
    use aws_sdk_scheduler::operation::create_schedule::CreateScheduleOutput;
    use aws_sdk_scheduler::operation::update_schedule::UpdateScheduleOutput;
    use aws_sdk_scheduler::Client;
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

    use super::*;
    use crate::aws::retry::quick_policy;

    const NAME: &str = "111122223333-AKIAIOSFODNN7EXAMPLE";

    fn destination(fifo: bool) -> Destination {
        Destination {
            queue_arn: "arn:aws:sqs:eu-west-1:111122223333:iam-key-revocations".into(),
            role_arn: "arn:aws:iam::111122223333:role/iam-key-revoker-scheduler".into(),
            dead_letter_arn: "arn:aws:sqs:eu-west-1:111122223333:iam-key-revoker-schedule-dlq"
                .into(),
            fifo,
        }
    }

    /// EventBridge Scheduler's REST-JSON error, as its API reference documents them.
    fn error_json(code: &str) -> String {
        format!(r#"{{"__type": "{code}", "Message": "injected"}}"#)
    }

    fn schedules(rules: &[&Rule]) -> Schedules {
        let client = mock_client!(aws_sdk_scheduler, RuleMode::Sequential, rules, |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        Schedules::with_client(client, quick_policy(), "iam-key-revoker")
    }

    /// A schedule sending `request_id`'s delete, last changed at `modified_ms`.
    fn existing(request_id: &'static str, state: ScheduleState, modified_ms: i64) -> Rule {
        mock!(Client::get_schedule).then_output(move || {
            GetScheduleOutput::builder()
                .name(NAME)
                .state(state.clone())
                .last_modification_date(aws_smithy_types::DateTime::from_millis(modified_ms))
                .schedule_expression("at(2026-12-30T12:00:00)")
                .target(target(
                    &destination(false),
                    NAME,
                    &format!(r#"{{"request_id":"{request_id}"}}"#),
                ))
                .build()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_schedule_is_one_time_in_utc_deletes_itself_and_has_a_dead_letter_queue() {
        let create = mock!(Client::create_schedule)
            .match_requests(|input| {
                let target = input.target().unwrap();
                input.group_name() == Some("iam-key-revoker")
                    && input.name() == Some(NAME)
                    && input.schedule_expression() == Some("at(2026-12-30T12:00:00)")
                    && input.schedule_expression_timezone() == Some("UTC")
                    && input.flexible_time_window().map(|w| w.mode())
                        == Some(&FlexibleTimeWindowMode::Off)
                    && input.action_after_completion() == Some(&ActionAfterCompletion::Delete)
                    && input.state() == Some(&ScheduleState::Enabled)
                    && target.input() == Some("{}")
                    && target.dead_letter_config().and_then(|d| d.arn())
                        == Some(destination(true).dead_letter_arn.as_str())
                    && target
                        .retry_policy()
                        .and_then(|r| r.maximum_retry_attempts())
                        == Some(185)
                    && target.sqs_parameters().and_then(|p| p.message_group_id()) == Some(NAME)
            })
            .sequence()
            .http_status(429, Some(error_json("ThrottlingException")))
            .output(|| {
                CreateScheduleOutput::builder()
                    .schedule_arn("arn")
                    .build()
                    .unwrap()
            })
            .build();
        let retries = RetryCounter::default();
        let due = parse_at_expression("at(2026-12-30T12:00:00)").unwrap();
        let put = schedules(&[&create])
            .put(
                NAME,
                due,
                &destination(true),
                "r.delete",
                &|_| "{}".to_owned(),
                "d",
                0,
                &retries,
            )
            .await;
        assert_eq!(put.unwrap().0, Put::Created);
        assert_eq!(retries.get(), 1, "throttling is retried");
    }

    #[tokio::test(start_paused = true)]
    async fn a_redelivery_keeps_its_own_schedule_and_another_job_replaces_it() {
        let conflict = || {
            mock!(Client::create_schedule).then_http_response(|| {
                aws_smithy_runtime_api::http::Response::new(
                    aws_smithy_runtime_api::http::StatusCode::try_from(409).unwrap(),
                    aws_smithy_types::body::SdkBody::from(error_json("ConflictException")),
                )
            })
        };
        let (create, get) = (
            conflict(),
            existing("r.delete", ScheduleState::Enabled, 1_000),
        );
        let put = schedules(&[&create, &get])
            .put(
                NAME,
                0,
                &destination(false),
                "r.delete",
                &|_| "{}".to_owned(),
                "d",
                0,
                &RetryCounter::default(),
            )
            .await;
        assert_eq!(put.unwrap().0, Put::Kept);

        // Another staging job, or the record of a restore made before this job was sent
        // (at 2_000): replaced, enabled again.
        let (create, get) = (
            conflict(),
            existing("other.delete", ScheduleState::Disabled, 1_000),
        );
        let update = mock!(Client::update_schedule)
            .match_requests(|input| {
                input.state() == Some(&ScheduleState::Enabled)
                    && input.action_after_completion() == Some(&ActionAfterCompletion::Delete)
                    && input.target().and_then(|t| t.input())
                        == Some("{\"request_id\":\"r.delete\"}")
            })
            .then_output(|| {
                UpdateScheduleOutput::builder()
                    .schedule_arn("arn")
                    .build()
                    .unwrap()
            });
        let put = schedules(&[&create, &get, &update])
            .put(
                NAME,
                0,
                &destination(false),
                "r.delete",
                &|_| "{\"request_id\":\"r.delete\"}".to_owned(),
                "d",
                2_000,
                &RetryCounter::default(),
            )
            .await;
        assert_eq!(put.unwrap().0, Put::Replaced);
        assert_eq!(update.num_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restore_since_the_job_was_sent_is_never_turned_back_on() {
        let conflict = || {
            mock!(Client::create_schedule)
                .sequence()
                .http_status(409, Some(error_json("ConflictException")))
                .build()
        };
        // Disabled after the job was sent (at 500), or the record of this very job's
        // delete (a redrive from the dead-letter queue sends it anew): left alone.
        for (rule, sent_ms) in [
            (
                existing("other.delete", ScheduleState::Disabled, 1_000),
                500,
            ),
            (existing("r.delete", ScheduleState::Disabled, 1_000), 5_000),
        ] {
            let create = conflict();
            let put = schedules(&[&create, &rule])
                .put(
                    NAME,
                    0,
                    &destination(false),
                    "r.delete",
                    &|_| "{}".to_owned(),
                    "d",
                    sent_ms,
                    &RetryCounter::default(),
                )
                .await;
            assert_eq!(put.unwrap().0, Put::Restored);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn another_staging_job_never_pushes_a_delete_later() {
        let create = mock!(Client::create_schedule)
            .sequence()
            .http_status(409, Some(error_json("ConflictException")))
            .build();
        let get = existing("first.delete", ScheduleState::Enabled, 1_000);
        // The schedule found is due at 2026-12-30T12:00:00; the new job asks for later.
        let update = mock!(Client::update_schedule)
            .match_requests(|input| input.schedule_expression() == Some("at(2026-12-30T12:00:00)"))
            .then_output(|| {
                UpdateScheduleOutput::builder()
                    .schedule_arn("arn")
                    .build()
                    .unwrap()
            });
        let later = parse_at_expression("at(2027-01-30T12:00:00)").unwrap();
        let put = schedules(&[&create, &get, &update])
            .put(
                NAME,
                later,
                &destination(false),
                "second.delete",
                &|_| "{}".to_owned(),
                "d",
                2_000,
                &RetryCounter::default(),
            )
            .await;
        assert_eq!(put.unwrap().0, Put::Replaced);
        assert_eq!(update.num_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_schedule_that_ran_and_deleted_itself_meanwhile_is_created_again() {
        let conflict = mock!(Client::create_schedule)
            .sequence()
            .http_status(409, Some(error_json("ConflictException")))
            .build();
        let created = mock!(Client::create_schedule).then_output(|| {
            CreateScheduleOutput::builder()
                .schedule_arn("arn")
                .build()
                .unwrap()
        });
        let gone = mock!(Client::get_schedule).then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(404).unwrap(),
                aws_smithy_types::body::SdkBody::from(error_json("ResourceNotFoundException")),
            )
        });
        let put = schedules(&[&conflict, &gone, &created])
            .put(
                NAME,
                0,
                &destination(false),
                "r.delete",
                &|_| "{}".to_owned(),
                "d",
                0,
                &RetryCounter::default(),
            )
            .await;
        assert_eq!(put.unwrap().0, Put::Created);
        assert_eq!((conflict.num_calls(), created.num_calls()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restore_disables_the_schedule_keeping_its_time_target_and_input() {
        let get = existing("r.delete", ScheduleState::Enabled, 1_000);
        let update = mock!(Client::update_schedule)
            .match_requests(|input| {
                input.state() == Some(&ScheduleState::Disabled)
                    && input.schedule_expression() == Some("at(2026-12-30T12:00:00)")
                    && input.description() == Some("restored")
                    && input.target().and_then(|t| t.input())
                        == Some("{\"request_id\":\"r.delete\"}")
            })
            .then_output(|| {
                UpdateScheduleOutput::builder()
                    .schedule_arn("arn")
                    .build()
                    .unwrap()
            });
        let found = schedules(&[&get, &update])
            .disable(NAME, "restored", &RetryCounter::default())
            .await
            .unwrap()
            .expect("found");
        assert_eq!(found.request_id().as_deref(), Some("r.delete"));
        assert_eq!(update.num_calls(), 1);
    }
}
