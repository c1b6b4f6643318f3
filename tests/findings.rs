//! README "Closing the finding": a job from a GuardDuty finding marks the finding in
//! Security Hub (`BatchUpdateFindings`) once its outcome is settled. IAM and SQS are the
//! emulator's; the emulator has no Security Hub, so the fault-injecting proxy in front of
//! it answers `PATCH /findings/batchupdate` as the Security Hub API Reference documents
//! it, and the test reads the request the worker sent.

mod common;

use common::events::{finding_arn as arn, guardduty_finding as finding};
use common::proxy::{Fault, FaultProxy, Scope};
use common::TestEnv;
use iam_key_revoker::{Outcome, Reason};
use serde_json::{json, Value};

const BATCH_UPDATE: &str = "PATCH /findings/batchupdate";

/// Security Hub's answer: every finding processed, or this one not.
fn answer(unprocessed: Option<&str>) -> Fault {
    let body = match unprocessed {
        None => json!({"ProcessedFindings": [], "UnprocessedFindings": []}),
        Some(id) => json!({"ProcessedFindings": [], "UnprocessedFindings": [{
            "FindingIdentifier": {"Id": arn(id), "ProductArn": "arn:aws:securityhub:us-east-1::product/aws/guardduty"},
            "ErrorCode": "FindingNotFound", "ErrorMessage": "Finding not found"}]}),
    };
    Fault::Status(200, body.to_string())
}

/// The JSON bodies of the `BatchUpdateFindings` requests the proxy saw.
fn updates(proxy: &FaultProxy) -> Vec<Value> {
    proxy
        .requests_containing(BATCH_UPDATE)
        .iter()
        .map(|r| serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap_or("")).expect("JSON body"))
        .collect()
}

async fn env_with_proxy(name: &str, update_findings: bool) -> (TestEnv, FaultProxy) {
    let mut env = TestEnv::new(name).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    proxy.set_fault_matching(&[BATCH_UPDATE.to_owned()], answer(None));
    env.route_all_through(&proxy).await;
    env.config.intake.update_findings = update_findings;
    (env, proxy)
}

fn new_id() -> String {
    common::unique("f").replace('-', "")
}

#[tokio::test]
async fn a_revoked_key_resolves_its_finding_with_the_summary_as_note() {
    let (env, proxy) = env_with_proxy("finding-resolved", true).await;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    let id = new_id();

    let report = env
        .handle_job(&worker, env.deliver(&finding(&id, &keys[0], &user)).await)
        .await;

    assert_eq!(report.outcome, Outcome::Deactivated);
    assert_eq!(
        report.facts.finding_update.as_deref(),
        Some("RESOLVED in Security Hub")
    );
    let sent = updates(&proxy);
    assert_eq!(sent.len(), 1, "one update");
    let update = &sent[0];
    assert_eq!(
        update["FindingIdentifiers"],
        json!([{"Id": arn(&id), "ProductArn": "arn:aws:securityhub:us-east-1::product/aws/guardduty"}])
    );
    assert_eq!(update["Workflow"], json!({"Status": "RESOLVED"}));
    assert_eq!(update["Note"]["UpdatedBy"], "iam-key-revoker");
    assert_eq!(update["Note"]["Text"], report.summary());
    assert!(report
        .summary()
        .starts_with(&format!("Deactivated access key {} of {user}", keys[0])));
}

#[tokio::test]
async fn a_rejected_job_marks_its_finding_notified_and_an_unprocessed_one_is_said() {
    let (env, proxy) = env_with_proxy("finding-notified", true).await;
    let worker = env.worker().await;
    let (user, _) = env.user_with_keys("u", 1).await;
    let (_, other_keys) = env.user_with_keys("other", 1).await;
    let id = new_id();

    // The finding names a user who does not own the key: owner_mismatch.
    let report = env
        .handle_job(
            &worker,
            env.deliver(&finding(&id, &other_keys[0], &user)).await,
        )
        .await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::OwnerMismatch));
    let sent = updates(&proxy);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["Workflow"], json!({"Status": "NOTIFIED"}));

    // Security Hub does not process the next one: said and logged; the outcome stands.
    let (user2, keys2) = env.user_with_keys("v", 1).await;
    let id2 = new_id();
    proxy.set_fault_matching(&[BATCH_UPDATE.to_owned()], answer(Some(&id2)));
    let report = env
        .handle_job(
            &worker,
            env.deliver(&finding(&id2, &keys2[0], &user2)).await,
        )
        .await;
    assert_eq!(report.outcome, Outcome::Deactivated);
    assert_eq!(
        report.facts.finding_update.as_deref(),
        Some("Security Hub not updated: FindingNotFound: Finding not found")
    );
}

#[tokio::test]
async fn without_update_findings_security_hub_is_not_called() {
    let (env, proxy) = env_with_proxy("finding-off", false).await;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    let report = env
        .handle_job(
            &worker,
            env.deliver(&finding(&new_id(), &keys[0], &user)).await,
        )
        .await;
    assert_eq!(report.outcome, Outcome::Deactivated);
    assert!(updates(&proxy).is_empty());
    assert_eq!(report.facts.finding_update, None);
}
