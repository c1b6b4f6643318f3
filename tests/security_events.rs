//! docs "Security events" and "Revoking sessions": AWS Health events and GuardDuty
//! findings sent by EventBridge straight to the job queue, and the session policy that
//! cuts off the temporary credentials a leaked key minted. Against the local emulator
//! through the real SDK; event bodies are shaped like the examples in AWS's documentation
//! (AWS Health User Guide, "Monitoring AWS Health events with Amazon EventBridge";
//! GuardDuty User Guide, "Creating custom responses to GuardDuty findings with Amazon
//! EventBridge").

mod common;

use std::time::Duration;

use aws_sdk_iam::types::StatusType;
use common::proxy::{iam_error, Fault, FaultProxy, Scope};
use common::TestEnv;
use iam_key_revoker::aws::sessions::SESSION_POLICY_NAME;
use iam_key_revoker::{Outcome, Reason};
use serde_json::{json, Value};

/// The emulator's account, which the worker's own credentials belong to.
const ACCOUNT: &str = "123456789012";

fn health_event(id: &str, event_type: &str, entities: &[&str]) -> String {
    let entities: Vec<Value> = entities
        .iter()
        .map(|e| json!({ "entityValue": e }))
        .collect();
    json!({
        "version": "0",
        "id": id,
        "detail-type": "AWS Health Event",
        "source": "aws.health",
        "account": ACCOUNT,
        "time": "2026-11-28T06:27:57Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "eventArn": format!("arn:aws:health:global::event/RISK/{event_type}/{event_type}_{id}"),
            "service": "RISK",
            "eventTypeCode": event_type,
            "eventTypeCategory": "issue",
            "startTime": "Sat, 28 Nov 2026 06:10:09 GMT",
            "eventDescription": [{
                "language": "en_US",
                "latestDescription": "Your AWS Access Key was found publicly available on GitHub."
            }],
            "affectedEntities": entities
        }
    })
    .to_string()
}

fn guardduty_finding(id: &str, severity: f64, key: &str, user: &str, user_type: &str) -> String {
    json!({
        "version": "0",
        "id": format!("c8c4daa7-a20c-2f03-0070-{id}"),
        "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty",
        "account": ACCOUNT,
        "time": "2026-11-28T08:55:11Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "schemaVersion": "2.0",
            "accountId": ACCOUNT,
            "region": "us-east-1",
            "partition": "aws",
            "id": id,
            "arn": format!("arn:aws:guardduty:us-east-1:{ACCOUNT}:detector/12abc34d567e8fa901bc2d34e56789f0/finding/{id}"),
            "type": "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
            "resource": {
                "resourceType": "AccessKey",
                "accessKeyDetails": {
                    "accessKeyId": key,
                    "principalId": "AIDACKCEVSQ6C2EXAMPLE",
                    "userType": user_type,
                    "userName": user
                }
            },
            "service": {
                "serviceName": "guardduty",
                "detectorId": "12abc34d567e8fa901bc2d34e56789f0",
                "action": {
                    "actionType": "AWS_API_CALL",
                    "awsApiCallAction": {
                        "api": "ListAccessKeys",
                        "serviceName": "iam.amazonaws.com",
                        "callerType": "Remote IP",
                        "remoteIpDetails": { "ipAddressV4": "198.51.100.0" }
                    }
                },
                "resourceRole": "TARGET",
                "eventFirstSeen": "2026-11-28T08:37:45Z",
                "eventLastSeen": "2026-11-28T08:48:45Z",
                "archived": false,
                "count": 1
            },
            "severity": severity,
            "createdAt": "2026-11-28T08:54:11Z",
            "updatedAt": "2026-11-28T08:54:11Z",
            "title": "Credentials for instance role used from an external IP address.",
            "description": "An API was used to access a resource from a remote IP address."
        }
    })
    .to_string()
}

