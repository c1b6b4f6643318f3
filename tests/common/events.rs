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

/// Puts GuardDuty finding `id` about `user`'s access key `key` into Security Hub, as
/// GuardDuty's integration does (AWS Security Finding Format: the key is a resource of
/// type `AwsIamAccessKey` whose `Id` is `AWS::IAM::AccessKey:<key>`; Security Hub User
/// Guide, "AwsIamAccessKey"), so that the worker can read it back.
pub async fn import_finding(
    clients: &iam_key_revoker::aws::clients::Clients,
    id: &str,
    key: &str,
    user: &str,
) {
    use aws_sdk_securityhub::types::{
        AwsIamAccessKeyDetails, AwsSecurityFinding, Resource, ResourceDetails, Severity,
    };
    let hub = aws_sdk_securityhub::Client::new(&clients.sdk);
    let finding = AwsSecurityFinding::builder()
        .schema_version("2018-10-08")
        .id(finding_arn(id))
        .product_arn("arn:aws:securityhub:us-east-1::product/aws/guardduty")
        .generator_id(
            "arn:aws:guardduty:us-east-1:123456789012:detector/12abc34d567e8fa901bc2d34e56789f0",
        )
        .aws_account_id(ACCOUNT)
        .types("TTPs/Initial Access/UnauthorizedAccess:IAMUser-MaliciousIPCaller")
        .created_at("2026-11-30T08:55:11.000Z")
        .updated_at("2026-11-30T08:55:11.000Z")
        .severity(Severity::builder().normalized(80).build())
        .title("API was invoked from a known malicious IP address")
        .description("An API was used to access a resource from a known malicious IP address.")
        .resources(
            Resource::builder()
                .r#type("AwsIamAccessKey")
                .id(format!("AWS::IAM::AccessKey:{key}"))
                .partition(aws_sdk_securityhub::types::Partition::Aws)
                .region("us-east-1")
                .details(
                    ResourceDetails::builder()
                        .aws_iam_access_key(
                            AwsIamAccessKeyDetails::builder()
                                .principal_name(user)
                                .principal_type("IAMUser")
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .build();
    let out = hub
        .batch_import_findings()
        .findings(finding)
        .send()
        .await
        .expect("import the finding");
    assert_eq!(out.failed_count(), Some(0), "{:?}", out.failed_findings());
}

/// An AWS Health credential-exposure event naming `keys` in the emulator's account
/// ("Reference: AWS Health events Amazon EventBridge schema", AWS Health User Guide).
pub fn health_event(id: &str, keys: &[&str]) -> String {
    let entities: Vec<serde_json::Value> =
        keys.iter().map(|k| json!({ "entityValue": k })).collect();
    json!({
        "version": "0", "id": id, "detail-type": "AWS Health Event", "source": "aws.health",
        "account": ACCOUNT, "time": "2026-11-28T06:27:57Z", "region": "us-east-1",
        "resources": [],
        "detail": {
            "eventArn": format!("arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/AWS_RISK_CREDENTIALS_EXPOSED_{id}"),
            "service": "RISK", "eventTypeCode": "AWS_RISK_CREDENTIALS_EXPOSED",
            "eventTypeCategory": "issue", "startTime": "Sat, 28 Nov 2026 06:10:09 GMT",
            "eventDescription": [{"language": "en_US",
                "latestDescription": "Your AWS Access Key was found publicly available on GitHub."}],
            "affectedEntities": entities
        }
    })
    .to_string()
}
