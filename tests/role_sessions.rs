//! A role's sessions (docs, "Role sessions"): a job naming `role_name` and a GuardDuty
//! finding about a role session's temporary credentials cut off what was issued before
//! now, with the role policy put and read back in the emulator; and what the key's holder
//! or a producer could make of it: another session's role, a planted policy with the
//! worker's name, the worker's own roles, a protected role.

mod common;

use aws_smithy_types::date_time::{DateTime, Format};
use common::events::ACCOUNT;
use common::TestEnv;
use iam_key_revoker::outcome::{Outcome, Reason};
use serde_json::{json, Value};

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

const EXFILTRATION: &str = "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS";

/// Creates role `name` (at `path`); returns its `RoleId`.
async fn role(env: &TestEnv, name: &str, path: &str) -> String {
    let out = env
        .clients
        .iam
        .create_role()
        .role_name(name)
        .path(path)
        .assume_role_policy_document(TRUST)
        .send()
        .await
        .expect("role created");
    out.role().unwrap().role_id().to_owned()
}

/// The role's inline policies, name → document (decoded JSON).
async fn role_policies(env: &TestEnv, role: &str) -> Vec<(String, Value)> {
    let iam = &env.clients.iam;
    let names = iam
        .list_role_policies()
        .role_name(role)
        .send()
        .await
        .unwrap();
    let mut policies = Vec::new();
    for name in names.policy_names() {
        let got = iam
            .get_role_policy()
            .role_name(role)
            .policy_name(name)
            .send()
            .await
            .unwrap();
        let text = percent_encoding::percent_decode_str(got.policy_document())
            .decode_utf8()
            .unwrap()
            .into_owned();
        policies.push((name.clone(), serde_json::from_str(&text).unwrap()));
    }
    policies
}

/// A GuardDuty finding about temporary credentials of `role`'s session `principal`, as
/// EventBridge delivers one (GuardDuty User Guide, "Finding details": for a role,
/// `userName` names the role and `principalId` is `AROA…:<session>`).
fn role_finding(id: &str, role: &str, principal: &str, kind: &str) -> String {
    json!({
        "version": "0", "id": format!("e-{id}"), "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty", "account": ACCOUNT, "time": "2026-12-07T08:55:11Z",
        "region": "us-east-1", "resources": [],
        "detail": {
            "schemaVersion": "2.0", "accountId": ACCOUNT, "region": "us-east-1",
            "partition": "aws", "id": id, "severity": 8.0,
            "arn": common::events::finding_arn(id),
            "type": kind,
            "resource": {"resourceType": "AccessKey", "accessKeyDetails": {
                "accessKeyId": "ASIAIOSFODNN7EXAMPLE", "principalId": principal,
                "userName": role, "userType": "AssumedRole"},
                "instanceDetails": {"instanceId": "i-0123456789abcdef0"}},
            "service": {"serviceName": "guardduty", "eventFirstSeen": "2026-12-07T08:50:00.000Z"}
        }
    })
    .to_string()
}