/// The latest cut-off in force on `user`, if any: each is a session policy of its own,
/// named for its time.
async fn session_cutoff(env: &TestEnv, user: &str) -> Option<String> {
    let mut cutoffs = Vec::new();
    for name in session_policies(env, user).await {
        cutoffs.push(policy_cutoff(env, user, &name).await);
    }
    cutoffs.into_iter().max()
}

/// The names of `user`'s session policies.
async fn session_policies(env: &TestEnv, user: &str) -> Vec<String> {
    let Ok(out) = env
        .clients
        .iam
        .list_user_policies()
        .user_name(user)
        .send()
        .await
    else {
        return Vec::new();
    };
    out.policy_names()
        .iter()
        .filter(|n| n.starts_with(SESSION_POLICY_NAME))
        .cloned()
        .collect()
}

/// The cut-off of one session policy, its document checked.
async fn policy_cutoff(env: &TestEnv, user: &str, name: &str) -> String {
    let out = env
        .clients
        .iam
        .get_user_policy()
        .user_name(user)
        .policy_name(name)
        .send()
        .await
        .unwrap();
    let decoded = percent_encoding::percent_decode_str(out.policy_document())
        .decode_utf8()
        .unwrap()
        .into_owned();
    let document: Value = serde_json::from_str(&decoded).unwrap();
    let statements = document["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "one statement");
    let statement = &statements[0];
    assert_eq!(statement["Effect"], "Deny");
    assert_eq!(statement["Action"], "*");
    assert_eq!(statement["Resource"], "*");
    statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn is_iso_utc(text: &str) -> bool {
    aws_smithy_types::DateTime::from_str(text, aws_smithy_types::date_time::Format::DateTime)
        .is_ok()
        && text.ends_with('Z')
}

#[tokio::test]
async fn a_health_event_with_two_keys_deletes_both_cuts_sessions_and_is_duplicate_the_second_time()
{
    let env = TestEnv::new("health-two").await;
    let (alice, alice_keys) = env.user_with_keys("alice", 2).await;
    let (bob, bob_keys) = env.user_with_keys("bob", 1).await;
    let worker = env.worker().await;
    let event_id = common::unique("7bf73129-1428-4cd3-a780");
    let body = health_event(
        &event_id,
        "AWS_RISK_CREDENTIALS_EXPOSED",
        &[&alice_keys[0], &bob_keys[0], "123456789012"],
    );

    let report = env.handle_job(&worker, env.deliver(&body).await).await;

    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.detail);
    assert_eq!(
        report.facts.request_id,
        Some(format!("aws.health:{event_id}"))
    );
    assert_eq!(report.facts.keys_changed, 2);
    assert_eq!(report.facts.event_source(), Some("aws.health"));
    assert_eq!(
        report.facts.event_type(),
        Some("AWS_RISK_CREDENTIALS_EXPOSED")
    );
    assert_eq!(report.facts.account_id, None, "the worker's own account");
    let per_key: Vec<(String, String, &str)> = report
        .facts
        .keys
        .iter()
        .map(|k| (k.access_key_id.clone(), k.user_name.clone(), k.result))
        .collect();
    assert_eq!(
        per_key,
        vec![
            (alice_keys[0].clone(), alice.clone(), "deleted"),
            (bob_keys[0].clone(), bob.clone(), "deleted"),
        ]
    );
    assert_eq!(env.key_status(&alice, &alice_keys[0]).await, None);
    assert_eq!(env.key_status(&bob, &bob_keys[0]).await, None);
    assert_eq!(
        env.key_status(&alice, &alice_keys[1]).await,
        Some(StatusType::Active),
        "a key the event does not name is untouched"
    );
    let before = report
        .facts
        .sessions_revoked_before
        .clone()
        .expect("sessions cut");
    assert!(is_iso_utc(&before), "{before}");
    assert_eq!(
        session_cutoff(&env, &alice).await.as_deref(),
        Some(before.as_str())
    );
    assert_eq!(
        session_cutoff(&env, &bob).await.as_deref(),
        Some(before.as_str())
    );
    assert_eq!(
        report.facts.last_used.len(),
        2,
        "looked up anyway: {:?}",
        report.facts.last_used
    );

    // EventBridge delivers at least once: the same event again changes nothing.
    let again = worker.handle(env.deliver(&body).await).await;
    assert_eq!(again.outcome, Outcome::Duplicate);
    assert_eq!(env.queue_depth().await, (0, 0));
    assert!(env.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_guardduty_finding_at_or_above_the_severity_deactivates_and_below_does_nothing() {
    let env = TestEnv::new("gd-severity").await;
    let (user, keys) = env.user_with_keys("mallory", 2).await;
    let worker = env.worker().await;
    let low_id = common::unique("low").replace('-', "");
    let high_id = common::unique("high").replace('-', "");

    let low = worker
        .handle(
            env.deliver(&guardduty_finding(&low_id, 5.0, &keys[1], &user, "IAMUser"))
                .await,
        )
        .await;
    assert_eq!(low.outcome, Outcome::Rejected(Reason::NotRevocable));
    assert!(
        low.detail.as_deref().unwrap().contains("severity 5"),
        "{:?}",
        low.detail
    );
    assert_eq!(low.facts.event_source(), Some("aws.guardduty"));
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Active)
    );
    assert_eq!(session_cutoff(&env, &user).await, None, "nothing done");
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        common::attribute(&dead[0], "revoker-reason").as_deref(),
        Some("not_revocable")
    );

    let high = worker
        .handle(
            env.deliver(&guardduty_finding(
                &high_id, 8.0, &keys[0], &user, "IAMUser",
            ))
            .await,
        )
        .await;
    assert_eq!(high.outcome, Outcome::Deactivated, "{:?}", high.detail);
    assert_eq!(
        high.facts.request_id,
        Some(format!("aws.guardduty:{high_id}"))
    );
    assert_eq!(
        high.facts.event_type(),
        Some("UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS")
    );
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Inactive)
    );
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Active),
        "only the finding's key"
    );
    assert_eq!(
        session_cutoff(&env, &user).await,
        high.facts.sessions_revoked_before
    );
}

