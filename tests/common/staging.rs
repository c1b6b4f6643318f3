//! Staged revocation's test set-up: a schedule group of the test's own, its schedules read
//! back, and staging jobs (docs, "Staged revocation").

use aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput;
use iam_key_revoker::staging::schedule_name;
use serde_json::json;

use super::TestEnv;

pub const ACCOUNT: &str = "123456789012";
pub const ROLE: &str = "arn:aws:iam::123456789012:role/iam-key-revoker-scheduler";

/// A test environment with a schedule group of its own, configured for staging.
pub async fn staged_env(test: &str) -> (TestEnv, aws_sdk_scheduler::Client) {
    let mut env = TestEnv::new(test).await;
    let scheduler = aws_sdk_scheduler::Client::new(&env.clients.sdk);
    let group = env
        .name
        .chars()
        .rev()
        .take(60)
        .collect::<String>()
        .chars()
        .rev()
        .collect::<String>();
    scheduler
        .create_schedule_group()
        .name(&group)
        .send()
        .await
        .expect("create the schedule group");
    env.config.schedule.group_name = group;
    env.config.schedule.role_arn = Some(ROLE.to_owned());
    (env, scheduler)
}

pub async fn schedule(
    env: &TestEnv,
    scheduler: &aws_sdk_scheduler::Client,
    key: &str,
) -> Option<GetScheduleOutput> {
    scheduler
        .get_schedule()
        .group_name(&env.config.schedule.group_name)
        .name(schedule_name(ACCOUNT, key))
        .send()
        .await
        .ok()
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn staging(request_id: &str, user: &str, key: &str, after: &str) -> String {
    json!({"request_id": request_id, "user_name": user, "access_key_id": key,
           "action": "deactivate", "delete_after": after, "reason": "suspected leak",
           "requested_by": "soc", "batch_id": "b-7"})
    .to_string()
}
