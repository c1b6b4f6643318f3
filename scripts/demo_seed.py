"""Creates the demo's queues, users and keys on the local emulator, and enqueues a
mix of revocation jobs: some to revoke, some the worker must refuse."""

import datetime
import email.utils
import json
import sys

import boto3

endpoint = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc)


def minutes_ago(minutes):
    """A detection time a few minutes back, as RFC 3339: the clock from exposure starts there."""
    return (now - datetime.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

session = boto3.session.Session(
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
)
sqs = session.client("sqs", endpoint_url=endpoint)
iam = session.client("iam", endpoint_url=endpoint)
sns = session.client("sns", endpoint_url=endpoint)
scheduler = session.client("scheduler", endpoint_url=endpoint)
kms = session.client("kms", endpoint_url=endpoint)

dlq = sqs.create_queue(QueueName="iam-key-revocations-dlq")["QueueUrl"]
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
queue = sqs.create_queue(
    QueueName="iam-key-revocations",
    Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})},
)["QueueUrl"]

# Outcome events go to an SNS topic (results.sns_topic_arn); a queue subscribed to it
# stands in for a chat channel or a pager.
topic = sns.create_topic(Name="iam-key-revoker-outcomes")["TopicArn"]
inbox = sqs.create_queue(QueueName="iam-key-revoker-notifications")["QueueUrl"]
inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)


# Staged revocation: the schedule group the worker stack creates, and the queue where
# EventBridge Scheduler parks a delete it cannot send.
scheduler.create_schedule_group(Name="iam-key-revoker")
schedule_dlq = sqs.create_queue(QueueName="iam-key-revoker-schedule-dlq")["QueueUrl"]


# The key that MACs the worker's own messages, as the worker stack creates it.
mac_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
kms.create_alias(AliasName="alias/iam-key-revoker-continuation", TargetKeyId=mac_key)


