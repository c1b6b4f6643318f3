//! docs "Threat model", played by those it names: the holder of a leaked key, acting
//! with the key's own rights within the minute (a planted cut-off, a filled inline
//! quota, a rename between the finding and the job); a producer forging what the worker
//! writes for itself (a continuation, a sample finding); and an operator's undo (a
//! restore between two incidents, a delete redriven after a restore). Against the local
//! emulator through the real SDK; where the emulator cannot show AWS's behaviour (IAM's
//! quota, an answer after a rename), the fault proxy or AWS's documented answers
//! replayed with `aws-smithy-mocks`. The emulator does not enforce
//! `aws:TokenIssueTime` conditions: cut-offs are read back as documents; what IAM
//! enforces is cited in `src/sessions.rs`.

mod common;

use std::time::Duration;

use aws_sdk_iam::types::StatusType;
use aws_sdk_scheduler::types::ScheduleState;
use common::events::{guardduty_finding, health_event};
use common::proxy::{iam_error, Fault, FaultProxy, Scope};
use common::staging::{schedule, staged_env, staging};
use common::TestEnv;
use iam_key_revoker::aws::mac::{Mac, Purpose};
use iam_key_revoker::cli::restore::{restore, Request};
use iam_key_revoker::job;
use iam_key_revoker::sessions::{revocation_sid, SESSION_POLICY_NAME};
use iam_key_revoker::{Outcome, Reason};
use serde_json::{json, Value};

/// A user with one access key, and the key's secret: the leak.
async fn leaked(env: &TestEnv, suffix: &str) -> (String, String, String) {
    let user = format!("{}-{suffix}", env.name);
    env.clients
        .iam
        .create_user()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    let key = env
        .clients
        .iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    // What CI users often hold: the right to write their own policies.
    env.clients
        .iam
        .put_user_policy()
        .user_name(&user)
        .policy_name("self-service")
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                   "Action": ["iam:PutUserPolicy", "iam:UpdateUser"],
                   "Resource": format!("arn:aws:iam::123456789012:user/{user}")}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    (user, key.access_key_id, key.secret_access_key)
}

/// The SDK configuration of the key's holder: the leaked key itself.
fn as_holder(env: &TestEnv, key: &str, secret: &str) -> aws_config::SdkConfig {
    env.clients
        .sdk
        .to_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_sdk_iam::config::Credentials::new(key, secret, None, None, "leaked"),
            ),
        )
        .build()
}

/// The names of `user`'s inline policies.
async fn policies(env: &TestEnv, user: &str) -> Vec<String> {
    env.clients
        .iam
        .list_user_policies()
        .user_name(user)
        .send()
        .await
        .unwrap()
        .policy_names()
        .to_vec()
}

/// A managed policy standing in for the quarantine policy (the emulator has none of
/// AWS's), denying `actions`; its ARN.
async fn quarantine_policy(env: &TestEnv, actions: Value) -> String {
    let document = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": actions, "Resource": "*"}]});
    env.clients
        .iam
        .create_policy()
        .policy_name(format!("{}-quarantine", env.name))
        .policy_document(document.to_string())
        .send()
        .await
        .unwrap()
        .policy
        .and_then(|p| p.arn)
        .unwrap()
}

/// The names of the worker's cut-offs on `user`.
async fn cutoffs(env: &TestEnv, user: &str) -> Vec<String> {
    policies(env, user)
        .await
        .into_iter()
        .filter(|n| n.starts_with(SESSION_POLICY_NAME))
        .collect()
}

/// The cut-off `name`'s document as IAM holds it.
async fn document(env: &TestEnv, user: &str, name: &str) -> Value {
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
    serde_json::from_str(&decoded).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The holder plants a policy with the worker's cut-off name, a harmless document and a
/// time in 2099, then mints 36-hour credentials with the key: the next revocation must
/// not take the plant for a cut-off in force. It puts a real one, removes the plant,
/// and says so.
#[tokio::test]
async fn a_planted_cutoff_does_not_stop_the_next_one() {
    let env = TestEnv::new("atk-plant").await;
    let (user, key, secret) = leaked(&env, "ci").await;
    let holder = as_holder(&env, &key, &secret);
    let planted = format!("{SESSION_POLICY_NAME}-20991231T235959Z");
    aws_sdk_iam::Client::new(&holder)
        .put_user_policy()
        .user_name(&user)
        .policy_name(&planted)
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:GetCallerIdentity","Resource":"*"}]}"#,
        )
        .send()
        .await
        .expect("the key's own right");
    let session = aws_sdk_sts::Client::new(&holder)
        .get_session_token()
        .duration_seconds(129_600)
        .send()
        .await
        .expect("a 36-hour session")
        .credentials
        .unwrap();
    let worker = env.worker().await;

    let report = env
        .handle_job(
            &worker,
            env.deliver(&guardduty_finding(
                &common::unique("plant").replace('-', ""),
                &key,
                &user,
            ))
            .await,
        )
        .await;

    assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    let cut = report.facts.sessions_revoked_before.clone().unwrap();
    assert!(
        cut.as_str() < "2099",
        "a real cut-off, not the plant's: {cut}"
    );
    let detail = report.detail.clone().unwrap();
    assert!(
        detail.contains(&planted) && detail.contains("not the worker's"),
        "said in the outcome: {detail}"
    );
    let left = policies(&env, &user).await;
    assert!(!left.contains(&planted), "{left:?}");
    let ours = left
        .iter()
        .find(|n| n.starts_with(SESSION_POLICY_NAME))
        .expect("a cut-off of the worker's");
    let statement = &document(&env, &user, ours).await["Statement"][0];
    assert_eq!(statement["Effect"], "Deny");
    assert_eq!(statement["Action"], "*");
    assert_eq!(
        statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
        cut.as_str()
    );
    // The session was minted before the cut-off: the Deny covers it.
    let minted = session.expiration().secs() - 129_600;
    let cut_secs =
        aws_smithy_types::DateTime::from_str(&cut, aws_smithy_types::date_time::Format::DateTime)
            .unwrap()
            .secs();
    assert!(minted < cut_secs, "minted {minted}, cut-off {cut_secs}");
    assert!(report
        .facts
        .sessions
        .as_deref()
        .unwrap()
        .contains("not covered"));
}

