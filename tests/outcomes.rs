//! One test per outcome and per safety invariant of the contract, each against the local
//! AWS emulator through the real SDK, with its own queues and users.

mod common;

use std::time::Duration;

use aws_sdk_iam::types::StatusType;
use common::proxy::{FaultProxy, Scope};
use common::{attribute, job, TestEnv};
use iam_key_revoker::config::Settings;
use iam_key_revoker::{Outcome, Reason, Worker};
use serde_json::json;

#[tokio::test]
async fn named_user_and_key_is_deleted_and_the_users_other_key_survives() {
    let env = TestEnv::new("delete").await;
    let (user, keys) = env.user_with_keys("alice", 2).await;
    let worker = env.worker().await;

    let report = worker
        .handle(env.deliver(&job("del-1", &user, &keys[0])).await)
        .await;

    assert_eq!(report.outcome, Outcome::Deleted);
    assert!(report.settled);
    assert_eq!(report.facts.access_key_ids, vec![keys[0].clone()]);
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        None,
        "the named key is gone"
    );
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Active),
        "the user's other key is untouched"
    );
    assert_eq!(env.queue_depth().await, (0, 0), "message deleted");
    assert!(env.dead_letters().await.is_empty());
}

#[tokio::test]
async fn happy_path_costs_exactly_one_iam_call() {
    let mut env = TestEnv::new("one-call").await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    env.route_iam_through(&proxy).await;
    let worker = env.worker().await;

    let report = worker
        .handle(env.deliver(&job("one", &user, &keys[0])).await)
        .await;

    assert_eq!(report.outcome, Outcome::Deleted);
    assert_eq!(proxy.operations(), vec!["DeleteAccessKey"]);
}

#[tokio::test]
async fn key_id_only_finds_the_owner_and_deletes() {
    let env = TestEnv::new("key-only").await;
    let (user, keys) = env.user_with_keys("bob", 2).await;
    let worker = env.worker().await;
    let body = json!({"request_id": "ko-1", "access_key_id": keys[1]}).to_string();

    let report = env.handle_job(&worker, env.deliver(&body).await).await;

    assert_eq!(report.outcome, Outcome::Deleted);
    assert_eq!(
        report.facts.user_name.as_deref(),
        Some(user.as_str()),
        "owner reported in the audit"
    );
    assert_eq!(env.key_status(&user, &keys[1]).await, None);
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );
    assert_eq!(env.queue_depth().await, (0, 0));
}

#[tokio::test]
async fn redelivered_request_id_is_duplicate_and_writes_nothing() {
    let env = TestEnv::new("dup").await;
    let (user, keys) = env.user_with_keys("carol", 2).await;
    let worker = env.worker().await;

    let first = worker
        .handle(env.deliver(&job("dup-1", &user, &keys[0])).await)
        .await;
    assert_eq!(first.outcome, Outcome::Deleted);
    // The same job delivered again (SQS delivers at least once). The same id for another
    // key is a conflict instead: tests/failure_semantics.rs.
    let second = worker
        .handle(env.deliver(&job("dup-1", &user, &keys[0])).await)
        .await;

    assert_eq!(second.outcome, Outcome::Duplicate);
    assert!(second.settled);
    assert_eq!(second.retries, 0);
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Active)
    );
    assert_eq!(env.queue_depth().await, (0, 0));
}

#[tokio::test]
async fn a_restarted_worker_ends_a_finished_job_already_absent() {
    let env = TestEnv::new("crash").await;
    let (user, keys) = env.user_with_keys("dave", 1).await;
    let body = job("crash-1", &user, &keys[0]);
    env.worker().await.handle(env.deliver(&body).await).await;

    // A fresh worker (no memory of the first) gets the job again, as after a crash
    // between the IAM delete and the message delete.
    let report = env.worker().await.handle(env.deliver(&body).await).await;

    assert_eq!(report.outcome, Outcome::AlreadyAbsent);
    assert_eq!(env.queue_depth().await, (0, 0));
}

