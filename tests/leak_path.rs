//! docs "Security events", "Continuations" and "Revoking sessions" as AWS delivers
//! them: AWS Health events about another account, naming the user, in backup copies and
//! pages; a job that changed something and could not finish carries on, on any worker;
//! session cut-offs that never move back. Against the local emulator through the real
//! SDK, with the fault proxy for what the emulator cannot do. Event bodies follow
//! "Reference: AWS Health events Amazon EventBridge schema" (AWS Health User Guide).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::proxy::{iam_error, Fault, FaultProxy, Scope};
use common::TestEnv;
use iam_key_revoker::aws::sessions::{session_policy, session_policy_name, SESSION_POLICY_NAME};
use iam_key_revoker::sessions::{cutoff_policy, policy_name as cutoff_name, revocation_sid};
use iam_key_revoker::{Outcome, Reason};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The emulator's account, which the worker's own credentials belong to.
const ACCOUNT: &str = "123456789012";

/// An AWS Health credential-exposure event naming `keys`, with `detail` fields added
/// (communicationId, affectedAccount, eventMetadata, ...).
fn health(id: &str, keys: &[&str], extra: Value) -> String {
    let entities: Vec<Value> = keys.iter().map(|k| json!({ "entityValue": k })).collect();
    let mut detail = json!({
        "eventArn": "arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/AWS_RISK_CREDENTIALS_EXPOSED_ABC123",
        "service": "RISK",
        "eventTypeCode": "AWS_RISK_CREDENTIALS_EXPOSED",
        "eventTypeCategory": "issue",
        "eventScopeCode": "ACCOUNT_SPECIFIC",
        "startTime": "Sat, 28 Nov 2026 06:10:09 GMT",
        "eventDescription": [{
            "language": "en_US",
            "latestDescription": "Your AWS Access Key was found publicly available on GitHub."
        }],
        "affectedEntities": entities
    });
    for (field, value) in extra.as_object().cloned().unwrap_or_default() {
        detail[field] = value;
    }
    json!({
        "version": "0",
        "id": id,
        "detail-type": "AWS Health Event",
        "source": "aws.health",
        "account": ACCOUNT,
        "time": "2026-11-28T06:27:57Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail
    })
    .to_string()
}

/// Retry delays of one second, so that a continuation comes back within a test.
fn quick_retries(env: &mut TestEnv) {
    env.config.retry.visibility_base_seconds = 1;
    env.config.retry.visibility_max_seconds = 1;
}

/// The names of `user`'s session policies.
async fn session_policies(env: &TestEnv, user: &str) -> Vec<String> {
    let out = env
        .clients
        .iam
        .list_user_policies()
        .user_name(user)
        .send()
        .await
        .unwrap();
    out.policy_names()
        .iter()
        .filter(|n| n.starts_with(SESSION_POLICY_NAME))
        .cloned()
        .collect()
}

/// Receives the next message on the job queue (a continuation), waiting up to `limit`.
async fn next_message(env: &TestEnv, limit: Duration) -> aws_sdk_sqs::types::Message {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        // A long poll of a second: no sleep between.
        let got = common::receive(&env.clients.sqs, &env.queue_url, 1, 1).await;
        if let Some(message) = got.into_iter().next() {
            return message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message came back"
        );
    }
}

