//! Bulk offboarding from the command line: `enqueue --file` and `plan --file` against the
//! emulator, as an operator runs them.

mod common;

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_iam::types::StatusType;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use common::proxy::{iam_error, Fault, FaultProxy, Scope};
use common::TestEnv;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// `iam-key-revoker <args>` against `queue_url` on the emulator, with `env`'s
/// protected users.
fn cli(env: &TestEnv, queue_url: &str, args: &[&str]) -> Output {
    let mut command = common::process::command(&common::endpoint(), queue_url);
    command.args(args);
    // An empty list from the environment is refused: set it only when there is one.
    if !env.config.protect.users.is_empty() {
        command.env(
            "IAM_KEY_REVOKER__PROTECT__USERS",
            env.config.protect.users.join(","),
        );
    }
    command.output().expect("the binary runs")
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn drain(env: &TestEnv, limit: Duration) {
    let worker = Arc::new(env.worker().await);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    env.wait_until_drained(limit).await;
    shutdown.cancel();
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_line_file_is_validated_enqueued_and_drained() {
    let mut env = TestEnv::new("bulk500").await;
    env.config.worker.max_in_flight = 32;
    let mut users = Vec::new();
    for chunk in (0..500).collect::<Vec<_>>().chunks(8) {
        let mut tasks = tokio::task::JoinSet::new();
        for i in chunk {
            let iam = env.clients.iam.clone();
            let user = format!("{}-{i}", env.name);
            tasks.spawn(async move { common::create_user_with_keys(&iam, &user, 1).await });
        }
        users.extend(tasks.join_all().await);
    }
    // Half the lines carry a request id, half get one generated.
    let lines: Vec<String> = users
        .iter()
        .enumerate()
        .map(|(i, (user, keys))| {
            let mut job =
                json!({"user_name": user, "access_key_id": keys[0], "batch_id": "offboarding-500"});
            if i % 2 == 0 {
                job["request_id"] = format!("bulk-{i}").into();
            }
            job.to_string()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "batch.jsonl", &(lines.join("\n") + "\n"));

    let output = cli(&env, &env.queue_url, &["enqueue", "--file", &file]);

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 500, "one request id printed per job");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 500);
    assert!(String::from_utf8_lossy(&output.stderr).contains("sent 500, failed 0"));
    assert_eq!(
        env.queue_depth().await,
        (500, 0),
        "every job on the queue, none twice"
    );

    drain(&env, Duration::from_secs(120)).await;
    for (user, keys) in &users {
        assert_eq!(
            env.key_status(user, &keys[0]).await,
            None,
            "{user}'s key is gone"
        );
    }
    assert!(env.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_file_with_bad_lines_sends_nothing_and_names_each_line() {
    let env = TestEnv::new("badfile").await;
    let dir = tempfile::tempdir().unwrap();
    let jsonl = write(
        &dir,
        "jobs.jsonl",
        "{\"request_id\":\"ok-1\",\"access_key_id\":\"AKIA0000000000000001\"}\n\
         {\"request_id\":\"bad key\",\"access_key_id\":\"AKIA0000000000000002\"}\n\
         {\"request_id\":\"ok-3\",\"access_key_id\":\"AKIA0000000000000003\"}\n\
         {broken\n\
         {\"request_id\":\"ok-1\",\"access_key_id\":\"AKIA0000000000000005\"}\n",
    );
    let output = cli(&env, &env.queue_url, &["enqueue", "--file", &jsonl]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in [2, 4, 5] {
        assert!(
            stderr.contains(&format!("jobs.jsonl:{line}:")),
            "line {line} named: {stderr}"
        );
    }
    assert!(!stderr.contains("jobs.jsonl:1:") && !stderr.contains("jobs.jsonl:3:"));
    assert!(stderr.contains("repeats line 1"));
    assert!(output.stdout.is_empty());

    let csv = write(
        &dir,
        "jobs.csv",
        "request_id,access_key_id,colour\nr,AKIA0000000000000001,red\n",
    );
    let output = cli(&env, &env.queue_url, &["enqueue", "--file", &csv]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("colour"));

    let output = cli(
        &env,
        &env.queue_url,
        &["enqueue", "--access-key-id", "short"],
    );
    assert_eq!(output.status.code(), Some(2), "one invalid job from flags");

    assert_eq!(env.queue_depth().await, (0, 0), "nothing was sent");
}

#[tokio::test]
async fn one_job_from_flags_is_enqueued_and_its_id_printed() {
    let env = TestEnv::new("flags").await;
    let output = cli(
        &env,
        &env.queue_url,
        &[
            "enqueue",
            "--user-name",
            "leaver",
            "--all-keys",
            "--reason",
            "offboarding",
            "--batch-id",
            "hr-7",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert_eq!(id.len(), 36, "a generated request id: {id}");
    let message = env.receive_one().await;
    let body: serde_json::Value = serde_json::from_str(message.body().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"request_id": id, "user_name": "leaver", "all_keys": true, "action": "delete",
               "reason": "offboarding", "batch_id": "hr-7"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_queue_round_trip() {
    let mut env = TestEnv::new("fifo").await;
    let sqs = env.clients.sqs.clone();
    let fifo = |name: String| {
        let sqs = sqs.clone();
        async move {
            sqs.create_queue()
                .queue_name(name)
                .attributes(QueueAttributeName::FifoQueue, "true")
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap()
        }
    };
    let dlq = fifo(format!("{}-dlq.fifo", env.name)).await;
    let queue = fifo(format!("{}.fifo", env.name)).await;
    env.queue_url = queue.clone();
    env.config.sqs.queue_url = queue.clone();
    env.config.sqs.dead_letter_queue_url = Some(dlq);
    let (alice, a_keys) = env.user_with_keys("alice", 2).await;
    let (bob, b_keys) = env.user_with_keys("bob", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "jobs.csv",
        &format!(
            "request_id,user_name,access_key_id\nf-1,{alice},{}\nf-2,{alice},{}\nf-3,{bob},{}\n",
            a_keys[0], a_keys[1], b_keys[0]
        ),
    );

    let output = cli(&env, &queue, &["enqueue", "--file", &file]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Sending the same file again within the deduplication window adds nothing.
    assert!(cli(&env, &queue, &["enqueue", "--file", &file])
        .status
        .success());
    assert_eq!(env.queue_depth().await.0, 3, "deduplicated by request id");

    let messages = sqs
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert!(!messages.is_empty());
    for m in &messages {
        let attrs = m.attributes().unwrap();
        let body: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
        assert_eq!(
            attrs
                .get(&MessageSystemAttributeName::MessageGroupId)
                .map(String::as_str),
            body["user_name"].as_str(),
            "grouped per user"
        );
        assert_eq!(
            attrs
                .get(&MessageSystemAttributeName::MessageDeduplicationId)
                .map(String::as_str),
            body["request_id"].as_str()
        );
    }

    drain(&env, Duration::from_secs(60)).await;
    assert_eq!(env.key_status(&alice, &a_keys[0]).await, None);
    assert_eq!(env.key_status(&alice, &a_keys[1]).await, None);
    assert_eq!(env.key_status(&bob, &b_keys[0]).await, None);
}

#[tokio::test]
async fn plan_predicts_each_outcome_and_changes_nothing() {
    let mut env = TestEnv::new("plan").await;
    let (alice, a_keys) = env.user_with_keys("alice", 2).await;
    let (bob, b_keys) = env.user_with_keys("bob", 1).await;
    let (admin, admin_keys) = env.user_with_keys("admin", 1).await;
    let (leaver, leaver_keys) = env.user_with_keys("leaver", 2).await;
    env.config.protect.users = vec![admin.clone()];
    let lines = [
        json!({"request_id": "p-del", "user_name": alice, "access_key_id": a_keys[0], "revoke_sessions": true}),
        json!({"request_id": "p-deact", "access_key_id": a_keys[1], "action": "deactivate", "quarantine_user": true}),
        json!({"request_id": "p-unknown", "access_key_id": "AKIA0000000000PLAN00"}),
        json!({"request_id": "p-absent", "user_name": alice, "access_key_id": "AKIA0000000000PLAN01"}),
        json!({"request_id": "p-mismatch", "user_name": alice, "access_key_id": b_keys[0]}),
        json!({"request_id": "p-protected", "user_name": admin, "access_key_id": admin_keys[0], "revoke_sessions": true}),
        json!({"request_id": "p-owner-protected", "access_key_id": admin_keys[0]}),
        json!({"request_id": "p-all", "user_name": leaver, "all_keys": true}),
        json!({"request_id": "p-nouser", "user_name": "nobody-at-all-xyz", "all_keys": true}),
        json!({"request_id": "p-account", "access_key_id": a_keys[0], "account_id": "222222222222"}),
        json!({"request_id": "p-invalid", "access_key_id": "lower"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "plan.jsonl", &text);

    let output = cli(
        &env,
        &env.queue_url,
        &["plan", "--file", &file, "--output", "json"],
    );

    // The whole plan is printed; the invalid line makes it exit 2.
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("JSON plan");
    let predictions: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["request_id"].as_str().unwrap_or("-"),
                r["prediction"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        predictions,
        vec![
            ("p-del", "would_delete"),
            ("p-deact", "would_deactivate"),
            ("p-unknown", "already_absent"),
            ("p-absent", "already_absent"),
            ("p-mismatch", "owner_mismatch"),
            ("p-protected", "protected"),
            ("p-owner-protected", "protected"),
            ("p-all", "would_delete"),
            ("p-nouser", "already_absent"),
            ("p-account", "cross_account_disabled"),
            ("-", "invalid"),
        ]
    );
    assert_eq!(
        rows[1]["user_name"],
        alice.as_str(),
        "owner found for key-only lines"
    );
    assert_eq!(rows[7]["access_key_ids"].as_array().unwrap().len(), 2);
    let sessions: Vec<bool> = rows
        .iter()
        .map(|r| r["would_revoke_sessions"].as_bool().unwrap())
        .collect();
    assert_eq!(
        sessions,
        [true, false, false, false, false, false, false, false, false, false, false],
        "only the line that asks, and not the protected one"
    );
    let quarantines: Vec<bool> = rows
        .iter()
        .map(|r| r["would_quarantine"].as_bool().unwrap())
        .collect();
    assert_eq!(
        quarantines,
        [false, true, false, false, false, false, false, false, false, false, false],
        "only the line that asks"
    );
    assert_eq!(rows[10]["line"], 11);

    // The table form, for people.
    let table = cli(&env, &env.queue_url, &["plan", "--file", &file]);
    assert_eq!(table.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&table.stdout);
    assert!(stdout.starts_with("LINE"));
    assert!(stdout
        .lines()
        .any(|l| l.contains("p-mismatch") && l.contains("owner_mismatch")));
    assert!(stdout
        .lines()
        .any(|l| l.contains("p-del") && l.contains("would_revoke_sessions")));
    assert!(stdout
        .lines()
        .any(|l| l.contains("p-deact") && l.contains("would_quarantine")));

    // Nothing changed.
    for (user, key) in [
        (&alice, &a_keys[0]),
        (&bob, &b_keys[0]),
        (&admin, &admin_keys[0]),
        (&leaver, &leaver_keys[0]),
    ] {
        assert_eq!(env.key_status(user, key).await, Some(StatusType::Active));
    }
    assert_eq!(
        env.key_status(&alice, &a_keys[1]).await,
        Some(StatusType::Active)
    );
    assert_eq!(env.queue_depth().await, (0, 0));
}

/// `plan ... | head`: the reader goes away before the plan is printed. The command ends
/// quietly (no panic, no backtrace), and human log lines in a pipe carry no colour codes.
#[tokio::test]
async fn plan_into_a_closed_pipe_ends_quietly_and_pipes_get_no_colour() {
    let env = TestEnv::new("pipe").await;
    let lines: String = (0..50)
        .map(|i| format!("{}\n", json!({"request_id": format!("pipe-{i}"), "user_name": "nobody-pipe", "all_keys": true})))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "plan.jsonl", &lines);
    let mut child = common::process::command(&common::endpoint(), &env.queue_url)
        .args(["plan", "--file", &file])
        .env("IAM_KEY_REVOKER__LOG__FORMAT", "pretty")
        .env("IAM_KEY_REVOKER__LOG__LEVEL", "debug")
        .spawn()
        .unwrap();
    // Close the reading end at once, as `head` does once it has its lines.
    drop(child.stdout.take());
    let output = common::process::wait(child, Duration::from_secs(60)).await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes in a pipe: {stderr}"
    );
    assert!(
        stderr.contains("already_absent: 50"),
        "the summary still: {stderr}"
    );
}

/// A producer with nothing but credentials: `--queue-url` instead of a worker config,
/// `--action` checked by the command line, and a batch from standard input.
#[tokio::test]
async fn a_producer_needs_only_the_queue_url_and_can_pipe_a_batch() {
    let env = TestEnv::new("producer").await;
    let producer = || {
        let mut command = common::process::command(&common::endpoint(), &env.queue_url);
        command.env_remove("IAM_KEY_REVOKER__SQS__QUEUE_URL").args([
            "enqueue",
            "--queue-url",
            &env.queue_url,
        ]);
        command
    };
    let one = producer()
        .args([
            "--access-key-id",
            "AKIAIOSFODNN7EXAMPLE",
            "--action",
            "deactivate",
        ])
        .args(["--request-id", "prod-1"])
        .output()
        .unwrap();
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&one.stdout).trim(), "prod-1");

    let bad = producer()
        .args([
            "--access-key-id",
            "AKIAIOSFODNN7EXAMPLE",
            "--action",
            "remove",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("deactivate"));

    let mut piped = producer()
        .args(["--file", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let batch = format!(
        "{}\n{}\n",
        json!({"request_id": "prod-2", "user_name": "leaver", "all_keys": true}),
        json!({"request_id": "prod-3", "access_key_id": "AKIAIOSFODNN7EXAMPL2"})
    );
    std::io::Write::write_all(&mut piped.stdin.take().unwrap(), batch.as_bytes()).unwrap();
    let piped = common::process::wait(piped, Duration::from_secs(30)).await;
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "prod-2\nprod-3\n");

    let mut bodies = Vec::new();
    for _ in 0..3 {
        let message = env.receive_one().await;
        let body: serde_json::Value = serde_json::from_str(message.body().unwrap()).unwrap();
        bodies.push(body["request_id"].as_str().unwrap().to_owned());
    }
    bodies.sort();
    assert_eq!(bodies, ["prod-1", "prod-2", "prod-3"]);
}

/// `enqueue` and `plan` print their results on standard output and log for people on
/// standard error, even where the worker's configuration says JSON; JSON when asked.
#[tokio::test]
async fn the_commands_log_for_people_unless_asked_for_json() {
    let env = TestEnv::new("cli-logs").await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "plan.jsonl",
        &format!(
            "{}\n",
            json!({"request_id": "log-1", "user_name": "nobody-logs", "all_keys": true})
        ),
    );
    let run = |extra: &[&str]| {
        let mut command = common::process::command(&common::endpoint(), &env.queue_url);
        command
            .args(["plan", "--file", &file])
            .args(extra)
            .env("IAM_KEY_REVOKER__LOG__FORMAT", "json")
            .env("IAM_KEY_REVOKER__LOG__LEVEL", "debug");
        command.output().unwrap()
    };
    let is_json_log = |line: &str| {
        serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.get("level").is_some())
    };

    let human = run(&[]);
    assert_eq!(human.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert!(stderr.lines().count() > 1, "debug lines: {stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("DEBUG")) && !stderr.lines().any(is_json_log),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&human.stdout).starts_with("LINE"));

    let machine = run(&["--log-format", "json"]);
    assert_eq!(machine.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&machine.stderr);
    assert!(
        stderr.lines().filter(|l| is_json_log(l)).count() > 1,
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&machine.stdout).starts_with("LINE"));
}

/// docs "The priority queue": `enqueue --priority` sends to `sqs.priority_queue_url`,
/// and says so plainly when there is none.
#[tokio::test]
async fn enqueue_priority_sends_to_the_priority_queue() {
    let mut env = TestEnv::new("enqueue-priority").await;
    let (priority_url, _) = env.add_priority_queue().await;
    let send = |priority_url: Option<&str>| {
        let mut command = common::process::command(&common::endpoint(), &env.queue_url);
        command.args([
            "enqueue",
            "--priority",
            "--request-id",
            "urgent-1",
            "--access-key-id",
            "AKIAIOSFODNN7EXAMPLE",
            "--revoke-sessions",
            "--quarantine-user",
        ]);
        if let Some(url) = priority_url {
            command.env("IAM_KEY_REVOKER__SQS__PRIORITY_QUEUE_URL", url);
        }
        command.output().unwrap()
    };

    let sent = send(Some(&priority_url));
    assert_eq!(
        sent.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let on_priority = common::receive(&env.clients.sqs, &priority_url, 10, 1).await;
    assert_eq!(on_priority.len(), 1);
    let body: serde_json::Value = serde_json::from_str(on_priority[0].body().unwrap()).unwrap();
    assert_eq!(body["request_id"], "urgent-1");
    assert_eq!(body["revoke_sessions"], true);
    assert_eq!(body["quarantine_user"], true);
    assert_eq!(env.queue_depth().await, (0, 0), "nothing on the main queue");

    let refused = send(None);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("sqs.priority_queue_url"));
}

/// Twenty valid lines, each a job for its own key.
fn twenty_lines(dir: &tempfile::TempDir) -> String {
    let text: String = (0..20)
        .map(|i| {
            format!(
                "{}\n",
                json!({"request_id": format!("stop-{i}"), "user_name": format!("u{i}"),
                       "access_key_id": format!("AKIA{i:016}")})
            )
        })
        .collect();
    write(dir, "jobs.jsonl", &text)
}

/// `args` run against `endpoint` with a retry budget of five minutes a request: a run
/// that retried each line's failure would not end within the test's limit.
async fn run_against(endpoint: &str, args: &[&str]) -> Output {
    let mut command = common::process::command(endpoint, "http://127.0.0.1:9/123456789012/jobs");
    command
        .args(args)
        .env("IAM_KEY_REVOKER__RETRY__MAX_ELAPSED_SECONDS", "300")
        .env("IAM_KEY_REVOKER__RETRY__MAX_DELAY_MS", "30000");
    let child = command.spawn().expect("the binary runs");
    common::process::wait(child, Duration::from_secs(60)).await
}

/// What an operator sees when nothing answers: one line naming the endpoint and the
/// cause, exit 1, not one error per line after each line's whole retry budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_enqueue_stop_at_once_when_the_endpoint_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let file = twenty_lines(&dir);
    // Nothing listens there: every connection is refused.
    let nowhere = format!("http://127.0.0.1:{}", common::process::free_port());
    for args in [
        vec!["plan", "--file", &file],
        vec!["enqueue", "--file", &file],
    ] {
        let output = run_against(&nowhere, &args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: one line: {stderr}");
        assert!(
            errors[0].contains(&format!("no answer from {nowhere}")),
            "names the endpoint: {stderr}"
        );
        assert!(
            !stderr.contains("not sent:") && output.stdout.is_empty(),
            "no line of its own for each job: {stderr}"
        );
    }
}

/// Credentials AWS refuses stop the plan at the first line's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_stops_at_credentials_aws_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let file = twenty_lines(&dir);
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    proxy.set_fault(Fault::Status(403, iam_error("InvalidClientTokenId")));
    let output = run_against(&proxy.url, &["plan", "--file", &file]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{} refused the credentials", proxy.url))
            && stderr.contains("InvalidClientTokenId"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "no plan printed");
    // At most the lines already in flight asked: not every line.
    assert!(proxy.operations().len() <= 8, "{:?}", proxy.operations());
}