/// With a user named, the user's own key list confirms the key is gone. A key-only job
/// has no such list: a key IAM cannot place is absent only once STS `GetAccessKeyInfo`
/// says it belongs to the account asked (the emulator answers the caller's account for a
/// key it does not know; a key of another account is never absent here, as the unit
/// tests of `aws::iam` replay from STS's documented answers).
#[tokio::test]
async fn missing_key_is_already_absent_in_its_own_account() {
    let env = TestEnv::new("absent").await;
    let (user, _) = env.user_with_keys("erin", 0).await;
    let worker = env.worker().await;

    let named = worker
        .handle(
            env.deliver(&job("abs-1", &user, "AKIA0000000000000000"))
                .await,
        )
        .await;
    let key_only = worker
        .handle(
            env.deliver(
                &json!({"request_id": "abs-2", "access_key_id": "AKIA0000000000000001"})
                    .to_string(),
            )
            .await,
        )
        .await;
    let no_user = worker
        .handle(
            env.deliver(&job("abs-3", "no-such-user-xyz", "AKIA0000000000000002"))
                .await,
        )
        .await;

    assert_eq!(named.outcome, Outcome::AlreadyAbsent);
    assert_eq!(key_only.outcome, Outcome::AlreadyAbsent);
    assert_eq!(no_user.outcome, Outcome::AlreadyAbsent);
    assert_eq!(env.queue_depth().await, (0, 0));
    assert!(env.dead_letters().await.is_empty());
}

#[tokio::test]
async fn another_users_key_is_owner_mismatch_and_survives() {
    let env = TestEnv::new("mismatch").await;
    let (alice, _) = env.user_with_keys("alice", 1).await;
    let (bob, bob_keys) = env.user_with_keys("bob", 1).await;
    let worker = env.worker().await;
    let body = job("mm-1", &alice, &bob_keys[0]);

    let report = worker.handle(env.deliver(&body).await).await;

    assert_eq!(report.outcome, Outcome::Rejected(Reason::OwnerMismatch));
    assert_eq!(
        env.key_status(&bob, &bob_keys[0]).await,
        Some(StatusType::Active),
        "bob's key still exists"
    );
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some(body.as_str()));
    assert_eq!(
        attribute(&dead[0], "revoker-reason").as_deref(),
        Some("owner_mismatch")
    );
    assert_eq!(env.queue_depth().await, (0, 0));
}

#[tokio::test]
async fn protected_users_and_keys_are_never_changed() {
    let mut env = TestEnv::new("protect").await;
    let (admin, admin_keys) = env.user_with_keys("admin", 1).await;
    let (user, keys) = env.user_with_keys("plain", 1).await;
    env.config.protect.users = vec!["*-ADMIN".to_owned()]; // case-insensitive
    env.config.protect.access_keys = vec![keys[0].clone()];
    let worker = env.worker().await;

    let by_user = worker
        .handle(env.deliver(&job("p-1", &admin, &admin_keys[0])).await)
        .await;
    let by_key = worker
        .handle(env.deliver(&job("p-2", &user, &keys[0])).await)
        .await;
    let by_owner = worker
        .handle(
            env.deliver(&json!({"request_id": "p-3", "access_key_id": admin_keys[0]}).to_string())
                .await,
        )
        .await;
    let all_keys = worker
        .handle(
            env.deliver(
                &json!({"request_id": "p-4", "user_name": user, "all_keys": true}).to_string(),
            )
            .await,
        )
        .await;

    for report in [&by_user, &by_key, &by_owner, &all_keys] {
        assert_eq!(
            report.outcome,
            Outcome::Rejected(Reason::Protected),
            "{report:?}"
        );
    }
    assert_eq!(
        env.key_status(&admin, &admin_keys[0]).await,
        Some(StatusType::Active)
    );
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 4);
    assert!(dead
        .iter()
        .all(|m| attribute(m, "revoker-reason").as_deref() == Some("protected")));
}