/// A Health event naming two keys of two users. Their owners found, the job is handed on
/// to a message of the worker's own naming them before any key changes; the first key is
/// deleted, the second's delete fails past the backoff, and the job carries on in another
/// message that also says the first key was deleted. A new worker (a restart, another
/// replica) finishes it: bob's key deleted, and alice's sessions cut off although her key
/// is gone and IAM can no longer say whose it was.
#[tokio::test]
async fn a_health_event_that_failed_halfway_is_finished_by_another_worker() {
    let mut env = TestEnv::new("carry-on").await;
    quick_retries(&mut env);
    let (alice, alice_keys) = env.user_with_keys("alice", 1).await;
    let (bob, bob_keys) = env.user_with_keys("bob", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    env.route_iam_through(&proxy).await;
    let bobs_delete = [
        "Action=DeleteAccessKey".to_owned(),
        format!("AccessKeyId={}", bob_keys[0]),
    ];
    proxy.set_fault_matching(
        &bobs_delete,
        Fault::Status(503, iam_error("ServiceUnavailable")),
    );
    let body = health(
        &common::unique("half"),
        &[&alice_keys[0], &bob_keys[0]],
        json!({}),
    );

    let worker = env.worker().await;
    let first = env.handle_job(&worker, env.deliver(&body).await).await;

    assert_eq!(
        first.outcome,
        Outcome::Retry(Reason::TransientError),
        "{:?}",
        first.detail
    );
    assert_eq!(first.facts.keys_changed, 1);
    assert_eq!(env.key_status(&alice, &alice_keys[0]).await, None);
    assert!(env.key_status(&bob, &bob_keys[0]).await.is_some());
    assert!(
        first
            .detail
            .as_deref()
            .unwrap()
            .contains("carried on by message"),
        "{:?}",
        first.detail
    );

    // The original is gone; what comes back is the worker's own message.
    proxy.set_fault_matching(&bobs_delete, Fault::None);
    let continuation = next_message(&env, Duration::from_secs(10)).await;
    let carried: Value = serde_json::from_str(continuation.body().unwrap()).unwrap();
    assert_eq!(
        carried["request_id"],
        first.facts.request_id.clone().unwrap()
    );
    assert_eq!(carried["continuation"]["event_source"], "aws.health");
    let named: Vec<(String, Option<String>, Option<String>)> = carried["continuation"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["access_key_id"].as_str().unwrap().to_owned(),
                k["user_name"].as_str().map(str::to_owned),
                k["result"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        named,
        vec![
            (
                alice_keys[0].clone(),
                Some(alice.clone()),
                Some("deleted".into())
            ),
            (bob_keys[0].clone(), Some(bob.clone()), None)
        ]
    );

    let second = env.worker().await.handle(continuation).await;

    assert_eq!(second.outcome, Outcome::Deleted, "{:?}", second.detail);
    assert_eq!(second.facts.keys_changed, 2, "what the job changed, in all");
    assert_eq!(env.key_status(&bob, &bob_keys[0]).await, None);
    assert_eq!(session_policies(&env, &alice).await.len(), 1);
    assert_eq!(session_policies(&env, &bob).await.len(), 1);
    assert_eq!(second.facts.event_source(), Some("aws.health"));
    assert_eq!(env.queue_depth().await, (0, 0));
    assert!(env.dead_letters().await.is_empty());
}

/// A key-only job deletes its key, then `PutUserPolicy` is denied: the job carries on
/// and its continuation is dead-lettered naming the owner; once the permission is
/// granted and the message moved back, the session policy is put.
#[tokio::test]
async fn a_refused_session_policy_is_put_when_its_continuation_is_moved_back() {
    let mut env = TestEnv::new("carry-denied").await;
    quick_retries(&mut env);
    let (user, keys) = env.user_with_keys("u", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    env.route_iam_through(&proxy).await;
    proxy.set_fault_for(
        "PutUserPolicy",
        Fault::Status(403, iam_error("AccessDenied")),
    );
    let worker = env.worker().await;
    let body = json!({"request_id": common::unique("kd"), "access_key_id": keys[0], "revoke_sessions": true}).to_string();

    let first = env.handle_job(&worker, env.deliver(&body).await).await;
    assert_eq!(first.outcome, Outcome::Retry(Reason::AccessDenied));
    assert_eq!(env.key_status(&user, &keys[0]).await, None);
    let second = worker
        .handle(next_message(&env, Duration::from_secs(10)).await)
        .await;
    assert_eq!(second.outcome, Outcome::Rejected(Reason::AccessDenied));
    assert!(second
        .detail
        .as_deref()
        .unwrap()
        .contains("older sessions were not revoked"));
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    let dead_body = dead[0].body().unwrap();
    assert!(
        dead_body.contains(&format!("\"user_name\":\"{user}\"")),
        "{dead_body}"
    );

    // Granted and moved back, to a new worker.
    proxy.set_fault_for("PutUserPolicy", Fault::None);
    let again = env
        .worker()
        .await
        .handle(env.deliver(dead_body).await)
        .await;
    assert_eq!(again.outcome, Outcome::Deleted, "{:?}", again.detail);
    assert_eq!(session_policies(&env, &user).await.len(), 1);
}

/// `eventMetadata.userName` and `publicKey` (trimmed, as AWS's own responder reads them)
/// name the user: one DeleteAccessKey, no owner lookup. A user IAM does not know falls
/// back to the owner IAM reports.
#[tokio::test]
async fn a_health_event_naming_the_user_costs_one_delete_and_a_stale_name_falls_back() {
    let mut env = TestEnv::new("named").await;
    let (user, keys) = env.user_with_keys("named", 2).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    env.route_iam_through(&proxy).await;
    env.config.intake.revoke_sessions = false;
    let worker = env.worker().await;
    let metadata = |user: &str, key: &str| json!({"eventMetadata": {"userName": user, "publicKey": format!(" {key} "), "exposedUrl": "https://example.com/leak"}});

    let named = health(
        &common::unique("n1"),
        &[&keys[0]],
        metadata(&user, &keys[0]),
    );
    let report = worker.handle(env.deliver(&named).await).await;
    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.detail);
    assert_eq!(proxy.operations(), vec!["DeleteAccessKey"]);
    assert_eq!(report.facts.user_name.as_deref(), Some(user.as_str()));

    let stale = health(
        &common::unique("n2"),
        &[&keys[1]],
        metadata("renamed-long-ago", &keys[1]),
    );
    let report = worker.handle(env.deliver(&stale).await).await;
    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.detail);
    assert_eq!(report.facts.user_name.as_deref(), Some(user.as_str()));
    assert!(proxy.count("GetAccessKeyLastUsed") >= 1);
    assert_eq!(env.key_status(&user, &keys[1]).await, None);
}

/// Under an organizational view, `account` is the account the event was sent to and
/// `detail.affectedAccount` the one whose key leaked: the job acts there, never on a key
/// of the same id in the worker's own account.
#[tokio::test]
async fn a_health_event_acts_in_the_affected_account() {
    let env = TestEnv::new("affected").await;
    let (user, keys) = env.user_with_keys("own", 1).await;
    let worker = env.worker().await;

    let elsewhere = health(
        &common::unique("org"),
        &[&keys[0]],
        json!({"affectedAccount": "210987654321"}),
    );
    let report = worker.handle(env.deliver(&elsewhere).await).await;
    assert_eq!(
        report.outcome,
        Outcome::Rejected(Reason::CrossAccountDisabled),
        "{:?}",
        report.detail
    );
    assert_eq!(report.facts.account_id.as_deref(), Some("210987654321"));
    assert!(env.key_status(&user, &keys[0]).await.is_some());

    // Sent to another (management) account, about this one: worked here.
    let mut here: Value = serde_json::from_str(&health(
        &common::unique("org"),
        &[&keys[0]],
        json!({"affectedAccount": ACCOUNT}),
    ))
    .unwrap();
    here["account"] = "111122223333".into();
    let report = env
        .handle_job(&worker, env.deliver(&here.to_string()).await)
        .await;
    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.detail);
    assert_eq!(report.facts.account_id, None, "the worker's own account");
}

