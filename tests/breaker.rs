//! The breaker (docs, "The breaker") against the emulator's DynamoDB, SQS and IAM: three
//! replicas and a burst larger than the limit change exactly the limit's number of keys
//! and hold the rest; held jobs survive a restart and are revoked once approved; a paused
//! fleet changes nothing and resumes with every job worked; the table unreachable fails
//! closed for bulk jobs and open for security events.

mod common;

use std::process::Child;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_iam::types::StatusType;
use common::process::{self, audit_lines, http_get, listening_port, sigterm, wait};
use common::proxy::{FaultProxy, Scope};
use common::{eventually_async, job, TestEnv};
use iam_key_revoker::aws::retry::RetryCounter;
use iam_key_revoker::aws::sqs::Lane;
use iam_key_revoker::breaker::admin::{Admin, Selector};
use iam_key_revoker::breaker::config::BreakerSection;
use iam_key_revoker::breaker::{table, Breaker, Take};
use iam_key_revoker::{Outcome, Reason};

/// The emulator's default account: the worker's own.
const OWN_ACCOUNT: &str = "123456789012";

async fn create_table(env: &TestEnv) -> String {
    let name = format!("{}-breaker", env.name);
    env.clients
        .dynamodb()
        .create_table()
        .table_name(&name)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create the breaker's table");
    name
}

fn admin(env: &TestEnv, table: &str) -> Admin {
    Admin::new(
        env.clients.dynamodb(),
        table.to_owned(),
        env.settings().backoff,
    )
}

/// `iam-key-revoker` with the environment's queue and the breaker's table, limits for the
/// main queue of `per_account` keys per account.
fn command(env: &TestEnv, table: &str, per_account: u32) -> std::process::Command {
    let endpoint = env.config.aws.endpoint_url.clone().unwrap();
    let mut cmd = process::command(&endpoint, &env.queue_url);
    cmd.env("IAM_KEY_REVOKER__BREAKER__TABLE_NAME", table)
        .env("IAM_KEY_REVOKER__BREAKER__POLL_SECONDS", "1")
        .env(
            "IAM_KEY_REVOKER__BREAKER__MAIN__MAX_KEYS_PER_ACCOUNT",
            per_account.to_string(),
        )
        .env("IAM_KEY_REVOKER__SQS__WAIT_TIME_SECONDS", "1")
        .env("IAM_KEY_REVOKER__METRICS__LISTEN", "127.0.0.1:0");
    if let Some(key) = &env.config.continuation.mac_key_id {
        cmd.env("IAM_KEY_REVOKER__CONTINUATION__MAC_KEY_ID", key);
    }
    cmd
}

fn replica(env: &TestEnv, table: &str, per_account: u32) -> Child {
    command(env, table, per_account)
        .arg("run")
        .spawn()
        .expect("the worker starts")
}

/// Runs a command of the binary to its end.
async fn run(env: &TestEnv, table: &str, args: &[&str]) -> std::process::Output {
    let child = command(env, table, 4)
        .args(args)
        .spawn()
        .expect("the command starts");
    wait(child, Duration::from_secs(60)).await
}

async fn stop(children: Vec<Child>) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for child in &children {
        sigterm(child);
    }
    for child in children {
        let output = wait(child, Duration::from_secs(30)).await;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        lines.extend(audit_lines(&output));
    }
    lines
}

async fn active_keys(env: &TestEnv, keys: &[(String, String)]) -> usize {
    let mut active = 0;
    for (user, key) in keys {
        if env.key_status(user, key).await == Some(StatusType::Active) {
            active += 1;
        }
    }
    active
}

/// Routes the test's AWS requests through a proxy that forwards DynamoDB's one at a time,
/// as DynamoDB isolates them and the emulator does not (tests/common/proxy.rs).
async fn isolated(env: &mut TestEnv) -> FaultProxy {
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    proxy.serialize_matching("DynamoDB_20120810.");
    env.route_all_through(&proxy).await;
    proxy
}

