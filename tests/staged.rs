//! docs "Staged revocation": a job with `delete_after` deactivates its key now and
//! leaves the delete to one EventBridge Scheduler schedule per key; the scheduled delete
//! deletes only a key still `Inactive`; `restore` sets a key back to `Active` and keeps
//! its schedule, disabled, as the record. Against the local emulator through the real SDK.
//!
//! The emulator stores schedules but never fires them: each test reads the schedule back
//! (time, target, input) and sends its input to the queue as EventBridge Scheduler would.

mod common;

use std::time::Duration;

use aws_sdk_iam::types::StatusType;
use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindowMode, ScheduleState};
use common::proxy::{Fault, FaultProxy, Scope};
use common::{queue_arn, TestEnv};
use iam_key_revoker::cli::restore::{restore, Request, RestoreError};
use iam_key_revoker::staging::parse_at_expression;
use iam_key_revoker::{Outcome, Reason};
use serde_json::{json, Value};

use common::staging::{now_secs, schedule, staged_env, staging, ACCOUNT, ROLE};

#[tokio::test]
async fn a_staged_key_is_deactivated_now_and_its_scheduled_delete_deletes_it_later() {
    let (env, scheduler) = staged_env("staged").await;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 2).await;

    let report = worker
        .handle(env.deliver(&staging("st-1", &user, &keys[0], "30d")).await)
        .await;
    assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Inactive)
    );
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Active),
        "the other key is left alone"
    );
    assert_eq!(report.facts.scheduled_deletes.len(), 1);
    assert_eq!(
        report.facts.scheduled_deletes[0].schedule,
        format!("{ACCOUNT}-{}", keys[0])
    );

    // The schedule, read back: a one-time schedule 30 days out, deleted after it runs,
    // sending the delete job to the queue the job came from.
    let found = schedule(&env, &scheduler, &keys[0])
        .await
        .expect("the schedule exists");
    assert_eq!(found.state(), Some(&ScheduleState::Enabled));
    assert_eq!(found.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(
        found.action_after_completion(),
        Some(&ActionAfterCompletion::Delete)
    );
    assert_eq!(
        found.flexible_time_window().map(|w| w.mode()),
        Some(&FlexibleTimeWindowMode::Off)
    );
    let due =
        parse_at_expression(found.schedule_expression().unwrap()).expect("an at() expression");
    let expected = now_secs() + 30 * 86_400;
    assert!(
        (due - expected).abs() <= 120,
        "due {due}, expected about {expected}"
    );
    assert_eq!(
        report.facts.scheduled_deletes[0].at,
        iam_key_revoker::staging::rfc3339(due)
    );
    let target = found.target().expect("a target");
    assert_eq!(
        target.arn(),
        queue_arn(&env.clients.sqs, &env.queue_url).await
    );
    assert_eq!(target.role_arn(), ROLE);
    assert_eq!(
        target.dead_letter_config().and_then(|d| d.arn()),
        Some(queue_arn(&env.clients.sqs, &env.dlq_url).await.as_str())
    );
    let retry = target.retry_policy().expect("a retry policy");
    assert_eq!(retry.maximum_event_age_in_seconds(), Some(86_400));
    assert_eq!(retry.maximum_retry_attempts(), Some(185));
    let mut input: Value = serde_json::from_str(target.input().unwrap()).unwrap();
    // The delete carries its due time: a copy far later is cancelled.
    let continuation = input
        .as_object_mut()
        .unwrap()
        .remove("continuation")
        .unwrap();
    assert_eq!(
        continuation,
        json!({"deliveries": 0, "keys": [{"access_key_id": keys[0]}], "due_at": due})
    );
    assert_eq!(
        input,
        json!({"request_id": "st-1.delete", "user_name": user, "access_key_id": keys[0],
               "action": "delete", "require_status": "Inactive",
               "reason": "scheduled delete of the staged revocation st-1",
               "requested_by": "soc", "batch_id": "b-7"})
    );

    // A redelivery on another replica schedules nothing twice: the time stays.
    let replica = env.worker().await;
    let again = replica
        .handle(env.deliver(&staging("st-1", &user, &keys[0], "30d")).await)
        .await;
    assert_eq!(again.outcome, Outcome::Deactivated);
    let kept = schedule(&env, &scheduler, &keys[0]).await.unwrap();
    assert_eq!(kept.schedule_expression(), found.schedule_expression());

    // The time comes: Scheduler sends the input to the queue.
    let report = worker
        .handle(env.deliver(target.input().unwrap()).await)
        .await;
    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.detail);
    assert_eq!(env.key_status(&user, &keys[0]).await, None);
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Active)
    );
    assert!(env.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_key_a_person_reactivated_is_not_deleted_the_scheduled_delete_ends_cancelled() {
    let (env, scheduler) = staged_env("staged-cancel").await;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    let report = worker
        .handle(env.deliver(&staging("sc-1", &user, &keys[0], "12h")).await)
        .await;
    assert_eq!(report.outcome, Outcome::Deactivated);
    let input = schedule(&env, &scheduler, &keys[0])
        .await
        .unwrap()
        .target()
        .unwrap()
        .input()
        .unwrap()
        .to_owned();

    // Someone set it Active in the console meanwhile.
    env.set_key_status(&user, &keys[0], StatusType::Active)
        .await;
    let report = worker.handle(env.deliver(&input).await).await;
    assert_eq!(report.outcome, Outcome::Cancelled, "{:?}", report.detail);
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );
    assert!(
        env.dead_letters().await.is_empty(),
        "a deliberate act pages nobody"
    );
    assert_eq!(env.queue_depth().await, (0, 0), "deleted from the queue");
}