def user(name, keys):
    iam.create_user(UserName=name)
    return [iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"] for _ in range(keys)]


alice = user("alice", 2)           # a leaked key: revoke one of her two keys
bob = user("bob", 1)               # a leak detector that knows only the key id
carol = user("carol", 2)           # offboarding: every key (IAM allows two per user)
dave = user("dave", 1)             # suspicious: deactivate, reversibly
admin = user("break-glass-admin", 1)  # protected by config/local.toml
erin = user("erin", 1)             # AWS Health found her key in public code
frank = user("frank", 1)           # GuardDuty saw his key used from a malicious IP
grace = user("grace", 1)           # suspected: deactivate now, delete in 30 days unless restored

EC2_TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
# An instance role whose credentials GuardDuty saw used outside AWS: that one session is
# cut off. A batch role a person asks to cut off entirely.
web_role = iam.create_role(RoleName="web-app", AssumeRolePolicyDocument=EC2_TRUST)["Role"]["RoleId"]
iam.create_role(RoleName="batch-runner", AssumeRolePolicyDocument=EC2_TRUST)

jobs = [
    {"request_id": "leak-0001", "user_name": "alice", "access_key_id": alice[0], "reason": "found in a public repo"},
    {"request_id": "leak-0002", "access_key_id": bob[0], "requested_by": "leak-detector"},
    {"request_id": "hr-0001", "user_name": "carol", "all_keys": True, "batch_id": "offboarding-2026-11"},
    {"request_id": "sec-0001", "user_name": "dave", "access_key_id": dave[0], "action": "deactivate"},
    # Staged: deactivated now; EventBridge Scheduler sends the delete in 30 days.
    {"request_id": "stage-0001", "user_name": "grace", "access_key_id": grace[0], "action": "deactivate",
     "delete_after": "30d", "reason": "suspected leak; deleted in 30 days unless restored"},
    # The same job delivered twice: the second ends `duplicate`.
    {"request_id": "leak-0001", "user_name": "alice", "access_key_id": alice[0]},
    # A key named for the wrong user: refused, and alice's other key stays.
    {"request_id": "leak-0003", "user_name": "dave", "access_key_id": alice[1]},
    # A protected user: refused, never touched.
    {"request_id": "leak-0004", "user_name": "break-glass-admin", "access_key_id": admin[0]},
    # A key that no longer exists: alice's key list confirms it, nothing to do.
    {"request_id": "leak-0005", "user_name": "alice", "access_key_id": "AKIAEXAMPLEGONE00000"},
    # A role: every session of it issued before now is cut off.
    {"request_id": "role-0001", "role_name": "batch-runner", "reason": "its session token was in a CI log",
     "detected_at": minutes_ago(6)},
]
# What an EventBridge rule delivers, shaped as AWS documents these events.
health_event = {
    "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "detail-type": "AWS Health Event", "source": "aws.health", "account": "123456789012",
    "time": "2026-11-28T06:27:57Z", "region": "us-east-1", "resources": [],
    "detail": {
        "eventArn": "arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/AWS_RISK_CREDENTIALS_EXPOSED_ABC123",
        "service": "RISK", "eventTypeCode": "AWS_RISK_CREDENTIALS_EXPOSED", "eventTypeCategory": "issue",
        # AWS Health's own format for times: the clock from exposure starts here.
        "startTime": email.utils.format_datetime(now - datetime.timedelta(minutes=4), usegmt=True),
        "eventDescription": [{"language": "en_US", "latestDescription": "Your AWS Access Key was found publicly available on GitHub."}],
        "affectedEntities": [{"entityValue": erin[0]}],
        "eventMetadata": {"exposedUrl": "https://github.com/example/app/blob/main/.env"},
    },
}
guardduty_finding = {
    "version": "0", "id": "c8c4daa7-a20c-2f03-0070-b7393dd542ad",
    "detail-type": "GuardDuty Finding", "source": "aws.guardduty", "account": "123456789012",
    "time": "2026-11-28T08:55:11Z", "region": "us-east-1", "resources": [],
    "detail": {
        "schemaVersion": "2.0", "accountId": "123456789012", "region": "us-east-1", "partition": "aws",
        "id": "16afba5c5c43e07c9e3e5e2e544e95df", "type": "UnauthorizedAccess:IAMUser/MaliciousIPCaller",
        "resource": {"resourceType": "AccessKey", "accessKeyDetails": {
            "accessKeyId": frank[0], "principalId": "AIDACKCEVSQ6C2EXAMPLE", "userType": "IAMUser", "userName": "frank"}},
        "severity": 8, "title": "API was invoked from a known malicious IP address.",
    },
}
role_finding = {
    "version": "0", "id": "0e2b8a6c-95c1-4a36-8f0e-3c6f4f1f5d10",
    "detail-type": "GuardDuty Finding", "source": "aws.guardduty", "account": "123456789012",
    "time": "2026-11-28T09:12:40Z", "region": "us-east-1", "resources": [],
    "detail": {
        "schemaVersion": "2.0", "accountId": "123456789012", "region": "us-east-1", "partition": "aws",
        "id": "5ec2f0b1a7d94c3e8f1b2a3c4d5e6f70",
        "type": "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
        "resource": {"resourceType": "AccessKey", "accessKeyDetails": {
            "accessKeyId": "ASIAIOSFODNN7EXAMPLE", "principalId": f"{web_role}:i-0123456789abcdef0",
            "userType": "AssumedRole", "userName": "web-app"},
            "instanceDetails": {"instanceId": "i-0123456789abcdef0"}},
        "service": {"serviceName": "guardduty", "eventFirstSeen": minutes_ago(2)},
        "severity": 8, "title": "Credentials for instance role web-app used from external IP address.",
    },
}
for job in jobs + [health_event, guardduty_finding, role_finding]:
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(job))
sqs.send_message(QueueUrl=queue, MessageBody='{"request_id": "bad-0001", "access_key_id": "not-a-key"}')

print(f"Queue:             {queue}")
print(f"Dead-letter queue: {dlq}")
print(f"Outcome topic:     {topic} (subscribed: {inbox})")
print("Users and keys:")
for name, keys in [("alice", alice), ("bob", bob), ("carol", carol), ("dave", dave), ("break-glass-admin", admin),
                   ("erin", erin), ("frank", frank), ("grace", grace)]:
    print(f"  {name:18} {' '.join(keys)}")
print("Roles:             web-app (an instance's), batch-runner")
print(f"Enqueued {len(jobs) + 1} jobs, an AWS Health event (erin's key) and two GuardDuty findings "
      "(frank's key; the web-app instance's credentials used outside AWS).")
