//! Jobs for other accounts: the worker assumes `cross_account.role_name` there. The
//! emulator models accounts: credentials from a role assumed in 222222222222 see only
//! that account's users.

mod common;

use std::sync::Arc;

use aws_sdk_iam::types::StatusType;
use common::proxy::{iam_error, Fault, FaultProxy, Scope};
use common::{attribute, TestEnv};
use iam_key_revoker::{Outcome, Reason};
use serde_json::json;

const MEMBER: &str = "222222222222";

/// An IAM client acting in `account`, as the test's own view of that account.
async fn iam_in(env: &TestEnv, account: &str) -> aws_sdk_iam::Client {
    let assumed = env
        .clients
        .sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/test-setup"))
        .role_session_name("test-setup")
        .send()
        .await
        .expect("assume role")
        .credentials
        .expect("credentials");
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
        Some("AssumeRole: AccessDenied: injected"),
        "one readable line, not the SDK's error dump"
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
