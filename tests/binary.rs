//! The `iam-key-revoker` binary as operators run it: configuration from environment
//! variables, exit codes, the JSON audit trail, and SIGTERM with jobs in flight.

mod common;

use std::process::Command;
use std::time::Duration;

use common::proxy::{Fault, FaultProxy, Scope};
use common::{job, TestEnv};

use common::process::{audit_lines, sigterm, wait, worker_command, BIN};

fn command(env: &TestEnv, endpoint: &str) -> Command {
    worker_command(env, endpoint, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_jobs_finish_and_exits_zero() {
    let env = TestEnv::new("term").await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault(Fault::Delay(Duration::from_secs(2)));
    let mut users = Vec::new();
    for i in 0..4 {
        let (user, keys) = env.user_with_keys(&format!("t{i}"), 1).await;
        env.send(&job(&format!("term-{i}"), &user, &keys[0])).await;
        users.push((user, keys));
    }
    let child = command(&env, &proxy.url)
        .env("IAM_KEY_REVOKER__WORKER__SHUTDOWN_GRACE_SECONDS", "20")
        .spawn()
        .unwrap();
    env.wait_for_depth((0, 4), Duration::from_secs(20)).await;
    sigterm(&child);
    let output = wait(child, Duration::from_secs(25)).await;

    assert!(output.status.success(), "exit 0: {output:?}");
    for (user, keys) in &users {
        assert_eq!(
            env.key_status(user, &keys[0]).await,
            None,
            "finished during grace"
        );
    }
    assert_eq!(env.queue_depth().await, (0, 0), "every message settled");
    let audit = audit_lines(&output);
    assert_eq!(audit.len(), 4, "one audit line per job");
    for line in &audit {
        assert_eq!(line["outcome"], "deleted");
        assert_eq!(line["reason"], "none");
        assert!(line["request_id"].as_str().unwrap().starts_with("term-"));
        assert!(line["user_name"].as_str().unwrap().contains("-t"));
        assert!(line["access_key_ids"].as_str().unwrap().starts_with("AKIA"));
        assert!(line["duration_ms"].as_u64().is_some());
        assert_eq!(line["attempts"], 1);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("testing"), "no credential in the logs");
}

#[tokio::test]
async fn configuration_errors_exit_2_and_name_the_key() {
    let env = TestEnv::new("cfg").await;
    let cases = [
        (
            "IAM_KEY_REVOKER__WORKER__MAX_IN_FLIGHT",
            "0",
            "worker.max_in_flight",
        ),
        (
            "IAM_KEY_REVOKER__WORKER__MAX_IN_FLIGHT",
            "many",
            "max_in_flight",
        ),
        (
            "IAM_KEY_REVOKER__PROTECT__USERS",
            "ok,bad[",
            "protect.users",
        ),
        // An empty variable never clears a protected list from the file.
        ("IAM_KEY_REVOKER__PROTECT__USERS", "", "protect.users"),
        (
            "IAM_KEY_REVOKER__PROTECT__ACCESS_KEYS",
            " ",
            "protect.access_keys",
        ),
        ("IAM_KEY_REVOKER__SQS__QUEUE_URL", "", "sqs.queue_url"),
        ("IAM_KEY_REVOKER__SQS__NO_SUCH_KEY", "1", "no_such_key"),
        ("IAM_KEY_REVOKER__LOG__FORMAT", "xml", "format"),
    ];
    for (var, value, key) in cases {
        let output = command(&env, &common::endpoint())
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{var}={value}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(key),
            "{var}={value} should name {key}: {stderr}"
        );
    }
    let output = Command::new(BIN)
        .args(["run", "--config", "/no/such/file.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/file.toml"));
    let output = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "unknown subcommand is a usage error"
    );
}

#[tokio::test]
async fn a_queue_without_any_dead_letter_queue_refuses_to_start() {
    let env = TestEnv::new("nodlq").await;
    let bare = common::create_queue(&env.clients.sqs, &common::unique("nodlq-bare"), None).await;
    let output = command(&env, &common::endpoint())
        .env("IAM_KEY_REVOKER__SQS__QUEUE_URL", &bare)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("dead_letter_queue_url"));
}

#[tokio::test]
async fn a_config_file_with_environment_overrides_runs_the_worker() {
    let env = TestEnv::new("file").await;
    let (user, keys) = env.user_with_keys("f", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worker.toml");
    std::fs::write(
        &path,
        "[sqs]\nqueue_url = \"http://wrong.invalid/q\"\n[protect]\nusers = [\"someone-else\"]\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    // The environment overrides the file's queue and protects this user by a list.
    let protected_body = job("file-1", &user, &keys[0]);
    env.send(&protected_body).await;
    let mut child = command(&env, &common::endpoint());
    let child = child
        .args(["--config", path.to_str().unwrap()])
        .env("IAM_KEY_REVOKER__PROTECT__USERS", format!("nobody,{user}"))
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while env.dead_letters_peek().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "job not rejected in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sigterm(&child);
    let output = wait(child, Duration::from_secs(15)).await;
    assert!(output.status.success());
    assert!(
        env.key_status(&user, &keys[0]).await.is_some(),
        "protected via the environment"
    );
    let audit = audit_lines(&output);
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["outcome"], "rejected");
    assert_eq!(audit[0]["reason"], "protected");
    // The effective protected list is logged at start.
    let ready = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "Worker ready")
        .expect("a start line");
    assert_eq!(ready["protected_users"], format!("nobody,{user}"));
}

#[tokio::test]
async fn missing_credentials_at_start_are_one_clear_line() {
    let env = TestEnv::new("nocreds").await;
    let home = tempfile::tempdir().unwrap();
    let output = command(&env, &common::endpoint())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: no AWS credentials"), "{stderr}");
    for place in ["environment", "web identity", "instance metadata"] {
        assert!(stderr.contains(place), "names {place}: {stderr}");
    }
    assert!(!stderr.contains("DispatchFailure"), "{stderr}");
}

/// The book's "Command line" page holds every command's `--help` as the binary prints it:
/// a flag added, renamed or explained anew changes the page too.
#[test]
fn the_command_line_page_is_the_binarys_help() {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/src/reference/command-line.md"
    ))
    .unwrap();
    for command in [
        "",
        "run",
        "enqueue",
        "plan",
        "restore",
        "held",
        "approve",
        "discard",
        "pause",
        "resume",
        "protect-policy",
    ] {
        let mut args: Vec<&str> = Vec::new();
        if !command.is_empty() {
            args.push(command);
        }
        args.push("--help");
        let output = Command::new(BIN).args(&args).env_clear().output().unwrap();
        assert!(output.status.success());
        let help = String::from_utf8(output.stdout).unwrap();
        let block = format!("```text\n{}\n```", help.trim_end());
        assert!(
            page.contains(&block),
            "docs/src/reference/command-line.md lacks `iam-key-revoker {command} --help` as printed:\n{block}"
        );
    }
}