#[tokio::test]
async fn findings_about_temporary_credentials_roles_or_root_and_other_health_types_do_nothing() {
    let env = TestEnv::new("not-revocable").await;
    let (user, keys) = env.user_with_keys("temp", 1).await;
    let worker = env.worker().await;
    let bodies = [
        guardduty_finding(
            &common::unique("asia").replace('-', ""),
            8.0,
            "ASIAIOSFODNN7EXAMPLE",
            &user,
            "IAMUser",
        ),
        guardduty_finding(
            &common::unique("role").replace('-', ""),
            8.0,
            &keys[0],
            "some-role",
            "AssumedRole",
        ),
        guardduty_finding(
            &common::unique("root").replace('-', ""),
            8.0,
            &keys[0],
            "Root",
            "Root",
        ),
        health_event(
            &common::unique("other"),
            "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
            &[&keys[0]],
        ),
        health_event(
            &common::unique("nokey"),
            "AWS_RISK_CREDENTIALS_EXPOSED",
            &["arn:aws:iam::123456789012:user/somebody"],
        ),
    ];
    for body in &bodies {
        let report = worker.handle(env.deliver(body).await).await;
        assert_eq!(
            report.outcome,
            Outcome::Rejected(Reason::NotRevocable),
            "{body}"
        );
        assert!(report.detail.as_deref().unwrap().ends_with("nothing done"));
    }
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );
    assert_eq!(session_cutoff(&env, &user).await, None);
    assert_eq!(env.dead_letters().await.len(), bodies.len());
}