/// Backup copies (another EventBridge id, `backupEvent`) are the same event: `duplicate`
/// on the worker that acted, `already_absent` on another, never a rejection. A page of
/// the event naming other keys is worked.
#[tokio::test]
async fn backup_copies_are_never_rejected_and_pages_are_worked() {
    let env = TestEnv::new("copies").await;
    let (user, keys) = env.user_with_keys("copied", 2).await;
    let worker = env.worker().await;
    let communication = common::unique("1ab2c3d4e5f60718293a4b5c6d7e8f90").replace('-', "");
    let page = |id: &str, key: &str, backup: bool| {
        health(
            id,
            &[key],
            json!({"communicationId": format!("{communication}-1"), "backupEvent": backup, "affectedAccount": ACCOUNT, "page": "1", "totalPages": "1"}),
        )
    };

    let first = env
        .handle_job(&worker, env.deliver(&page("e-1", &keys[0], false)).await)
        .await;
    assert_eq!(first.outcome, Outcome::Deleted, "{:?}", first.detail);
    assert_eq!(env.key_status(&user, &keys[0]).await, None);

    let backup = page("e-2-from-us-west-2", &keys[0], true);
    let same_worker = env.handle_job(&worker, env.deliver(&backup).await).await;
    assert_eq!(same_worker.outcome, Outcome::Duplicate);
    let other_worker = env.worker().await.handle(env.deliver(&backup).await).await;
    assert_eq!(
        other_worker.outcome,
        Outcome::AlreadyAbsent,
        "{:?}",
        other_worker.detail
    );

    let other_page = env
        .handle_job(&worker, env.deliver(&page("e-3", &keys[1], false)).await)
        .await;
    assert_eq!(
        other_page.outcome,
        Outcome::Deleted,
        "{:?}",
        other_page.detail
    );
    assert!(env.dead_letters().await.is_empty());
}