/// The holder fills the user's 2,048 characters of inline policy, so that IAM refuses
/// the cut-off (the emulator has no such quota: the proxy answers as IAM does). The
/// worker contains as far as IAM allows, the quarantine policy attached instead, and
/// says what was done and what was not; with the managed policies full too, it says that
/// nothing contains the sessions.
#[tokio::test]
async fn a_filled_inline_quota_still_contains_as_far_as_iam_allows() {
    let mut env = TestEnv::new("atk-quota").await;
    let (user, key, _) = leaked(&env, "q").await;
    let quarantine =
        quarantine_policy(&env, json!(["iam:CreateAccessKey", "sts:GetSessionToken"])).await;
    env.config.quarantine.policy_arn = quarantine.clone();
    let (user2, key2, _) = leaked(&env, "q2").await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault_for(
        "PutUserPolicy",
        Fault::Status(409, iam_error("LimitExceeded")),
    );
    env.route_iam_through(&proxy).await;
    let worker = env.worker().await;

    let body = json!({"request_id": "q-1", "access_key_id": key, "user_name": user, "revoke_sessions": true}).to_string();
    let report = worker.handle(env.deliver(&body).await).await;

    assert_eq!(report.outcome, Outcome::Rejected(Reason::PolicyQuota));
    let detail = report.detail.clone().unwrap();
    assert!(
        detail.contains("1 key(s) changed")
            && detail.contains("attached to")
            && detail.contains("instead"),
        "{detail}"
    );
    let attached = env
        .clients
        .iam
        .list_attached_user_policies()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert!(attached
        .attached_policies()
        .iter()
        .any(|p| p.policy_arn() == Some(quarantine.as_str())));
    assert_eq!(env.key_status(&user, &key).await, None, "the key is gone");
    assert_eq!(env.dead_letters().await.len(), 1, "a person is paged");

    // Both quotas full: said plainly.
    proxy.set_fault_for(
        "AttachUserPolicy",
        Fault::Status(409, iam_error("LimitExceeded")),
    );
    let body = json!({"request_id": "q-2", "access_key_id": key2, "user_name": user2, "revoke_sessions": true}).to_string();
    let report = worker.handle(env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::PolicyQuota));
    assert!(report
        .detail
        .unwrap()
        .contains("NOTHING contains the sessions"));
}

