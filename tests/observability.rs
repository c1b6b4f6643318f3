//! Metrics, health, outcome events and the shipped dashboard and alerts, checked on the
//! binary as operators run it (a process of its own, so its counters start at zero);
//! readiness, which is the application's own, on the application in the test's process.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::app::spawn_app;
use common::proxy::{Fault, FaultProxy, Scope};
use common::{eventually, eventually_async, job, TestEnv};
use serde_json::json;

use common::process::{http_get as get, listening_port, sigterm, wait, worker_command as command};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Parses a Prometheus text exposition into "name{labels}" → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("series {series} is exported"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_outcome_key_and_request_exactly() {
    let env = TestEnv::new("metrics").await;
    let results_url =
        common::create_queue(&env.clients.sqs, &common::unique("results"), None).await;
    let (alice, a_keys) = env.user_with_keys("alice", 2).await;
    let (bob, b_keys) = env.user_with_keys("bob", 2).await;
    let (carol, c_keys) = env.user_with_keys("carol", 1).await;
    // Detected a minute and a half ago, and ten minutes ago (a key-only job, which goes
    // on in a message of the worker's own: the time travels with it).
    let ago = |seconds: u64| iam_key_revoker::detection::text(now_ms() - seconds * 1000);
    let jobs = [
        job("m-del-1", &alice, &a_keys[0]),
        json!({"request_id": "m-del-2", "user_name": bob, "access_key_id": b_keys[0], "detected_at": ago(90)}).to_string(),
        json!({"request_id": "m-keyonly", "access_key_id": c_keys[0], "detected_at": ago(600)}).to_string(),
        json!({"request_id": "m-deact", "user_name": alice, "access_key_id": a_keys[1], "action": "deactivate"}).to_string(),
        job("m-absent", &alice, "AKIA0000000000000ABS"),
        job("m-mismatch", &alice, &b_keys[1]),
        "{\"request_id\":\"m-invalid\"}".to_owned(),
        json!({"request_id": "m-future", "user_name": bob, "access_key_id": b_keys[1], "detected_at": "2999-01-01T00:00:00Z"}).to_string(),
        job("m-del-1", &alice, &a_keys[0]),
    ];
    for body in &jobs {
        env.send(body).await;
    }
    let child = command(&env, &common::endpoint(), 0)
        .env("IAM_KEY_REVOKER__RESULTS__QUEUE_URL", &results_url)
        .spawn()
        .unwrap();
    let port = listening_port(&child).await;
    env.wait_until_drained(Duration::from_secs(30)).await;
    // Outcome events: one per job, on the results queue.
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events.len() < jobs.len() && tokio::time::Instant::now() < deadline {
        events.extend(common::receive(&env.clients.sqs, &results_url, 10, 1).await);
    }
    let scrape = get(port, "/metrics").expect("metrics served").1;
    sigterm(&child);
    let output = wait(child, Duration::from_secs(30)).await;
    assert!(output.status.success());

    let s = samples(&scrape);
    let jobs_total = |outcome: &str, reason: &str| {
        value(
            &s,
            &format!("iam_key_revoker_jobs_total{{outcome=\"{outcome}\",reason=\"{reason}\",queue=\"main\"}}"),
        )
    };
    assert_eq!(jobs_total("deleted", "none"), 3.0);
    assert_eq!(jobs_total("deactivated", "none"), 1.0);
    assert_eq!(jobs_total("already_absent", "none"), 1.0);
    assert_eq!(jobs_total("duplicate", "none"), 1.0);
    assert_eq!(jobs_total("rejected", "owner_mismatch"), 1.0);
    assert_eq!(jobs_total("rejected", "invalid_message"), 2.0);
    assert_eq!(
        jobs_total("rejected", "protected"),
        0.0,
        "known series exist at zero"
    );
    // What the dead-letter queue holds, by reason, as far as the worker put it there
    // (what IamKeyRevokerRejectedNeedsAction reads).
    let dead_lettered = |reason: &str| {
        value(
            &s,
            &format!("iam_key_revoker_dead_lettered_total{{queue=\"main\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(dead_lettered("owner_mismatch"), 1.0);
    assert_eq!(dead_lettered("invalid_message"), 2.0);
    assert_eq!(dead_lettered("access_denied"), 0.0);
    assert_eq!(
        value(
            &s,
            "iam_key_revoker_jobs_total{outcome=\"deleted\",reason=\"none\",queue=\"priority\"}"
        ),
        0.0,
        "and for the priority queue"
    );
    assert_eq!(
        value(&s, "iam_key_revoker_keys_revoked_total{action=\"delete\"}"),
        3.0
    );
    assert_eq!(
        value(
            &s,
            "iam_key_revoker_keys_revoked_total{action=\"deactivate\"}"
        ),
        1.0
    );
    // The key-only job hands itself on before its delete (docs, "Continuations"):
    // one message more, received, but no job more.
    assert_eq!(value(&s, "iam_key_revoker_messages_received_total"), 10.0);
    assert_eq!(value(&s, "iam_key_revoker_jobs_in_flight"), 0.0);
    assert_eq!(
        value(&s, "iam_key_revoker_build_info{version=\"0.1.0\"}"),
        1.0
    );
    assert!(value(&s, "iam_key_revoker_last_receive_success_timestamp_seconds") > 1.7e9);

    let requests = |service: &str, op: &str, result: &str| {
        s.get(&format!(
            "iam_key_revoker_aws_requests_total{{service=\"{service}\",operation=\"{op}\",result=\"{result}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
    };
    // Two named deletes + the key-only delete succeed; the absent and the mismatched key
    // are refused by IAM, which only then costs an owner lookup each.
    assert_eq!(requests("iam", "DeleteAccessKey", "ok"), 3.0);
    assert_eq!(requests("iam", "DeleteAccessKey", "error"), 2.0);
    assert_eq!(requests("iam", "GetAccessKeyLastUsed", "ok"), 2.0);
    assert_eq!(requests("iam", "GetAccessKeyLastUsed", "error"), 1.0);
    assert_eq!(requests("iam", "UpdateAccessKey", "ok"), 1.0);
    assert_eq!(
        requests("sqs", "SendMessage", "ok"),
        4.0,
        "three dead-letter copies and the key-only job's hand-over"
    );
    assert!(requests("sqs", "ReceiveMessage", "ok") >= 1.0);
    assert!(requests("sqs", "DeleteMessageBatch", "ok") >= 1.0);
    assert!(
        requests("sqs", "SendMessageBatch", "ok") >= 1.0,
        "events are batched"
    );

    // Real histograms: cumulative buckets up to +Inf, per outcome for job duration.
    assert_eq!(
        value(
            &s,
            "iam_key_revoker_job_duration_seconds_bucket{outcome=\"deleted\",queue=\"main\",le=\"+Inf\"}"
        ),
        3.0
    );
    assert!(s.contains_key(
        "iam_key_revoker_job_duration_seconds_bucket{outcome=\"deleted\",queue=\"main\",le=\"0.005\"}"
    ));
    assert_eq!(
        value(
            &s,
            "iam_key_revoker_revocation_latency_seconds_count{queue=\"main\"}"
        ),
        5.0
    );
    assert!(s.contains_key(
        "iam_key_revoker_revocation_latency_seconds_bucket{queue=\"main\",le=\"43200\"}"
    ));
    // The clock from exposure: only the two jobs that carry a detection time, from it.
    let exposure = |part: &str| {
        value(
            &s,
            &format!("iam_key_revoker_exposure_to_revoke_seconds_{part}{{source=\"job\"}}"),
        )
    };
    assert_eq!(exposure("count"), 2.0);
    let sum = exposure("sum");
    assert!(
        (690.0..720.0).contains(&sum),
        "90 s + 600 s and the jobs' own time: {sum}"
    );
    assert_eq!(
        value(
            &s,
            "iam_key_revoker_exposure_to_revoke_seconds_bucket{source=\"job\",le=\"300\"}"
        ),
        1.0
    );
    // The queues' depths, read at start: the job queue and its dead-letter queue.
    for queue in ["jobs", "dead_letter"] {
        for state in ["visible", "in_flight", "delayed"] {
            let series =
                format!("iam_key_revoker_queue_messages{{queue=\"{queue}\",state=\"{state}\"}}");
            assert!(s.contains_key(&series), "{series}");
        }
    }

    let labels: Vec<&str> = scrape.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(
        labels
            .iter()
            .all(|l| !l.contains(&alice) && !l.contains(&a_keys[0])),
        "no user name or key id in any label"
    );
    promtool_accepts_metrics(&scrape);

    let events: Vec<serde_json::Value> = events
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).expect("events are JSON"))
        .collect();
    assert_eq!(events.len(), jobs.len(), "one event per job");
    let event = |id: &str, outcome: &str| {
        events
            .iter()
            .find(|e| e["request_id"] == id && e["outcome"] == outcome)
            .unwrap_or_else(|| panic!("event {id} {outcome}"))
            .clone()
    };
    let deleted = event("m-del-2", "deleted");
    assert_eq!(deleted["reason"], "none");
    assert_eq!(deleted["user_name"], bob.as_str());
    assert_eq!(deleted["access_key_ids"], json!([b_keys[0]]));
    assert_eq!(deleted["action"], "delete");
    assert_eq!(deleted["keys_changed"], 1);
    assert_eq!(deleted["attempts"], 1);
    let enqueued = deleted["enqueued_at_ms"].as_u64().unwrap();
    let received = deleted["received_at_ms"].as_u64().unwrap();
    let finished = deleted["finished_at_ms"].as_u64().unwrap();
    assert!(
        enqueued <= received + 5 && received <= finished,
        "{deleted}"
    );
    let exposure = |e: &serde_json::Value| e["exposure_to_revoke_seconds"].as_f64().unwrap();
    assert!((90.0..105.0).contains(&exposure(&deleted)), "{deleted}");
    assert!(deleted["summary"]
        .as_str()
        .unwrap()
        .contains(" s after detection"));
    let keyonly = event("m-keyonly", "deleted");
    assert_eq!(keyonly["user_name"], carol.as_str());
    assert!((600.0..615.0).contains(&exposure(&keyonly)), "{keyonly}");
    // The producer's time, as it travelled in the worker's own message: to the millisecond.
    let carried = keyonly["detected_at"]
        .as_str()
        .expect("detected_at in the event");
    let carried = iam_key_revoker::detection::read_detected_at(carried).unwrap();
    let finished = keyonly["finished_at_ms"].as_u64().unwrap();
    assert!(
        (600_000..615_000).contains(&(finished - carried)),
        "{keyonly}"
    );
    assert!(event("m-del-1", "deleted")
        .get("exposure_to_revoke_seconds")
        .is_none());
    let future = event("m-future", "rejected");
    assert!(
        future["detail"].as_str().unwrap().contains("detected_at"),
        "{future}"
    );
    assert!(
        common::key_status(&env.clients.iam, &bob, &b_keys[1])
            .await
            .is_some(),
        "a job refused for its detected_at changes nothing"
    );
    assert_eq!(event("m-mismatch", "rejected")["reason"], "owner_mismatch");
    assert_eq!(event("m-invalid", "rejected")["reason"], "invalid_message");
    event("m-del-1", "duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_outage_never_affects_the_revocation() {
    let env = TestEnv::new("results-down").await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    env.send(&job("rd-1", &user, &keys[0])).await;
    let missing = format!(
        "{}/123456789012/{}",
        common::endpoint(),
        common::unique("no-such-queue")
    );
    let child = command(&env, &common::endpoint(), 0)
        .env("IAM_KEY_REVOKER__RESULTS__QUEUE_URL", &missing)
        .env(
            "IAM_KEY_REVOKER__RESULTS__SNS_TOPIC_ARN",
            format!(
                "arn:aws:sns:us-east-1:123456789012:{}",
                common::unique("no-topic")
            ),
        )
        .env(
            "IAM_KEY_REVOKER__RESULTS__EVENT_BUS",
            common::unique("no-bus"),
        )
        .env("IAM_KEY_REVOKER__RETRY__MAX_ELAPSED_SECONDS", "1")
        .spawn()
        .unwrap();
    let port = listening_port(&child).await;
    env.wait_until_drained(Duration::from_secs(30)).await;
    let failures = || {
        get(port, "/metrics")
            .map(|(_, body)| {
                let s = samples(&body);
                SINKS.map(|sink| failures_in(&s, sink))
            })
            .unwrap_or_default()
    };
    eventually(
        "the publish failure of every sink to be counted",
        Duration::from_secs(15),
        || failures().iter().all(|f| *f >= 1.0),
    )
    .await;
    let scrape = samples(&get(port, "/metrics").unwrap().1);
    sigterm(&child);
    assert!(wait(child, Duration::from_secs(30)).await.status.success());

    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        None,
        "revoked regardless"
    );
    assert_eq!(
        value(
            &scrape,
            "iam_key_revoker_jobs_total{outcome=\"deleted\",reason=\"none\",queue=\"main\"}"
        ),
        1.0
    );
    for sink in SINKS {
        assert_eq!(
            failures_in(&scrape, sink),
            1.0,
            "{sink}: counted once, not retried forever"
        );
    }
}

const SINKS: [&str; 3] = ["queue", "sns", "eventbridge"];

fn failures_in(s: &HashMap<String, f64>, sink: &str) -> f64 {
    value(
        s,
        &format!("iam_key_revoker_results_publish_failures_total{{sink=\"{sink}\"}}"),
    )
}

/// Starts the worker through `proxy` with `/readyz` turning 503 once the last receive is
/// older than `ready_age_seconds`, and waits until it is ready; returns it and its port.
async fn ready_worker(
    env: &TestEnv,
    proxy: &FaultProxy,
    ready_age_seconds: &str,
) -> (std::process::Child, u16) {
    let child = command(env, &proxy.url, 0)
        .env(
            "IAM_KEY_REVOKER__METRICS__READY_MAX_RECEIVE_AGE_SECONDS",
            ready_age_seconds,
        )
        .env("IAM_KEY_REVOKER__RETRY__MAX_DELAY_MS", "500")
        .env("IAM_KEY_REVOKER__WORKER__SHUTDOWN_GRACE_SECONDS", "20")
        .spawn()
        .unwrap();
    let port = listening_port(&child).await;
    eventually(
        "ready after the first receive",
        Duration::from_secs(15),
        || get(port, "/readyz").map(|(code, _)| code) == Some(200),
    )
    .await;
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_sqs_reachability() {
    let mut env = TestEnv::new("ready").await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    env.route_all_through(&proxy).await;
    env.config.metrics.ready_max_receive_age_seconds = 2;
    env.config.retry.max_delay_ms = 500;
    env.config.worker.shutdown_grace_seconds = 20;
    let app = spawn_app(&env).await;
    eventually_async(
        "ready after the first receive",
        Duration::from_secs(15),
        || async { app.status("/readyz").await == Some(200) },
    )
    .await;

    proxy.set_fault(Fault::Status(503, String::new()));
    eventually_async(
        "503 while SQS is unreachable",
        Duration::from_secs(15),
        || async { app.status("/readyz").await == Some(503) },
    )
    .await;
    assert_eq!(
        app.status("/healthz").await,
        Some(200),
        "the process itself is fine"
    );
    proxy.set_fault(Fault::None);
    eventually_async(
        "200 again once SQS recovers",
        Duration::from_secs(15),
        || async { app.status("/readyz").await == Some(200) },
    )
    .await;

    app.stop(Duration::from_secs(30)).await;
}

/// Readiness at shutdown comes from the shutdown itself, not from the last receive
/// growing old: the ready age here is far longer than the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_from_sigterm_until_exit() {
    let env = TestEnv::new("ready-stop").await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    let (child, port) = ready_worker(&env, &proxy, "600").await;
    let status = |path: &str| get(port, path).map(|(code, _)| code);

    // A slow job in flight keeps the process draining after SIGTERM: not ready, alive.
    let (user, keys) = env.user_with_keys("slow", 1).await;
    proxy.set_fault(Fault::Delay(Duration::from_secs(4)));
    env.send(&job("rz-1", &user, &keys[0])).await;
    env.wait_for_depth((0, 1), Duration::from_secs(20)).await;
    assert_eq!(status("/readyz"), Some(200), "ready while working");
    sigterm(&child);
    eventually("503 during shutdown", Duration::from_secs(2), || {
        status("/readyz") == Some(503)
    })
    .await;
    assert_eq!(status("/healthz"), Some(200), "still draining");
    let output = wait(child, Duration::from_secs(30)).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        None,
        "finished during the grace period"
    );
    assert_eq!(env.queue_depth().await, (0, 0));
}

fn promtool_accepts_metrics(scrape: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Metric names a PromQL text refers to, histograms by their base name.
fn series_named_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("iam_key_revoker_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| base.ends_with("_seconds"))
            .unwrap_or(name);
        names.push(base.to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn dashboard_and_alerts_name_only_exported_series() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/grafana/iam-key-revoker.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    let alerts = std::fs::read_to_string(format!("{root}/deploy/prometheus/alerts.yml")).unwrap();
    let mut named = series_named_in(&alerts);
    for expr in &exprs {
        named.extend(series_named_in(expr));
    }
    for name in &named {
        assert!(
            iam_key_revoker::metrics::ALL.contains(&name.as_str()),
            "{name} is not a series the worker exports"
        );
    }
    // The dashboard shows what the book's "Observability" says it does.
    let all = exprs.join("\n");
    for needle in [
        "histogram_quantile(0.5, sum by (le, queue) (rate(iam_key_revoker_revocation_latency_seconds_bucket",
        "histogram_quantile(0.95, sum by (le, queue) (rate(iam_key_revoker_revocation_latency_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, queue) (rate(iam_key_revoker_revocation_latency_seconds_bucket",
        "sum by (queue, outcome, reason) (rate(iam_key_revoker_jobs_total",
        "iam_key_revoker_keys_revoked_total",
        "iam_key_revoker_jobs_in_flight",
        "iam_key_revoker_aws_retries_total",
        "result=\"error\"",
        "time() - max(iam_key_revoker_last_receive_success_timestamp_seconds",
        "max by (queue, state) (iam_key_revoker_queue_messages",
        "iam_key_revoker_iam_rate_limit_requests_per_second",
    ] {
        assert!(all.contains(needle), "the dashboard queries {needle}");
    }
    // Every query follows the cluster and namespace variables.
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(variables.contains(&"cluster") && variables.contains(&"namespace"));
    for expr in &exprs {
        assert_eq!(
            expr.matches("iam_key_revoker_").count(),
            expr.matches("namespace=~\"$namespace\"").count(),
            "{expr}"
        );
    }
    // Each alert has a summary, a description that shows the value and a runbook_url
    // that points at its own section of the book's "Runbooks".
    let readme = std::fs::read_to_string(format!("{root}/docs/src/operate/runbooks.md")).unwrap();
    let rules = yaml_rust2::YamlLoader::load_from_str(&alerts).unwrap();
    let rules = rules[0]["groups"][0]["rules"].as_vec().unwrap();
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for needed in [
        // Receives still succeed while IAM fails and jobs end retry.
        "IamKeyRevokerJobsRetrying",
        // SQS's own redrive moves messages there without the worker counting them.
        "IamKeyRevokerDeadLetterQueueNotEmpty",
        // Jobs waiting and nothing worked; an urgent job waiting or slow.
        "IamKeyRevokerJobsWaitingUnworked",
        "IamKeyRevokerPriorityJobWaiting",
        "IamKeyRevokerUrgentRevocationSlow",
        // A rejection someone must act on pages at once.
        "IamKeyRevokerRejectedNeedsAction",
        "IamKeyRevokerCredentialsFailing",
        "IamKeyRevokerNotReceiving",
    ] {
        assert!(names.contains(&needed), "alerts.yml has {needed}");
    }
    let needs_action = rules
        .iter()
        .find(|r| r["alert"].as_str() == Some("IamKeyRevokerRejectedNeedsAction"))
        .unwrap();
    // Pages a minute after the worker dead-lettered such a job (not on one evaluation's
    // blip), for an hour, and not for other content of the dead-letter queues
    // (alerts.test.yml).
    assert_eq!(needs_action["for"].as_str(), Some("1m"));
    for reason in [
        "access_denied",
        "owner_unknown",
        "aws_error",
        "policy_quota",
        "cross_account_disabled",
    ] {
        assert!(needs_action["expr"].as_str().unwrap().contains(reason));
    }
    for rule in rules {
        let name = rule["alert"].as_str().unwrap();
        let annotations = &rule["annotations"];
        assert!(annotations["summary"].as_str().is_some(), "{name}");
        assert!(
            annotations["description"]
                .as_str()
                .unwrap()
                .contains("{{ $value"),
            "{name}"
        );
        // The book's page, where it is published (BOOK_URL, put in at deploy); mdBook
        // makes a heading's anchor of its text in lower case.
        let url = annotations["runbook_url"].as_str().unwrap();
        assert_eq!(
            url,
            format!("BOOK_URL/operate/runbooks.html#{}", name.to_lowercase()),
            "{name}"
        );
        assert!(
            readme.contains(&format!("\n## {name}\n")),
            "a runbook for {name}"
        );
    }
    // The Prometheus Operator rule holds exactly the same groups.
    let operator =
        std::fs::read_to_string(format!("{root}/deploy/prometheus/prometheus-rule.yaml")).unwrap();
    let operator = yaml_rust2::YamlLoader::load_from_str(&operator).unwrap();
    assert_eq!(operator[0]["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(
        operator[0]["spec"]["groups"],
        yaml_rust2::YamlLoader::load_from_str(&alerts).unwrap()[0]["groups"]
    );
    let output = Command::new("promtool")
        .args([
            "check",
            "rules",
            &format!("{root}/deploy/prometheus/alerts.yml"),
        ])
        .output()
        .expect("promtool is installed (scripts/test installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    // How the rules behave: with two replicas, a rejection that needs a person, until
    // its dead-letter queue is emptied; jobs waiting unworked page once.
    let output = Command::new("promtool")
        .args([
            "test",
            "rules",
            &format!("{root}/deploy/prometheus/alerts.test.yml"),
        ])
        .output()
        .expect("promtool is installed (scripts/test installs it)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
