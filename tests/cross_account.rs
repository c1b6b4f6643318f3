//! Jobs for other accounts: the worker assumes `cross_account.role_name` there. The
//! emulator models accounts: credentials from a role assumed in 222222222222 see only
//! that account's users. A member account's role failing, at first or on renewal, is
//! that account's failure alone (CONTRACT §3).

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_iam::types::StatusType;
use common::process::{http_get, listening_port, metric, sigterm, wait, worker_command};
use common::proxy::{iam_error, Fault, FaultProxy, Scope};
use common::{attribute, eventually, eventually_async, job, TestEnv};
use iam_key_revoker::{Outcome, Reason};
use serde_json::json;

const MEMBER: &str = "222222222222";

/// Credentials of a role session in `account`, from the emulator's STS.
async fn session_in(env: &TestEnv, account: &str) -> aws_sdk_sts::types::Credentials {
    env.clients
        .sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/test-setup"))
        .role_session_name("test-setup")
        .send()
        .await
        .expect("assume role")
        .credentials
        .expect("credentials")
}

/// An IAM client acting in `account`, as the test's own view of that account.
async fn iam_in(env: &TestEnv, account: &str) -> aws_sdk_iam::Client {
    let assumed = session_in(env, account).await;
    let credentials = aws_sdk_iam::config::Credentials::new(
        assumed.access_key_id(),
        assumed.secret_access_key(),
        Some(assumed.session_token().to_owned()),
        None,
        "test-setup",
    );
    aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::config::Builder::from(&env.clients.sdk)
            .credentials_provider(credentials)
            .build(),
    )
}

fn member_job(request_id: &str, user: &str, key: &str) -> String {
    json!({"request_id": request_id, "user_name": user, "access_key_id": key, "account_id": MEMBER})
        .to_string()
}

#[tokio::test]
async fn a_job_for_another_account_revokes_there_and_nowhere_else() {
    let mut env = TestEnv::new("xacct").await;
    env.config.cross_account.role_name = Some("iam-key-revoker".to_owned());
    let member = iam_in(&env, MEMBER).await;
    let user = format!("{}-same", env.name);
    let (_, member_keys) = common::create_user_with_keys(&member, &user, 1).await;
    let (_, own_keys) = common::create_user_with_keys(&env.clients.iam, &user, 1).await;
    let worker = env.worker().await;

    let report = worker
        .handle(
            env.deliver(&member_job("x-1", &user, &member_keys[0]))
                .await,
        )
        .await;

    assert_eq!(report.outcome, Outcome::Deleted, "{report:?}");
    assert_eq!(report.facts.account_id.as_deref(), Some(MEMBER));
    assert_eq!(
        common::key_status(&member, &user, &member_keys[0]).await,
        None,
        "revoked in the member account"
    );
    assert_eq!(
        env.key_status(&user, &own_keys[0]).await,
        Some(StatusType::Active),
        "the same-named user in the worker's own account is untouched"
    );

    // The worker's own key named with the member account: IAM there has no such key.
    let report = worker
        .handle(env.deliver(&member_job("x-2", &user, &own_keys[0])).await)
        .await;
    // Not among the member user's keys, and STS says it is the worker's own account's:
    // never already_absent, and a job that names the user and the account is not moved
    // to another account's user of that name.
    assert_eq!(
        report.outcome,
        Outcome::Rejected(Reason::OtherAccount),
        "{report:?}"
    );
    assert!(report.detail.unwrap().contains("123456789012"));
    assert_eq!(
        env.key_status(&user, &own_keys[0]).await,
        Some(StatusType::Active)
    );
}