#[tokio::test]
async fn restore_sets_the_key_active_and_keeps_its_schedule_disabled_so_a_late_copy_leaves_it_alone(
) {
    let (env, scheduler) = staged_env("staged-restore").await;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    let key = keys[0].clone();
    let body = json!({"request_id": "sr-1", "user_name": user, "access_key_id": key,
                      "action": "deactivate", "delete_after": "7d", "revoke_sessions": true})
    .to_string();
    let report = worker.handle(env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    assert!(report.facts.sessions_revoked_before.is_some());
    // An older cut-off, another revocation's, stays when this one's is lifted.
    const OLDER: &str = "iam-key-revoker-revoke-older-sessions-20200101T000000Z";
    env.clients
        .iam
        .put_user_policy()
        .user_name(&user)
        .policy_name(OLDER)
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"DateLessThan":{"aws:TokenIssueTime":"2020-01-01T00:00:00Z"}}}]}"#)
        .send()
        .await
        .unwrap();
    // A second copy of the staging job, sent before the restore, arrives late.
    env.send(&body).await;

    let settings = env.settings();
    let record = restore(
        &settings,
        &env.clients,
        Request {
            access_key_id: key.clone(),
            user_name: user.clone(),
            account_id: None,
            lift_session_cutoff: true,
            reason: Some("false positive".to_owned()),
            ..Default::default()
        },
    )
    .await
    .expect("restored");
    assert_eq!(env.key_status(&user, &key).await, Some(StatusType::Active));
    assert_eq!(record.previous_status, "Inactive");
    assert_eq!(
        record.schedule.as_deref(),
        Some(format!("{ACCOUNT}-{key}").as_str())
    );
    assert_eq!(
        record.scheduled_delete_request_id.as_deref(),
        Some("sr-1.delete")
    );
    assert!(
        record.restored_by.starts_with("arn:aws:"),
        "{}",
        record.restored_by
    );
    let lifted = record
        .session_cutoffs_lifted
        .clone()
        .expect("asked to lift");
    assert_eq!(lifted.len(), 1, "{lifted:?}");
    let left = env
        .clients
        .iam
        .list_user_policies()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(
        left.policy_names(),
        [OLDER],
        "this revocation's cut-off is lifted, the older one stays"
    );
    let kept = schedule(&env, &scheduler, &key)
        .await
        .expect("kept as the record");
    assert_eq!(kept.state(), Some(&ScheduleState::Disabled));
    assert!(
        kept.description().unwrap().contains("restored to Active"),
        "{:?}",
        kept.description()
    );
    assert!(kept.description().unwrap().contains("false positive"));

    // The late copy, on a replica that never saw the job: the key stays Active.
    let replica = env.worker().await;
    let late = replica.handle(env.receive_one().await).await;
    assert_eq!(late.outcome, Outcome::Cancelled, "{:?}", late.detail);
    assert!(late.detail.unwrap().contains("restored"));
    assert_eq!(env.key_status(&user, &key).await, Some(StatusType::Active));

    // The delete, were it sent anyway, finds the key Active: left alone.
    let input = kept.target().unwrap().input().unwrap().to_owned();
    let report = replica.handle(env.deliver(&input).await).await;
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!(env.key_status(&user, &key).await, Some(StatusType::Active));

    // The same staging job moved back from a dead-letter queue is sent anew, after the
    // restore: its own delete's record still tells it the key was restored.
    let report = replica.handle(env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::Cancelled, "{:?}", report.detail);
    assert_eq!(env.key_status(&user, &key).await, Some(StatusType::Active));

    // A new staging of the key, sent after the restore, stages it again.
    let body = staging("sr-2", &user, &key, "1d");
    let report = replica.handle(env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    let again = schedule(&env, &scheduler, &key).await.unwrap();
    assert_eq!(again.state(), Some(&ScheduleState::Enabled));
    let input: Value = serde_json::from_str(again.target().unwrap().input().unwrap()).unwrap();
    assert_eq!(input["request_id"], "sr-2.delete");
    let due = parse_at_expression(again.schedule_expression().unwrap()).unwrap();
    assert!((due - (now_secs() + 86_400)).abs() <= 120);
    assert!(env.dead_letters().await.is_empty());
}

