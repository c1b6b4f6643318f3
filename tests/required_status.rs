//! docs "Required status": a job with `require_status: "Inactive"` (the scheduled
//! delete of a staged revocation) changes its key only while IAM lists it `Inactive`; a
//! key a person set `Active` again is left alone and the job ends `cancelled`, deleted
//! from the queue, never dead-lettered. Against the local emulator through the real SDK.

mod common;

use aws_sdk_iam::types::StatusType;
use common::TestEnv;
use iam_key_revoker::{Outcome, Reason};
use serde_json::json;

#[tokio::test]
async fn an_inactive_key_is_deleted_and_a_reactivated_one_is_left_alone() {
    let env = TestEnv::new("required").await;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("staged", 2).await;
    env.set_key_status(&user, &keys[0], StatusType::Inactive)
        .await;

    // Still inactive: the scheduled delete deletes it.
    let body = json!({"request_id": "rs-1", "user_name": user, "access_key_id": keys[0], "require_status": "Inactive"}).to_string();
    let report = worker.handle(env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::Deleted);
    assert_eq!(env.key_status(&user, &keys[0]).await, None);

    // A person restored the other key: left alone, cancelled, not dead-lettered.
    let body = json!({"request_id": "rs-2", "user_name": user, "access_key_id": keys[1], "require_status": "Inactive"}).to_string();
    let report = worker.handle(env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::Cancelled, "{:?}", report.detail);
    assert!(report.detail.unwrap().contains("Active again"));
    assert_eq!(
        env.key_status(&user, &keys[1]).await,
        Some(StatusType::Active)
    );
    assert!(env.dead_letters().await.is_empty());
    assert_eq!(env.queue_depth().await, (0, 0), "deleted from the queue");

    // Already gone: nothing to do.
    let body = json!({"request_id": "rs-3", "user_name": user, "access_key_id": keys[0], "require_status": "Inactive"}).to_string();
    let report = worker.handle(env.deliver(&body).await).await;
    assert_eq!(report.outcome, Outcome::AlreadyAbsent);
}

#[tokio::test]
async fn a_required_status_other_than_inactive_or_without_a_key_is_invalid() {
    let env = TestEnv::new("required-invalid").await;
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("u", 1).await;
    for body in [
        json!({"request_id": "ri-1", "user_name": user, "access_key_id": keys[0], "require_status": "Active"}),
        json!({"request_id": "ri-2", "user_name": user, "all_keys": true, "require_status": "Inactive"}),
        // Without the user: the worker must read the key's status from its owner's list.
        json!({"request_id": "ri-3", "access_key_id": keys[0], "require_status": "Inactive"}),
    ] {
        let report = worker.handle(env.deliver(&body.to_string()).await).await;
        assert_eq!(report.outcome, Outcome::Rejected(Reason::InvalidMessage));
    }
    assert_eq!(
        env.key_status(&user, &keys[0]).await,
        Some(StatusType::Active)
    );
}