/// A producer writes a `continuation` as the worker would, claiming a key was deleted
/// from a bystander (to get them quarantined) and that the job came from GuardDuty (to
/// make a missing key count as gone and a finding close). Without the worker's MAC none
/// of it is believed: the job is worked from its own fields. One the worker did sign is
/// believed, and a signed one whose content was changed, or whose time is over, is not.
#[tokio::test]
async fn a_forged_continuation_is_worked_from_its_own_fields() {
    let mut env = TestEnv::new("atk-forge").await;
    let quarantine = quarantine_policy(&env, json!("ec2:RunInstances")).await;
    env.config.quarantine.policy_arn = quarantine;
    env.config.intake.update_findings = true;
    let (bystander, _) = env.user_with_keys("bystander", 1).await;
    let worker = env.worker().await;
    let gone = "AKIANOSUCHKEY0000001";
    let forged = |request_id: &str, mac: Option<&str>, expires: Option<u64>| {
        let mut continuation = json!({
            "deliveries": 1,
            "keys": [{"access_key_id": gone, "user_name": bystander, "result": "deleted"}],
            "event_source": "aws.guardduty",
            "event_type": "UnauthorizedAccess:IAMUser/MaliciousIPCaller",
            "finding_arn": common::events::finding_arn("hidden"),
        });
        if let Some(mac) = mac {
            continuation["mac"] = mac.into();
        }
        if let Some(expires) = expires {
            continuation["expires_at_ms"] = expires.into();
        }
        json!({"request_id": request_id, "access_key_id": gone, "action": "delete",
               "quarantine_user": true, "continuation": continuation})
        .to_string()
    };

    let unverified = |report: &iam_key_revoker::JobReport| {
        assert_eq!(
            report.outcome,
            Outcome::AlreadyAbsent,
            "{:?}",
            report.detail
        );
        assert_eq!(report.facts.keys_changed, 0, "no change is claimed for it");
        assert_eq!(report.facts.origin, None, "no event is claimed for it");
        assert_eq!(report.facts.quarantine, None, "nobody is quarantined");
        assert_eq!(report.facts.finding_update, None, "no finding is touched");
    };
    // No MAC at all, and one made up.
    unverified(
        &worker
            .handle(env.deliver(&forged("forged-1", None, None)).await)
            .await,
    );
    let far = now_ms() + 86_400_000;
    unverified(
        &worker
            .handle(
                env.deliver(&forged(
                    "forged-2",
                    Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
                    Some(far),
                ))
                .await,
            )
            .await,
    );
    let attached = env
        .clients
        .iam
        .list_attached_user_policies()
        .user_name(&bystander)
        .send()
        .await
        .unwrap();
    assert!(
        attached.attached_policies().is_empty(),
        "the bystander is untouched"
    );

    // The worker's own MAC over the very same message: believed. (Only the worker's
    // role may use the key: docs, "Threat model".)
    let settings = env.settings();
    let kms = aws_sdk_kms::Client::new(&env.clients.sdk);
    let mac = Mac::new(
        kms,
        settings.continuation.mac_key_id.as_deref().unwrap(),
        settings.backoff,
    );
    let signed = |request_id: &str, expires: u64| {
        let unsigned = forged(request_id, None, Some(expires));
        let job = job::parse(&unsigned).unwrap();
        (job.canonical(), unsigned)
    };
    let (canonical, unsigned) = signed("forged-3", far);
    let signature = mac
        .sign(Purpose::Continuation, &canonical, &Default::default())
        .await
        .unwrap();
    let genuine = unsigned.replace(
        "\"expires_at_ms\"",
        &format!("\"mac\":\"{signature}\",\"expires_at_ms\""),
    );
    let report = worker.handle(env.deliver(&genuine).await).await;
    assert_eq!(
        report.outcome,
        Outcome::Deleted,
        "the earlier delivery's change counts"
    );
    assert!(report.facts.origin.is_some());

    // Its content changed, one field at a time: not believed. The action alone (the
    // request id kept) is a new job under a finished request id: refused as a conflict.
    let changed = genuine.replace("\"action\":\"delete\"", "\"action\":\"deactivate\"");
    assert_ne!(changed, genuine);
    let report = worker.handle(env.deliver(&changed).await).await;
    assert_eq!(report.facts.origin, None, "{:?}", report.detail);
    assert_eq!(
        report.outcome,
        Outcome::Rejected(Reason::RequestIdConflict),
        "{:?}",
        report.detail
    );
    let report = worker
        .handle(env.deliver(&genuine.replace("forged-3", "forged-4")).await)
        .await;
    assert_eq!(report.facts.origin, None, "{:?}", report.detail);
    unverified(&report);
    // Its time over: not believed, whatever the MAC.
    let (canonical, unsigned) = signed("forged-5", now_ms() - 1_000);
    let signature = mac
        .sign(Purpose::Continuation, &canonical, &Default::default())
        .await
        .unwrap();
    let expired = unsigned.replace(
        "\"expires_at_ms\"",
        &format!("\"mac\":\"{signature}\",\"expires_at_ms\""),
    );
    let report = worker.handle(env.deliver(&expired).await).await;
    assert_eq!(report.facts.origin, None);
}

/// GuardDuty's sample findings (`CreateSampleFindings`: anyone with GuardDuty's rights in
/// an account can make one, naming any key) never change a key or put a cut-off.
#[tokio::test]
async fn a_sample_finding_changes_nothing() {
    let env = TestEnv::new("atk-sample").await;
    let (user, keys) = env.user_with_keys("real", 1).await;
    let worker = env.worker().await;
    let mut finding: Value = serde_json::from_str(&guardduty_finding(
        &common::unique("s").replace('-', ""),
        &keys[0],
        &user,
    ))
    .unwrap();
    finding["detail"]["service"]["additionalInfo"] =
        json!({"sample": true, "type": "default", "value": "{\"sample\":true}"});

    let report = worker.handle(env.deliver(&finding.to_string()).await).await;

    assert_eq!(report.outcome, Outcome::Rejected(Reason::NotRevocable));
    assert!(report.detail.unwrap().contains("sample"));
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );
    assert!(policies(&env, &user).await.is_empty(), "no cut-off");
}