/// Ten users with a key each, their jobs on the queue.
async fn burst(env: &TestEnv, prefix: &str) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..10 {
        let (user, ids) = env.user_with_keys(&format!("{prefix}{i}"), 1).await;
        bodies.push(job(&format!("{prefix}-{i}"), &user, &ids[0]));
        keys.push((user, ids[0].clone()));
    }
    env.send_batch(&bodies).await;
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_change_exactly_the_limit_hold_the_rest_and_approval_releases_them() {
    let mut env = TestEnv::new("breaker-burst").await;
    let _proxy = isolated(&mut env).await;
    let table = create_table(&env).await;
    let keys = burst(&env, "burst").await;
    let replicas: Vec<Child> = (0..3).map(|_| replica(&env, &table, 4)).collect();
    let admin = admin(&env, &table);
    let retries = RetryCounter::default();
    eventually_async(
        "every job deleted or held",
        Duration::from_secs(60),
        || async {
            env.queue_depth().await == (0, 0)
                && admin.held(false, &retries).await.unwrap().len() == 6
        },
    )
    .await;
    assert_eq!(
        active_keys(&env, &keys).await,
        6,
        "exactly the limit changed"
    );
    assert_eq!(
        admin
            .counted(Lane::Main, Some(OWN_ACCOUNT), 3600, &retries)
            .await
            .unwrap(),
        4
    );
    let lines = stop(replicas).await;
    let count = |outcome: &str| lines.iter().filter(|l| l["outcome"] == outcome).count();
    assert_eq!(count("deleted"), 4, "{lines:?}");
    assert_eq!(count("held"), 6, "{lines:?}");
    assert!(lines
        .iter()
        .filter(|l| l["outcome"] == "held")
        .all(|l| l["reason"] == "account_limit"));

    // Nothing lost across a restart: the holds are in the table, not in a process.
    let restarted = replica(&env, &table, 4);
    let listed = run(&env, &table, &["held"]).await;
    assert!(listed.status.success());
    let held: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(held.len(), 6, "{held:?}");
    assert!(held
        .iter()
        .all(|h| h["limit"] == "account" && h["keys"] == 1));

    // A discard of one: never sent, never worked.
    let first = held[0]["request_id"].as_str().unwrap().to_owned();
    let discarded = run(
        &env,
        &table,
        &[
            "discard",
            "--request-id",
            &first,
            "--reason",
            "known test key",
        ],
    )
    .await;
    assert!(
        discarded.status.success(),
        "{}",
        String::from_utf8_lossy(&discarded.stderr)
    );
    let approved = run(
        &env,
        &table,
        &[
            "approve",
            "--account-id",
            OWN_ACCOUNT,
            "--reason",
            "offboarding batch 7",
        ],
    )
    .await;
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&approved.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5);
    assert!(records.iter().all(|r| r["action"] == "approved"
        && r["by"].as_str().unwrap().starts_with("arn:aws:")
        && r["reason"] == "offboarding batch 7"));
    eventually_async(
        "the approved jobs revoked over the limit",
        Duration::from_secs(30),
        || async { active_keys(&env, &keys).await == 1 },
    )
    .await;
    let lines = stop(vec![restarted]).await;
    assert_eq!(
        lines.iter().filter(|l| l["outcome"] == "deleted").count(),
        5,
        "{lines:?}"
    );
    assert!(admin.held(false, &retries).await.unwrap().is_empty());
    let discarded_key = keys
        .iter()
        .zip(0..)
        .find(|(_, i)| format!("burst-{i}") == first)
        .map(|(k, _)| k.clone())
        .unwrap();
    assert_eq!(
        env.key_status(&discarded_key.0, &discarded_key.1).await,
        Some(StatusType::Active),
        "the discarded job changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_fleet_changes_nothing_while_jobs_arrive_and_resumes_with_every_job_worked() {
    let env = TestEnv::new("breaker-pause").await;
    let table = create_table(&env).await;
    let replicas: Vec<Child> = (0..2).map(|_| replica(&env, &table, 100)).collect();
    let mut ports = Vec::new();
    for r in &replicas {
        ports.push(listening_port(r).await);
    }
    let paused = run(&env, &table, &["pause", "--reason", "bad CSV from HR"]).await;
    assert!(
        paused.status.success(),
        "{}",
        String::from_utf8_lossy(&paused.stderr)
    );
    for port in &ports {
        eventually_async(
            "every replica not ready, saying why",
            Duration::from_secs(10),
            || async {
                http_get(*port, "/readyz").is_some_and(|(status, body)| {
                    status == 503 && body.contains("paused") && body.contains("bad CSV from HR")
                })
            },
        )
        .await;
        let metrics = http_get(*port, "/metrics").unwrap().1;
        assert_eq!(
            process::metric(&metrics, "iam_key_revoker_breaker_paused{queue=\"main\"}"),
            1.0
        );
    }
    // A long poll that began before the pause was read may still bring messages (they
    // would be kept, their jobs waiting): let those end first.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let keys = burst(&env, "paused").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        active_keys(&env, &keys).await,
        10,
        "nothing changed while paused"
    );
    assert_eq!(
        env.queue_depth().await,
        (10, 0),
        "no receive spent while paused"
    );
    let resumed = run(&env, &table, &["resume"]).await;
    assert!(resumed.status.success());
    eventually_async(
        "every job worked after resume",
        Duration::from_secs(30),
        || async { active_keys(&env, &keys).await == 0 },
    )
    .await;
    for port in &ports {
        eventually_async("ready again", Duration::from_secs(10), || async {
            http_get(*port, "/readyz").is_some_and(|(status, _)| status == 200)
        })
        .await;
    }
    let lines = stop(replicas).await;
    assert_eq!(
        lines.iter().filter(|l| l["outcome"] == "deleted").count(),
        10
    );
}

