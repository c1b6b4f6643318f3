//! docs "Quarantine": the quarantine policy attached to the user of a revoked key, never
//! to a protected user, and its failure (IAM's limit of attached managed policies, a
//! refusal) never changing the job's outcome. The emulator does not load AWS managed
//! policies, so the tests attach a customer managed policy of their own through
//! `quarantine.policy_arn`, as an operator may; IAM's `LimitExceeded`, which the emulator
//! never answers, comes from the fault-injecting proxy.

mod common;

use common::proxy::{iam_error, Fault, FaultProxy, Scope};
use common::TestEnv;
use iam_key_revoker::{Outcome, Reason};
use serde_json::json;

/// A customer managed policy standing in for AWS's quarantine policy; its ARN.
async fn quarantine_policy(env: &TestEnv) -> String {
    env.clients
        .iam
        .create_policy()
        .policy_name(format!("{}-quarantine", env.name))
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": ["iam:CreateAccessKey", "ec2:RunInstances"], "Resource": "*"}]})
                .to_string(),
        )
        .send()
        .await
        .expect("create policy")
        .policy
        .and_then(|p| p.arn)
        .expect("policy arn")
}

async fn attached(env: &TestEnv, user: &str) -> Vec<String> {
    env.clients
        .iam
        .list_attached_user_policies()
        .user_name(user)
        .send()
        .await
        .expect("list attached")
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_job_with_quarantine_user_attaches_the_policy_after_the_key_action() {
    let mut env = TestEnv::new("quarantine").await;
    let policy = quarantine_policy(&env).await;
    env.config.quarantine.policy_arn = policy.clone();
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 2).await;
    let (other, other_keys) = env.user_with_keys("plain", 1).await;

    let body = json!({"request_id": "q-1", "access_key_id": keys[0], "user_name": user, "quarantine_user": true}).to_string();
    let report = worker.handle(env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::Deleted);
    assert_eq!(attached(&env, &user).await, vec![policy.clone()]);
    let note = report
        .facts
        .quarantine
        .clone()
        .expect("said in the outcome");
    assert_eq!(note, format!("{}-quarantine attached to {user}", env.name));
    assert_eq!(
        env.key_status(&user, &keys[1])
            .await
            .map(|s| s.as_str().to_owned()),
        Some("Active".into()),
        "the other key is untouched"
    );

    // A job without the field quarantines nobody.
    let plain = worker
        .handle(
            env.deliver(&common::job("q-2", &other, &other_keys[0]))
                .await,
        )
        .await;
    assert_eq!(plain.outcome, Outcome::Deleted);
    assert!(attached(&env, &other).await.is_empty());
    assert!(plain.facts.quarantine.is_none());

    // A key that was never there ties nobody to it: the user it names is not
    // quarantined (a typo must not lock a colleague out).
    let (bystander, _) = env.user_with_keys("bystander", 1).await;
    let typo = json!({"request_id": "q-3", "access_key_id": "AKIA0000000000TYPO00", "user_name": bystander, "quarantine_user": true}).to_string();
    let report = worker.handle(env.deliver(&typo).await).await;
    assert_eq!(report.outcome, Outcome::AlreadyAbsent);
    assert!(attached(&env, &bystander).await.is_empty());
    assert!(report.facts.quarantine.is_none());
}

#[tokio::test]
async fn a_protected_user_is_never_quarantined() {
    let mut env = TestEnv::new("quarantine-prot").await;
    env.config.quarantine.policy_arn = quarantine_policy(&env).await;
    let (user, keys) = env.user_with_keys("guarded", 1).await;
    env.config.protect.users = vec![user.clone()];
    let worker = env.worker().await;
    let body = json!({"request_id": "qp-1", "access_key_id": keys[0], "user_name": user, "quarantine_user": true}).to_string();
    let report = worker.handle(env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::Protected));
    assert!(attached(&env, &user).await.is_empty());
}