#[tokio::test]
async fn a_protected_user_named_by_a_finding_keeps_its_key_and_gets_no_session_policy() {
    let mut env = TestEnv::new("gd-protected").await;
    let (user, keys) = env.user_with_keys("breakglass", 1).await;
    env.config.protect.users = vec!["*-breakglass".into()];
    let worker = env.worker().await;

    let report = worker
        .handle(
            env.deliver(&guardduty_finding(
                &common::unique("prot").replace('-', ""),
                8.9,
                &keys[0],
                &user,
                "IAMUser",
            ))
            .await,
        )
        .await;

    assert_eq!(report.outcome, Outcome::Rejected(Reason::Protected));
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );
    assert_eq!(session_cutoff(&env, &user).await, None);

    // Key-only (a Health event): the owner IAM reports is protected too.
    let report = worker
        .handle(
            env.deliver(&health_event(
                &common::unique("hp"),
                "AWS_RISK_CREDENTIALS_COMPROMISED",
                &[&keys[0]],
            ))
            .await,
        )
        .await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::Protected));
    assert_eq!(session_cutoff(&env, &user).await, None);

    // A Health event naming a protected user's key beside another user's: one protected
    // key does not shield the rest. The other key is revoked and its user cut off; the
    // protected one is left alone, and the job is rejected/protected with what it changed.
    let (other, other_keys) = env.user_with_keys("other", 1).await;
    let report = env
        .handle_job(
            &worker,
            env.deliver(&health_event(
                &common::unique("mixed"),
                "AWS_RISK_CREDENTIALS_EXPOSED",
                &[&other_keys[0], &keys[0]],
            ))
            .await,
        )
        .await;
    // Changed, then refused: carried on in a message of the worker's own that records
    // the change, which is dead-lettered itself, ready to be moved back.
    assert_eq!(report.outcome, Outcome::Retry(Reason::Protected));
    let report = worker.handle(env.receive_one().await).await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::Protected));
    assert_eq!(report.facts.keys_changed, 1);
    let detail = report.detail.clone().unwrap();
    assert!(
        detail.contains(&format!("{} deleted ({other})", other_keys[0])),
        "the changes are listed: {detail}"
    );
    assert_eq!(
        env.key_status(&other, &other_keys[0]).await,
        None,
        "revoked"
    );
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );
    assert!(session_cutoff(&env, &other).await.is_some());
    assert_eq!(session_cutoff(&env, &user).await, None);
    assert_eq!(
        env.dead_letters().await.len(),
        3,
        "each rejection, for a person"
    );
}

#[tokio::test]
async fn plain_jobs_cut_sessions_only_when_asked_and_also_when_the_key_is_already_gone() {
    let env = TestEnv::new("plain-sessions").await;
    let (with, with_keys) = env.user_with_keys("with", 1).await;
    let (without, without_keys) = env.user_with_keys("without", 1).await;
    let worker = env.worker().await;

    let asked = json!({"request_id": "s-1", "access_key_id": with_keys[0], "user_name": with, "revoke_sessions": true}).to_string();
    let report = worker.handle(env.deliver(&asked).await).await;
    assert_eq!(report.outcome, Outcome::Deleted);
    let first = report.facts.sessions_revoked_before.clone().expect("cut");
    assert_eq!(session_cutoff(&env, &with).await, Some(first.clone()));
    assert_eq!(report.facts.event_source(), None);

    let plain = common::job("s-2", &without, &without_keys[0]);
    let report = worker.handle(env.deliver(&plain).await).await;
    assert_eq!(report.outcome, Outcome::Deleted);
    assert_eq!(report.facts.sessions_revoked_before, None);
    assert_eq!(session_cutoff(&env, &without).await, None);

    // The key is gone already: the sessions it minted are still cut off, at a time that
    // only moves forward.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again = json!({"request_id": "s-3", "access_key_id": with_keys[0], "user_name": with, "revoke_sessions": true}).to_string();
    let report = worker.handle(env.deliver(&again).await).await;
    assert_eq!(report.outcome, Outcome::AlreadyAbsent);
    let second = report.facts.sessions_revoked_before.clone().expect("cut");
    assert!(second > first, "{second} after {first}");
    assert_eq!(session_cutoff(&env, &with).await, Some(second));
}

