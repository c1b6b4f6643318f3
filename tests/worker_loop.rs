//! The long-running loop against the emulator: draining a mixed batch, keeping a slow
//! job's message invisible past its visibility timeout, bounding the messages held and
//! the jobs worked at once, and what happens to a prefetched message.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::proxy::{Fault, FaultProxy, Scope};
use common::{job, TestEnv};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_drains_with_each_job_settled_once() {
    let mut env = TestEnv::new("drain").await;
    env.config.worker.max_in_flight = 8;
    let mut users = Vec::new();
    for i in 0..12 {
        users.push(env.user_with_keys(&format!("u{i}"), 2).await);
    }
    for (i, (user, keys)) in users.iter().enumerate() {
        env.send(&job(&format!("drain-{i}"), user, &keys[0])).await;
    }
    // A redelivered duplicate of a job, and two invalid messages.
    env.send(&job("drain-0", &users[0].0, &users[0].1[0])).await;
    env.send("{\"request_id\":\"bad-1\"}").await;
    env.send("garbage").await;

    let worker = Arc::new(env.worker().await);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    env.wait_until_drained(Duration::from_secs(30)).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("stops promptly")
        .unwrap();

    for (user, keys) in &users {
        assert_eq!(
            env.key_status(user, &keys[0]).await,
            None,
            "{user}'s named key deleted"
        );
        assert!(
            env.key_status(user, &keys[1]).await.is_some(),
            "{user}'s other key kept"
        );
    }
    let dead = env.dead_letters().await;
    assert_eq!(
        dead.len(),
        2,
        "only the two invalid messages are dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlasting_its_visibility_timeout_is_never_handed_out_again() {
    let mut env = TestEnv::new("heartbeat").await;
    env.config.sqs.visibility_timeout_seconds = 2;
    env.config.aws.request_timeout_seconds = 15;
    // One slot and no prefetch: the worker cannot receive again while the job runs, so
    // only the competing consumer below could see the message if it became visible.
    env.config.worker.max_in_flight = 1;
    env.config.worker.prefetch = 0;
    let (user, keys) = env.user_with_keys("slow", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault(Fault::Delay(Duration::from_secs(5)));
    env.route_iam_through(&proxy).await;
    env.send(&job("hb-1", &user, &keys[0])).await;

    let worker = Arc::new(env.worker().await);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));

    // Once the worker holds the message, a competing consumer polls throughout the
    // job's 5 s: with the heartbeat the message stays invisible although its 2 s
    // visibility timeout passes twice.
    env.wait_for_depth((0, 1), Duration::from_secs(10)).await;
    let stolen = env.steal_for(Duration::from_secs(4)).await;
    env.wait_until_drained(Duration::from_secs(10)).await;
    shutdown.cancel();
    running.await.unwrap();

    assert_eq!(
        stolen, 0,
        "the message was never visible to another consumer mid-job"
    );
    assert_eq!(env.key_status(&user, &keys[0]).await, None);
    assert_eq!(proxy.count("DeleteAccessKey"), 1, "worked exactly once");
}

/// Runs nine two-second jobs with `max_in_flight = 3` and `prefetch`, and returns the
/// most messages the worker held at once (as SQS counts them) and the most IAM requests
/// it had open at once (as the proxy in front of IAM counts them).
async fn nine_slow_jobs(prefetch: usize) -> (u64, usize) {
    let mut env = TestEnv::new("bound").await;
    env.config.worker.max_in_flight = 3;
    env.config.worker.prefetch = prefetch;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault(Fault::Delay(Duration::from_secs(2)));
    env.route_iam_through(&proxy).await;
    for i in 0..9 {
        let body = json!({"request_id": format!("b-{i}"), "access_key_id": "AKIA00000000000000B0"});
        env.send(&body.to_string()).await;
    }
    let worker = Arc::new(env.worker().await);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));

    let mut held = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (visible, in_flight) = env.queue_depth().await;
        held = held.max(in_flight);
        if (visible, in_flight) == (0, 0) || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    running.await.unwrap();
    assert_eq!(env.queue_depth().await, (0, 0), "all nine done");
    (held, proxy.max_concurrent())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prefetch_never_holds_more_messages_than_max_in_flight() {
    let (held, iam_at_once) = nine_slow_jobs(0).await;
    assert!(held >= 2, "jobs did run concurrently: {held}");
    assert!(held <= 3, "held at most max_in_flight messages: {held}");
    assert!(
        iam_at_once <= 3,
        "at most max_in_flight IAM calls at once: {iam_at_once}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_messages_wait_without_raising_the_jobs_at_once() {
    let (held, iam_at_once) = nine_slow_jobs(2).await;
    assert!(
        held >= 4,
        "messages were received ahead of free slots: {held}"
    );
    assert!(
        held <= 5,
        "held at most max_in_flight + prefetch messages: {held}"
    );
    assert!(iam_at_once >= 2, "jobs did run concurrently: {iam_at_once}");
    assert!(
        iam_at_once <= 3,
        "at most max_in_flight IAM calls at once: {iam_at_once}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetched_message_stays_invisible_while_it_waits_and_is_released_at_shutdown() {
    let mut env = TestEnv::new("waiting").await;
    env.config.sqs.visibility_timeout_seconds = 2;
    env.config.aws.request_timeout_seconds = 15;
    env.config.worker.max_in_flight = 1;
    env.config.worker.prefetch = 1;
    env.config.worker.shutdown_grace_seconds = 15;
    let (first_user, first) = env.user_with_keys("first", 1).await;
    let (second_user, second) = env.user_with_keys("second", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault(Fault::Delay(Duration::from_secs(5)));
    env.route_iam_through(&proxy).await;
    env.send(&job("wait-1", &first_user, &first[0])).await;
    env.send(&job("wait-2", &second_user, &second[0])).await;

    let worker = Arc::new(env.worker().await);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));

    // The worker holds both messages: one job runs (5 s at IAM), the other waits for
    // the one slot. A competing consumer polls for 4 s, past the 2 s visibility timeout
    // twice: the waiting message's heartbeat keeps it invisible too.
    env.wait_for_depth((0, 2), Duration::from_secs(10)).await;
    let stolen = env.steal_for(Duration::from_secs(4)).await;
    assert_eq!(stolen, 0, "neither message was visible to another consumer");

    // Shutdown while the first job still runs: the waiting message is released at once
    // for another worker, and the running job finishes.
    shutdown.cancel();
    common::eventually_async(
        "the waiting message released at shutdown",
        Duration::from_secs(1),
        || async { env.queue_depth().await.0 == 1 },
    )
    .await;
    running.await.unwrap();

    // Either message may have been the one that ran: SQS does not keep order.
    let first_gone = env.key_status(&first_user, &first[0]).await.is_none();
    let second_gone = env.key_status(&second_user, &second[0]).await.is_none();
    assert!(
        first_gone ^ second_gone,
        "the running job finished and the waiting one never started: {first_gone}, {second_gone}"
    );
    assert_eq!(proxy.count("DeleteAccessKey"), 1);
    assert_eq!(
        env.queue_depth().await,
        (1, 0),
        "its message is back on the queue"
    );
}