/// The holder renames the user right after using the key: the finding names the old
/// name. The name is a hint; IAM's owner decides. IAM's documented answers after a
/// rename (IAM API Reference: `DeleteAccessKey` naming a user that no longer exists is
/// `NoSuchEntity`; `GetAccessKeyLastUsed` names the key's owner, now under its new name)
/// replayed with `aws-smithy-mocks`: the emulator keeps the old name on the key.
#[tokio::test(start_paused = true)]
async fn a_rename_between_the_finding_and_the_job_does_not_save_the_key() {
    use aws_sdk_iam::operation::get_access_key_last_used::GetAccessKeyLastUsedOutput;
    use aws_sdk_iam::operation::update_access_key::{UpdateAccessKeyError, UpdateAccessKeyOutput};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use iam_key_revoker::aws::home::Home;
    use iam_key_revoker::aws::iam::Iam;
    use iam_key_revoker::aws::retry::{BackoffPolicy, RetryCounter};
    use iam_key_revoker::aws::revoke::Effect;
    use iam_key_revoker::guard::Protection;
    use iam_key_revoker::intake::{read, Intake, IntakeRules};

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    let old_name = mock!(aws_sdk_iam::Client::update_access_key)
        .match_requests(|r| r.user_name() == Some("ci-deploy"))
        .then_error(|| {
            UpdateAccessKeyError::NoSuchEntityException(
                aws_sdk_iam::types::error::NoSuchEntityException::builder()
                    .message("The user with name ci-deploy cannot be found.")
                    .meta(
                        aws_smithy_types::error::ErrorMetadata::builder()
                            .code("NoSuchEntity")
                            .build(),
                    )
                    .build(),
            )
        });
    let owner = mock!(aws_sdk_iam::Client::get_access_key_last_used).then_output(|| {
        GetAccessKeyLastUsedOutput::builder()
            .user_name("ci-deploy-renamed")
            .build()
    });
    let new_name = mock!(aws_sdk_iam::Client::update_access_key)
        .match_requests(|r| r.user_name() == Some("ci-deploy-renamed"))
        .then_output(|| UpdateAccessKeyOutput::builder().build());
    let client = mock_client!(
        aws_sdk_iam,
        RuleMode::MatchAny,
        [&old_name, &owner, &new_name],
        |c| c.retry_config(aws_smithy_types::retry::RetryConfig::disabled())
    );
    let policy = BackoffPolicy::new(
        Duration::from_millis(10),
        Duration::from_millis(50),
        2.0,
        false,
        Duration::from_secs(1),
    )
    .unwrap();
    let iam = Iam::new(client, 1_000, policy, Protection::none());
    let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, []);
    let home = Home::new("123456789012", sts, policy);
    let finding = guardduty_finding("renamed", KEY, "ci-deploy");
    let Ok(Intake::Job(job)) = read(&finding, &IntakeRules::default()) else {
        panic!("a job")
    };

    let result = iam.revoke(&job, &home, &RetryCounter::default()).await;

    assert!(
        matches!(result.effect, Effect::Revoked),
        "{:?}",
        result.effect
    );
    assert_eq!(result.user_name.as_deref(), Some("ci-deploy-renamed"));
    assert_eq!(
        new_name.num_calls(),
        1,
        "revoked from the user IAM names now"
    );
}

/// A Health event naming more keys than one job holds: every key is a live leak, so it
/// is worked in parts, each a job of its own, and every key is revoked.
#[tokio::test]
async fn an_event_naming_more_than_a_hundred_keys_revokes_them_all() {
    let mut env = TestEnv::new("atk-many").await;
    env.config.intake.revoke_sessions = false;
    let mut keys = Vec::new();
    let mut owners = Vec::new();
    for i in 0..53 {
        let (user, two) = env.user_with_keys(&format!("m{i}"), 2).await;
        for key in two {
            owners.push((user.clone(), key.clone()));
            keys.push(key);
        }
    }
    assert!(keys.len() > 100);
    let worker = env.worker().await;
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let event = health_event(&common::unique("many"), &refs);

    let mut reports = vec![env.handle_job(&worker, env.deliver(&event).await).await];
    // The second part, a message of the worker's own.
    reports.push(env.handle_job(&worker, env.receive_one().await).await);

    for report in &reports {
        assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.detail);
    }
    assert_eq!(
        reports.iter().map(|r| r.facts.keys_changed).sum::<usize>(),
        keys.len()
    );
    for (user, key) in &owners {
        assert_eq!(env.key_status(user, key).await, None, "{key}");
    }
}