#[tokio::test]
async fn invalid_messages_are_dead_lettered_byte_identical_with_attributes() {
    let env = TestEnv::new("invalid").await;
    let worker = env.worker().await;
    let bodies = [
        "not json at all".to_owned(),
        "{\"request_id\": \"inv-1\", \"access_key_id\": \"lowercase-key-id-x\"}".to_owned(),
        "{\"request_id\":\"inv-2\",\"user_name\":\"u\"}".to_owned(),
        "{\"request_id\":\"inv-3\",\"access_key_id\":\"AKIA0000000000000000\",\"all_keys\":true,\"user_name\":\"u\"}".to_owned(),
        "{\"request_id\":\"inv-4\",\"access_key_id\":\"AKIA0000000000000000\",\"colour\":\"red\"}".to_owned(),
        "{\"request_id\":\"inv-5\",\"access_key_id\":\"AKIA0000000000000000\",\"action\":\"destroy\"}".to_owned(),
        "{\"access_key_id\":\"AKIA0000000000000000\"}".to_owned(),
        "  {\"request_id\" : \"inv-6\" ,\n \"access_key_id\": 42 }\t".to_owned(),
        "{\"request_id\":\"inv-7\",\"access_key_id\":\"AKIA0000000000000000\",\"account_id\":\"12345\"}".to_owned(),
        "{\"request_id\":\"inv-8\",\"access_key_id\":\"AKIA0000000000000000\",\"reason\":\"ünïcødé ✓\",\"user_name\":null}".to_owned(),
    ];
    for body in &bodies {
        let report = worker.handle(env.deliver(body).await).await;
        assert_eq!(
            report.outcome,
            Outcome::Rejected(Reason::InvalidMessage),
            "{body}"
        );
        assert!(report.settled);
    }
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), bodies.len());
    for body in &bodies {
        let copy = dead
            .iter()
            .find(|m| m.body() == Some(body.as_str()))
            .unwrap_or_else(|| panic!("byte-identical copy of {body:?}"));
        assert_eq!(
            attribute(copy, "revoker-outcome").as_deref(),
            Some("rejected")
        );
        assert_eq!(
            attribute(copy, "revoker-reason").as_deref(),
            Some("invalid_message")
        );
        assert!(attribute(copy, "revoker-detail").is_some_and(|d| !d.is_empty()));
        let expected_id = iam_key_revoker::job::salvage_request_id(body);
        assert_eq!(attribute(copy, "revoker-request-id"), expected_id, "{body}");
    }
    assert!(dead
        .iter()
        .any(|m| attribute(m, "revoker-request-id").as_deref() == Some("inv-1")));
    assert!(dead
        .iter()
        .any(|m| attribute(m, "revoker-request-id").is_none()));
    assert_eq!(env.queue_depth().await, (0, 0));
}

#[tokio::test]
async fn sns_envelope_is_accepted() {
    let env = TestEnv::new("sns").await;
    let (user, keys) = env.user_with_keys("frank", 1).await;
    let worker = env.worker().await;
    let envelope = json!({
        "Type": "Notification",
        "MessageId": "5b6f0e1c-0000-0000-0000-000000000000",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:leaked-keys",
        "Message": job("sns-1", &user, &keys[0]),
        "Timestamp": "2026-11-27T00:00:00.000Z",
        "SignatureVersion": "1",
    })
    .to_string();

    let report = worker.handle(env.deliver(&envelope).await).await;

    assert_eq!(report.outcome, Outcome::Deleted);
    assert_eq!(report.facts.request_id.as_deref(), Some("sns-1"));
    assert_eq!(env.key_status(&user, &keys[0]).await, None);
}

#[tokio::test]
async fn all_keys_revokes_every_key_of_the_user_only() {
    let env = TestEnv::new("all").await;
    let (user, keys) = env.user_with_keys("gone", 2).await;
    let (other, other_keys) = env.user_with_keys("stays", 1).await;
    let worker = env.worker().await;
    let body =
        json!({"request_id": "all-1", "user_name": user, "all_keys": true, "batch_id": "hr-42"});

    let report = worker.handle(env.deliver(&body.to_string()).await).await;

    assert_eq!(report.outcome, Outcome::Deleted);
    assert_eq!(report.facts.access_key_ids.len(), 2);
    assert_eq!(report.facts.batch_id.as_deref(), Some("hr-42"));
    for key in &keys {
        assert_eq!(env.key_status(&user, key).await, None);
    }
    assert_eq!(
        env.key_status(&other, &other_keys[0]).await,
        Some(StatusType::Active)
    );

    // Again for a user with no keys left, and for no user at all.
    let again = json!({"request_id": "all-2", "user_name": user, "all_keys": true}).to_string();
    assert_eq!(
        worker.handle(env.deliver(&again).await).await.outcome,
        Outcome::AlreadyAbsent
    );
    let nobody =
        json!({"request_id": "all-3", "user_name": "nobody-xyz-123", "all_keys": true}).to_string();
    assert_eq!(
        worker.handle(env.deliver(&nobody).await).await.outcome,
        Outcome::AlreadyAbsent
    );
}