#[tokio::test]
async fn a_role_that_cannot_be_assumed_ends_access_denied() {
    let mut env = TestEnv::new("xdenied").await;
    env.config.cross_account.role_name = Some("iam-key-revoker".to_owned());
    let member = iam_in(&env, MEMBER).await;
    let user = format!("{}-u", env.name);
    let (_, keys) = common::create_user_with_keys(&member, &user, 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault_for("AssumeRole", Fault::Status(403, iam_error("AccessDenied")));
    env.route_iam_and_sts_through(&proxy).await;
    let worker = env.worker().await;
    let body = member_job("xd-1", &user, &keys[0]);

    let report = worker.handle(env.deliver(&body).await).await;

    assert_eq!(
        report.outcome,
        Outcome::Rejected(Reason::AccessDenied),
        "{report:?}"
    );
    assert_eq!(proxy.count("AssumeRole"), 1, "AccessDenied is not retried");
    assert_eq!(
        report.detail.as_deref(),
        Some("AssumeRole: AccessDenied: account 222222222222: injected"),
        "one readable line naming the account, not the SDK's error dump"
    );
    assert!(
        !worker.health().credentials_failing(),
        "the member account's failure is not the worker's"
    );
    assert_eq!(
        common::key_status(&member, &user, &keys[0]).await,
        Some(StatusType::Active)
    );
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some(body.as_str()));
    assert_eq!(
        attribute(&dead[0], "revoker-reason").as_deref(),
        Some("access_denied")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_for_a_new_account_assume_the_role_once() {
    let mut env = TestEnv::new("xonce").await;
    env.config.cross_account.role_name = Some("iam-key-revoker".to_owned());
    let member = iam_in(&env, MEMBER).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    env.route_iam_and_sts_through(&proxy).await;
    let mut jobs = Vec::new();
    for i in 0..10 {
        let user = format!("{}-{i}", env.name);
        let (_, keys) = common::create_user_with_keys(&member, &user, 1).await;
        jobs.push((user, keys[0].clone()));
    }
    let worker = Arc::new(env.worker().await);
    let mut messages = Vec::new();
    for (i, (user, key)) in jobs.iter().enumerate() {
        messages.push(
            env.deliver(&member_job(&format!("xo-{i}"), user, key))
                .await,
        );
    }

    let mut tasks = tokio::task::JoinSet::new();
    for message in messages {
        let worker = worker.clone();
        tasks.spawn(async move { worker.handle(message).await.outcome });
    }
    let outcomes = tasks.join_all().await;

    assert!(
        outcomes.iter().all(|o| *o == Outcome::Deleted),
        "{outcomes:?}"
    );
    assert_eq!(
        proxy.count("AssumeRole"),
        1,
        "one AssumeRole for ten concurrent jobs"
    );
    assert_eq!(proxy.count("GetCallerIdentity"), 1);
    for (user, key) in &jobs {
        assert_eq!(common::key_status(&member, user, key).await, None);
    }
}

/// STS's AssumeRole answer (API reference, AssumeRole: `AssumeRoleResult`) with
/// `credentials`, expiring `expires_in` from now.
fn assume_role_answer(
    credentials: &aws_sdk_sts::types::Credentials,
    expires_in: Duration,
) -> String {
    let expiration = aws_smithy_types::DateTime::from(std::time::SystemTime::now() + expires_in)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap();
    format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>\
         <Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
         <SessionToken>{}</SessionToken><Expiration>{expiration}</Expiration></Credentials>\
         <AssumedRoleUser><AssumedRoleId>AROAEXAMPLE:worker</AssumedRoleId>\
         <Arn>arn:aws:sts::{MEMBER}:assumed-role/iam-key-revoker/worker</Arn></AssumedRoleUser>\
         </AssumeRoleResult><ResponseMetadata><RequestId>proxy</RequestId></ResponseMetadata>\
         </AssumeRoleResponse>",
        credentials.access_key_id(),
        credentials.secret_access_key(),
        credentials.session_token(),
    )
}

/// The worker's role in a member account is refused when its credentials are renewed
/// (the role deleted or its trust changed after the first job): that account's jobs end
/// `access_denied` naming it, a stream of the worker's own account's jobs is worked
/// without a pause and none of them is dead-lettered, the worker stays ready and says
/// which account fails; once the role works again the next job assumes it anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_role_refused_on_renewal_fails_only_that_accounts_jobs() {
    let env = TestEnv::new("xrenew").await;
    let member = iam_in(&env, MEMBER).await;
    let mut member_keys = Vec::new();
    for i in 0..3 {
        let user = format!("{}-m{i}", env.name);
        let (_, keys) = common::create_user_with_keys(&member, &user, 1).await;
        member_keys.push((user, keys[0].clone()));
    }
    let mut own = Vec::new();
    for i in 0..8 {
        let (user, keys) = env.user_with_keys(&format!("o{i}"), 1).await;
        own.push((user, keys[0].clone()));
    }
    // The first AssumeRole answers with credentials that are due for renewal at once
    // (the SDK renews them ahead of their expiry), so the next request renews them.
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    let session = session_in(&env, MEMBER).await;
    proxy.set_fault_for(
        "AssumeRole",
        Fault::Status(200, assume_role_answer(&session, Duration::from_secs(1))),
    );
    let child = worker_command(&env, &proxy.url, 0)
        .env(
            "IAM_KEY_REVOKER__CROSS_ACCOUNT__ROLE_NAME",
            "iam-key-revoker",
        )
        .spawn()
        .unwrap();
    let port = listening_port(&child).await;
    let metrics = || {
        http_get(port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    let gone = |(user, key): &(String, String)| {
        let member = member.clone();
        let (user, key) = (user.clone(), key.clone());
        async move { common::key_status(&member, &user, &key).await.is_none() }
    };

    let (user, key) = &member_keys[0];
    env.send(&member_job("xr-0", user, key)).await;
    eventually_async(
        "the member account's first job",
        Duration::from_secs(20),
        || gone(&member_keys[0]),
    )
    .await;

    // The role is refused from now on; a member job and a stream of own jobs arrive.
    let assumed = proxy.count("AssumeRole");
    proxy.set_fault_for("AssumeRole", Fault::Status(403, iam_error("AccessDenied")));
    let (user, key) = &member_keys[1];
    let refused = member_job("xr-1", user, key);
    env.send(&refused).await;
    for (i, (user, key)) in own.iter().enumerate() {
        env.send(&job(&format!("xr-own-{i}"), user, key)).await;
    }
    eventually("every own key revoked", Duration::from_secs(30), || {
        metric(
            &metrics(),
            "iam_key_revoker_jobs_total{outcome=\"deleted\",reason=\"none\",queue=\"main\"}",
        ) == 9.0
    })
    .await;
    eventually("the member job refused", Duration::from_secs(20), || {
        metric(
            &metrics(),
            "iam_key_revoker_jobs_total{outcome=\"rejected\",reason=\"access_denied\",queue=\"main\"}",
        ) == 1.0
    })
    .await;
    for (user, key) in &own {
        assert_eq!(env.key_status(user, key).await, None, "{user}");
    }
    assert_eq!(
        common::key_status(&member, &member_keys[1].0, &member_keys[1].1).await,
        Some(StatusType::Active)
    );
    let text = metrics();
    assert_eq!(metric(&text, "iam_key_revoker_credentials_failing"), 0.0);
    assert!(
        !text.contains("iam_key_revoker_credential_failures_total{"),
        "the worker's own credentials never failed:\n{text}"
    );
    assert_eq!(
        metric(&text, "iam_key_revoker_member_accounts_failing"),
        1.0
    );
    let (status, body) = http_get(port, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("222222222222: "), "{body}");
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1, "only the member account's job");
    assert_eq!(dead[0].body(), Some(refused.as_str()));
    assert_eq!(
        attribute(&dead[0], "revoker-reason").as_deref(),
        Some("access_denied")
    );
    let detail = attribute(&dead[0], "revoker-detail").unwrap();
    assert!(
        detail.contains("account 222222222222: the worker's role there could not be assumed again: AssumeRole: AccessDenied"),
        "the renewal was refused, not a first assumption: {detail}"
    );
    assert!(
        proxy.count("AssumeRole") > assumed,
        "the credentials were renewed"
    );

    // The role works again: the next job assumes it anew, and the account is no longer
    // named.
    proxy.set_fault_for("AssumeRole", Fault::None);
    let (user, key) = &member_keys[2];
    env.send(&member_job("xr-2", user, key)).await;
    eventually_async(
        "the member account's job after the fix",
        Duration::from_secs(20),
        || gone(&member_keys[2]),
    )
    .await;
    eventually("the account recovered", Duration::from_secs(10), || {
        metric(&metrics(), "iam_key_revoker_member_accounts_failing") == 0.0
    })
    .await;
    assert_eq!(http_get(port, "/readyz"), Some((200, "ready\n".to_owned())));

    sigterm(&child);
    let output = wait(child, Duration::from_secs(20)).await;
    assert!(output.status.success(), "{output:?}");
    let logs = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        logs.matches("Assumed the cross-account role").count(),
        2,
        "assumed for the first job, and again after the refused renewal: {logs}"
    );
}