/// Monday, key B of a user is staged on a suspicion (cut-off T1). Tuesday, GuardDuty
/// finds key C of the same user used from a malicious address (cut-off T2). Wednesday, B
/// turns out a false positive and is restored with its cut-off lifted: C's cut-off, the
/// second incident's, stays in force.
#[tokio::test]
async fn a_restore_between_two_incidents_lifts_only_its_own_cutoff() {
    let (env, _scheduler) = staged_env("atk-restore").await;
    let (user, keys) = env.user_with_keys("u", 2).await;
    let worker = env.worker().await;
    let monday = json!({"request_id": "monday", "user_name": user, "access_key_id": keys[0],
                        "action": "deactivate", "delete_after": "7d", "revoke_sessions": true});
    let report = worker.handle(env.deliver(&monday.to_string()).await).await;
    assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let tuesday = env
        .handle_job(
            &worker,
            env.deliver(&guardduty_finding("tuesday", &keys[1], &user))
                .await,
        )
        .await;
    assert_eq!(
        tuesday.outcome,
        Outcome::Deactivated,
        "{:?}",
        tuesday.detail
    );
    let second = revocation_sid("aws.guardduty:tuesday");
    assert_eq!(
        policies(&env, &user)
            .await
            .iter()
            .filter(|n| n.starts_with(SESSION_POLICY_NAME))
            .count(),
        2
    );

    let record = restore(
        &env.settings(),
        &env.clients,
        Request {
            access_key_id: keys[0].clone(),
            user_name: user.clone(),
            lift_session_cutoff: true,
            reason: Some("false positive".to_owned()),
            ..Default::default()
        },
    )
    .await
    .expect("restored");

    assert_eq!(record.exit_code(), 0, "{}", record.detail);
    let left: Vec<String> = policies(&env, &user)
        .await
        .into_iter()
        .filter(|n| n.starts_with(SESSION_POLICY_NAME))
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].ends_with(&second),
        "the second incident's stays: {left:?}"
    );
    assert_eq!(
        record.session_cutoff_in_force.as_deref(),
        Some(left[0].as_str())
    );
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Inactive),
        "the second incident's key stays revoked"
    );

    // With no staged delete naming the revocation, a lift is refused before anything
    // changes, unless the operator names it or forces it.
    let refused = restore(
        &env.settings(),
        &env.clients,
        Request {
            access_key_id: keys[1].clone(),
            user_name: user.clone(),
            lift_session_cutoff: true,
            ..Default::default()
        },
    )
    .await
    .expect_err("refused");
    assert!(refused.to_string().contains("--request-id"), "{refused}");
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Inactive),
        "nothing changed"
    );
}

/// A scheduled delete redriven after a restore: the key was restored, then deactivated
/// again for another reason (so `require_status: Inactive` alone would let the delete
/// through); the delete checks its staging right before it deletes and ends `cancelled`.
/// A copy far past its due time is `cancelled` too.
#[tokio::test]
async fn a_delete_redriven_after_a_restore_leaves_the_key_alone() {
    let (env, scheduler) = staged_env("atk-redrive").await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    let worker = env.worker().await;
    let report = worker
        .handle(env.deliver(&staging("rd-1", &user, &keys[0], "7d")).await)
        .await;
    assert_eq!(report.outcome, Outcome::Deactivated);
    let found = schedule(&env, &scheduler, &keys[0]).await.unwrap();
    let delete = found.target().unwrap().input().unwrap().to_owned();
    restore(
        &env.settings(),
        &env.clients,
        Request {
            access_key_id: keys[0].clone(),
            user_name: user.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("restored");
    // Deactivated again, reversibly, for something else.
    let again = json!({"request_id": "rd-other", "user_name": user, "access_key_id": keys[0], "action": "deactivate"});
    worker.handle(env.deliver(&again.to_string()).await).await;
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Inactive)
    );

    let report = worker.handle(env.deliver(&delete).await).await;

    assert_eq!(report.outcome, Outcome::Cancelled, "{:?}", report.detail);
    assert!(report.detail.unwrap().contains("restored"));
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Inactive),
        "not deleted"
    );
    assert_eq!(
        schedule(&env, &scheduler, &keys[0]).await.unwrap().state(),
        Some(&ScheduleState::Disabled)
    );

    // A copy of a delete two days past its due time (its schedule long gone).
    let mut late: Value = serde_json::from_str(&delete).unwrap();
    late["continuation"]["due_at"] = json!(common::staging::now_secs() - 3 * 86_400);
    late["request_id"] = json!("rd-late.delete");
    let report = worker.handle(env.deliver(&late.to_string()).await).await;
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert!(report.detail.unwrap().contains("late"));
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Inactive)
    );
}

/// Containment never waits on bookkeeping: EventBridge Scheduler failing (its lookup
/// refused, its create failing) never leaves the key active nor the sessions alive; the
/// cut-off is in force from the same delivery, and the schedule is tried again.
#[tokio::test]
async fn containment_never_waits_on_the_schedule() {
    let (mut env, _scheduler) = staged_env("atk-contain").await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    env.route_all_through(&proxy).await;
    env.config.retry.max_elapsed_seconds = 1;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 2).await;
    // GetSchedule refused, CreateSchedule failing.
    proxy.set_fault_matching(
        &["GET /schedules/".to_owned()],
        Fault::Status(
            403,
            json!({"__type": "AccessDeniedException", "Message": "injected"}).to_string(),
        ),
    );
    proxy.set_fault_matching(
        &["POST /schedules/".to_owned()],
        Fault::Status(
            500,
            json!({"__type": "InternalServerException", "Message": "injected"}).to_string(),
        ),
    );
    let body = json!({"request_id": "c-1", "user_name": user, "access_key_id": keys[0],
                      "action": "deactivate", "delete_after": "7d", "revoke_sessions": true});

    let report = worker.handle(env.deliver(&body.to_string()).await).await;

    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Inactive),
        "deactivated whatever Scheduler says"
    );
    assert!(
        report.facts.sessions_revoked_before.is_some(),
        "cut off in the same delivery: {:?}",
        report.detail
    );
    assert!(policies(&env, &user)
        .await
        .iter()
        .any(|n| n.ends_with(&revocation_sid("c-1"))));
    assert_eq!(report.outcome, Outcome::Retry(Reason::TransientError));
    assert!(report.detail.unwrap().contains("not scheduled yet"));
}

