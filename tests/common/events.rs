//! Security events as EventBridge delivers them (GuardDuty User Guide, "Creating custom
//! responses to GuardDuty findings with Amazon EventBridge"), for tests of what follows
//! a revocation.

use serde_json::json;

/// The emulator's account.
pub const ACCOUNT: &str = "123456789012";

/// The ARN of GuardDuty finding `id` in the emulator's account: its `Id` in Security Hub.
pub fn finding_arn(id: &str) -> String {
    format!("arn:aws:guardduty:us-east-1:{ACCOUNT}:detector/12abc34d567e8fa901bc2d34e56789f0/finding/{id}")
}

/// A GuardDuty finding of severity 8 about `user`'s access key `key`.
pub fn guardduty_finding(id: &str, key: &str, user: &str) -> String {
    json!({
        "version": "0", "id": format!("e-{id}"), "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty", "account": ACCOUNT, "time": "2026-11-30T08:55:11Z",
        "region": "us-east-1", "resources": [],
        "detail": {
            "schemaVersion": "2.0", "accountId": ACCOUNT, "region": "us-east-1",
            "partition": "aws", "id": id, "severity": 8.0,
            "arn": finding_arn(id),
            "type": "UnauthorizedAccess:IAMUser/MaliciousIPCaller",
            "resource": {"resourceType": "AccessKey", "accessKeyDetails": {
                "accessKeyId": key, "userName": user, "userType": "IAMUser"}},
            "service": {"serviceName": "guardduty"}
        }
    })
    .to_string()
}
