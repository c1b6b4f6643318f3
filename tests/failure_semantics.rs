//! What happens on real AWS that the emulator does not do by itself, shown against the
//! emulator with the fault-injecting proxy: a job redriven after its cause was fixed, a
//! reused request id, the worker's own credentials expiring, a slow dead-letter copy,
//! SIGTERM while an IAM write is under way, and the order of a FIFO message group.
//! docs, "On real AWS", says what each means for an operator.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_iam::types::StatusType;
use aws_sdk_sqs::types::QueueAttributeName;
use common::process::{
    audit_lines, http_body, http_status, listening_port, metric, sigterm, wait, worker_command,
};
use common::proxy::{iam_error, Fault, FaultProxy, Scope};
use common::{attribute, eventually, job, TestEnv};
use iam_key_revoker::{Outcome, Reason, Worker};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_rejected_job_moved_back_from_the_dead_letter_queue_is_worked_again() {
    let mut env = TestEnv::new("redrive").await;
    let (user, keys) = env.user_with_keys("leaky", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault_for(
        "DeleteAccessKey",
        Fault::Status(403, iam_error("AccessDenied")),
    );
    env.route_iam_through(&proxy).await;
    let worker = env.worker().await;
    let body = job("redrive-1", &user, &keys[0]);

    let first = worker.handle(env.deliver(&body).await).await;
    assert_eq!(first.outcome, Outcome::Rejected(Reason::AccessDenied));
    assert_eq!(
        first.detail.as_deref(),
        Some("DeleteAccessKey: AccessDenied: injected"),
        "one readable line"
    );
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some(body.as_str()));
    assert_eq!(
        attribute(&dead[0], "revoker-detail").as_deref(),
        Some("DeleteAccessKey: AccessDenied: injected")
    );

    // The operator grants the permission and moves the message back to the job queue.
    proxy.set_fault_for("DeleteAccessKey", Fault::None);
    env.send(dead[0].body().unwrap()).await;
    let second = worker.handle(env.receive_one().await).await;

    assert_eq!(
        second.outcome,
        Outcome::Deleted,
        "worked again, not a duplicate"
    );
    assert_eq!(env.key_status(&user, &keys[0]).await, None);
    assert_eq!(env.queue_depth().await, (0, 0));
}

