//! The long-running loop against the emulator: draining a mixed batch, keeping a slow
//! job's message invisible past its visibility timeout, and shutting down cleanly.

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
    env.send(&job("drain-0", &users[0].0, &users[0].1[1])).await;
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
    // One slot: the worker cannot receive again while the job runs, so only the
    // competing consumer below could see the message if it became visible.
    env.config.worker.max_in_flight = 1;
    let (user, keys) = env.user_with_keys("slow", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault(Fault::Delay(Duration::from_secs(5)));
    let direct = env.clients.clone();
    let mut proxied = env.config.clone();
    proxied.aws.endpoint_url = Some(proxy.url.clone());
    env.clients.iam = common::clients_for(&proxied).await.iam;
    env.send(&job("hb-1", &user, &keys[0])).await;

    let worker = Arc::new(env.worker().await);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));

    // Once the worker holds the message, a competing consumer polls throughout the
    // job's 5 s: with the heartbeat the message stays invisible although its 2 s
    // visibility timeout passes twice.
    let held_by = tokio::time::Instant::now() + Duration::from_secs(10);
    while env.queue_depth().await != (0, 1) {
        assert!(
            tokio::time::Instant::now() < held_by,
            "the worker never took the message"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut stolen = 0;
    while tokio::time::Instant::now() < deadline {
        stolen += common::receive(&direct.sqs, &env.queue_url, 10, 0)
            .await
            .len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_holds_more_messages_than_max_in_flight() {
    let mut env = TestEnv::new("bound").await;
    env.config.worker.max_in_flight = 3;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault(Fault::Delay(Duration::from_secs(2)));
    let mut proxied = env.config.clone();
    proxied.aws.endpoint_url = Some(proxy.url.clone());
    env.clients.iam = common::clients_for(&proxied).await.iam;
    for i in 0..9 {
        let body = json!({"request_id": format!("b-{i}"), "access_key_id": "AKIA00000000000000B0"});
        env.send(&body.to_string()).await;
    }
    let worker = Arc::new(env.worker().await);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));

    let mut max_in_flight = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (visible, in_flight) = env.queue_depth().await;
        max_in_flight = max_in_flight.max(in_flight);
        if (visible, in_flight) == (0, 0) || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    running.await.unwrap();

    assert_eq!(env.queue_depth().await, (0, 0), "all nine done");
    assert!(
        max_in_flight >= 2,
        "jobs did run concurrently: {max_in_flight}"
    );
    assert!(
        max_in_flight <= 3,
        "held at most max_in_flight messages: {max_in_flight}"
    );
}