/// A later cut-off of the worker's in force (another replica's, put a moment ago with
/// its margin) is never moved back; a policy with the worker's name and a time years
/// ahead is no cut-off of the worker's, but one the key's holder planted to stop every
/// later cut-off: it is replaced, and the outcome says so.
#[tokio::test]
async fn the_cutoff_never_moves_back_and_a_planted_one_is_replaced() {
    let env = TestEnv::new("forward").await;
    let (user, keys) = env.user_with_keys("u", 2).await;
    let put = |name: String, document: String| {
        env.clients
            .iam
            .put_user_policy()
            .user_name(&user)
            .policy_name(name)
            .policy_document(document)
            .send()
    };
    let planted = "2099-01-01T00:00:00Z";
    put(
        SESSION_POLICY_NAME.to_owned(),
        iam_key_revoker::aws::sessions::session_policy(planted),
    )
    .await
    .unwrap();
    let worker = env.worker().await;

    let body = json!({"request_id": "f-1", "access_key_id": keys[0], "user_name": user, "revoke_sessions": true}).to_string();
    let report = worker.handle(env.deliver(&body).await).await;

    assert_eq!(report.outcome, Outcome::Deleted);
    let cut = report.facts.sessions_revoked_before.clone().unwrap();
    assert!(cut.as_str() < planted, "{cut}");
    assert_eq!(session_cutoff(&env, &user).await, Some(cut.clone()));
    assert!(!session_policies(&env, &user)
        .await
        .contains(&SESSION_POLICY_NAME.to_owned()));
    assert!(report.detail.unwrap().contains("not the worker's"));

    // Another replica's cut-off a few minutes ahead stays in force.
    let now = aws_smithy_types::DateTime::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let later = aws_smithy_types::DateTime::from_secs(now.secs() + 420);
    let sid = iam_key_revoker::sessions::revocation_sid("another-replica");
    put(
        iam_key_revoker::sessions::policy_name(later, &sid),
        iam_key_revoker::sessions::cutoff_policy(&sid, later, None),
    )
    .await
    .unwrap();
    let body = json!({"request_id": "f-2", "access_key_id": keys[1], "user_name": user, "revoke_sessions": true}).to_string();
    let report = worker.handle(env.deliver(&body).await).await;
    let later = later
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap();
    assert_eq!(report.facts.sessions_revoked_before, Some(later.clone()));
    assert_eq!(session_cutoff(&env, &user).await, Some(later));
}

#[tokio::test]
async fn without_put_user_policy_the_job_is_dead_lettered_with_what_was_done() {
    let mut env = TestEnv::new("no-put").await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault_for(
        "PutUserPolicy",
        Fault::Status(403, iam_error("AccessDenied")),
    );
    env.route_iam_through(&proxy).await;
    let worker = env.worker().await;
    let body = json!({"request_id": "np-1", "access_key_id": keys[0], "user_name": user, "revoke_sessions": true}).to_string();

    let report = worker.handle(env.deliver(&body).await).await;

    assert_eq!(report.outcome, Outcome::Rejected(Reason::AccessDenied));
    let detail = report.detail.clone().unwrap();
    assert!(
        detail.contains("older sessions were not revoked") && detail.contains("iam:PutUserPolicy"),
        "{detail}"
    );
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        None,
        "the key is gone"
    );
    assert_eq!(env.dead_letters().await.len(), 1);

    // Granted and moved back: the key is already absent and the sessions are cut.
    proxy.set_fault_for("PutUserPolicy", Fault::None);
    let again = worker.handle(env.deliver(&body).await).await;
    assert_eq!(again.outcome, Outcome::AlreadyAbsent);
    assert!(session_cutoff(&env, &user).await.is_some());
}

#[tokio::test]
async fn the_session_policy_costs_two_iam_calls_after_the_key_action() {
    let mut env = TestEnv::new("calls").await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    env.route_iam_through(&proxy).await;
    let worker = env.worker().await;
    let body = json!({"request_id": "c-1", "access_key_id": keys[0], "user_name": user, "revoke_sessions": true}).to_string();

    let report = worker.handle(env.deliver(&body).await).await;

    assert_eq!(report.outcome, Outcome::Deleted);
    assert_eq!(
        proxy.operations(),
        vec!["DeleteAccessKey", "ListUserPolicies", "PutUserPolicy"]
    );
}

