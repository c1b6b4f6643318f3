//! Survival under faults, with the real binary: a SIGKILL mid-run, an endpoint outage,
//! sustained IAM throttling, and several workers on one queue. In each, every key ends
//! revoked, nothing is lost and nothing is dead-lettered.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::process::{Child, Command};
use std::time::Duration;

use common::process::{listening_port, sigterm, wait, worker_command};
use common::proxy::{iam_error, Fault, FaultProxy, Scope};
use common::{job, TestEnv};

/// Users with one key each, and one job per key on the queue.
async fn jobs(env: &TestEnv, count: usize) -> Vec<(String, String)> {
    let mut users = Vec::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(8) {
        let mut tasks = tokio::task::JoinSet::new();
        for i in chunk {
            let iam = env.clients.iam.clone();
            let user = format!("{}-{i}", env.name);
            tasks.spawn(async move { common::create_user_with_keys(&iam, &user, 1).await });
        }
        users.extend(
            tasks
                .join_all()
                .await
                .into_iter()
                .map(|(u, k)| (u, k[0].clone())),
        );
    }
    let bodies: Vec<String> = users
        .iter()
        .enumerate()
        .map(|(i, (u, k))| job(&format!("{}-{i}", env.name), u, k))
        .collect();
    for chunk in bodies.chunks(10) {
        env.send_batch(chunk).await;
    }
    users
}

/// A worker process whose logs go to a file (a pipe could fill and stall it).
fn spawn(cmd: &mut Command, log: &std::path::Path) -> Child {
    let file = File::create(log).unwrap();
    cmd.stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap()
}

async fn all_revoked(env: &TestEnv, users: &[(String, String)]) {
    for (user, key) in users {
        assert_eq!(
            env.key_status(user, key).await,
            None,
            "{user}'s key revoked"
        );
    }
    assert!(env.dead_letters().await.is_empty(), "nothing dead-lettered");
    assert_eq!(env.queue_depth().await, (0, 0), "the queue ends empty");
}