/// A key of a multi-key event that IAM cannot find in the account (its owner deleted it
/// before the event arrived) is `already_absent` on its own; it never blocks the other.
#[tokio::test]
async fn a_key_gone_before_the_event_does_not_block_the_other() {
    let env = TestEnv::new("gone-first").await;
    let (user, keys) = env.user_with_keys("g", 1).await;
    let worker = env.worker().await;
    let gone = "AKIAGONEBEFOREEVENT1";

    let body = health(&common::unique("g"), &[gone, &keys[0]], json!({}));
    let report = env.handle_job(&worker, env.deliver(&body).await).await;

    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.detail);
    assert_eq!(env.key_status(&user, &keys[0]).await, None);
    let results: Vec<(&str, &str)> = report
        .facts
        .keys
        .iter()
        .map(|k| (k.access_key_id.as_str(), k.result))
        .collect();
    assert_eq!(
        results,
        vec![(gone, "already_absent"), (keys[0].as_str(), "deleted")]
    );
}

/// Two jobs for one user at once (two queues, two replicas): each revocation puts a
/// cut-off of its own, and the later one is the time in force. A later cut-off of the
/// worker's already there stays in force; the cut-offs of earlier versions (unnamed and
/// named for their time only) are folded into one; a planted one far ahead is replaced.
#[tokio::test]
async fn session_cutoffs_never_move_back_and_each_revocation_keeps_its_own() {
    let env = TestEnv::new("cutoffs").await;
    let (user, keys) = env.user_with_keys("c", 2).await;
    let old = aws_smithy_types::DateTime::from_secs(1_600_000_000);
    let put = |name: String, document: String| {
        env.clients
            .iam
            .put_user_policy()
            .user_name(&user)
            .policy_name(name)
            .policy_document(document)
            .send()
    };
    put(
        SESSION_POLICY_NAME.to_owned(),
        session_policy("2020-01-01T00:00:00Z"),
    )
    .await
    .unwrap();
    put(
        session_policy_name(old),
        session_policy("2020-09-13T12:26:40Z"),
    )
    .await
    .unwrap();
    let worker = env.worker().await;
    let body = |i: usize| {
        json!({"request_id": format!("cut-{i}"), "access_key_id": keys[i], "user_name": user, "revoke_sessions": true}).to_string()
    };
    let (first, second) = (env.deliver(&body(0)).await, env.deliver(&body(1)).await);
    let (a, b) = tokio::join!(worker.handle(first), worker.handle(second));
    let reports = [a, b];

    for report in &reports {
        assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.detail);
    }
    let latest = reports
        .iter()
        .filter_map(|r| r.facts.sessions_revoked_before.clone())
        .max()
        .unwrap();
    let left = session_policies(&env, &user).await;
    assert_eq!(
        left.len(),
        3,
        "two revocations and the folded old ones: {left:?}"
    );
    for i in 0..2 {
        let sid = revocation_sid(&format!("cut-{i}"));
        assert!(left.iter().any(|n| n.ends_with(&sid)), "{left:?}");
    }
    assert!(
        left.iter()
            .any(|n| n == "iam-key-revoker-revoke-older-sessions-20200913T122640Z-Folded"),
        "{left:?}"
    );
    let newest = left
        .iter()
        .filter_map(|n| n.split('-').nth(6).map(str::to_owned))
        .max()
        .unwrap();
    assert_eq!(newest, latest.replace(['-', ':'], ""));
    assert!(reports[0]
        .facts
        .sessions
        .as_deref()
        .unwrap()
        .contains("GetSessionToken"));

    // A later cut-off of the worker's in force stays the time in force; a time far ahead
    // is no cut-off of the worker's, planted to look like one: replaced.
    let now = aws_smithy_types::DateTime::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let soon = aws_smithy_types::DateTime::from_secs(now.secs() + 400);
    let sid = revocation_sid("another");
    put(cutoff_name(soon, &sid), cutoff_policy(&sid, soon, None))
        .await
        .unwrap();
    let far = aws_smithy_types::DateTime::from_secs(4_000_000_000);
    let planted = session_policy_name(far);
    put(planted.clone(), session_policy("2096-10-02T07:06:40Z"))
        .await
        .unwrap();
    let body = json!({"request_id": "cut-later", "access_key_id": "AKIANOLONGERTHERE001", "user_name": user, "revoke_sessions": true}).to_string();
    let report = worker.handle(env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::AlreadyAbsent);
    assert_eq!(
        report.facts.sessions_revoked_before.as_deref(),
        Some(
            soon.fmt(aws_smithy_types::date_time::Format::DateTime)
                .unwrap()
                .as_str()
        )
    );
    let detail = report.detail.clone().unwrap();
    assert!(
        detail.contains(&planted) && detail.contains("not the worker's"),
        "{detail}"
    );
    let left = session_policies(&env, &user).await;
    assert!(!left.contains(&planted), "{left:?}");
    assert!(left.contains(&cutoff_name(soon, &sid)), "{left:?}");
    assert!(
        left.iter()
            .any(|n| n.ends_with(&revocation_sid("cut-later"))),
        "{left:?}"
    );
}

