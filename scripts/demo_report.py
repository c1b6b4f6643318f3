"""Prints what the demo worker did: each user's keys now, and the dead-letter queue."""

import json
import sys
import time
import urllib.parse
import urllib.request

import boto3

endpoint, mode = sys.argv[1], sys.argv[2]
wait = mode == "wait"
session = boto3.session.Session(
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
)
sqs = session.client("sqs", endpoint_url=endpoint)
iam = session.client("iam", endpoint_url=endpoint)
scheduler = session.client("scheduler", endpoint_url=endpoint)


def staged_deletes():
    for summary in scheduler.list_schedules(GroupName="iam-key-revoker")["Schedules"]:
        schedule = scheduler.get_schedule(GroupName="iam-key-revoker", Name=summary["Name"])
        job = json.loads(schedule["Target"]["Input"])
        print(f"  {schedule['Name']} {schedule['State']} {schedule['ScheduleExpression']} UTC, "
              f"sends: {job['action']} {job['access_key_id']} of {job['user_name']} if {job['require_status']}")
        if schedule.get("Description", "").find("restored") >= 0:
            print(f"      {schedule['Description']}")


if mode == "grace-key":
    print(iam.list_access_keys(UserName="grace")["AccessKeyMetadata"][0]["AccessKeyId"])
    sys.exit(0)
if mode == "restored":
    keys = iam.list_access_keys(UserName="grace")["AccessKeyMetadata"]
    print("  grace's key now: " + ", ".join(f"{k['AccessKeyId']} ({k['Status']})" for k in keys))
    print("  Its schedule, kept disabled as the record:")
    staged_deletes()
    sys.exit(0)
queue = sqs.get_queue_url(QueueName="iam-key-revocations")["QueueUrl"]
dlq = sqs.get_queue_url(QueueName="iam-key-revocations-dlq")["QueueUrl"]

if wait:
    deadline = time.time() + 60
    while time.time() < deadline:
        attrs = sqs.get_queue_attributes(
            QueueUrl=queue,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        if attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0":
            break
        time.sleep(0.5)
    else:
        sys.exit("The queue did not drain within 60 s")
    sys.exit(0)

print("\nKeys left in IAM:")
users = ["alice", "bob", "carol", "dave", "break-glass-admin", "erin", "frank", "grace"]
for name in users:
    keys = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
    shown = ", ".join(f"{k['AccessKeyId']} ({k['Status']})" for k in keys) or "none"
    print(f"  {name:18} {shown}")
print("\nSessions cut off (inline policies iam-key-revoker-revoke-older-sessions-<time>-<revocation>):")
for name in users:
    names = iam.list_user_policies(UserName=name)["PolicyNames"]
    for policy in (n for n in names if n.startswith("iam-key-revoker-revoke-older-sessions")):
        document = iam.get_user_policy(UserName=name, PolicyName=policy)["PolicyDocument"]
        if isinstance(document, str):
            document = json.loads(urllib.parse.unquote(document))
        print(f"  {name:18} {policy}: {json.dumps(document)}")
print("\nRole sessions cut off (the same Deny on the role; a finding's narrowed to its session by aws:userid):")
for name in ["web-app", "batch-runner"]:
    for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
        if isinstance(document, str):
            document = json.loads(urllib.parse.unquote(document))
        print(f"  {name:18} {policy}: {json.dumps(document)}")
print("\nStaged deletes (EventBridge Scheduler one-time schedules; the emulator never fires them):")
staged_deletes()
print("\nDead-letter queue (rejected jobs, body unchanged):")
messages = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
for m in messages.get("Messages", []):
    a = m["MessageAttributes"]
    print(f"  {a['revoker-reason']['StringValue']:16} {a['revoker-detail']['StringValue']}")

print("\nNotifications (the SNS topic's subscriber; one line per outcome, activity reports too):")
inbox = sqs.get_queue_url(QueueName="iam-key-revoker-notifications")["QueueUrl"]
seen = []
deadline = time.time() + 10
while time.time() < deadline:
    got = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    if not got and seen:
        break
    seen.extend(got)
for m in seen:
    envelope = json.loads(m["Body"])
    event = json.loads(envelope["Message"])
    kind = envelope.get("MessageAttributes", {}).get("type", {}).get("Value", "outcome")
    print(f"  [{kind}] {event['summary']}")
    if kind == "activity_report":
        for failed in event.get("failed_regions", []):
            print(f"      not read in {failed['region']}: {failed['error'][:160]}")

print("\nFrom the worker's /metrics:")
try:
    metrics = urllib.request.urlopen("http://127.0.0.1:9090/metrics", timeout=5).read().decode()
    for line in metrics.splitlines():
        if line.startswith(("iam_key_revoker_activity_reports_total", "iam_key_revoker_results_publish_failures_total")) and not line.endswith(" 0"):
            print(f"  {line}")
except OSError as e:
    print(f"  (not reachable: {e})")
