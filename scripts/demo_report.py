"""Prints what the demo worker did: each user's keys now, and the dead-letter queue."""

import json
import sys
import time
import urllib.parse
import urllib.request

import boto3

endpoint, wait = sys.argv[1], sys.argv[2] == "wait"
session = boto3.session.Session(
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
)
sqs = session.client("sqs", endpoint_url=endpoint)
iam = session.client("iam", endpoint_url=endpoint)
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
users = ["alice", "bob", "carol", "dave", "break-glass-admin", "erin", "frank"]
for name in users:
    keys = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
    shown = ", ".join(f"{k['AccessKeyId']} ({k['Status']})" for k in keys) or "none"
    print(f"  {name:18} {shown}")
print("\nSessions cut off (inline policies iam-key-revoker-revoke-older-sessions-<time>):")
for name in users:
    names = iam.list_user_policies(UserName=name)["PolicyNames"]
    for policy in (n for n in names if n.startswith("iam-key-revoker-revoke-older-sessions")):
        document = iam.get_user_policy(UserName=name, PolicyName=policy)["PolicyDocument"]
        if isinstance(document, str):
            document = json.loads(urllib.parse.unquote(document))
        print(f"  {name:18} {policy}: {json.dumps(document)}")
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