#[tokio::test]
async fn deactivate_sets_inactive_and_keeps_the_key() {
    let env = TestEnv::new("deact").await;
    let (user, keys) = env.user_with_keys("henry", 2).await;
    let worker = env.worker().await;
    let body = json!({"request_id": "de-1", "user_name": user, "access_key_id": keys[0], "action": "deactivate"});

    let report = worker.handle(env.deliver(&body.to_string()).await).await;

    assert_eq!(report.outcome, Outcome::Deactivated);
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Inactive)
    );
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Active)
    );

    let all =
        json!({"request_id": "de-2", "user_name": user, "all_keys": true, "action": "deactivate"});
    assert_eq!(
        worker
            .handle(env.deliver(&all.to_string()).await)
            .await
            .outcome,
        Outcome::Deactivated
    );
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Inactive)
    );
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Inactive)
    );
}

#[tokio::test]
async fn jobs_for_another_account_are_rejected_without_a_role() {
    let env = TestEnv::new("acct").await;
    let (user, keys) = env.user_with_keys("ivan", 1).await;
    let worker = env.worker().await;

    let other = json!({"request_id": "ac-1", "user_name": user, "access_key_id": keys[0], "account_id": "222222222222"});
    let report = worker.handle(env.deliver(&other.to_string()).await).await;
    assert_eq!(
        report.outcome,
        Outcome::Rejected(Reason::CrossAccountDisabled)
    );
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );

    // The emulator's own account is the worker's: acted on.
    let own = json!({"request_id": "ac-2", "user_name": user, "access_key_id": keys[0], "account_id": "123456789012"});
    assert_eq!(
        worker
            .handle(env.deliver(&own.to_string()).await)
            .await
            .outcome,
        Outcome::Deleted
    );
}

#[tokio::test]
async fn without_redrive_a_message_received_too_often_is_dead_lettered() {
    let mut env = TestEnv::without_redrive("receives").await;
    env.config.sqs.max_receive_count = 2;
    let (user, keys) = env.user_with_keys("judy", 1).await;
    let worker = env.worker().await;
    assert!(!worker.queues().has_redrive_policy);
    let body = job("tm-1", &user, &keys[0]);
    env.send(&body).await;
    // Two deliveries that were never settled (as by crashing workers)...
    for _ in 0..2 {
        let m = env.receive_one().await;
        env.clients
            .sqs
            .change_message_visibility()
            .queue_url(&env.queue_url)
            .receipt_handle(m.receipt_handle().unwrap())
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }
    // ...so the third is one too many.
    let report = worker.handle(env.receive_one().await).await;

    assert_eq!(report.outcome, Outcome::Rejected(Reason::TooManyReceives));
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some(body.as_str()));
    assert_eq!(
        attribute(&dead[0], "revoker-request-id").as_deref(),
        Some("tm-1")
    );
    assert_eq!(
        attribute(&dead[0], "revoker-reason").as_deref(),
        Some("too_many_receives")
    );
}

#[tokio::test]
async fn dead_letter_queue_comes_from_config_or_redrive_policy_or_start_fails() {
    let env = TestEnv::new("dlq").await;
    let worker = env.worker().await;
    assert_eq!(
        worker.queues().dead_letter_queue_url,
        env.dlq_url,
        "discovered from RedrivePolicy"
    );
    assert!(worker.queues().has_redrive_policy);

    let mut config = env.config.clone();
    let bare = common::create_queue(&env.clients.sqs, &common::unique("bare"), None).await;
    config.sqs.queue_url = bare.clone();
    config.sqs.dead_letter_queue_url = None;
    let err = Worker::build(Settings::new(config.clone()).unwrap(), env.clients.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("sqs.dead_letter_queue_url"),
        "{err}"
    );

    config.sqs.dead_letter_queue_url = Some(env.dlq_url.clone());
    let worker = Worker::build(Settings::new(config).unwrap(), env.clients.clone())
        .await
        .unwrap();
    assert_eq!(worker.queues().dead_letter_queue_url, env.dlq_url);
    assert!(!worker.queues().has_redrive_policy);
}

