//! docs "The priority queue": urgent jobs on a second queue go before a bulk backlog on
//! the main one, for job slots and for IAM requests, with every guarantee of the main
//! queue (dead-lettering, dedup, shutdown). Against the local emulator through the real
//! SDK; time bounds here are generous, the exact figures are in BENCHMARKS.md.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{job, TestEnv};
use iam_key_revoker::aws::sqs::{Delivery, Lane, QueueSetupError};
use iam_key_revoker::worker::StartupError;
use iam_key_revoker::{Outcome, Worker};
use tokio_util::sync::CancellationToken;

/// Bulk jobs that each cost three IAM calls (the key is gone, so the user's key list and
/// the owner lookup are asked too): a backlog that takes a while at a low IAM rate.
fn backlog(env: &TestEnv, user: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            job(
                &format!("{}-bulk-{i}", env.name),
                user,
                &format!("AKIABULK{i:012}"),
            )
        })
        .collect()
}

async fn send_all(env: &TestEnv, bodies: &[String]) {
    for chunk in bodies.chunks(10) {
        env.send_batch(chunk).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_jobs_overtake_a_bulk_backlog() {
    let mut env = TestEnv::new("overtake").await;
    let (priority_url, _) = env.add_priority_queue().await;
    // The defaults: IAM at 10 requests/s, 16 jobs in flight, 10 prefetched.
    env.config.iam.max_requests_per_second = 10;
    env.config.worker.max_in_flight = 16;
    env.config.worker.prefetch = 10;
    let (bulk_user, _) = env.user_with_keys("bulk", 0).await;
    send_all(&env, &backlog(&env, &bulk_user, 60)).await;
    let mut leaked = Vec::new();
    for i in 0..3 {
        let (user, keys) = env.user_with_keys(&format!("leak{i}"), 1).await;
        leaked.push((user, keys[0].clone()));
    }
    let worker = Arc::new(env.worker().await);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&worker).run(shutdown.clone()));
    // The backlog is being drained at IAM's pace (60 jobs × 3 calls at 10/s: 18 s).
    common::eventually_async(
        "the backlog being drained",
        Duration::from_secs(10),
        || async { env.queue_depth().await.0 < 50 },
    )
    .await;

    let sent = Instant::now();
    for (i, (user, key)) in leaked.iter().enumerate() {
        common::send(
            &env.clients.sqs,
            &priority_url,
            &job(&format!("{}-urgent-{i}", env.name), user, key),
        )
        .await;
    }
    let mut revoked_after = Vec::new();
    for (user, key) in &leaked {
        let limit = Duration::from_secs(8).saturating_sub(sent.elapsed());
        common::eventually_async(&format!("urgent key {key} revoked"), limit, || async {
            env.key_status(user, key).await.is_none()
        })
        .await;
        revoked_after.push(sent.elapsed());
    }
    eprintln!("urgent jobs revoked after {revoked_after:?}");
    // On an idle worker each takes one IAM round trip; without priority for slots and
    // IAM requests they would wait for the 26 main-queue jobs the worker holds (about 5 s
    // here, 3 s for the first).
    assert!(
        revoked_after
            .iter()
            .all(|t| *t < Duration::from_millis(1_500)),
        "{revoked_after:?}"
    );
    let (visible, in_flight) = env.queue_depth().await;
    assert!(
        visible + in_flight >= 20,
        "the urgent jobs finished while the backlog still had {} jobs (urgent: {revoked_after:?})",
        visible + in_flight
    );

    // The backlog is not lost to the preemption: it drains completely.
    env.wait_until_drained(Duration::from_secs(60)).await;
    shutdown.cancel();
    running.await.unwrap();
    assert!(env.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_request_id_is_the_same_job_on_either_queue() {
    let mut env = TestEnv::new("dedup-lanes").await;
    let (priority_url, _) = env.add_priority_queue().await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    let worker = env.worker().await;
    let body = job("both-queues-1", &user, &keys[0]);

    let first = worker.handle(env.deliver(&body).await).await;
    assert_eq!(first.outcome, Outcome::Deleted);

    common::send(&env.clients.sqs, &priority_url, &body).await;
    let message = common::receive(&env.clients.sqs, &priority_url, 1, 5)
        .await
        .pop()
        .unwrap();
    let second = worker.handle_from(message, Lane::Priority).await;
    assert_eq!(second.outcome, Outcome::Duplicate);
    assert!(second.settled);
    assert_eq!(
        common::queue_depth(&env.clients.sqs, &priority_url).await,
        (0, 0),
        "deleted from the queue it came from"
    );
}

#[tokio::test]
async fn a_rejected_priority_job_goes_to_the_priority_dead_letter_queue() {
    let mut env = TestEnv::new("prio-dlq").await;
    let (priority_url, priority_dlq) = env.add_priority_queue().await;
    let worker = env.worker().await;
    assert_eq!(
        worker.priority_queues().unwrap().dead_letter_queue_url,
        priority_dlq,
        "found through its RedrivePolicy"
    );
    common::send(&env.clients.sqs, &priority_url, "not a job").await;
    let message = common::receive(&env.clients.sqs, &priority_url, 1, 5)
        .await
        .pop()
        .unwrap();

    let report = worker.handle_from(message, Lane::Priority).await;

    assert!(matches!(report.outcome, Outcome::Rejected(_)));
    let dead = common::receive(&env.clients.sqs, &priority_dlq, 10, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some("not a job"));
    assert!(env.dead_letters().await.is_empty(), "not the main one");
}

#[tokio::test]
async fn a_priority_queue_without_a_dead_letter_queue_refuses_to_start() {
    let mut env = TestEnv::new("prio-no-dlq").await;
    let url = common::create_queue(&env.clients.sqs, &format!("{}-prio", env.name), None).await;
    env.config.sqs.priority_queue_url = Some(url);

    let err = Worker::build(env.settings(), env.clients.clone())
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            StartupError::PriorityQueue(QueueSetupError::NoDeadLetterQueue { key, .. })
                if key == "sqs.priority_dead_letter_queue_url"
        ),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("sqs.priority_dead_letter_queue_url"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_the_messages_of_both_queues() {
    let mut env = TestEnv::new("prio-shutdown").await;
    let (priority_url, _) = env.add_priority_queue().await;
    env.config.iam.max_requests_per_second = 2;
    env.config.worker.max_in_flight = 2;
    env.config.worker.prefetch = 4;
    env.config.worker.shutdown_grace_seconds = 1;
    env.config.sqs.visibility_timeout_seconds = 600;
    let (user, _) = env.user_with_keys("u", 0).await;
    send_all(&env, &backlog(&env, &user, 20)).await;
    let urgent: Vec<String> = (0..6)
        .map(|i| {
            job(
                &format!("{}-u{i}", env.name),
                &user,
                &format!("AKIAURGENT{i:010}"),
            )
        })
        .collect();
    for body in &urgent {
        common::send(&env.clients.sqs, &priority_url, body).await;
    }
    let worker = Arc::new(env.worker().await);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&worker).run(shutdown.clone()));
    // Stop once the worker is under way: some job has finished, the backlog has not.
    common::eventually_async("a first job finished", Duration::from_secs(20), || async {
        let (mv, mf) = env.queue_depth().await;
        let (pv, pf) = common::queue_depth(&env.clients.sqs, &priority_url).await;
        mv + mf + pv + pf < 26
    })
    .await;
    shutdown.cancel();
    running.await.unwrap();

    // Nothing stays invisible for the 600 s visibility timeout: what was not finished is
    // back on its own queue at once.
    let (main_visible, main_in_flight) = env.queue_depth().await;
    let (prio_visible, prio_in_flight) = common::queue_depth(&env.clients.sqs, &priority_url).await;
    assert_eq!((main_in_flight, prio_in_flight), (0, 0));
    assert!(main_visible > 0, "the backlog was not finished");
    // The priority queue's messages were taken (finished, or released with their receive
    // counted), not left untouched.
    let again = common::receive(&env.clients.sqs, &priority_url, 10, 1).await;
    let received_before = again
        .iter()
        .any(|m| Delivery::of(m, Lane::Priority).receive_count >= 2);
    assert!(
        prio_visible < 6 || received_before,
        "the priority loop took none of its {prio_visible} messages"
    );
    assert!(
        main_visible + prio_visible < 26,
        "some jobs finished: {main_visible} + {prio_visible}"
    );
}