#[tokio::test]
async fn a_user_at_iams_limit_of_managed_policies_keeps_the_revocation_and_says_why() {
    let mut env = TestEnv::new("quarantine-limit").await;
    env.config.quarantine.policy_arn = quarantine_policy(&env).await;
    let (user, keys) = env.user_with_keys("full", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    // IAM's answer for a user with as many managed policies as its quota allows.
    proxy.set_fault_for(
        "AttachUserPolicy",
        Fault::Status(409, iam_error("LimitExceeded")),
    );
    env.route_iam_through(&proxy).await;
    let worker = env.worker().await;
    let body = json!({"request_id": "ql-1", "access_key_id": keys[0], "user_name": user, "quarantine_user": true}).to_string();

    let report = worker.handle(env.deliver(&body).await).await;

    assert_eq!(report.outcome, Outcome::Deleted, "the revocation stands");
    assert_eq!(env.key_status(&user, &keys[0]).await, None);
    let note = report
        .facts
        .quarantine
        .clone()
        .expect("said in the outcome");
    assert!(
        note.contains("NOT attached")
            && note.contains("LimitExceeded")
            && note.contains("detach one or raise the quota"),
        "{note}"
    );
    assert!(env.dead_letters().await.is_empty(), "nothing dead-lettered");
}

#[tokio::test]
async fn security_events_quarantine_when_intake_says_so() {
    let mut env = TestEnv::new("quarantine-intake").await;
    let policy = quarantine_policy(&env).await;
    env.config.quarantine.policy_arn = policy.clone();
    env.config.intake.quarantine_user = true;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("leaked", 1).await;
    let id = common::unique("gd").replace('-', "");
    let finding = common::events::guardduty_finding(&id, &keys[0], &user);
    let report = env.handle_job(&worker, env.deliver(&finding).await).await;
    assert_eq!(report.outcome, Outcome::Deactivated);
    assert_eq!(attached(&env, &user).await, vec![policy]);
}

/// A user who holds a protected key is never quarantined (the policy would deny that
/// key's own calls), and `restore` tells whether a user is quarantined and lifts it when
/// asked.
#[tokio::test]
async fn a_protected_keys_holder_is_not_quarantined_and_restore_lifts_it() {
    let mut env = TestEnv::new("quarantine-protected").await;
    let policy = quarantine_policy(&env).await;
    env.config.quarantine.policy_arn = policy.clone();
    let (holder, holder_keys) = env.user_with_keys("holder", 2).await;
    env.config.protect.access_keys = vec![holder_keys[1].clone()];
    let worker = env.worker().await;

    let body = json!({"request_id": "qp-1", "access_key_id": holder_keys[0], "user_name": holder, "quarantine_user": true}).to_string();
    let report = worker.handle(env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::Deleted);
    assert!(attached(&env, &holder).await.is_empty());
    assert!(report
        .facts
        .quarantine
        .unwrap()
        .contains("holds protected access key"));

    // Another user, quarantined by a deactivation, restored with the quarantine lifted.
    let (user, keys) = env.user_with_keys("u", 1).await;
    let body = json!({"request_id": "qp-2", "access_key_id": keys[0], "user_name": user, "action": "deactivate", "quarantine_user": true}).to_string();
    worker.handle(env.deliver(&body).await).await;
    assert_eq!(attached(&env, &user).await, vec![policy.clone()]);
    let restore = |lift: bool| iam_key_revoker::cli::restore::Request {
        access_key_id: keys[0].clone(),
        user_name: user.clone(),
        lift_quarantine: lift,
        ..Default::default()
    };
    let record =
        iam_key_revoker::cli::restore::restore(&env.settings(), &env.clients, restore(false))
            .await
            .unwrap();
    assert_eq!(record.quarantined, Some(true));
    assert!(!record.quarantine_lifted);
    assert!(
        record.detail.contains("still quarantined"),
        "{}",
        record.detail
    );
    let record =
        iam_key_revoker::cli::restore::restore(&env.settings(), &env.clients, restore(true))
            .await
            .unwrap();
    assert!(record.quarantine_lifted);
    assert!(attached(&env, &user).await.is_empty());
}