#[tokio::test]
async fn a_reused_request_id_for_another_key_is_a_conflict_and_changes_nothing() {
    let env = TestEnv::new("reuse").await;
    let (user, keys) = env.user_with_keys("two", 2).await;
    let worker = env.worker().await;

    let first = worker
        .handle(env.deliver(&job("reuse-1", &user, &keys[0])).await)
        .await;
    let other_key = worker
        .handle(env.deliver(&job("reuse-1", &user, &keys[1])).await)
        .await;
    let same_job_again = json!({
        "request_id": "reuse-1", "user_name": user.to_uppercase(), "access_key_id": keys[0],
        "reason": "sent twice by the detector",
    });
    let again = worker
        .handle(env.deliver(&same_job_again.to_string()).await)
        .await;

    assert_eq!(first.outcome, Outcome::Deleted);
    assert_eq!(
        other_key.outcome,
        Outcome::Rejected(Reason::RequestIdConflict)
    );
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Active),
        "the other key is untouched"
    );
    assert_eq!(again.outcome, Outcome::Duplicate, "same job, other wording");
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        attribute(&dead[0], "revoker-reason").as_deref(),
        Some("request_id_conflict")
    );
    assert_eq!(env.queue_depth().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_credentials_pause_the_worker_and_dead_letter_nothing() {
    let env = TestEnv::new("expired").await;
    let mut work = Vec::new();
    for i in 0..4 {
        let (user, keys) = env.user_with_keys(&format!("e{i}"), 1).await;
        work.push((user, keys[0].clone()));
    }
    // IAM and STS answer ExpiredToken, as after a failed IRSA token refresh.
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault(Fault::Status(403, iam_error("ExpiredToken")));
    let child = worker_command(&env, &proxy.url, 0).spawn().unwrap();
    let port = listening_port(&child).await;
    for (i, (user, key)) in work.iter().enumerate() {
        env.send(&job(&format!("expired-{i}"), user, key)).await;
    }

    let metrics = || http_body(port, "/metrics").unwrap_or_default();
    eventually("the worker to notice", Duration::from_secs(20), || {
        metric(&metrics(), "iam_key_revoker_credentials_failing") == 1.0
    })
    .await;
    assert_eq!(http_status(port, "/readyz"), Some(503));
    // The worker keeps trying (and failing) for a while; meanwhile nothing may happen to
    // the jobs.
    let failures = || {
        metrics()
            .lines()
            .filter(|l| l.starts_with("iam_key_revoker_credential_failures_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = failures();
    eventually("three more failed tries", Duration::from_secs(30), || {
        failures() >= before + 3.0
    })
    .await;
    assert_eq!(http_status(port, "/readyz"), Some(503), "still failing");
    assert_eq!(env.dead_letters_peek().await, 0, "nothing dead-lettered");
    for (user, key) in &work {
        assert_eq!(env.key_status(user, key).await, Some(StatusType::Active));
    }

    // The credentials work again: the worker resumes by itself.
    proxy.set_fault(Fault::None);
    eventually("every key revoked", Duration::from_secs(45), || {
        metric(
            &metrics(),
            "iam_key_revoker_jobs_total{outcome=\"deleted\",reason=\"none\",queue=\"main\"}",
        ) == 4.0
    })
    .await;
    assert_eq!(http_status(port, "/readyz"), Some(200));
    assert_eq!(
        metric(&metrics(), "iam_key_revoker_credentials_failing"),
        0.0
    );
    for (user, key) in &work {
        assert_eq!(env.key_status(user, key).await, None);
    }
    env.wait_until_drained(Duration::from_secs(10)).await;
    assert_eq!(env.dead_letters_peek().await, 0);

    sigterm(&child);
    let output = wait(child, Duration::from_secs(30)).await;
    assert!(output.status.success(), "{output:?}");
    let audit = audit_lines(&output);
    assert!(
        audit
            .iter()
            .any(|l| l["outcome"] == "retry" && l["reason"] == "credentials"),
        "{audit:?}"
    );
    assert!(
        audit.iter().all(|l| l["outcome"] != "rejected"),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_covers_a_slow_dead_letter_copy() {
    let mut env = TestEnv::new("slow-dlq").await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    // Every SQS call of the worker goes through the proxy; copies to the DLQ are slow.
    proxy.set_fault_for("SendMessage", Fault::Delay(Duration::from_secs(5)));
    env.config.sqs.visibility_timeout_seconds = 2;
    env.route_all_through(&proxy).await;
    let worker = env.worker().await;
    let direct = common::clients_for(&common::base_config()).await;
    common::send(&direct.sqs, &env.queue_url, "not a job").await;
    let message = direct
        .sqs
        .receive_message()
        .queue_url(&env.queue_url)
        .visibility_timeout(2)
        .wait_time_seconds(2)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
        .pop()
        .expect("the message");

    let handled = tokio::spawn(async move { worker.handle(message).await });
    let stolen = env.steal_for(Duration::from_millis(4_500)).await;
    let report = handled.await.unwrap();

    assert_eq!(
        stolen, 0,
        "never visible while its dead-letter copy was slow"
    );
    assert_eq!(report.outcome, Outcome::Rejected(Reason::InvalidMessage));
    assert!(report.settled);
    assert_eq!(env.dead_letters().await.len(), 1);
    assert_eq!(env.queue_depth().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_iam_write_still_audits_it_and_releases_the_waiting() {
    let env = TestEnv::new("hard-stop").await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault_for("DeleteAccessKey", Fault::Delay(Duration::from_secs(5)));
    let mut work = Vec::new();
    for i in 0..3 {
        let (user, keys) = env.user_with_keys(&format!("h{i}"), 1).await;
        env.send(&job(&format!("hard-{i}"), &user, &keys[0])).await;
        work.push((user, keys[0].clone()));
    }
    let child = worker_command(&env, &proxy.url, 0)
        .env("IAM_KEY_REVOKER__WORKER__MAX_IN_FLIGHT", "1")
        .env("IAM_KEY_REVOKER__WORKER__SHUTDOWN_GRACE_SECONDS", "1")
        .env("IAM_KEY_REVOKER__SQS__VISIBILITY_TIMEOUT_SECONDS", "600")
        .spawn()
        .unwrap();
    // One job in its DeleteAccessKey, two received and waiting for the one slot.
    env.wait_for_depth((0, 3), Duration::from_secs(20)).await;
    eventually("the delete under way", Duration::from_secs(10), || {
        proxy.count("DeleteAccessKey") == 1
    })
    .await;
    sigterm(&child);
    let output = wait(child, Duration::from_secs(20)).await;

    assert!(output.status.success(), "exit 0: {output:?}");
    let audit = audit_lines(&output);
    assert_eq!(audit.len(), 3, "{audit:?}");
    let deleted: Vec<_> = audit.iter().filter(|l| l["outcome"] == "deleted").collect();
    assert_eq!(deleted.len(), 1, "{audit:?}");
    let (user, key) = work
        .iter()
        .find(|(user, _)| deleted[0]["user_name"] == user.as_str())
        .expect("the audit line names the user");
    assert_eq!(deleted[0]["access_key_ids"], key.as_str());
    assert!(deleted[0]["request_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("hard-")));
    assert_eq!(env.key_status(user, key).await, None);
    let released = audit
        .iter()
        .filter(|l| l["outcome"] == "retry" && l["reason"] == "shutdown")
        .count();
    assert_eq!(released, 2, "{audit:?}");
    // Released at once, not after the 600 s visibility timeout: nothing lost.
    assert_eq!(env.queue_depth().await, (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_of_one_fifo_message_group_run_one_after_another() {
    let mut env = TestEnv::new("fifo").await;
    let sqs = &env.clients.sqs.clone();
    let fifo = |name: String| async move {
        sqs.create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap()
    };
    let dlq = fifo(format!("{}-dlq.fifo", env.name)).await;
    let queue = fifo(format!("{}.fifo", env.name)).await;
    let (alice, alice_keys) = env.user_with_keys("alice", 2).await;
    let (bob, bob_keys) = env.user_with_keys("bob", 1).await;
    // Alice's key 0 first deactivated, then deleted; then her key 1; bob's beside them.
    let deactivate = |id: &str, user: &str, key: &str| {
        json!({"request_id": id, "user_name": user, "access_key_id": key, "action": "deactivate"})
            .to_string()
    };
    let entries = [
        (alice.clone(), deactivate("fifo-a0", &alice, &alice_keys[0])),
        (alice.clone(), job("fifo-a1", &alice, &alice_keys[0])),
        (alice.clone(), job("fifo-a2", &alice, &alice_keys[1])),
        (bob.clone(), job("fifo-b0", &bob, &bob_keys[0])),
    ];
    let mut batch = sqs.send_message_batch().queue_url(&queue);
    for (i, (user, body)) in entries.iter().enumerate() {
        batch = batch.entries(
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .message_group_id(user)
                .message_deduplication_id(i.to_string())
                .build()
                .unwrap(),
        );
    }
    batch.send().await.unwrap();

    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault(Fault::Delay(Duration::from_millis(500)));
    env.route_iam_through(&proxy).await;
    env.config.sqs.queue_url = queue.clone();
    env.config.sqs.dead_letter_queue_url = Some(dlq);
    env.config.worker.max_in_flight = 8;
    let worker = Arc::new(
        Worker::build(env.settings(), env.clients.clone())
            .await
            .unwrap(),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&worker).run(shutdown.clone()));
    common::eventually_async("the four jobs finish", Duration::from_secs(30), || async {
        proxy.operations().len() >= 4 && common::queue_depth(sqs, &queue).await == (0, 0)
    })
    .await;
    shutdown.cancel();
    running.await.unwrap();

    let operations = proxy.operations();
    assert_eq!(operations.len(), 4, "one IAM call a job: {operations:?}");
    // Only bob's delete may come before alice's deactivation, which she sent first.
    let update = operations.iter().position(|o| o == "UpdateAccessKey");
    assert!(update.is_some_and(|i| i <= 1), "{operations:?}");
    assert_eq!(
        proxy.max_concurrent(),
        2,
        "alice's three jobs one after another, bob's beside them"
    );
    for key in &alice_keys {
        assert_eq!(env.key_status(&alice, key).await, None);
    }
    assert_eq!(env.key_status(&bob, &bob_keys[0]).await, None);
}

#[tokio::test]
async fn a_dead_letter_copy_that_fails_leaves_the_job_on_the_queue_as_retry() {
    let mut env = TestEnv::new("dlq-down").await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    proxy.set_fault_for("SendMessage", Fault::Status(500, String::new()));
    env.config.retry.max_elapsed_seconds = 1;
    env.config.retry.max_delay_ms = 200;
    let direct = env.clients.clone();
    env.route_all_through(&proxy).await;
    let worker = env.worker().await;
    common::send(&direct.sqs, &env.queue_url, "not a job").await;
    let message = common::receive(&direct.sqs, &env.queue_url, 1, 2)
        .await
        .pop()
        .unwrap();

    let report = worker.handle(message).await;

    assert_eq!(report.outcome, Outcome::Retry(Reason::TransientError));
    assert!(report.settled, "its retry delay was set");
    let detail = report.detail.unwrap_or_default();
    assert!(detail.contains("the dead-letter copy failed"), "{detail}");
    assert!(
        proxy.count("SendMessage") >= 2,
        "the copy was retried first"
    );
    assert_eq!(
        env.queue_depth().await,
        (0, 1),
        "still on the queue, invisible for the retry delay"
    );
    assert_eq!(env.dead_letters_peek().await, 0);
}