/// IAM refuses the policy for its quota (2,048 characters of inline policy per user):
/// `rejected/policy_quota`, with what to do.
#[tokio::test]
async fn a_full_inline_policy_quota_is_policy_quota() {
    let mut env = TestEnv::new("quota").await;
    let (user, keys) = env.user_with_keys("q", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault_for(
        "PutUserPolicy",
        Fault::Status(409, iam_error("LimitExceeded")),
    );
    env.route_iam_through(&proxy).await;
    let worker = env.worker().await;
    let body = json!({"request_id": "q-1", "access_key_id": keys[0], "user_name": user, "revoke_sessions": true}).to_string();

    let report = worker.handle(env.deliver(&body).await).await;

    assert_eq!(report.outcome, Outcome::Rejected(Reason::PolicyQuota));
    let detail = report.detail.unwrap();
    assert!(
        detail.contains("2,048") && detail.contains("move this message back"),
        "{detail}"
    );
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        None,
        "the key is gone"
    );
    let dead = env.dead_letters().await;
    assert_eq!(
        common::attribute(&dead[0], "revoker-reason").as_deref(),
        Some("policy_quota")
    );
}

/// A user who holds a protected key gets no cut-off (it would end the sessions that key
/// minted too), and the outcome says why.
#[tokio::test]
async fn a_user_holding_a_protected_key_gets_no_cutoff() {
    let mut env = TestEnv::new("holder").await;
    let (user, keys) = env.user_with_keys("h", 2).await;
    env.config.protect.access_keys = vec![keys[1].clone()];
    let worker = env.worker().await;
    let body = json!({"request_id": "h-1", "access_key_id": keys[0], "user_name": user, "revoke_sessions": true}).to_string();

    let report = worker.handle(env.deliver(&body).await).await;

    assert_eq!(report.outcome, Outcome::Deleted);
    assert!(session_policies(&env, &user).await.is_empty());
    assert_eq!(report.facts.sessions_revoked_before, None);
    let why = report.facts.sessions.unwrap();
    assert!(why.contains(&keys[1]) && why.contains("protected"), "{why}");
    assert!(env.key_status(&user, &keys[1]).await.is_some());
}

/// A GuardDuty finding whose caller is an account outside the organization revokes
/// nothing, not even a same-named user's key in the finding's account.
#[tokio::test]
async fn a_finding_about_an_unaffiliated_caller_changes_nothing_here() {
    let env = TestEnv::new("remote").await;
    let (user, keys) = env.user_with_keys("r", 1).await;
    let worker = env.worker().await;
    let id = common::unique("remote").replace('-', "");
    let finding = json!({
        "version": "0", "id": format!("c8c4daa7-{id}"), "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty", "account": ACCOUNT, "time": "2026-11-28T08:55:11Z",
        "region": "us-east-1", "resources": [],
        "detail": {
            "schemaVersion": "2.0", "accountId": ACCOUNT, "region": "us-east-1", "id": id,
            "type": "UnauthorizedAccess:IAMUser/MaliciousIPCaller", "severity": 8.0,
            "resource": {"resourceType": "AccessKey", "accessKeyDetails": {
                "accessKeyId": keys[0], "principalId": "AIDAEXAMPLE", "userType": "IAMUser", "userName": user}},
            "service": {"action": {"actionType": "AWS_API_CALL", "awsApiCallAction": {
                "api": "GetObject", "callerType": "Remote account",
                "remoteAccountDetails": {"accountId": "999988887777", "affiliated": false}}}}
        }
    })
    .to_string();

    let report = worker.handle(env.deliver(&finding).await).await;

    assert_eq!(report.outcome, Outcome::Rejected(Reason::NotRevocable));
    assert!(env.key_status(&user, &keys[0]).await.is_some());
}