#[tokio::test]
async fn restore_refuses_protected_users_and_keys_it_cannot_find() {
    let (mut env, _scheduler) = staged_env("staged-restore-refused").await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    env.config.protect.users = vec![user.clone()];
    let request = |user: &str, key: &str| Request {
        access_key_id: key.to_owned(),
        user_name: user.to_owned(),
        account_id: None,
        lift_session_cutoff: false,
        reason: None,
        ..Default::default()
    };
    env.set_key_status(&user, &keys[0], StatusType::Inactive)
        .await;
    let err = restore(&env.settings(), &env.clients, request(&user, &keys[0]))
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::Refused(_)), "{err}");
    assert_eq!(err.exit_code(), 2);
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Inactive),
        "left alone"
    );

    env.config.protect.users.clear();
    let err = restore(
        &env.settings(),
        &env.clients,
        request(&user, "AKIAIOSFODNN7NOTHERE"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("nothing to restore"), "{err}");

    // Not staged (a plain deactivation): set Active, and the record says no schedule.
    let record = restore(&env.settings(), &env.clients, request(&user, &keys[0]))
        .await
        .expect("restored");
    assert_eq!(record.schedule, None);
    assert!(
        record.detail.contains("no staged delete found"),
        "{}",
        record.detail
    );
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );
}

#[tokio::test]
async fn offboarding_stages_every_key_of_the_user_with_a_schedule_each() {
    let (env, scheduler) = staged_env("staged-all").await;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 2).await;
    let body = json!({"request_id": "sa-1", "user_name": user, "all_keys": true,
                      "action": "deactivate", "delete_after": "2030-01-01T00:00:00Z"})
    .to_string();
    let report = worker.handle(env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    assert_eq!(report.facts.keys_changed, 2);
    assert_eq!(report.facts.scheduled_deletes.len(), 2);
    for key in &keys {
        assert_eq!(env.key_status(&user, key).await, Some(StatusType::Inactive));
        let found = schedule(&env, &scheduler, key)
            .await
            .expect("a schedule per key");
        assert_eq!(found.schedule_expression(), Some("at(2030-01-01T00:00:00)"));
        let input: Value = serde_json::from_str(found.target().unwrap().input().unwrap()).unwrap();
        assert_eq!(input["access_key_id"], key.as_str());
        assert_eq!(input["user_name"], user.as_str());
        assert_eq!(input["require_status"], "Inactive");
    }
    // One key restored; a late copy of the offboarding job leaves that one alone and
    // still covers the other.
    env.send(&body).await;
    restore(
        &env.settings(),
        &env.clients,
        Request {
            access_key_id: keys[0].clone(),
            user_name: user.clone(),
            account_id: None,
            lift_session_cutoff: false,
            reason: None,
            ..Default::default()
        },
    )
    .await
    .expect("restored");
    let replica = env.worker().await;
    let late = replica.handle(env.receive_one().await).await;
    assert_eq!(late.outcome, Outcome::Deactivated, "{:?}", late.detail);
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active),
        "restored stays restored"
    );
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Inactive)
    );
    assert_eq!(
        schedule(&env, &scheduler, &keys[0]).await.unwrap().state(),
        Some(&ScheduleState::Disabled)
    );
}