fn breaker(env: &TestEnv, table: &str, config: BreakerSection) -> Breaker {
    Breaker::new(
        env.clients.dynamodb(),
        table.to_owned(),
        config,
        env.settings().backoff,
    )
}

#[tokio::test]
async fn racing_takes_never_overshoot_and_a_job_in_flight_is_stopped_by_a_pause() {
    let mut env = TestEnv::new("breaker-race").await;
    let proxy = isolated(&mut env).await;
    let table = create_table(&env).await;
    let mut config = BreakerSection::default();
    config.main.max_keys_per_account = 7;
    config.main.max_keys = 9;
    let breaker = std::sync::Arc::new(breaker(&env, &table, config));
    let retries = std::sync::Arc::new(RetryCounter::default());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (breaker, retries) = (breaker.clone(), retries.clone());
        let account = if i % 2 == 0 {
            "111122223333"
        } else {
            "444455556666"
        };
        tasks.spawn(async move { breaker.take(Lane::Main, account, 1, false, &retries).await });
    }
    let mut taken = 0;
    let mut over = 0;
    while let Some(take) = tasks.join_next().await {
        match take.unwrap() {
            Take::Taken(_) => taken += 1,
            Take::Over(..) => over += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((taken, over), (9, 11), "the fleet's limit, exactly");
    assert!(proxy.max_concurrent() > 1, "the takes raced");
    // The priority queue counts apart.
    assert!(matches!(
        breaker
            .take(Lane::Priority, "111122223333", 2, false, &retries)
            .await,
        Take::Taken(_)
    ));
    let admin = admin(&env, &table);
    admin
        .set_pause(Lane::Priority, Some("incident review"), "tester", &retries)
        .await
        .unwrap();
    assert!(
        matches!(
            breaker
                .take(Lane::Priority, "111122223333", 1, true, &retries)
                .await,
            Take::Paused
        ),
        "a pause stops even an approved job's take"
    );
    admin
        .set_pause(Lane::Priority, None, "tester", &retries)
        .await
        .unwrap();
    match breaker
        .take(Lane::Priority, "111122223333", 1, false, &retries)
        .await
    {
        Take::Taken(units) => {
            breaker.give_back(&units, 0, &retries).await;
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        admin
            .counted(Lane::Priority, Some("111122223333"), 3600, &retries)
            .await
            .unwrap(),
        2,
        "a unit taken for a write that did not happen is given back"
    );
}

#[tokio::test]
async fn buckets_past_the_window_are_rolled_out_before_the_limit_is_compared() {
    let env = TestEnv::new("breaker-roll").await;
    let table = create_table(&env).await;
    let mut config = BreakerSection::default();
    config.main.max_keys_per_account = 3;
    config.main.max_keys = 3;
    let breaker = breaker(&env, &table, config);
    let retries = RetryCounter::default();
    // Three keys changed two hours ago, as the table would hold them had nobody taken a
    // unit since: the window counts none of them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old = (now - 7200) / 60;
    for account in [Some("111122223333"), None] {
        env.clients
            .dynamodb()
            .put_item()
            .table_name(&table)
            .item("pk", table::text(table::count_key(Lane::Main, account)))
            .item("total", table::num(3))
            .item("oldest", table::num(old))
            .item(format!("b{old}"), table::num(3))
            .send()
            .await
            .unwrap();
    }
    for _ in 0..3 {
        assert!(matches!(
            breaker
                .take(Lane::Main, "111122223333", 1, false, &retries)
                .await,
            Take::Taken(_)
        ));
    }
    match breaker
        .take(Lane::Main, "111122223333", 1, false, &retries)
        .await
    {
        Take::Over(_, detail) => {
            assert!(detail.contains("3 changed in the last 3600 s"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    let item = env
        .clients
        .dynamodb()
        .get_item()
        .table_name(&table)
        .key("pk", table::text(table::count_key(Lane::Main, None)))
        .send()
        .await
        .unwrap();
    let item = item.item().unwrap();
    assert_eq!(table::n(item, "total"), Some(3));
    assert!(
        !item.contains_key(&format!("b{old}")),
        "the old bucket is gone"
    );

    // Counted under a two-hour window (two-minute buckets), read under a one-hour one:
    // what counted there still counts, never less.
    let other = table::count_key(Lane::Priority, Some("111122223333"));
    let recent = (now - 600) / 120;
    let aged = (now - 7400) / 120;
    env.clients
        .dynamodb()
        .put_item()
        .table_name(&table)
        .item("pk", table::text(other))
        .item("total", table::num(5))
        .item("oldest", table::num(aged))
        .item("w", table::num(120))
        .item(format!("b{recent}"), table::num(2))
        .item(format!("b{aged}"), table::num(3))
        .send()
        .await
        .unwrap();
    let mut config = BreakerSection::default();
    config.priority.max_keys_per_account = 4;
    let rewidth = self::breaker(&env, &table, config);
    assert!(
        matches!(
            rewidth
                .take(Lane::Priority, "111122223333", 2, false, &retries)
                .await,
            Take::Taken(_)
        ),
        "the five counted in the old window's buckets, of which two are still inside it"
    );
    assert!(matches!(
        rewidth
            .take(Lane::Priority, "111122223333", 1, false, &retries)
            .await,
        Take::Over(..)
    ));
}

/// With `breaker.main.max_keys_per_account = 1`: a job that uses the account's one unit.
async fn fill_the_account(env: &TestEnv, worker: &iam_key_revoker::Worker, request_id: &str) {
    let (user, keys) = env.user_with_keys("first", 1).await;
    let report = env
        .handle_job(worker, env.deliver(&job(request_id, &user, &keys[0])).await)
        .await;
    assert_eq!(report.outcome, Outcome::Deleted);
}

/// An operator's approval of the one held job `request_id`.
async fn approve(admin: &Admin, request_id: &str) {
    let retries = RetryCounter::default();
    let held = admin
        .select(&Selector::RequestId(request_id.into()), &retries)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert!(admin
        .approve(
            &held[0],
            "arn:aws:iam::123456789012:user/op",
            "checked",
            &retries
        )
        .await
        .unwrap());
}

#[tokio::test]
async fn an_approval_releases_only_the_body_that_was_held() {
    let mut env = TestEnv::new("breaker-approval").await;
    let table = create_table(&env).await;
    env.config.breaker.table_name = Some(table.clone());
    env.config.breaker.main.max_keys_per_account = 1;
    let worker = env.worker().await;
    fill_the_account(&env, &worker, "a-1").await;
    let (user, keys) = env.user_with_keys("held", 2).await;
    let held_body = job("a-2", &user, &keys[0]);
    let report = env.handle_job(&worker, env.deliver(&held_body).await).await;
    assert_eq!(report.outcome, Outcome::Held(Reason::AccountLimit));
    assert!(report
        .detail
        .as_deref()
        .unwrap()
        .contains("approve --request-id a-2"));
    assert_eq!(
        env.queue_depth().await,
        (0, 0),
        "held in the table, not on the queue"
    );
    // The same request again: held already, counted once.
    let report = env.handle_job(&worker, env.deliver(&held_body).await).await;
    assert_eq!(report.outcome, Outcome::Held(Reason::AlreadyHeld));

    let admin = admin(&env, &table);
    approve(&admin, "a-2").await;
    // A producer reusing the approved request id for another key gets no approval, and
    // cannot replace the approved hold: a conflict, kept in the dead-letter queue.
    let forged = job("a-2", &user, &keys[1]);
    let report = env.handle_job(&worker, env.deliver(&forged).await).await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::RequestIdConflict));
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Active)
    );
    assert_eq!(env.dead_letters().await.len(), 1);
    // The approved body itself is worked over the limit, once.
    let report = env.handle_job(&worker, env.deliver(&held_body).await).await;
    assert_eq!(report.outcome, Outcome::Deleted, "{report:?}");
    assert_eq!(env.key_status(&user, &keys[0]).await, None);
    // Sent again (a replay), its approval is spent: held for a person again, by another
    // replica that does not remember the request.
    let other = env.worker().await;
    let report = env.handle_job(&other, env.deliver(&held_body).await).await;
    assert_eq!(
        report.outcome,
        Outcome::Held(Reason::AccountLimit),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_pause_read_while_a_job_works_stops_its_next_key_write() {
    let mut env = TestEnv::new("breaker-midjob").await;
    let table = create_table(&env).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    env.route_iam_and_sts_through(&proxy).await;
    env.config.breaker.table_name = Some(table.clone());
    env.config.breaker.poll_seconds = 1;
    let (user, keys) = env.user_with_keys("two", 2).await;
    // Each delete takes two seconds: the pause is read during the first.
    for key in &keys {
        proxy.set_fault_matching(
            &[
                "Action=DeleteAccessKey".to_owned(),
                format!("AccessKeyId={key}"),
            ],
            common::proxy::Fault::Delay(Duration::from_secs(2)),
        );
    }
    let worker = std::sync::Arc::new(env.worker().await);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(std::sync::Arc::clone(&worker).run(shutdown.clone()));
    env.send(
        &serde_json::json!({"request_id": "mid-1", "user_name": user, "all_keys": true})
            .to_string(),
    )
    .await;
    eventually_async(
        "the first delete under way",
        Duration::from_secs(10),
        || async {
            !proxy
                .requests_containing("Action=DeleteAccessKey")
                .is_empty()
        },
    )
    .await;
    let admin = admin(&env, &table);
    let retries = RetryCounter::default();
    admin
        .set_pause(Lane::Main, Some("stop"), "tester", &retries)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut active = 0;
    for key in &keys {
        if env.key_status(&user, key).await == Some(StatusType::Active) {
            active += 1;
        }
    }
    assert_eq!(active, 1, "the second key waits for the resume");
    assert_eq!(proxy.requests_containing("Action=DeleteAccessKey").len(), 1);
    admin
        .set_pause(Lane::Main, None, "tester", &retries)
        .await
        .unwrap();
    eventually_async(
        "the job finished after resume",
        Duration::from_secs(15),
        || async {
            env.key_status(&user, &keys[0]).await.is_none()
                && env.key_status(&user, &keys[1]).await.is_none()
        },
    )
    .await;
    shutdown.cancel();
    running.await.unwrap();
}

async fn priority_job(env: &TestEnv, worker: &iam_key_revoker::Worker, body: &str) -> Outcome {
    let priority = env.config.sqs.priority_queue_url.clone().unwrap();
    common::send(&env.clients.sqs, &priority, body).await;
    let message = common::receive(&env.clients.sqs, &priority, 1, 2)
        .await
        .pop()
        .unwrap();
    worker.handle_from(message, Lane::Priority).await.outcome
}

#[tokio::test]
async fn the_table_unreachable_fails_closed_for_bulk_jobs_and_open_for_security_events() {
    let mut env = TestEnv::new("breaker-down").await;
    env.add_priority_queue().await;
    let table = create_table(&env).await;
    // DynamoDB answers 500 to everything: the table cannot be reached.
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault_matching(
        &["DynamoDB_20120810.".to_owned()],
        common::proxy::Fault::Status(
            500,
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected"}"#.to_owned(),
        ),
    );
    env.route_all_through(&proxy).await;
    env.config.breaker.table_name = Some(table);
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("down", 2).await;
    let report = env
        .handle_job(&worker, env.deliver(&job("d-1", &user, &keys[0])).await)
        .await;
    assert_eq!(report.outcome, Outcome::Retry(Reason::BreakerUnavailable));
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );
    assert_eq!(
        priority_job(&env, &worker, &job("d-2", &user, &keys[1])).await,
        Outcome::Deleted,
        "a leak waits for nobody"
    );

    // A table that refuses (here: not there) is a configuration to fix: nothing is
    // changed uncounted, on either queue.
    let mut env = TestEnv::new("breaker-refused").await;
    env.add_priority_queue().await;
    env.config.breaker.table_name = Some(format!("{}-missing", env.name));
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("refused", 1).await;
    assert_eq!(
        priority_job(&env, &worker, &job("r-1", &user, &keys[0])).await,
        Outcome::Retry(Reason::BreakerUnavailable)
    );
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );
}

#[tokio::test]
async fn enqueue_refuses_a_batch_over_a_limit_and_plan_says_what_it_would_trip() {
    let env = TestEnv::new("breaker-batch").await;
    let table = create_table(&env).await;
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    let mut keys = Vec::new();
    for i in 0..5 {
        let (user, ids) = env.user_with_keys(&format!("batch{i}"), 1).await;
        lines.push_str(&format!(
            "{}\n",
            serde_json::json!({"request_id": format!("b-{i}"), "user_name": user, "access_key_id": ids[0], "batch_id": "leavers-7"})
        ));
        keys.push((user, ids[0].clone()));
    }
    let file = dir.path().join("leavers.jsonl");
    std::fs::write(&file, lines).unwrap();
    let file = file.to_str().unwrap();

    // Three already counted in the window for the worker's own account.
    let breaker = breaker(&env, &table, {
        let mut c = BreakerSection::default();
        c.main.max_keys_per_account = 4;
        c
    });
    let retries = RetryCounter::default();
    assert!(matches!(
        breaker
            .take(Lane::Main, OWN_ACCOUNT, 3, false, &retries)
            .await,
        Take::Taken(_)
    ));
    let plan = run(&env, &table, &["plan", "--file", file]).await;
    let said = String::from_utf8_lossy(&plan.stderr);
    assert!(plan.status.success(), "{said}");
    assert!(
        said.contains("breaker: account (the worker's own account): 5 key(s) in this batch exceed breaker.main.max_keys_per_account = 4"),
        "{said}"
    );

    let refused = run(&env, &table, &["enqueue", "--file", file]).await;
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(
        said.contains("Nothing was sent") && said.contains("--over-cap"),
        "{said}"
    );
    assert_eq!(env.queue_depth().await, (0, 0));

    let sent = run(&env, &table, &["enqueue", "--file", file, "--over-cap"]).await;
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(env.queue_depth().await, (5, 0));
    assert_eq!(active_keys(&env, &keys).await, 5, "enqueue changes nothing");
}

#[tokio::test]
async fn an_approved_job_that_goes_round_again_keeps_its_approval() {
    let mut env = TestEnv::new("breaker-again").await;
    let table = create_table(&env).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    env.route_iam_and_sts_through(&proxy).await;
    env.config.breaker.table_name = Some(table.clone());
    env.config.breaker.main.max_keys_per_account = 1;
    let worker = env.worker().await;
    fill_the_account(&env, &worker, "g-1").await;
    let (user, keys) = env.user_with_keys("again", 1).await;
    let body = job("g-2", &user, &keys[0]);
    let report = env.handle_job(&worker, env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::Held(Reason::AccountLimit));
    let admin = admin(&env, &table);
    let retries = RetryCounter::default();
    approve(&admin, "g-2").await;
    // IAM fails the approved job's delete for the whole retry budget: it goes round again.
    let delete = [
        "Action=DeleteAccessKey".to_owned(),
        format!("AccessKeyId={}", keys[0]),
    ];
    proxy.set_fault_matching(
        &delete,
        common::proxy::Fault::Status(500, common::proxy::iam_error("ServiceFailure")),
    );
    let report = env.handle_job(&worker, env.deliver(&body).await).await;
    assert_eq!(
        report.outcome,
        Outcome::Retry(Reason::TransientError),
        "{report:?}"
    );
    proxy.set_fault_matching(&delete, common::proxy::Fault::None);
    // Its next delivery is still approved: worked over the limit, then the approval spent.
    let report = env.handle_job(&worker, env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::Deleted, "{report:?}");
    assert_eq!(env.key_status(&user, &keys[0]).await, None);
    let all = admin.held(true, &retries).await.unwrap();
    assert_eq!(
        all.iter().find(|h| h.request_id == "g-2").unwrap().state,
        "worked"
    );
}
