//! docs "Activity reports": a job that revoked a key and asked for a report sends
//! itself two report tasks; each reads the key's CloudTrail history and goes to the
//! sinks. IAM and SQS are the emulator's; the emulator has no CloudTrail, so the
//! fault-injecting proxy in front of it answers `LookupEvents` in the shape the
//! CloudTrail API Reference documents (`Events[].CloudTrailEvent` a JSON string,
//! `NextToken` paging, `ThrottlingException`), per key and per Region (read from the
//! request's signing scope).

mod common;

use std::time::Duration;

use common::proxy::{Fault, FaultProxy, Scope};
use common::TestEnv;
use iam_key_revoker::login_task::login_follow_up_id;
use iam_key_revoker::{Outcome, Reason};
use serde_json::{json, Value};

const TARGET: &str = "CloudTrail_20131101.LookupEvents";
const MINTED: &str = "ASIAIOSFODNN7MINTED1";

fn record(time: &str, api: &str, service: &str, extra: Value) -> Value {
    let mut value = json!({
        "eventVersion": "1.08", "eventTime": time, "eventSource": service, "eventName": api,
        "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.7", "userAgent": "aws-cli/2.15.0",
        "readOnly": true, "eventType": "AwsApiCall"
    });
    for (k, v) in extra.as_object().unwrap() {
        value[k] = v.clone();
    }
    value
}

/// A `LookupEvents` answer with these records, and a next page token if any.
fn page(records: &[Value], next: Option<&str>) -> Fault {
    let events: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({"EventId": format!("e-{i}"), "EventName": r["eventName"], "ReadOnly": r["readOnly"].to_string(),
                   "EventTime": 1.7960e9, "EventSource": r["eventSource"],
                   "Resources": [{"ResourceType": "AWS::IAM::User", "ResourceName": "mallory"}],
                   "CloudTrailEvent": r.to_string()})
        })
        .collect();
    let mut body = json!({"Events": events});
    if let Some(next) = next {
        body["NextToken"] = next.into();
    }
    Fault::Status(200, body.to_string())
}

/// Answers for the leaked key (two pages in us-east-1, a refusal in eu-west-1) and for
/// the session credentials it minted.
fn answer_cloudtrail(proxy: &FaultProxy, key: &str) {
    let key_value = format!("\"AttributeValue\":\"{key}\"");
    let minted_value = format!("\"AttributeValue\":\"{MINTED}\"");
    proxy.set_fault_matching(
        &[
            TARGET.into(),
            key_value.clone(),
            "/eu-west-1/cloudtrail/".into(),
        ],
        Fault::Status(
            400,
            json!({"__type": "AccessDeniedException", "message": "not authorized"}).to_string(),
        ),
    );
    proxy.set_fault_matching(
        &[TARGET.into(), key_value.clone(), "\"NextToken\":\"page-2\"".into()],
        page(
            &[
                record("2026-11-30T11:04:00Z", "GetSessionToken", "sts.amazonaws.com", json!({"responseElements": {"credentials": {"accessKeyId": MINTED}}})),
                record("2026-11-30T11:05:00Z", "AssumeRole", "sts.amazonaws.com", json!({"requestParameters": {"roleArn": "arn:aws:iam::999988887777:role/admin"}, "responseElements": {"credentials": {"accessKeyId": "ASIAIOSFODNN7OTHERAC"}}})),
            ],
            None,
        ),
    );
    proxy.set_fault_matching(
        &[TARGET.into(), key_value],
        page(
            &[
                record(
                    "2026-11-30T11:00:00Z",
                    "GetCallerIdentity",
                    "sts.amazonaws.com",
                    json!({}),
                ),
                record(
                    "2026-11-30T11:02:00Z",
                    "CreateUser",
                    "iam.amazonaws.com",
                    json!({"readOnly": false}),
                ),
            ],
            Some("page-2"),
        ),
    );
    proxy.set_fault_matching(
        &[
            TARGET.into(),
            minted_value.clone(),
            "/us-east-1/cloudtrail/".into(),
        ],
        page(
            &[record(
                "2026-11-30T11:06:00Z",
                "RunInstances",
                "ec2.amazonaws.com",
                json!({"readOnly": false, "errorCode": "UnauthorizedOperation"}),
            )],
            None,
        ),
    );
    proxy.set_fault_matching(&[TARGET.into(), minted_value], page(&[], None));
}