/// A staged job that is no valid job changes nothing. One whose delete cannot be
/// scheduled (a time already past, a worker without staged revocation) deactivates its
/// key all the same (deactivation never waits on Scheduler) and is dead-lettered for a
/// person, the change in its detail.
#[tokio::test]
async fn staged_jobs_it_cannot_schedule_deactivate_and_are_dead_lettered() {
    let (env, _scheduler) = staged_env("staged-invalid").await;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    for body in [
        // Staging is a deactivation.
        json!({"request_id": "si-1", "user_name": user, "access_key_id": keys[0], "delete_after": "30d"}),
        json!({"request_id": "si-2", "user_name": user, "access_key_id": keys[0], "action": "delete", "delete_after": "30d"}),
        json!({"request_id": "si-3", "user_name": user, "access_key_id": keys[0], "action": "deactivate", "delete_after": "soon"}),
        json!({"request_id": "si-5", "user_name": user, "access_key_id": keys[0], "action": "deactivate", "delete_after": "30d", "require_status": "Inactive"}),
    ] {
        let report = worker.handle(env.deliver(&body.to_string()).await).await;
        assert_eq!(
            report.outcome,
            Outcome::Rejected(Reason::InvalidMessage),
            "{body}"
        );
    }
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );
    // A time already past, on a first delivery.
    let past = json!({"request_id": "si-4", "user_name": user, "access_key_id": keys[0], "action": "deactivate", "delete_after": "2020-01-01T00:00:00Z"});
    let report = worker.handle(env.deliver(&past.to_string()).await).await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::InvalidMessage));
    let detail = report.detail.unwrap();
    assert!(
        detail.contains("1 key(s) changed") && detail.contains("no delete is scheduled"),
        "{detail}"
    );
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Inactive)
    );
    // A worker without schedule.role_arn cannot stage: it deactivates all the same.
    let mut unconfigured = TestEnv::new("staged-unconfigured").await;
    unconfigured.config.schedule.role_arn = None;
    let (user2, keys2) = unconfigured.user_with_keys("u", 1).await;
    let report = unconfigured
        .worker()
        .await
        .handle(
            unconfigured
                .deliver(&staging("su-1", &user2, &keys2[0], "30d"))
                .await,
        )
        .await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::InvalidMessage));
    assert!(report.detail.unwrap().contains("schedule.role_arn"));
    assert_eq!(
        unconfigured.key_status(&user2, &keys2[0]).await,
        Some(StatusType::Inactive)
    );
    assert_eq!(unconfigured.dead_letters().await.len(), 1);
}

#[tokio::test]
async fn a_schedule_that_cannot_be_created_leaves_the_job_on_the_queue_and_its_redelivery_schedules_it(
) {
    let (mut env, scheduler) = staged_env("staged-fail").await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    env.route_all_through(&proxy).await;
    env.config.retry.visibility_base_seconds = 1;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    // EventBridge Scheduler answers 500 InternalServerException (its API reference's
    // retryable error) to every CreateSchedule.
    proxy.set_fault_matching(
        &["POST /schedules/".to_owned()],
        Fault::Status(
            500,
            json!({"__type": "InternalServerException", "Message": "injected"}).to_string(),
        ),
    );
    // A time a few seconds ahead, which passes while the job waits to be retried.
    let due = now_secs() + 6;
    let body = staging(
        "sf-1",
        &user,
        &keys[0],
        &iam_key_revoker::staging::rfc3339(due),
    );
    let report = worker.handle(env.deliver(&body).await).await;
    assert_eq!(
        report.outcome,
        Outcome::Retry(Reason::TransientError),
        "{:?}",
        report.detail
    );
    assert!(
        report
            .detail
            .as_deref()
            .unwrap()
            .contains("delete is not scheduled yet"),
        "{:?}",
        report.detail
    );
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Inactive),
        "deactivated now"
    );
    assert!(schedule(&env, &scheduler, &keys[0]).await.is_none());
    assert!(!proxy.requests_containing("POST /schedules/").is_empty());

    // Scheduler answers again; the message comes back after its time passed: the job
    // is not refused for it (its first delivery deactivated the key), and the delete is
    // scheduled for the next minute.
    proxy.set_fault_matching(&["POST /schedules/".to_owned()], Fault::None);
    while now_secs() <= due {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.wait_for_depth((1, 0), Duration::from_secs(20)).await;
    let report = worker.handle(env.receive_one().await).await;
    assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    let found = schedule(&env, &scheduler, &keys[0])
        .await
        .expect("scheduled");
    let at = parse_at_expression(found.schedule_expression().unwrap()).unwrap();
    let soon = now_secs() + 60;
    assert!(
        (soon - 10..=soon + 1).contains(&at),
        "due {at}, about {soon}"
    );
}