/// Property tests: no event body leads to an IAM write unless it is one of the two
/// accepted shapes naming a revocable key, and then only for the keys it names.
mod properties {
    use super::*;
    use iam_key_revoker::intake::{self, Intake, IntakeRules};
    use iam_key_revoker::job::Target;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

    fn key_like() -> BoxedStrategy<String> {
        prop_oneof![
            3 => Just(KEY.to_owned()),
            2 => "AKIA[A-Z0-9]{12,20}",
            2 => "ASIA[A-Z0-9]{16}",
            1 => "[0-9]{12}",
            1 => ".{0,24}",
        ]
        .boxed()
    }

    fn text(choices: &'static [&'static str]) -> BoxedStrategy<Value> {
        prop_oneof![
            6 => proptest::sample::select(choices).prop_map(Value::from),
            1 => ".{0,12}".prop_map(Value::from),
            1 => Just(Value::Null),
            1 => any::<i32>().prop_map(Value::from),
        ]
        .boxed()
    }

    fn health_detail() -> impl Strategy<Value = Value> {
        (
            text(&[
                "AWS_RISK_CREDENTIALS_EXPOSED",
                "AWS_RISK_CREDENTIALS_COMPROMISE_SUSPECTED",
                "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
            ]),
            proptest::collection::vec(key_like(), 0..4),
        )
            .prop_map(|(code, keys)| {
                let entities: Vec<Value> =
                    keys.iter().map(|k| json!({ "entityValue": k })).collect();
                json!({ "eventTypeCode": code, "service": "RISK", "affectedEntities": entities })
            })
    }

    fn finding_detail() -> impl Strategy<Value = Value> {
        (
            0.0f64..10.0,
            text(&["AccessKey", "Instance"]),
            text(&["IAMUser", "Root", "AssumedRole", "FederatedUser"]),
            key_like(),
            text(&["alice", "bad user!"]),
            text(&["123456789012", "12345"]),
        )
            .prop_map(|(severity, resource, user_type, key, user, account)| {
                json!({
                    "id": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                    "accountId": account,
                    "type": "UnauthorizedAccess:IAMUser/MaliciousIPCaller",
                    "severity": severity,
                    "resource": {
                        "resourceType": resource,
                        "accessKeyDetails": { "accessKeyId": key, "userType": user_type, "userName": user }
                    }
                })
            })
    }

    /// An event-shaped body: often one of the two accepted shapes, often subtly not.
    fn event_body() -> impl Strategy<Value = Value> {
        let source = text(&["aws.health", "aws.guardduty", "aws.ec2", "aws.securityhub"]);
        let detail_type = text(&[
            "AWS Health Event",
            "GuardDuty Finding",
            "Security Hub Findings - Imported",
        ]);
        let detail = prop_oneof![health_detail(), finding_detail()];
        let drop = proptest::option::weighted(
            0.2,
            proptest::sample::select(&["version", "id", "account", "time", "detail", "source"][..]),
        );
        (
            source,
            detail_type,
            text(&["123456789012", "1234"]),
            detail,
            drop,
        )
            .prop_map(|(source, detail_type, account, detail, drop)| {
                let mut event = json!({
                    "version": "0", "id": "6f8f4a2e-0000-4000-8000-000000000000",
                    "detail-type": detail_type, "source": source, "account": account,
                    "time": "2026-11-28T08:00:00Z", "region": "us-east-1", "resources": [],
                    "detail": detail,
                });
                if let Some(field) = drop {
                    event.as_object_mut().unwrap().remove(field);
                }
                event
            })
    }

    /// The keys the contract says an event revokes, restated independently of the parser:
    /// `None` when it revokes nothing.
    fn revocable(event: &Value) -> Option<Vec<String>> {
        let s = |v: &Value| v.as_str().map(str::to_owned);
        for field in ["version", "id", "time"] {
            s(&event[field])?;
        }
        let account = s(&event["account"])?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let is_key = |k: &str| {
            k.starts_with("AKIA")
                && (16..=128).contains(&k.len())
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        };
        let detail = &event["detail"];
        match (
            s(&event["source"])?.as_str(),
            s(&event["detail-type"])?.as_str(),
        ) {
            ("aws.health", "AWS Health Event") => {
                let code = s(&detail["eventTypeCode"])?;
                if !IntakeRules::default().health_event_types.contains(&code) {
                    return None;
                }
                let mut keys: Vec<String> = Vec::new();
                for entity in detail["affectedEntities"].as_array()? {
                    let value = s(&entity["entityValue"])?;
                    if is_key(&value) && !keys.contains(&value) {
                        keys.push(value);
                    }
                }
                (!keys.is_empty()).then_some(keys)
            }
            ("aws.guardduty", "GuardDuty Finding") => {
                let details = &detail["resource"]["accessKeyDetails"];
                let key = s(&details["accessKeyId"])?;
                let user = s(&details["userName"])?;
                let detail_account = s(&detail["accountId"])?;
                let ok = detail_account.len() == 12
                    && detail_account.bytes().all(|b| b.is_ascii_digit())
                    && s(&detail["resource"]["resourceType"])?.as_str() == "AccessKey"
                    && s(&details["userType"])?.as_str() == "IAMUser"
                    && detail["severity"].as_f64()? >= 7.0
                    && is_key(&key)
                    && user
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
                ok.then(|| vec![key])
            }
            _ => None,
        }
    }

    fn job_keys(job: &iam_key_revoker::job::Job) -> Vec<String> {
        match &job.target {
            Target::Key { access_key_id, .. } => vec![access_key_id.clone()],
            Target::Keys(keys) => keys.clone(),
            Target::AllKeys { .. } => panic!("an event never revokes every key of a user"),
            Target::Role { .. } => Vec::new(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3_000))]

        #[test]
        fn an_event_becomes_a_job_only_for_the_revocable_keys_it_names(event in event_body()) {
            let read = intake::read(&event.to_string(), &IntakeRules::default());
            match (read, revocable(&event)) {
                (Ok(Intake::Job(job)), Some(keys)) => prop_assert_eq!(job_keys(&job), keys),
                (Ok(Intake::Job(job)), None) => prop_assert!(false, "revokes {:?} from {}", job.target, event),
                (_, Some(keys)) => prop_assert!(false, "{:?} not revoked from {}", keys, event),
                (_, None) => {}
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_fed_events_that_revoke_nothing_writes_nothing_to_iam() {
        let mut env = TestEnv::new("events-nothing").await;
        let (user, keys) = env.user_with_keys("target", 1).await;
        let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
        env.route_iam_through(&proxy).await;
        let mut runner = TestRunner::deterministic();
        let strategy = event_body();
        let mut bodies = Vec::new();
        while bodies.len() < 60 {
            let mut event = strategy.new_tree(&mut runner).unwrap().current();
            // Name the real key and user wherever the event names one.
            let text = event
                .to_string()
                .replace(KEY, &keys[0])
                .replace("\"alice\"", &format!("\"{user}\""));
            event = serde_json::from_str(&text).unwrap();
            if revocable(&event).is_none() {
                bodies.push(event.to_string());
            }
        }
        let worker = env.worker().await;
        for body in &bodies {
            let report = worker.handle(env.deliver(body).await).await;
            assert!(
                matches!(
                    report.outcome,
                    Outcome::Rejected(Reason::NotRevocable | Reason::InvalidMessage)
                ),
                "{body}: {:?}",
                report.outcome
            );
        }
        for write in ["DeleteAccessKey", "UpdateAccessKey", "PutUserPolicy"] {
            assert_eq!(proxy.count(write), 0, "{write}");
        }
        assert_eq!(
            env.key_status(&user, &keys[0]).await,
            Some(StatusType::Active)
        );
    }
}