/// Final outcomes per request id in a worker's JSON log.
fn outcomes(log: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "Job finished")
        .map(|v| {
            (
                v["request_id"].as_str().unwrap().to_owned(),
                v["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_halfway_through_300_jobs_loses_nothing() {
    let env = TestEnv::new("sigkill").await;
    let users = jobs(&env, 300).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        ("IAM_KEY_REVOKER__SQS__VISIBILITY_TIMEOUT_SECONDS", "4"),
        ("IAM_KEY_REVOKER__WORKER__MAX_IN_FLIGHT", "16"),
    ];
    let mut first = worker_command(&env, &common::endpoint(), 0);
    first.envs(settings);
    let mut first = spawn(&mut first, &dir.path().join("first.log"));
    common::eventually_async("progress", Duration::from_secs(120), || async {
        let (visible, in_flight) = env.queue_depth().await;
        visible + in_flight <= 150
    })
    .await;
    first.kill().unwrap(); // SIGKILL: no drain, no release
    first.wait().unwrap();
    let (visible, in_flight) = env.queue_depth().await;
    assert!(visible + in_flight > 0, "killed with work left");

    let mut second = worker_command(&env, &common::endpoint(), 0);
    second.envs(settings);
    let second = spawn(&mut second, &dir.path().join("second.log"));
    env.wait_until_drained(Duration::from_secs(180)).await;
    sigterm(&second);
    assert!(wait(second, Duration::from_secs(30)).await.status.success());

    all_revoked(&env, &users).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_outage_mid_run_is_ridden_out() {
    let env = TestEnv::new("outage").await;
    let users = jobs(&env, 40).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    proxy.set_fault(Fault::Delay(Duration::from_millis(150)));
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = worker_command(&env, &proxy.url, 0);
    cmd.envs([
        (
            "IAM_KEY_REVOKER__METRICS__READY_MAX_RECEIVE_AGE_SECONDS",
            "3",
        ),
        ("IAM_KEY_REVOKER__RETRY__MAX_DELAY_MS", "1000"),
        ("IAM_KEY_REVOKER__RETRY__VISIBILITY_BASE_SECONDS", "1"),
        ("IAM_KEY_REVOKER__WORKER__MAX_IN_FLIGHT", "4"),
    ]);
    let mut child = spawn(&mut cmd, &dir.path().join("worker.log"));
    let port = listening_port(&child).await;
    let ready = || common::process::http_status(port, "/readyz");
    common::eventually_async(
        "progress before the outage",
        Duration::from_secs(60),
        || async { env.queue_depth().await.0 <= 30 },
    )
    .await;

    proxy.set_fault(Fault::Status(503, String::new()));
    let outage = tokio::time::Instant::now();
    let mut saw_not_ready = false;
    while outage.elapsed() < Duration::from_secs(10) {
        saw_not_ready |= ready() == Some(503);
        assert!(child.try_wait().unwrap().is_none(), "the process stays up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.set_fault(Fault::None);
    assert!(saw_not_ready, "/readyz reported 503 during the outage");

    env.wait_until_drained(Duration::from_secs(120)).await;
    assert_eq!(ready(), Some(200), "ready again");
    sigterm(&child);
    assert!(wait(child, Duration::from_secs(30)).await.status.success());
    all_revoked(&env, &users).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_iam_throttling_still_revokes_every_key() {
    let env = TestEnv::new("throttle").await;
    let users = jobs(&env, 50).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault(Fault::TenthsOf(
        3,
        Box::new(Fault::Status(400, iam_error("Throttling"))),
    ));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let mut cmd = worker_command(&env, &proxy.url, 0);
    cmd.envs([
        ("IAM_KEY_REVOKER__RETRY__INITIAL_DELAY_MS", "20"),
        ("IAM_KEY_REVOKER__RETRY__MAX_DELAY_MS", "200"),
    ]);
    let child = spawn(&mut cmd, &log);
    let port = listening_port(&child).await;

    env.wait_until_drained(Duration::from_secs(120)).await;
    let metrics = common::process::http_body(port, "/metrics").expect("metrics");
    sigterm(&child);
    assert!(wait(child, Duration::from_secs(30)).await.status.success());

    all_revoked(&env, &users).await;
    let outcomes = outcomes(&log);
    assert_eq!(outcomes.len(), 50);
    assert!(
        outcomes.iter().all(|(_, o)| o == "deleted"),
        "every job ends deleted"
    );
    let throttled_retries: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("iam_key_revoker_aws_retries_total{")
                && l.contains("error_code=\"Throttling\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        throttled_retries >= 10.0,
        "the retries are counted: {throttled_retries}"
    );
    assert!(
        proxy.count("DeleteAccessKey") > 50,
        "throttled requests were sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_one_queue_do_every_job_once() {
    let env = TestEnv::new("three").await;
    let users = jobs(&env, 90).await;
    let dir = tempfile::tempdir().unwrap();
    let logs: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("worker-{i}.log")))
        .collect();
    let children: Vec<Child> = logs
        .iter()
        .map(|log| {
            let mut cmd = worker_command(&env, &common::endpoint(), 0);
            cmd.env("IAM_KEY_REVOKER__WORKER__MAX_IN_FLIGHT", "8");
            spawn(&mut cmd, log)
        })
        .collect();

    env.wait_until_drained(Duration::from_secs(120)).await;
    for child in children {
        sigterm(&child);
        assert!(wait(child, Duration::from_secs(30)).await.status.success());
    }

    all_revoked(&env, &users).await;
    let mut deleted: HashMap<String, usize> = HashMap::new();
    let mut busy = 0;
    for log in &logs {
        let outcomes = outcomes(log);
        busy += usize::from(!outcomes.is_empty());
        for (request_id, outcome) in outcomes {
            if outcome == "deleted" {
                *deleted.entry(request_id).or_default() += 1;
            }
        }
    }
    assert_eq!(deleted.len(), 90, "every job deleted");
    assert!(deleted.values().all(|n| *n == 1), "none deleted twice");
    assert!(busy >= 2, "the work was shared");
}