/// While priority jobs wait, the main-queue messages the worker holds are kept, not
/// released: a release costs a receive, and with `maxReceiveCount` 1 any second receive
/// would move a healthy bulk job to the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_bulk_jobs_keep_their_receives_while_urgent_jobs_go_first() {
    let mut env = TestEnv::new("held").await;
    let (priority_url, _) = env.add_priority_queue().await;
    let dlq_arn = common::queue_arn(&env.clients.sqs, &env.dlq_url).await;
    env.clients
        .sqs
        .set_queue_attributes()
        .queue_url(&env.queue_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"1"}}"#),
        )
        .send()
        .await
        .unwrap();
    env.config.worker.max_in_flight = 2;
    env.config.worker.prefetch = 6;
    env.config.iam.max_requests_per_second = 10;
    let (bulk, _) = env.user_with_keys("bulk", 0).await;
    let bodies: Vec<String> = (0..16)
        .map(|i| common::job(&format!("held-{i}"), &bulk, &format!("AKIAHELD{i:012}")))
        .collect();
    for chunk in bodies.chunks(10) {
        env.send_batch(chunk).await;
    }
    let worker = Arc::new(env.worker().await);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&worker).run(shutdown.clone()));
    for burst in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        for i in 0..3 {
            let (user, keys) = env.user_with_keys(&format!("u{burst}{i}"), 1).await;
            common::send(
                &env.clients.sqs,
                &priority_url,
                &common::job(&format!("urgent-{burst}-{i}"), &user, &keys[0]),
            )
            .await;
        }
    }
    env.wait_until_drained(Duration::from_secs(60)).await;
    shutdown.cancel();
    running.await.unwrap();

    assert_eq!(
        env.dead_letters_peek().await,
        0,
        "no bulk job lost a receive to the urgent ones"
    );
}