async fn results_queue(env: &TestEnv) -> String {
    common::create_queue(&env.clients.sqs, &format!("{}-results", env.name), None).await
}

async fn reports_on(env: &TestEnv, queue: &str, count: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while got.len() < count && tokio::time::Instant::now() < deadline {
        for message in common::receive(&env.clients.sqs, queue, 10, 1).await {
            let event: Value = serde_json::from_str(message.body().unwrap()).unwrap();
            if event["type"] == "activity_report" {
                got.push(event);
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_gets_two_reports_that_follow_its_minted_credentials() {
    let mut env = TestEnv::new("activity").await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    env.route_all_through(&proxy).await;
    let results = results_queue(&env).await;
    env.config.results.queue_url = Some(results.clone());
    env.config.activity.regions = vec!["us-east-1".into(), "eu-west-1".into()];
    env.config.activity.second_pass_delay_seconds = 2;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("leaky", 1).await;
    answer_cloudtrail(&proxy, &keys[0]);

    let body = json!({"request_id": "act-1", "access_key_id": keys[0], "user_name": user, "report_activity": true}).to_string();
    let job = worker.handle(env.deliver(&body).await).await;
    assert_eq!(job.outcome, Outcome::Deleted);

    // Pass 1 is on the queue at once; pass 2 after its delay.
    let first = worker.handle(env.receive_one().await).await;
    assert_eq!(first.outcome, Outcome::Retry(Reason::Reported));
    let reports = reports_on(&env, &results, 1).await;
    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert_eq!(report["pass"], 1);
    assert_eq!(report["request_id"], "act-1");
    assert_eq!(report["access_key_id"], keys[0].as_str());
    assert_eq!(report["user_name"], user.as_str());
    assert!(report["source"]
        .as_str()
        .unwrap()
        .contains("management events only"));
    assert_eq!(report["regions"], json!(["us-east-1", "eu-west-1"]));
    assert_eq!(
        report["failed_regions"][0]["region"], "eu-west-1",
        "the refused Region is named"
    );
    let activity = &report["activity"];
    assert_eq!(activity["events_read"], 4, "both pages");
    assert_eq!(activity["by_api"]["iam.amazonaws.com:CreateUser"], 1);
    assert_eq!(activity["persistence"][0]["api"], "CreateUser");
    assert_eq!(
        activity["changes"][0]["resources"],
        json!(["AWS::IAM::User mallory"])
    );
    let minted = activity["minted"].as_array().unwrap();
    assert_eq!(minted.len(), 2);
    let session = minted
        .iter()
        .find(|m| m["access_key_id"] == MINTED)
        .unwrap();
    assert_eq!(
        session["activity"]["by_api"]["ec2.amazonaws.com:RunInstances"], 1,
        "followed one level"
    );
    assert_eq!(session["activity"]["errors"]["UnauthorizedOperation"], 1);
    let other = minted.iter().find(|m| m["api"] == "AssumeRole").unwrap();
    assert!(other["not_followed"]
        .as_str()
        .unwrap()
        .contains("999988887777"));
    assert!(report["summary"]
        .as_str()
        .unwrap()
        .starts_with(&format!("Activity of access key {} of {user}", keys[0])));

    // The leaked key was looked up in both Regions; each call named the key.
    let lookups = proxy.requests_containing(TARGET);
    assert!(lookups.iter().any(|r| r.contains("/eu-west-1/cloudtrail/")));
    assert!(lookups
        .iter()
        .all(|r| r.contains("\"AttributeKey\":\"AccessKeyId\"")));

    // Pass 2, durable on the queue, comes back after the delay. The Region that refused
    // lookups (as a service control policy denying it does) is not asked again: said
    // once, in pass 1, not a failure of every report after it.
    let refused_before = lookups
        .iter()
        .filter(|r| r.contains("/eu-west-1/cloudtrail/"))
        .count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = worker.handle(env.receive_one().await).await;
    assert_eq!(second.outcome, Outcome::Retry(Reason::Reported));
    let reports = reports_on(&env, &results, 1).await;
    assert_eq!(reports[0]["pass"], 2);
    assert_eq!(reports[0]["regions"], json!(["us-east-1"]));
    assert_eq!(reports[0]["skipped_regions"], json!(["eu-west-1"]));
    assert!(reports[0].get("failed_regions").is_none(), "{}", reports[0]);
    assert!(reports[0]["summary"]
        .as_str()
        .unwrap()
        .contains("1 refused before and skipped"));
    assert_eq!(
        proxy
            .requests_containing(TARGET)
            .iter()
            .filter(|r| r.contains("/eu-west-1/cloudtrail/"))
            .count(),
        refused_before
    );
    env.wait_for_depth((0, 0), Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_task_received_early_waits_and_a_report_failure_never_touches_the_job() {
    let mut env = TestEnv::new("activity-early").await;
    env.config.activity.regions = vec!["us-east-1".into()];
    env.config.intake.report_activity = true;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 1).await;

    // A security event asks for a report by default; the emulator has no CloudTrail,
    // so the report fails, and says so, while the job stays deleted.
    let id = common::unique("gd").replace('-', "");
    let finding = common::events::guardduty_finding(&id, &keys[0], &user);
    let job = env.handle_job(&worker, env.deliver(&finding).await).await;
    assert_eq!(job.outcome, Outcome::Deactivated);
    assert_eq!(
        env.queue_depth().await.0,
        1,
        "pass 1 waits on the queue (pass 2 is delayed)"
    );
    let first = worker.handle(env.receive_one().await).await;
    assert_eq!(first.outcome, Outcome::Retry(Reason::Reported));
    assert!(
        first.detail.unwrap().contains("1 not read"),
        "the failed Region is said"
    );

    // A task that is not the worker's own (no MAC) is refused: a producer cannot make the
    // worker read a key's history and send it out.
    let forged = json!({"request_id": "early-1", "access_key_id": keys[0],
        "continuation": {"activity_report": {"pass": 2, "revoked_at_ms": 1, "not_before_ms": 32_503_680_000_000u64}}})
    .to_string();
    let report = worker.handle(env.deliver(&forged).await).await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::InvalidMessage));
    assert!(report.detail.unwrap().contains("not the worker's own"));
    assert_eq!(env.dead_letters().await.len(), 1);
    // The worker's own, whose time has not come, goes back, invisible until then.
    let settings = env.settings();
    let mac = iam_key_revoker::aws::mac::Mac::new(
        aws_sdk_kms::Client::new(&env.clients.sdk),
        settings.continuation.mac_key_id.as_deref().unwrap(),
        settings.backoff,
    );
    let mut task = iam_key_revoker::activity::Task {
        request_id: "early-1".into(),
        access_key_id: keys[0].clone(),
        user_name: None,
        account_id: None,
        pass: 2,
        revoked_at_ms: 1,
        not_before_ms: 32_503_680_000_000,
        event_source: None,
        event_type: None,
        expires_at_ms: Some(32_503_680_000_000),
        mac: None,
    };
    task.mac = Some(
        mac.sign(
            iam_key_revoker::aws::mac::Purpose::ReportTask,
            &task.canonical(),
            &Default::default(),
        )
        .await
        .unwrap(),
    );
    let early = task.to_body();
    let report = worker.handle(env.deliver(&early).await).await;
    assert_eq!(report.outcome, Outcome::Retry(Reason::ReportLater));
    assert_eq!(
        env.queue_depth().await,
        (0, 1),
        "kept on the queue, invisible until its time"
    );
    assert!(env.dead_letters().await.is_empty());
    // A task that breaks the rules is dead-lettered like any invalid message.
    let broken = early.replace("\"pass\":2", "\"pass\":7");
    let report = worker.handle(env.deliver(&broken).await).await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::InvalidMessage));
}

/// What the leaked key made (docs, "What the leaked key made"): a key it created for
/// another user is deactivated by a follow-up job of its own, linked to the original; a
/// key CloudTrail names for a user who does not hold it is refused by IAM's ownership
/// check, as any job's; a console password and a user are reported for a person; IAM's
/// events are read in us-east-1 whatever activity.regions says; and a follow-up makes no
/// follow-ups of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_leaked_key_made_are_revoked_by_follow_ups_that_never_loop() {
    let mut env = TestEnv::new("made").await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    env.route_all_through(&proxy).await;
    let results = results_queue(&env).await;
    env.config.results.queue_url = Some(results.clone());
    env.config.activity.regions = vec!["eu-west-1".into()];
    env.config.activity.second_pass_delay_seconds = 900;
    let worker = env.worker().await;
    let (leaky, leaked) = env.user_with_keys("leaky", 1).await;
    let (bob, made) = env.user_with_keys("bob", 1).await;
    let (carol, not_daves) = env.user_with_keys("carol", 1).await;
    // Console passwords: bob's the leaked key set just now; carol's was made again after
    // the leaked key's call (by a person), so it is not the attacker's.
    for user in [&bob, &carol] {
        env.clients
            .iam
            .create_login_profile()
            .user_name(user)
            .password("Correct-Horse-9")
            .send()
            .await
            .unwrap();
    }
    let now = iam_key_revoker::activity::iso(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    let login = |time: &str, user: &str| {
        record(
            time,
            "CreateLoginProfile",
            "iam.amazonaws.com",
            json!({"readOnly": false, "requestParameters": {"userName": user, "password": "HIDDEN_DUE_TO_SECURITY_REASONS", "passwordResetRequired": false},
                   "responseElements": {"loginProfile": {"userName": user, "createDate": time, "passwordResetRequired": false}}}),
        )
    };
    let key_value = format!("\"AttributeValue\":\"{}\"", leaked[0]);
    // CreateAccessKey and CreateLoginProfile as CloudTrail records them (IAM User Guide,
    // "Logging IAM and AWS STS API calls with AWS CloudTrail": the new key's id and user
    // in responseElements.accessKey, never its secret; the password hidden).
    let created = |key: &str, user: &str| {
        record(
            "2026-11-30T11:03:00Z",
            "CreateAccessKey",
            "iam.amazonaws.com",
            json!({"readOnly": false, "requestParameters": {"userName": user},
                   "responseElements": {"accessKey": {"accessKeyId": key, "status": "Active",
                                        "userName": user, "createDate": "Nov 30, 2026 11:03:00 AM"}}}),
        )
    };
    proxy.set_fault_matching(
        &[
            TARGET.into(),
            key_value.clone(),
            "/us-east-1/cloudtrail/".into(),
        ],
        page(
            &[
                created(&made[0], &bob),
                created(&not_daves[0], "dave"),
                login(&now, &bob),
                login("2026-11-30T11:04:00Z", &carol),
                record(
                    "2026-11-30T11:05:00Z",
                    "CreateUser",
                    "iam.amazonaws.com",
                    json!({"readOnly": false, "requestParameters": {"userName": "mallory"}}),
                ),
            ],
            None,
        ),
    );
    proxy.set_fault_matching(&[TARGET.into(), key_value], page(&[], None));

    let body = json!({"request_id": "made-1", "access_key_id": leaked[0], "user_name": leaky, "report_activity": true}).to_string();
    assert_eq!(
        worker.handle(env.deliver(&body).await).await.outcome,
        Outcome::Deleted
    );
    let pass = worker.handle(env.receive_one().await).await;
    assert_eq!(pass.outcome, Outcome::Retry(Reason::Reported), "{pass:?}");
    let lookups = proxy.requests_containing(TARGET);
    assert!(
        lookups.iter().any(|r| r.contains("/us-east-1/cloudtrail/")),
        "IAM's events are read where CloudTrail keeps them"
    );
    let report = reports_on(&env, &results, 1).await.remove(0);
    let made_list = report["activity"]["made"].as_array().unwrap().clone();
    let entry = |api: &str, key: Option<&str>| {
        made_list
            .iter()
            .find(|m| m["api"] == api && key.is_none_or(|k| m["access_key_id"] == k))
            .unwrap_or_else(|| panic!("{api} in {made_list:?}"))
            .clone()
    };
    let follow_up = format!("made-1:made:{}", made[0]);
    assert_eq!(
        entry("CreateAccessKey", Some(&made[0]))["containment"],
        format!("follow-up job {follow_up} (deactivate)")
    );
    let bobs = made_list
        .iter()
        .find(|m| m["api"] == "CreateLoginProfile" && m["user_name"] == bob.as_str())
        .unwrap();
    assert_eq!(
        bobs["containment"],
        format!(
            "follow-up job {} (delete the console password)",
            login_follow_up_id("made-1", &bob, &now)
        )
    );
    assert_eq!(entry("CreateUser", None)["user_name"], "mallory");
    assert!(report["summary"]
        .as_str()
        .unwrap()
        .contains("2 access key(s) made"));

    // Each follow-up is a job of its own, with its own outcome.
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let report = worker.handle(env.receive_one().await).await;
        assert_eq!(
            report.facts.batch_id.as_deref(),
            Some("made-1"),
            "{report:?}"
        );
        outcomes.push((report.facts.request_id.clone().unwrap(), report.outcome));
    }
    assert!(
        outcomes.contains(&(follow_up, Outcome::Deactivated)),
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&(login_follow_up_id("made-1", &bob, &now), Outcome::Deleted)));
    assert!(
        outcomes.contains(&(
            login_follow_up_id("made-1", &carol, "2026-11-30T11:04:00Z"),
            Outcome::Cancelled
        )),
        "a password made again since is not the attacker's: {outcomes:?}"
    );
    let has_password = |user: String| {
        let iam = env.clients.iam.clone();
        async move { iam.get_login_profile().user_name(user).send().await.is_ok() }
    };
    assert!(
        !has_password(bob.clone()).await,
        "bob's console password is gone"
    );
    assert!(has_password(carol.clone()).await, "carol's is left alone");
    // A producer's copy of the follow-up, without the worker's MAC, removes nothing.
    let forged = json!({"request_id": "forged-login", "user_name": carol,
        "continuation": {"login_profile": {"made_by": "made-1", "made_with": leaked[0],
            "api": "UpdateLoginProfile", "at": now, "expires_at_ms": 4_000_000_000_000u64, "mac": "Zm9yZ2Vk"}}})
    .to_string();
    let refused = worker.handle(env.deliver(&forged).await).await;
    assert_eq!(
        refused.outcome,
        Outcome::Rejected(Reason::InvalidMessage),
        "{refused:?}"
    );
    assert!(has_password(carol.clone()).await);
    assert!(
        outcomes.contains(&(
            format!("made-1:made:{}", not_daves[0]),
            Outcome::Rejected(Reason::OwnerMismatch)
        )),
        "a key CloudTrail names for a user who does not hold it is left alone: {outcomes:?}"
    );
    assert_eq!(
        env.key_status(&bob, &made[0]).await,
        Some(aws_sdk_iam::types::StatusType::Inactive)
    );
    // No report, so no follow-up, of a follow-up: only pass 2 of the original waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.queue_depth().await, (0, 0));
}