/// A leak detector that knows only the key id sends a job without an account: the key
/// is of a member account. IAM in the worker's account cannot find it; STS
/// (`GetAccessKeyInfo`) says whose it is, and the job is worked there. Without a
/// cross-account role it is `rejected/other_account`, never `already_absent`.
#[tokio::test]
async fn a_key_of_another_account_is_revoked_there_never_called_absent() {
    const MEMBER: &str = "222222222222";
    let mut env = TestEnv::new("atk-account").await;
    let assumed = env
        .clients
        .sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{MEMBER}:role/test-setup"))
        .role_session_name("test-setup")
        .send()
        .await
        .unwrap()
        .credentials
        .unwrap();
    let member = aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::config::Builder::from(&env.clients.sdk)
            .credentials_provider(aws_sdk_iam::config::Credentials::new(
                assumed.access_key_id(),
                assumed.secret_access_key(),
                Some(assumed.session_token().to_owned()),
                None,
                "test-setup",
            ))
            .build(),
    );
    let user = format!("{}-m", env.name);
    let (_, member_keys) = common::create_user_with_keys(&member, &user, 2).await;
    let body = |id: &str, key: &str| json!({"request_id": id, "access_key_id": key}).to_string();

    // No cross-account role: refused, named, never absent.
    let worker = env.worker().await;
    let report = env
        .handle_job(&worker, env.deliver(&body("acct-1", &member_keys[0])).await)
        .await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::OtherAccount));
    assert!(report.detail.unwrap().contains(MEMBER));
    assert_eq!(
        common::key_status(&member, &user, &member_keys[0]).await,
        Some(StatusType::Active)
    );

    env.config.cross_account.role_name = Some("iam-key-revoker".to_owned());

    let worker = env.worker().await;
    let report = env
        .handle_job(&worker, env.deliver(&body("acct-2", &member_keys[1])).await)
        .await;
    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.detail);
    assert_eq!(report.facts.account_id.as_deref(), Some(MEMBER));
    assert_eq!(
        common::key_status(&member, &user, &member_keys[1]).await,
        None
    );

    // The role there throttled past the backoff: AWS's answer, retried, never
    // `other_account` (which says the worker may not act there at all).
    let (other, other_keys) =
        common::create_user_with_keys(&member, &format!("{}-t", env.name), 1).await;
    env.config.retry.max_elapsed_seconds = 1;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::All).await;
    proxy.set_fault_for("AssumeRole", Fault::Status(400, iam_error("Throttling")));
    env.route_iam_and_sts_through(&proxy).await;
    let worker = env.worker().await;
    let report = env
        .handle_job(&worker, env.deliver(&body("acct-t", &other_keys[0])).await)
        .await;
    assert_eq!(
        report.outcome,
        Outcome::Retry(Reason::TransientError),
        "{:?}",
        report.detail
    );
    assert!(report.detail.unwrap().contains(MEMBER));
    assert!(proxy.count("AssumeRole") > 0, "the role there was asked");
    assert_eq!(
        common::key_status(&member, &other, &other_keys[0]).await,
        Some(StatusType::Active)
    );
}