#[tokio::test]
async fn iam_outage_ends_retry_with_a_growing_visibility_delay() {
    let mut env = TestEnv::new("retry").await;
    env.config.retry.max_elapsed_seconds = 1;
    env.config.retry.visibility_base_seconds = 1;
    let (user, keys) = env.user_with_keys("kim", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault(common::proxy::Fault::Status(503, String::new()));
    env.route_iam_through(&proxy).await;
    let worker = env.worker().await;
    let body = job("rt-1", &user, &keys[0]);

    let report = worker.handle(env.deliver(&body).await).await;

    assert_eq!(report.outcome, Outcome::Retry(Reason::TransientError));
    assert!(
        report.retries >= 2,
        "retried in-process first: {}",
        report.retries
    );
    assert!(proxy.count("DeleteAccessKey") >= 3);
    assert!(
        proxy.operations().iter().all(|o| o == "DeleteAccessKey"),
        "never looks up the owner on 5xx"
    );
    assert_eq!(
        env.queue_depth().await,
        (0, 1),
        "left on the queue, invisible"
    );
    assert!(env.dead_letters().await.is_empty());

    // After the delay (1 s on the first receive) the job comes back; IAM has recovered.
    proxy.set_fault(common::proxy::Fault::None);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let again = env.receive_one().await;
    assert_eq!(again.body(), Some(body.as_str()));
    let report = worker.handle(again).await;
    assert_eq!(report.outcome, Outcome::Deleted);
    assert_eq!(report.attempts, 2);
    assert_eq!(env.key_status(&user, &keys[0]).await, None);
}

#[tokio::test]
async fn a_hung_iam_endpoint_times_out_into_retry() {
    let mut env = TestEnv::new("hang").await;
    env.config.aws.request_timeout_seconds = 1;
    env.config.retry.max_elapsed_seconds = 1;
    let (user, keys) = env.user_with_keys("leo", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault(common::proxy::Fault::Hang);
    let direct_iam = env.clients.iam.clone();
    env.route_iam_through(&proxy).await;
    let worker = env.worker().await;

    let report = worker
        .handle(env.deliver(&job("hang-1", &user, &keys[0])).await)
        .await;

    assert_eq!(report.outcome, Outcome::Retry(Reason::TransientError));
    assert!(report
        .detail
        .as_deref()
        .unwrap_or_default()
        .contains("DeleteAccessKey"));
    assert!(
        report.duration < Duration::from_secs(15),
        "{:?}",
        report.duration
    );
    assert_eq!(
        common::key_status(&direct_iam, &user, &keys[0]).await,
        Some(StatusType::Active)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_of_one_request_id_act_once() {
    let mut env = TestEnv::new("concurrent").await;
    let (user, keys) = env.user_with_keys("mo", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault(common::proxy::Fault::Delay(Duration::from_millis(800)));
    env.route_iam_through(&proxy).await;
    let worker = std::sync::Arc::new(env.worker().await);
    let body = job("cc-1", &user, &keys[0]);
    let first = env.deliver(&body).await;
    let second = env.deliver(&body).await;

    let a = tokio::spawn({
        let w = worker.clone();
        async move { w.handle(first).await }
    });
    let b = tokio::spawn({
        let w = worker.clone();
        async move { w.handle(second).await }
    });
    let mut outcomes = vec![a.await.unwrap().outcome, b.await.unwrap().outcome];
    outcomes.sort_by_key(|o| o.as_str());

    assert_eq!(outcomes, vec![Outcome::Deleted, Outcome::Duplicate]);
    assert_eq!(proxy.count("DeleteAccessKey"), 1, "one IAM write for both");
    assert_eq!(
        env.queue_depth().await,
        (0, 0),
        "both messages settled at once"
    );
}