#[tokio::test]
async fn a_security_event_is_staged_with_intake_delete_after() {
    let (mut env, scheduler) = staged_env("staged-event").await;
    env.config.intake.delete_after = Some("7d".to_owned());
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    // GuardDuty findings deactivate by default (intake.guardduty_action).
    let event = common::events::guardduty_finding("f-staged-1", &keys[0], &user);
    let report = worker.handle(env.deliver(&event).await).await;
    assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Inactive)
    );
    let found = schedule(&env, &scheduler, &keys[0]).await.expect("staged");
    let due = parse_at_expression(found.schedule_expression().unwrap()).unwrap();
    assert!((due - (now_secs() + 7 * 86_400)).abs() <= 120);
    let input: Value = serde_json::from_str(found.target().unwrap().input().unwrap()).unwrap();
    assert_eq!(input["account_id"], ACCOUNT);
    assert_eq!(input["require_status"], "Inactive");
    // The delete it sends is a job like any other: it deletes the still inactive key.
    let report = worker
        .handle(env.deliver(found.target().unwrap().input().unwrap()).await)
        .await;
    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.detail);
}

/// Runs [`cli`] and asserts its exit code (printing its standard error when it differs).
fn cli_exits(code: i32, env: &TestEnv, args: &[&str]) -> std::process::Output {
    let out = cli(env, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The binary, as operators run it, against this environment's queue and schedule group.
fn cli(env: &TestEnv, args: &[&str]) -> std::process::Output {
    common::process::command(&common::endpoint(), &env.queue_url)
        .env(
            "IAM_KEY_REVOKER__SCHEDULE__GROUP_NAME",
            &env.config.schedule.group_name,
        )
        .env("IAM_KEY_REVOKER__SCHEDULE__ROLE_ARN", ROLE)
        .args(args)
        .output()
        .expect("the binary runs")
}

#[tokio::test]
async fn enqueue_plan_and_restore_from_the_command_line() {
    let (env, scheduler) = staged_env("staged-cli").await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    let key = keys[0].as_str();

    // enqueue refuses a time already past before sending anything (exit 2)...
    let out = cli_exits(
        2,
        &env,
        &[
            "enqueue",
            "--user-name",
            &user,
            "--access-key-id",
            key,
            "--action",
            "deactivate",
            "--delete-after",
            "2020-01-01T00:00:00Z",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the future"));
    assert_eq!(env.queue_depth().await, (0, 0));

    // ...plan says when the delete would be scheduled...
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("staged.csv");
    std::fs::write(
        &file,
        format!("request_id,user_name,access_key_id,action,delete_after\nsc-1,{user},{key},deactivate,30d\n"),
    )
    .unwrap();
    let out = cli_exits(
        0,
        &env,
        &["plan", "--file", file.to_str().unwrap(), "--output", "json"],
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["prediction"], "would_deactivate");
    let at = rows[0]["would_schedule_delete_at"]
        .as_str()
        .expect("a time");
    let at = iam_key_revoker::staging::DeleteAfter::parse(at)
        .unwrap()
        .due(0);
    assert!((at - (now_secs() + 30 * 86_400)).abs() <= 120);

    // ...and sends a staged job from flags.
    cli_exits(
        0,
        &env,
        &[
            "enqueue",
            "--request-id",
            "cli-1",
            "--user-name",
            &user,
            "--access-key-id",
            key,
            "--action",
            "deactivate",
            "--delete-after",
            "30d",
        ],
    );
    let worker = env.worker().await;
    let report = worker.handle(env.receive_one().await).await;
    assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    assert!(schedule(&env, &scheduler, key).await.is_some());

    // restore prints one audit record and exits 0.
    let out = cli_exits(
        0,
        &env,
        &[
            "restore",
            "--user-name",
            &user,
            "--access-key-id",
            key,
            "--reason",
            "false positive",
        ],
    );
    let record: Value = serde_json::from_slice(&out.stdout).expect("one JSON record");
    assert_eq!(record["restored"], true);
    assert_eq!(record["access_key_id"], key);
    assert_eq!(record["previous_status"], "Inactive");
    assert_eq!(record["scheduled_delete_request_id"], "cli-1.delete");
    assert_eq!(record["reason"], "false positive");
    assert_eq!(env.key_status(&user, key).await, Some(StatusType::Active));
    assert_eq!(
        schedule(&env, &scheduler, key).await.unwrap().state(),
        Some(&ScheduleState::Disabled)
    );

    // An offboarding batch, staged: every key of each user, a schedule each.
    let (leaver_a, keys_a) = env.user_with_keys("leaver-a", 2).await;
    let (leaver_b, keys_b) = env.user_with_keys("leaver-b", 1).await;
    let batch = dir.path().join("leavers.csv");
    std::fs::write(
        &batch,
        format!(
            "user_name,all_keys,action,delete_after,batch_id\n{leaver_a},true,deactivate,14d,hr-12\n{leaver_b},true,deactivate,14d,hr-12\n"
        ),
    )
    .unwrap();
    cli_exits(0, &env, &["enqueue", "--file", batch.to_str().unwrap()]);
    for _ in 0..2 {
        let report = worker.handle(env.receive_one().await).await;
        assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    }
    for (user, keys) in [(&leaver_a, &keys_a), (&leaver_b, &keys_b)] {
        for key in keys.iter() {
            assert_eq!(env.key_status(user, key).await, Some(StatusType::Inactive));
            let found = schedule(&env, &scheduler, key)
                .await
                .expect("a schedule per key");
            let input: Value =
                serde_json::from_str(found.target().unwrap().input().unwrap()).unwrap();
            assert_eq!(input["user_name"], user.as_str());
            assert_eq!(input["batch_id"], "hr-12");
        }
    }

    // A protected user is refused with exit 2; a bad key id is a usage error.
    let out = common::process::command(&common::endpoint(), &env.queue_url)
        .env("IAM_KEY_REVOKER__PROTECT__USERS", &user)
        .args(["restore", "--user-name", &user, "--access-key-id", key])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("protected"));
    let out = cli(
        &env,
        &["restore", "--user-name", &user, "--access-key-id", "akia"],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn a_restore_of_a_key_whose_schedule_was_never_created_is_recorded_and_kept() {
    let (mut env, scheduler) = staged_env("staged-record").await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    env.route_all_through(&proxy).await;
    env.config.retry.visibility_base_seconds = 1;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    let key = keys[0].as_str();
    let refuse = ["POST /schedules/".to_owned()];
    proxy.set_fault_matching(
        &refuse,
        Fault::Status(
            500,
            json!({"__type": "InternalServerException", "Message": "injected"}).to_string(),
        ),
    );
    let report = worker
        .handle(env.deliver(&staging("sr-9", &user, key, "30d")).await)
        .await;
    assert_eq!(report.outcome, Outcome::Retry(Reason::TransientError));
    assert_eq!(env.key_status(&user, key).await, Some(StatusType::Inactive));
    assert!(schedule(&env, &scheduler, key).await.is_none());

    // Someone restores the key before the job comes back.
    proxy.set_fault_matching(&refuse, Fault::None);
    let record = restore(
        &env.settings(),
        &env.clients,
        Request {
            access_key_id: key.to_owned(),
            user_name: user.clone(),
            account_id: None,
            lift_session_cutoff: false,
            reason: None,
            ..Default::default()
        },
    )
    .await
    .expect("restored");
    assert!(record.recorded && record.schedule.is_none(), "{record:?}");
    let kept = schedule(&env, &scheduler, key)
        .await
        .expect("a record made");
    assert_eq!(kept.state(), Some(&ScheduleState::Disabled));

    // The job comes back: the key stays Active, the record disabled.
    env.wait_for_depth((1, 0), Duration::from_secs(20)).await;
    let report = worker.handle(env.receive_one().await).await;
    assert_eq!(report.outcome, Outcome::Cancelled, "{:?}", report.detail);
    assert_eq!(env.key_status(&user, key).await, Some(StatusType::Active));
    assert_eq!(
        schedule(&env, &scheduler, key).await.unwrap().state(),
        Some(&ScheduleState::Disabled)
    );
}

#[tokio::test]
async fn a_worker_refuses_to_start_without_its_schedule_group() {
    let (mut env, _scheduler) = staged_env("staged-nogroup").await;
    env.config.schedule.group_name = "no-such-group".to_owned();
    let err = iam_key_revoker::Worker::build(env.settings(), env.clients.clone())
        .await
        .expect_err("no group");
    assert!(err.to_string().contains("no-such-group"), "{err}");
    assert_eq!(err.exit_code(), 2);
}