/// A Health event naming two keys: the first is deleted, the second's delete fails past
/// the backoff. The first user's sessions are cut off in this same delivery, not when the
/// job comes back.
#[tokio::test]
async fn a_failure_after_a_change_does_not_wait_to_cut_off_the_first_user() {
    let mut env = TestEnv::new("atk-halfway").await;
    env.config.retry.max_elapsed_seconds = 1;
    let (first, first_keys) = env.user_with_keys("first", 1).await;
    let (second, second_keys) = env.user_with_keys("second", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    proxy.set_fault_matching(
        &["DeleteAccessKey".to_owned(), second_keys[0].clone()],
        Fault::Status(503, iam_error("ServiceUnavailable")),
    );
    env.route_iam_through(&proxy).await;
    let worker = env.worker().await;

    let report = env
        .handle_job(
            &worker,
            env.deliver(&health_event(
                &common::unique("halfway"),
                &[&first_keys[0], &second_keys[0]],
            ))
            .await,
        )
        .await;

    assert_eq!(report.outcome, Outcome::Retry(Reason::TransientError));
    assert_eq!(env.key_status(&first, &first_keys[0]).await, None);
    assert!(
        policies(&env, &first)
            .await
            .iter()
            .any(|n| n.starts_with(SESSION_POLICY_NAME)),
        "cut off now: {:?}",
        report.detail
    );
    assert!(
        env.key_status(&second, &second_keys[0]).await.is_some(),
        "the second key is left for the retry"
    );
}

/// The holder fills one user's inline quota; the event names keys of two users. The
/// other user's sessions are cut off all the same (one user's failure never keeps the
/// next from theirs), the full one is quarantined instead, and the job pages. A job
/// naming a user whose key IAM does not know (a typo) quarantines nobody when that
/// user's quota is full: the fallback is for users IAM tied to a changed key.
#[tokio::test]
async fn one_users_full_quota_does_not_keep_the_other_from_their_cutoff() {
    let mut env = TestEnv::new("atk-quota2").await;
    let quarantine = quarantine_policy(&env, json!("iam:CreateAccessKey")).await;
    env.config.quarantine.policy_arn = quarantine.clone();
    let (full, full_keys) = env.user_with_keys("full", 1).await;
    let (other, other_keys) = env.user_with_keys("other", 1).await;
    let (typo, _) = env.user_with_keys("typo", 1).await;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    for user in [&full, &typo] {
        proxy.set_fault_matching(
            &[
                "Action=PutUserPolicy".to_owned(),
                format!("UserName={user}&"),
            ],
            Fault::Status(409, iam_error("LimitExceeded")),
        );
    }
    env.route_iam_through(&proxy).await;
    let worker = env.worker().await;
    let attached = |user: String| {
        let iam = env.clients.iam.clone();
        async move {
            iam.list_attached_user_policies()
                .user_name(user)
                .send()
                .await
                .unwrap()
                .attached_policies()
                .iter()
                .filter_map(|p| p.policy_arn().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };

    let report = env
        .handle_job(
            &worker,
            env.deliver(&health_event(
                &common::unique("quota2"),
                &[&full_keys[0], &other_keys[0]],
            ))
            .await,
        )
        .await;

    // The event's keys were named alone: the refusal carries on as the worker's own
    // message naming their owners, dead-lettered itself, ready to be moved back.
    assert_eq!(report.outcome, Outcome::Retry(Reason::PolicyQuota));
    let report = worker.handle(env.receive_one().await).await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::PolicyQuota));
    assert_eq!(env.key_status(&full, &full_keys[0]).await, None);
    assert_eq!(env.key_status(&other, &other_keys[0]).await, None);
    assert!(
        policies(&env, &other)
            .await
            .iter()
            .any(|n| n.starts_with(SESSION_POLICY_NAME)),
        "the other user is cut off: {:?}",
        report.detail
    );
    assert_eq!(attached(full.clone()).await, vec![quarantine.clone()]);
    assert!(attached(other.clone()).await.is_empty());

    // A key IAM does not know, named with a user whose quota is full.
    let body = json!({"request_id": "typo-1", "access_key_id": "AKIANOSUCHKEY0000009", "user_name": typo, "revoke_sessions": true}).to_string();
    let report = worker.handle(env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::Rejected(Reason::PolicyQuota));
    assert!(
        report
            .detail
            .as_deref()
            .unwrap()
            .contains("not quarantined"),
        "{:?}",
        report.detail
    );
    assert!(
        attached(typo.clone()).await.is_empty(),
        "nobody locked out by a typo"
    );
}

/// An operator's undo must not reopen another incident. Key B of a user is revoked for
/// an incident (cut-off, quarantine). A producer stages key A of the same user under a
/// request id built to look like the incident's digest (`staged-<digest>`), hoping that
/// a restore of A lifts the incident's cut-off. The restore reads which revocation staged
/// A from the schedule's own description and lifts only that one's cut-off; the
/// quarantine, which the incident still needs while B is Inactive, is not lifted without
/// --force, and that refusal changes nothing. Two keys of one staged job: restoring one
/// with the lift is refused while the other is Inactive (the cut-off still ends its
/// sessions).
#[tokio::test]
async fn a_restore_never_lifts_what_another_incident_needs() {
    let (mut env, scheduler) = staged_env("atk-undo").await;
    let quarantine = quarantine_policy(&env, json!("iam:CreateAccessKey")).await;
    env.config.quarantine.policy_arn = quarantine.clone();
    let (user, keys) = env.user_with_keys("u", 2).await;
    let worker = env.worker().await;
    let incident = json!({"request_id": "incident-1", "user_name": user, "access_key_id": keys[1],
                          "action": "deactivate", "revoke_sessions": true, "quarantine_user": true});
    let report = worker
        .handle(env.deliver(&incident.to_string()).await)
        .await;
    assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let lookalike = format!(
        "staged-{}",
        iam_key_revoker::sessions::request_digest("incident-1")
    );
    let staged = json!({"request_id": lookalike, "user_name": user, "access_key_id": keys[0],
                        "action": "deactivate", "delete_after": "7d", "revoke_sessions": true});
    let report = worker.handle(env.deliver(&staged.to_string()).await).await;
    assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    assert_eq!(cutoffs(&env, &user).await.len(), 2);
    let ask = |lift_quarantine: bool, force: bool| Request {
        access_key_id: keys[0].clone(),
        user_name: user.clone(),
        lift_session_cutoff: true,
        lift_quarantine,
        force,
        ..Default::default()
    };

    // The quarantine serves the incident too: refused, nothing changed.
    let refused = restore(&env.settings(), &env.clients, ask(true, false))
        .await
        .expect_err("refused");
    assert_eq!(refused.exit_code(), 2);
    assert!(refused.to_string().contains(&keys[1]), "{refused}");
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Inactive)
    );
    let kept = schedule(&env, &scheduler, &keys[0]).await.unwrap();
    assert_eq!(kept.state(), Some(&ScheduleState::Enabled));
    assert_eq!(cutoffs(&env, &user).await.len(), 2);

    // The lift alone: only the staged revocation's cut-off goes.
    let record = restore(&env.settings(), &env.clients, ask(false, false))
        .await
        .expect("restored");
    assert_eq!(record.exit_code(), 0, "{}", record.detail);
    let left = cutoffs(&env, &user).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].ends_with(&revocation_sid("incident-1")),
        "the incident's cut-off stays: {left:?}"
    );
    assert!(record.quarantined == Some(true) && !record.quarantine_lifted);
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Inactive)
    );

    // One staged job, two keys of one user: the lift waits for the other key.
    let (pair_user, pair) = env.user_with_keys("pair", 2).await;
    let both = json!({"request_id": "pair-1", "user_name": pair_user, "all_keys": true,
                      "action": "deactivate", "delete_after": "7d", "revoke_sessions": true});
    let report = worker.handle(env.deliver(&both.to_string()).await).await;
    assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    let one = Request {
        access_key_id: pair[0].clone(),
        user_name: pair_user.clone(),
        lift_session_cutoff: true,
        ..Default::default()
    };
    let refused = restore(&env.settings(), &env.clients, one.clone())
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains(&pair[1]), "{refused}");
    assert_eq!(cutoffs(&env, &pair_user).await.len(), 1);
    let record = restore(
        &env.settings(),
        &env.clients,
        Request { force: true, ..one },
    )
    .await
    .expect("forced");
    assert_eq!(record.exit_code(), 0, "{}", record.detail);
    assert!(cutoffs(&env, &pair_user).await.is_empty());
}