/// The role an `AssumeRole` request the proxy saw asks for.
fn assumed_role(request: &str) -> String {
    let arn = request
        .split('&')
        .find_map(|p| p.strip_prefix("RoleArn="))
        .unwrap_or_default();
    arn.replace("%3A", ":").replace("%2F", "/")
}

/// The operators' commands take roles of their own in a member account, never the
/// worker's, whose rights include writing every user's policies: `restore` a restorer's
/// (with what restore does and the protected users' Deny), `plan` a planner's (read rights
/// only); `--role-name` names another (CONTRACT §6; docs "Operators' roles in member
/// accounts"). What each role may do is tests/deploy.rs's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_and_plan_assume_roles_of_their_own_never_the_workers() {
    let mut env = TestEnv::new("xroles").await;
    env.config.cross_account.role_name = Some("iam-key-revoker".to_owned());
    let member = iam_in(&env, MEMBER).await;
    let user = format!("{}-u", env.name);
    let (_, keys) = common::create_user_with_keys(&member, &user, 2).await;
    for key in &keys {
        member
            .update_access_key()
            .user_name(&user)
            .access_key_id(key)
            .status(StatusType::Inactive)
            .send()
            .await
            .unwrap();
    }
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    env.route_iam_and_sts_through(&proxy).await;
    let restore = |key: &str, role_name: Option<&str>| iam_key_revoker::cli::restore::Request {
        access_key_id: key.to_owned(),
        user_name: user.clone(),
        account_id: Some(MEMBER.to_owned()),
        reason: Some("test".to_owned()),
        role_name: role_name.map(str::to_owned),
        ..Default::default()
    };

    let record = iam_key_revoker::cli::restore::restore(
        &env.settings(),
        &env.clients,
        restore(&keys[0], None),
    )
    .await
    .unwrap();
    assert!(record.restored, "{record:?}");
    assert_eq!(record.account_id, MEMBER);
    assert_eq!(
        common::key_status(&member, &user, &keys[0]).await,
        Some(StatusType::Active)
    );
    let roles: Vec<String> = proxy
        .requests_containing("Action=AssumeRole")
        .iter()
        .map(|r| assumed_role(r))
        .collect();
    assert_eq!(
        roles,
        [format!(
            "arn:aws:iam::{MEMBER}:role/iam-key-revoker-restorer"
        )]
    );

    iam_key_revoker::cli::restore::restore(
        &env.settings(),
        &env.clients,
        restore(&keys[1], Some("our-restorer")),
    )
    .await
    .unwrap();
    let roles: Vec<String> = proxy
        .requests_containing("Action=AssumeRole")
        .iter()
        .map(|r| assumed_role(r))
        .collect();
    assert_eq!(
        roles.last().map(String::as_str),
        Some(format!("arn:aws:iam::{MEMBER}:role/our-restorer").as_str())
    );

    // `plan`, the binary, its IAM and STS requests through the proxy.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n",
            json!({"request_id": "xr-plan", "user_name": user, "access_key_id": keys[0], "account_id": MEMBER})
        ),
    )
    .unwrap();
    let plan = |worker_role: Option<&str>| {
        let mut command = common::process::command(&proxy.url, &env.queue_url);
        command
            .args(["plan", "--output", "json", "--file"])
            .arg(&file);
        if let Some(role) = worker_role {
            command.env("IAM_KEY_REVOKER__CROSS_ACCOUNT__ROLE_NAME", role);
        }
        let output = command.output().expect("the binary runs");
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
        rows[0]["prediction"].as_str().unwrap().to_owned()
    };
    let before = proxy.requests_containing("Action=AssumeRole").len();
    assert_eq!(plan(Some("iam-key-revoker")), "would_delete");
    let roles: Vec<String> = proxy.requests_containing("Action=AssumeRole")[before..]
        .iter()
        .map(|r| assumed_role(r))
        .collect();
    assert_eq!(
        roles,
        [format!(
            "arn:aws:iam::{MEMBER}:role/iam-key-revoker-planner"
        )]
    );
    // A worker that acts in no other account: the line is predicted as the worker would
    // end it, and no role is assumed.
    assert_eq!(plan(None), "cross_account_disabled");
    assert_eq!(
        proxy.requests_containing("Action=AssumeRole").len(),
        before + 1
    );
    assert!(
        proxy
            .requests_containing("role%2Fiam-key-revoker&")
            .is_empty()
            && !proxy
                .requests_containing("Action=AssumeRole")
                .iter()
                .any(|r| assumed_role(r).ends_with(":role/iam-key-revoker")),
        "the worker's role is never assumed by an operator's command"
    );
}