/// Whether STS could name the worker's own account when an event first came in must not
/// matter: a redelivery of the event is `duplicate`, never `request_id_conflict`.
#[tokio::test]
async fn a_redelivered_event_is_a_duplicate_whatever_sts_said_the_first_time() {
    let mut env = TestEnv::new("digest").await;
    let (user, keys) = env.user_with_keys("d", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    // The first GetCallerIdentity is refused, the next ones answer.
    proxy.set_fault_for(
        "GetCallerIdentity",
        Fault::TenthsOf(1, Box::new(Fault::Status(403, iam_error("AccessDenied")))),
    );
    env.route_iam_and_sts_through(&proxy).await;
    env.config.intake.revoke_sessions = false;
    let worker = env.worker().await;
    let body = health(&common::unique("sts"), &[&keys[0]], json!({}));

    let handed = worker.handle(env.deliver(&body).await).await;
    assert_eq!(handed.outcome, Outcome::Retry(Reason::Continued));
    assert_eq!(
        handed.facts.account_id.as_deref(),
        Some(ACCOUNT),
        "STS could not tell it was the worker's own account"
    );
    let first = worker.handle(env.receive_one().await).await;
    assert_eq!(first.outcome, Outcome::Deleted, "{:?}", first.detail);
    assert_eq!(first.facts.account_id, None, "STS answered this time");
    assert_eq!(env.key_status(&user, &keys[0]).await, None);

    let again = worker.handle(env.deliver(&body).await).await;
    assert_eq!(again.outcome, Outcome::Duplicate, "{:?}", again.detail);
}

/// The owners of a key-id-only job are durable before any key changes: the job is handed
/// on to a message naming them. A worker that dies right after deleting the key (here:
/// the key deleted out of band, the handed-on message given to a new worker) still cuts
/// off the sessions of the key's owner, whom IAM can no longer name.
#[tokio::test]
async fn owners_are_durable_before_the_first_delete() {
    let mut env = TestEnv::new("durable").await;
    quick_retries(&mut env);
    let (user, keys) = env.user_with_keys("d", 1).await;
    let body = health(&common::unique("crash"), &[&keys[0]], json!({}));

    let handed = env.worker().await.handle(env.deliver(&body).await).await;
    assert_eq!(handed.outcome, Outcome::Retry(Reason::Continued));
    assert!(handed.settled);
    assert!(
        env.key_status(&user, &keys[0]).await.is_some(),
        "nothing changed yet"
    );
    let message = next_message(&env, Duration::from_secs(10)).await;
    let carried: Value = serde_json::from_str(message.body().unwrap()).unwrap();
    assert_eq!(
        carried["continuation"]["keys"][0]["user_name"],
        user.as_str()
    );

    // The key is deleted, and the worker that deleted it dies before anything else.
    env.clients
        .iam
        .delete_access_key()
        .user_name(&user)
        .access_key_id(&keys[0])
        .send()
        .await
        .unwrap();
    let report = env.worker().await.handle(message).await;

    assert_eq!(
        report.outcome,
        Outcome::AlreadyAbsent,
        "{:?}",
        report.detail
    );
    assert_eq!(report.facts.user_name.as_deref(), Some(user.as_str()));
    assert_eq!(session_policies(&env, &user).await.len(), 1);
    assert_eq!(env.queue_depth().await, (0, 0));
}

/// A permanent refusal after a change ends the job `rejected`, saying what it changed;
/// the message dead-lettered is the continuation, naming the owners and the key already
/// deleted. It does not go round again.
#[tokio::test]
async fn a_refusal_after_a_change_is_dead_lettered_once_with_what_was_done() {
    let mut env = TestEnv::new("denied-half").await;
    quick_retries(&mut env);
    let (alice, alice_keys) = env.user_with_keys("alice", 1).await;
    let (bob, bob_keys) = env.user_with_keys("bob", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    env.route_iam_through(&proxy).await;
    env.config.intake.revoke_sessions = false;
    proxy.set_fault_matching(
        &[
            "Action=DeleteAccessKey".to_owned(),
            format!("AccessKeyId={}", bob_keys[0]),
        ],
        Fault::Status(403, iam_error("AccessDenied")),
    );
    let worker = env.worker().await;
    let body = health(
        &common::unique("den"),
        &[&alice_keys[0], &bob_keys[0]],
        json!({}),
    );

    let first = env.handle_job(&worker, env.deliver(&body).await).await;
    assert_eq!(
        first.outcome,
        Outcome::Retry(Reason::AccessDenied),
        "{:?}",
        first.detail
    );
    let last = worker
        .handle(next_message(&env, Duration::from_secs(10)).await)
        .await;

    assert_eq!(last.outcome, Outcome::Rejected(Reason::AccessDenied));
    let detail = last.detail.unwrap();
    assert!(detail.contains("1 key(s) changed"), "{detail}");
    assert_eq!(env.key_status(&alice, &alice_keys[0]).await, None);
    assert!(env.key_status(&bob, &bob_keys[0]).await.is_some());
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    let carried: Value = serde_json::from_str(dead[0].body().unwrap()).unwrap();
    assert_eq!(carried["continuation"]["keys"][0]["result"], "deleted");
    assert_eq!(
        carried["continuation"]["keys"][1]["user_name"],
        bob.as_str()
    );
    assert_eq!(env.queue_depth().await, (0, 0), "nothing goes round again");
}

/// When the hand-over cannot be sent (no sqs:SendMessage, a KMS key it may not use), the
/// job is worked here and now, not left to fail the same way again.
#[tokio::test]
async fn a_job_that_cannot_be_handed_on_is_worked_at_once() {
    let mut env = TestEnv::new("no-send").await;
    let (user, keys) = env.user_with_keys("s", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    proxy.set_fault_for(
        "SendMessage",
        Fault::Status(
            400,
            r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"not authorized"}"#.to_owned(),
        ),
    );
    let direct = env.clients.clone();
    env.route_all_through(&proxy).await;
    let worker = env.worker().await;
    let body = json!({"request_id": "ns-1", "access_key_id": keys[0], "revoke_sessions": true})
        .to_string();
    common::send(&direct.sqs, &env.queue_url, &body).await;
    let message = common::receive(&direct.sqs, &env.queue_url, 1, 2)
        .await
        .remove(0);

    let report = worker.handle(message).await;

    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.detail);
    assert_eq!(env.key_status(&user, &keys[0]).await, None);
    assert_eq!(session_policies(&env, &user).await.len(), 1);
}