/// The one statement of a cut-off document, and its time.
fn deny(document: &Value) -> (&Value, i64) {
    let statement = &document["Statement"][0];
    assert_eq!(document["Statement"].as_array().unwrap().len(), 1);
    assert_eq!(statement["Effect"], "Deny");
    assert_eq!(statement["Action"], "*");
    assert_eq!(statement["Resource"], "*");
    let at = statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
        .as_str()
        .unwrap();
    (
        statement,
        DateTime::from_str(at, Format::DateTime).unwrap().secs(),
    )
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_naming_a_role_cuts_off_every_session_of_it_once() {
    let env = TestEnv::new("role-job").await;
    let name = format!("{}-app", env.name);
    role(&env, &name, "/").await;
    let worker = env.worker().await;
    let body =
        json!({"request_id": "role-1", "role_name": name, "reason": "leaked session"}).to_string();
    let before = now_secs();
    let report = env.handle_job(&worker, env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::SessionsRevoked, "{report:?}");
    assert_eq!(report.facts.role_name.as_deref(), Some(name.as_str()));
    assert_eq!(report.facts.keys_changed, 0);
    assert!(
        report.summary().contains(&format!("role {name}")),
        "{}",
        report.summary()
    );
    let policies = role_policies(&env, &name).await;
    assert_eq!(policies.len(), 1, "{policies:?}");
    let (statement, at) = deny(&policies[0].1);
    // Every session: no narrowing to one.
    assert!(
        statement["Condition"].get("StringEquals").is_none(),
        "{statement}"
    );
    // The margin for IAM's propagation (sessions.margin_seconds, 300 by default).
    assert!(at >= before + 300 && at <= now_secs() + 301, "{at}");
    assert_eq!(
        report.facts.sessions_revoked_before.as_deref(),
        Some(iam_key_revoker::sessions::fmt(DateTime::from_secs(at)).as_str())
    );
    // Its redelivery finds its own cut-off in force: nothing more is put.
    let again = env.handle_job(&worker, env.deliver(&body).await).await;
    assert_eq!(again.outcome, Outcome::SessionsRevoked);
    assert_eq!(role_policies(&env, &name).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_cuts_off_only_the_session_it_names_once_the_role_is_verified() {
    let env = TestEnv::new("role-finding").await;
    let name = format!("{}-web", env.name);
    let id = role(&env, &name, "/").await;
    assert!(id.starts_with("AROA"), "IAM's role ids: {id}");
    let worker = env.worker().await;
    let principal = format!("{id}:i-0123456789abcdef0");
    let report = env
        .handle_job(
            &worker,
            env.deliver(&role_finding("f-1", &name, &principal, EXFILTRATION))
                .await,
        )
        .await;
    assert_eq!(report.outcome, Outcome::SessionsRevoked, "{report:?}");
    assert_eq!(
        report.facts.role_session.as_deref(),
        Some(principal.as_str())
    );
    let detail = report.detail.clone().unwrap_or_default();
    assert!(detail.contains("metadata service"), "{detail}");
    let policies = role_policies(&env, &name).await;
    assert_eq!(policies.len(), 1);
    let (statement, _) = deny(&policies[0].1);
    assert_eq!(
        statement["Condition"]["StringEquals"],
        json!({"aws:userid": principal}),
        "narrowed to the finding's session: the role's other instances keep working"
    );
    // The clock from exposure starts at the finding's eventFirstSeen.
    assert!(report.facts.exposure_to_revoke_seconds.unwrap() > 60.0);

    // Another session of the same role, by another finding: a cut-off of its own, and
    // the first session's stays as it is.
    let other = format!("{id}:i-0fedcba9876543210");
    let report = env
        .handle_job(
            &worker,
            env.deliver(&role_finding("f-2", &name, &other, EXFILTRATION))
                .await,
        )
        .await;
    assert_eq!(report.outcome, Outcome::SessionsRevoked, "{report:?}");
    let policies = role_policies(&env, &name).await;
    let sessions: Vec<&Value> = policies
        .iter()
        .map(|(_, d)| &d["Statement"][0]["Condition"]["StringEquals"]["aws:userid"])
        .collect();
    assert_eq!(policies.len(), 2, "{policies:?}");
    assert!(sessions.contains(&&json!(principal)) && sessions.contains(&&json!(other)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_put_on_a_role_the_finding_does_not_name_exactly() {
    let env = TestEnv::new("role-refused").await;
    let name = format!("{}-api", env.name);
    let id = role(&env, &name, "/").await;
    let worker = env.worker().await;
    let handle = |body: String| {
        let env = &env;
        let worker = &worker;
        async move { env.handle_job(worker, env.deliver(&body).await).await }
    };
    // A principalId of another role (the role was deleted and made again, or the finding
    // was forged): IAM's RoleId decides.
    let forged = "AROAXXXXXXXXXXXXXXXXX:i-0123456789abcdef0";
    let report = handle(role_finding("f-3", &name, forged, EXFILTRATION)).await;
    assert_eq!(
        report.outcome,
        Outcome::Rejected(Reason::NotRevocable),
        "{report:?}"
    );
    assert!(report.detail.unwrap().contains(&id));
    // A type not in intake.role_session_finding_types.
    let principal = format!("{id}:i-0123456789abcdef0");
    let report = handle(role_finding(
        "f-4",
        &name,
        &principal,
        "Recon:IAMUser/MaliciousIPCaller",
    ))
    .await;
    assert_eq!(
        report.outcome,
        Outcome::Rejected(Reason::NotRevocable),
        "{report:?}"
    );
    // A role that does not exist: nothing to cut off.
    let gone =
        json!({"request_id": "role-gone", "role_name": format!("{}-gone", env.name)}).to_string();
    assert_eq!(handle(gone).await.outcome, Outcome::AlreadyAbsent);
    // The worker's own roles (every iam-key-revoker* role), whatever a producer names.
    let own_role = format!(
        "iam-key-revoker-{}",
        &env.name[env.name.len().saturating_sub(24)..]
    );
    role(&env, &own_role, "/").await;
    let own = json!({"request_id": "role-own", "role_name": own_role}).to_string();
    assert_eq!(
        handle(own).await.outcome,
        Outcome::Rejected(Reason::Protected)
    );
    // A service-linked role: IAM would refuse; the worker does not try.
    let linked = format!("{}-linked", env.name);
    role(
        &env,
        &linked,
        "/aws-service-role/elasticbeanstalk.amazonaws.com/",
    )
    .await;
    let report =
        handle(json!({"request_id": "role-linked", "role_name": linked}).to_string()).await;
    assert_eq!(
        report.outcome,
        Outcome::Rejected(Reason::NotRevocable),
        "{report:?}"
    );
    // A job that names a role and a key is not a job.
    let both = json!({"request_id": "role-both", "role_name": name, "access_key_id": "AKIAIOSFODNN7EXAMPLE"}).to_string();
    assert_eq!(
        handle(both).await.outcome,
        Outcome::Rejected(Reason::InvalidMessage)
    );
    for role in [&name, &own_role, &linked] {
        assert!(
            role_policies(&env, role).await.is_empty(),
            "nothing put on {role}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_role_is_left_alone_and_a_planted_cutoff_is_replaced() {
    let mut env = TestEnv::new("role-protect").await;
    env.config.protect.roles = vec!["*-break-glass".into()];
    let worker = env.worker().await;
    let glass = format!("{}-break-glass", env.name);
    role(&env, &glass, "/").await;
    let body = json!({"request_id": "role-glass", "role_name": glass}).to_string();
    let report = env.handle_job(&worker, env.deliver(&body).await).await;
    assert_eq!(
        report.outcome,
        Outcome::Rejected(Reason::Protected),
        "{report:?}"
    );
    assert!(role_policies(&env, &glass).await.is_empty());

    // The key's holder plants a policy under the worker's name that allows everything
    // (and a later time, so that it would pass for the latest cut-off).
    let name = format!("{}-batch", env.name);
    role(&env, &name, "/").await;
    let planted = "iam-key-revoker-revoke-older-sessions-20991231T000000Z-Folded";
    let allow = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Folded","Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    env.clients
        .iam
        .put_role_policy()
        .role_name(&name)
        .policy_name(planted)
        .policy_document(allow)
        .send()
        .await
        .unwrap();
    let body = json!({"request_id": "role-planted", "role_name": name}).to_string();
    let report = env.handle_job(&worker, env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::SessionsRevoked, "{report:?}");
    assert!(report.detail.unwrap().contains(planted));
    let policies = role_policies(&env, &name).await;
    assert_eq!(policies.len(), 1, "the impostor is gone: {policies:?}");
    assert_ne!(policies[0].0, planted);
    deny(&policies[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_roles_cutoff_still_checks_the_session_and_expired_cutoffs_make_room() {
    let mut env = TestEnv::new("role-scope").await;
    env.config.intake.role_session_scope = iam_key_revoker::intake::RoleScope::Role;
    let worker = env.worker().await;
    let name = format!("{}-etl", env.name);
    let id = role(&env, &name, "/").await;
    // A finding naming a role that does not exist: not the finding's role.
    let gone = format!("{}-gone", env.name);
    let report = env
        .handle_job(
            &worker,
            env.deliver(&role_finding(
                "f-5",
                &gone,
                &format!("{id}:i-0123456789abcdef0"),
                EXFILTRATION,
            ))
            .await,
        )
        .await;
    assert_eq!(
        report.outcome,
        Outcome::Rejected(Reason::NotRevocable),
        "{report:?}"
    );
    // The whole role, by setting: a principalId of another role is still refused.
    let forged = "AROAXXXXXXXXXXXXXXXXX:i-0123456789abcdef0";
    let report = env
        .handle_job(
            &worker,
            env.deliver(&role_finding("f-6", &name, forged, EXFILTRATION))
                .await,
        )
        .await;
    assert_eq!(
        report.outcome,
        Outcome::Rejected(Reason::NotRevocable),
        "{report:?}"
    );
    assert!(role_policies(&env, &name).await.is_empty());

    // Two cut-offs of the worker's on other sessions: one two days old, which denies
    // nothing any more (no credentials outlive 36 hours), and one of an hour ago.
    let put = |secs: i64, request: &str, session: &str| {
        let sid = iam_key_revoker::sessions::revocation_sid(request);
        let at = DateTime::from_secs(secs);
        let policy = iam_key_revoker::sessions::policy_name(at, &sid);
        let document = iam_key_revoker::sessions::cutoff_policy(&sid, at, Some(session));
        let iam = env.clients.iam.clone();
        let name = name.clone();
        async move {
            iam.put_role_policy()
                .role_name(&name)
                .policy_name(&policy)
                .policy_document(&document)
                .send()
                .await
                .unwrap();
            policy
        }
    };
    let old = put(
        now_secs() - 2 * 86_400,
        "aws.guardduty:old",
        &format!("{id}:i-0aaaaaaaaaaaaaaaa"),
    )
    .await;
    let recent = put(
        now_secs() - 3_600,
        "aws.guardduty:recent",
        &format!("{id}:i-0bbbbbbbbbbbbbbbb"),
    )
    .await;
    let principal = format!("{id}:i-0123456789abcdef0");
    let report = env
        .handle_job(
            &worker,
            env.deliver(&role_finding("f-7", &name, &principal, EXFILTRATION))
                .await,
        )
        .await;
    assert_eq!(report.outcome, Outcome::SessionsRevoked, "{report:?}");
    assert_eq!(report.facts.role_session, None, "every session, by setting");
    let policies = role_policies(&env, &name).await;
    let names: Vec<&str> = policies.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        !names.contains(&old.as_str()),
        "the expired cut-off is gone: {names:?}"
    );
    assert!(
        names.contains(&recent.as_str()),
        "the live one stays: {names:?}"
    );
    let whole = policies.iter().find(|(n, _)| *n != recent).unwrap();
    let (statement, _) = deny(&whole.1);
    assert!(
        statement["Condition"].get("StringEquals").is_none(),
        "{statement}"
    );
}
