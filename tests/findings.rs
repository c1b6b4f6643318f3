//! docs "Closing the finding": a job from a GuardDuty finding marks the finding in
//! Security Hub (`BatchUpdateFindings`) once its outcome is settled. IAM and SQS are the
//! emulator's; the emulator has no Security Hub, so the fault-injecting proxy in front of
//! it answers `PATCH /findings/batchupdate` as the Security Hub API Reference documents
//! it, and the test reads the request the worker sent.

mod common;

use common::events::{finding_arn as arn, guardduty_finding as finding, import_finding};
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
    import_finding(&env.clients, &id, &keys[0], &user).await;

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
    let (mut env, proxy) = env_with_proxy("finding-notified", true).await;
    let (user, keys) = env.user_with_keys("breakglass", 1).await;
    env.config.protect.users = vec!["*-breakglass".into()];
    let worker = env.worker().await;
    let id = new_id();
    import_finding(&env.clients, &id, &keys[0], &user).await;

    // The finding is about a protected user's key: rejected, and a person is told.
    let report = env
        .handle_job(&worker, env.deliver(&finding(&id, &keys[0], &user)).await)
        .await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::Protected));
    let sent = updates(&proxy);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["Workflow"], json!({"Status": "NOTIFIED"}));

    // Security Hub does not process the next one: said and logged; the outcome stands.
    let (user2, keys2) = env.user_with_keys("v", 1).await;
    let id2 = new_id();
    import_finding(&env.clients, &id2, &keys2[0], &user2).await;
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

/// A producer sends a finding-shaped body that names a real finding of Security Hub
/// (its ARN) with another key, to get that finding closed: the worker reads the finding
/// back, sees it names another key, and leaves it as it is. A finding of another account
/// is never marked either.
#[tokio::test]
async fn a_forged_finding_closes_no_other_finding() {
    let (env, proxy) = env_with_proxy("finding-forged", true).await;
    let worker = env.worker().await;
    let (victim, victim_keys) = env.user_with_keys("victim", 1).await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    let real = new_id();
    import_finding(&env.clients, &real, &victim_keys[0], &victim).await;

    let report = env
        .handle_job(&worker, env.deliver(&finding(&real, &keys[0], &user)).await)
        .await;
    assert_eq!(
        report.outcome,
        Outcome::Deactivated,
        "the key it names is revoked"
    );
    assert_eq!(
        report.facts.finding_update.as_deref(),
        Some(
            format!(
                "Security Hub not updated: the finding does not name access key {}",
                keys[0]
            )
            .as_str()
        )
    );
    assert!(updates(&proxy).is_empty(), "no BatchUpdateFindings");

    // The finding's ARN names another account than the job acts in.
    let mut body: Value = serde_json::from_str(&finding(&new_id(), &keys[0], &user)).unwrap();
    body["detail"]["arn"] = json!(
        "arn:aws:guardduty:us-east-1:444455556666:detector/12abc34d567e8fa901bc2d34e56789f0/finding/x1"
    );
    let report = env
        .handle_job(&worker, env.deliver(&body.to_string()).await)
        .await;
    assert!(
        report
            .facts
            .finding_update
            .as_deref()
            .is_some_and(|u| u.contains("the finding is in account 444455556666")),
        "{:?}",
        report.facts.finding_update
    );
    assert!(updates(&proxy).is_empty());
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

/// A forged event marked as GuardDuty's sample, naming the ARN of a real finding about a
/// real key: the key is not touched, and the real finding stays as it is (a person still
/// sees it NEW), never marked NOTIFIED. The mark is read in both places GuardDuty gives
/// it: `additionalInfo.sample`, and the JSON string `additionalInfo.value`.
#[tokio::test]
async fn a_sample_event_leaves_the_real_finding_it_names_untouched() {
    let (env, proxy) = env_with_proxy("finding-sample", true).await;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    let id = new_id();
    import_finding(&env.clients, &id, &keys[0], &user).await;

    for info in [
        json!({"type": "default", "value": "{\"sample\":true}"}),
        json!({"sample": true}),
    ] {
        let mut body: Value = serde_json::from_str(&finding(&id, &keys[0], &user)).unwrap();
        body["id"] = json!(common::unique("ev"));
        body["detail"]["service"]["additionalInfo"] = info.clone();
        let report = env
            .handle_job(&worker, env.deliver(&body.to_string()).await)
            .await;
        assert_eq!(
            report.outcome,
            Outcome::Rejected(Reason::NotRevocable),
            "{info}"
        );
        assert_eq!(report.facts.finding_update, None, "{info}");
    }
    assert!(updates(&proxy).is_empty(), "no BatchUpdateFindings");
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(aws_sdk_iam::types::StatusType::Active)
    );
}