/// Without the worker's MAC key a report task may be a producer's, naming any key whose
/// history it likes: what that history made is reported, never changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_mac_key_what_the_key_made_is_only_reported() {
    let mut env = TestEnv::new("made-nomac").await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    env.route_all_through(&proxy).await;
    let results = results_queue(&env).await;
    env.config.results.queue_url = Some(results.clone());
    env.config.continuation.mac_key_id = None;
    env.config.activity.regions = vec!["us-east-1".into()];
    env.config.activity.second_pass_delay_seconds = 900;
    let worker = env.worker().await;
    let (leaky, leaked) = env.user_with_keys("leaky", 1).await;
    let (bob, made) = env.user_with_keys("bob", 1).await;
    proxy.set_fault_matching(
        &[TARGET.into(), format!("\"AttributeValue\":\"{}\"", leaked[0])],
        page(
            &[record(
                "2026-11-30T11:03:00Z",
                "CreateAccessKey",
                "iam.amazonaws.com",
                json!({"readOnly": false, "responseElements": {"accessKey": {"accessKeyId": made[0], "status": "Active", "userName": bob}}}),
            )],
            None,
        ),
    );
    let body = json!({"request_id": "nomac-1", "access_key_id": leaked[0], "user_name": leaky, "report_activity": true}).to_string();
    assert_eq!(
        worker.handle(env.deliver(&body).await).await.outcome,
        Outcome::Deleted
    );
    let pass = worker.handle(env.receive_one().await).await;
    assert_eq!(pass.outcome, Outcome::Retry(Reason::Reported), "{pass:?}");
    let report = reports_on(&env, &results, 1).await.remove(0);
    let made_entry = &report["activity"]["made"][0];
    assert_eq!(made_entry["access_key_id"], made[0].as_str());
    assert!(made_entry["containment"]
        .as_str()
        .unwrap()
        .contains("needs the worker's own messages MACed"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.queue_depth().await, (0, 0), "no follow-up sent");
    assert_eq!(
        env.key_status(&bob, &made[0]).await,
        Some(aws_sdk_iam::types::StatusType::Active)
    );
}