/// One protected key inside an event of three: it refuses only itself. The other two
/// keys are revoked and their users cut off; the protected key stays, and its holder gets
/// no cut-off (it would end that key's sessions too); the job ends `rejected/protected`
/// with its changes listed. A finding that names a protected user as the key's user
/// (the name is the event's, a hint) does not shield a key IAM says is another user's.
#[tokio::test]
async fn a_protected_key_in_an_event_shields_only_itself() {
    let mut env = TestEnv::new("atk-shield").await;
    let (first, first_keys) = env.user_with_keys("first", 1).await;
    let (holder, held) = env.user_with_keys("holder", 1).await;
    let (last, last_keys) = env.user_with_keys("last", 1).await;
    let (breakglass, _) = env.user_with_keys("breakglass", 1).await;
    let (ci, ci_keys) = env.user_with_keys("ci", 1).await;
    env.config.protect.access_keys = vec![held[0].clone()];
    env.config.protect.users = vec![breakglass.clone()];
    let worker = env.worker().await;

    let report = env
        .handle_job(
            &worker,
            env.deliver(&health_event(
                &common::unique("shield"),
                &[&first_keys[0], &held[0], &last_keys[0]],
            ))
            .await,
        )
        .await;
    let report = match report.outcome {
        // Changed, then refused: the record of the change is dead-lettered itself.
        Outcome::Retry(Reason::Protected) => worker.handle(env.receive_one().await).await,
        _ => report,
    };
    assert_eq!(
        report.outcome,
        Outcome::Rejected(Reason::Protected),
        "{:?}",
        report.detail
    );
    assert_eq!(report.facts.keys_changed, 2, "{:?}", report.detail);
    assert_eq!(env.key_status(&first, &first_keys[0]).await, None);
    assert_eq!(env.key_status(&last, &last_keys[0]).await, None);
    assert_eq!(
        env.key_status(&holder, &held[0]).await,
        Some(StatusType::Active)
    );
    assert_eq!(cutoffs(&env, &first).await.len(), 1);
    assert_eq!(cutoffs(&env, &last).await.len(), 1);
    assert!(cutoffs(&env, &holder).await.is_empty());

    // The protected name as the finding's user, on another user's key.
    let report = env
        .handle_job(
            &worker,
            env.deliver(&guardduty_finding(
                &common::unique("s").replace('-', ""),
                &ci_keys[0],
                &breakglass,
            ))
            .await,
        )
        .await;
    assert_eq!(report.outcome, Outcome::Deactivated, "{:?}", report.detail);
    assert_eq!(
        env.key_status(&ci, &ci_keys[0]).await,
        Some(StatusType::Inactive)
    );
    assert!(cutoffs(&env, &breakglass).await.is_empty());
}
