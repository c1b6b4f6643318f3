"""The iam-key-revoker benchmark. Run it through scripts/bench, which installs and starts
the local AWS emulator (one process for IAM/STS, one for SQS) and builds the release
worker.

It provisions N users with one access key each, enqueues one job per key, runs the
release worker until the queue is drained and every key is gone, and reports: drain
time, jobs per second, the worker's CPU seconds per 1,000 jobs, its peak resident
memory, IAM and SQS calls per job (from the worker's own metrics) and revocation
latency p50/p99 (from its histogram).

The worker reaches the emulators through a front (below) that keeps its connections
open; --iam-latency-ms N makes every IAM request take N ms there, to show throughput
against the bound max_in_flight / N. --feed keeps the backlog near --backlog (under 100)
by enqueueing as the queue drains (the emulator slows down on deep queues).

--iam-quota N makes IAM's quota true: the front answers IAM requests above N a second
with IAM's own `Throttling` error (HTTP 400), from a token bucket holding N requests that
fills at N a second, shared by every worker; --workers K runs K workers on the queue at
once (replicas sharing one account's quota). The result then says how much of the quota
the workers held, what fraction of their IAM requests was throttled, and how many IAM
calls each key cost (1.00 is the least).

--urgent N measures the priority queue: the worker gets a priority queue too; N urgent
jobs are first sent to it while the worker is idle, then the bulk jobs go on the main
queue and, once the worker is draining them, N more urgent jobs follow, one every
--urgent-every seconds. Each urgent job's time to revoke is measured from its send to
the moment its key is gone from IAM (polled every 20 ms), and reported for the idle
worker next to the worker behind the backlog.

--iam-defaults runs the worker at its own IAM rate settings (iam.max_requests_per_second,
iam.initial_requests_per_second) instead of the benchmark's unlimited rate: with
--iam-quota, a burst at the default configuration. --events sends each job as the AWS
Health event EventBridge delivers for a leaked key (key alone, startTime the moment it is
enqueued), and reports the time from exposure to revocation from the worker's histogram.

--key-only sends every job (urgent ones too) with the key id alone, as a leak detector
or an AWS Health event names it: the worker looks the owner up and hands the job on to a
message of its own, MACed with its KMS key (docs, "Continuations"), before it deletes.
The worker is given a MAC key (on the SQS emulator, which serves KMS), as the worker
stack gives it one, unless --no-mac-key.
"""

import argparse
import asyncio
import concurrent.futures
import datetime
import json
import multiprocessing
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import boto3

ACCOUNT = "123456789012"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the front
# The worker talks to the emulators through a small front, in a process of its own:
# - it keeps the worker's connections open between requests, as AWS endpoints do (the
#   emulator closes its connection after every response, which would make the worker pay
#   a TCP handshake per request that it never pays against AWS);
# - it sends IAM/STS requests (query protocol, "Action=...") to one emulator process and
#   SQS requests (JSON protocol) to another, as AWS serves them from separate fleets (one
#   emulator process serves one request at a time and would make the benchmark measure
#   the emulator);
# - with --iam-latency-ms N it answers every IAM request N ms after the request reached
#   it, the emulator's own time included, so that IAM's latency is N ms as the worker
#   sees it and the bound max_in_flight / latency is exact. (Adding N ms on top of the
#   emulator's own 5-15 ms would make the real bound lower than the one reported.) The
#   front measures the IAM response time it gives and the result reports it.
async def read_message(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return head, body


def keep_alive(head):
    lines = [l for l in head.split(b"\r\n") if not l.lower().startswith(b"connection:")]
    return b"\r\n".join(lines)


THROTTLING = (
    b'<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type>'
    b"<Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
    b"<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
)


async def serve_front(iam_port, sqs_port, sinks_port, delay, port, ready, iam_stats, quota):
    loop = asyncio.get_running_loop()
    # IAM's quota, when it is true: a token bucket of `quota` requests filling at `quota`
    # a second.
    bucket = {"tokens": float(quota), "at": loop.time()}

    def within_quota():
        if not quota:
            return True
        now = loop.time()
        bucket["tokens"] = min(float(quota), bucket["tokens"] + (now - bucket["at"]) * quota)
        bucket["at"] = now
        if bucket["tokens"] >= 1.0:
            bucket["tokens"] -= 1.0
            return True
        return False

    async def handle(reader, writer):
        try:
            while True:
                head, body = await read_message(reader)
                arrived = loop.time()
                # IAM/STS speak the query protocol, SQS JSON. The outcome events of
                # --notify (SNS, query; EventBridge, JSON) go to an emulator of their own,
                # as SNS and EventBridge are fleets of their own.
                # The breaker's DynamoDB (--breaker) goes there too: a fleet of its own.
                sink = (
                    body.startswith(b"Action=PublishBatch")
                    or b"AWSEvents." in head
                    or b"DynamoDB_20120810." in head
                )
                iam = body.startswith(b"Action=") and not sink
                if iam and not within_quota():
                    writer.write(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/xml\r\n"
                        + f"Content-Length: {len(THROTTLING)}\r\n\r\n".encode()
                        + THROTTLING
                    )
                    await writer.drain()
                    with iam_stats.get_lock():
                        iam_stats[2] += 1
                    continue
                upstream = sinks_port if sink else (iam_port if iam else sqs_port)
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
                up_writer.write(head + body)
                await up_writer.drain()
                rhead, rbody = await read_message(up_reader)
                up_writer.close()
                if iam:
                    await asyncio.sleep(max(0.0, arrived + delay - loop.time()))
                writer.write(keep_alive(rhead) + rbody)
                await writer.drain()
                if iam:
                    with iam_stats.get_lock():
                        iam_stats[0] += 1
                        iam_stats[1] += loop.time() - arrived
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=1 << 24)
    ready.set()
    async with server:
        await server.serve_forever()


def start_front(iam_port, sqs_port, sinks_port, delay_ms, quota=0):
    """Starts the front; returns its port and [IAM requests answered, their total seconds,
    IAM requests throttled]."""
    port = free_port()
    ready = multiprocessing.Event()
    iam_stats = multiprocessing.Array("d", 3)
    process = multiprocessing.Process(
        target=lambda: asyncio.run(serve_front(iam_port, sqs_port, sinks_port, delay_ms / 1000, port, ready, iam_stats, quota)),
        daemon=True,
    )
    process.start()
    if not ready.wait(10):
        sys.exit("the benchmark front did not start")
    return port, iam_stats


# ---------------------------------------------------------------- metrics
def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, value = line.rsplit(" ", 1)
        samples[series] = float(value)
    return samples


def total(samples, prefix, **labels):
    out = 0.0
    for series, value in samples.items():
        if not series.startswith(prefix + "{") and series != prefix:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            out += value
    return out


def quantile(samples, name, q, **labels):
    """The q-quantile of histogram `name`, over every series with `labels` (summed)."""
    by_le = {}
    for series, value in samples.items():
        m = re.match(re.escape(name) + r'_bucket\{(.*)\}$', series)
        if not m or not all(f'{k}="{v}"' in series for k, v in labels.items()):
            continue
        le_text = re.search(r'le="([^"]+)"', m.group(1)).group(1)
        le = float("inf") if le_text == "+Inf" else float(le_text)
        by_le[le] = by_le.get(le, 0.0) + value
    buckets = sorted(by_le.items())
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-9)
        prev_le, prev_count = le, count
    return None


def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    peak_kib = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak_kib = int(line.split()[1])
    return cpu, peak_kib / 1024


# ---------------------------------------------------------------- the run
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iam-endpoint", required=True, help="the emulator serving IAM/STS, http://127.0.0.1:PORT")
    parser.add_argument("--sqs-endpoint", required=True, help="the emulator serving SQS, http://127.0.0.1:PORT")
    parser.add_argument("--sinks-endpoint", required=True, help="the emulator serving SNS and EventBridge (--notify)")
    parser.add_argument("--binary", required=True, help="the release worker binary")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--iam-latency-ms", type=int, default=0)
    parser.add_argument("--feed", action="store_true", help="enqueue as the queue drains, keeping the backlog near --backlog")
    parser.add_argument("--backlog", type=int, default=40, help="with --feed, the backlog to keep (under 100)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a worker configuration key, e.g. --set worker.prefetch=0 (repeatable)")
    parser.add_argument("--urgent", type=int, default=0, help="urgent jobs to send to a priority queue, idle and behind the backlog")
    parser.add_argument("--urgent-every", type=float, default=2.0, help="seconds between urgent jobs behind the backlog")
    parser.add_argument("--iam-quota", type=int, default=0, help="IAM's true quota, requests a second (0: none)")
    parser.add_argument("--workers", type=int, default=1, help="workers on the queue at once")
    parser.add_argument("--breaker", action="store_true",
                        help="the breaker on: its DynamoDB table on the sinks' emulator, limits far above the run, so its cost is measured and nothing is held")
    parser.add_argument("--notify", action="store_true",
                        help="outcome events to a results queue, an SNS topic and an EventBridge bus")
    parser.add_argument("--key-only", action="store_true",
                        help="jobs name the key alone: owner lookup, hand-on, MAC (docs, 'Continuations')")
    parser.add_argument("--iam-defaults", action="store_true",
                        help="the worker's own IAM rate settings, not the benchmark's unlimited rate")
    parser.add_argument("--events", action="store_true",
                        help="each job an AWS Health event naming its key (docs, 'Security events')")
    parser.add_argument("--no-mac-key", action="store_true",
                        help="start the worker without continuation.mac_key_id (as a worker of before it)")
    parser.add_argument("--record", help="append the result to this Markdown file")
    args = parser.parse_args()
    if args.urgent and args.feed:
        parser.error("--urgent keeps the whole backlog on the queue; it does not go with --feed")

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    sqs = session.client("sqs", endpoint_url=args.sqs_endpoint)
    iam = session.client("iam", endpoint_url=args.iam_endpoint)
    run = f"bench{int(time.time())}"

    print(f"Provisioning {args.jobs} users with one key each ...", file=sys.stderr)
    def provision(i):
        user = f"{run}-{i}"
        iam.create_user(UserName=user)
        return user, iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(provision, range(args.jobs)))
        urgent_keys = list(pool.map(provision, range(args.jobs, args.jobs + 2 * args.urgent)))

    dlq = sqs.create_queue(QueueName=f"{run}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(
        QueueName=run,
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})},
    )["QueueUrl"]
    def job_body(request_id, user, key):
        if args.events:
            return json.dumps({
                "version": "0", "id": request_id, "detail-type": "AWS Health Event", "source": "aws.health",
                "account": ACCOUNT, "time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": "us-east-1", "resources": [],
                "detail": {
                    "eventArn": f"arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/{request_id}",
                    "service": "RISK", "eventTypeCode": "AWS_RISK_CREDENTIALS_EXPOSED", "eventTypeCategory": "issue",
                    "communicationId": request_id, "startTime": HEALTH_START,
                    "affectedEntities": [{"entityValue": key}],
                },
            })
        job = {"request_id": request_id, "access_key_id": key}
        if not args.key_only:
            job["user_name"] = user
        return json.dumps(job)
    # Health's startTime is to the second: the enqueue's second, rounded down, so that the
    # exposure measured is never shorter than the true one by more than a second.
    HEALTH_START = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    bodies = [job_body(f"{run}-{i}", u, k) for i, (u, k) in enumerate(keys)]
    # The worker's MAC key, as the worker stack creates it; KMS is served by the SQS
    # emulator (the front sends every JSON request there).
    kms = session.client("kms", endpoint_url=args.sqs_endpoint)
    mac_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    priority = None
    if args.urgent:
        pdlq = sqs.create_queue(QueueName=f"{run}-priority-dlq")["QueueUrl"]
        pdlq_arn = sqs.get_queue_attributes(QueueUrl=pdlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        priority = sqs.create_queue(
            QueueName=f"{run}-priority",
            Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": pdlq_arn, "maxReceiveCount": "5"})},
        )["QueueUrl"]

    sinks = {}
    if args.notify:
        # The topic (with a queue subscribed) and the bus on the sinks' emulator; the
        # results queue is SQS's.
        sns = session.client("sns", endpoint_url=args.sinks_endpoint)
        events = session.client("events", endpoint_url=args.sinks_endpoint)
        sinks_sqs = session.client("sqs", endpoint_url=args.sinks_endpoint)
        sinks["queue"] = sqs.create_queue(QueueName=f"{run}-results")["QueueUrl"]
        sinks["topic"] = sns.create_topic(Name=f"{run}-outcomes")["TopicArn"]
        subscriber = sinks_sqs.create_queue(QueueName=f"{run}-subscriber")["QueueUrl"]
        subscriber_arn = sinks_sqs.get_queue_attributes(QueueUrl=subscriber, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=sinks["topic"], Protocol="sqs", Endpoint=subscriber_arn)
        sinks["bus"] = f"{run}-bus"
        events.create_event_bus(Name=sinks["bus"])

    breaker_table = None
    if args.breaker:
        dynamodb = session.client("dynamodb", endpoint_url=args.sinks_endpoint)
        breaker_table = f"{run}-breaker"
        dynamodb.create_table(
            TableName=breaker_table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )

    def time_to_revoke(index):
        """Sends urgent job `index` to the priority queue; seconds until its key is gone."""
        user, key = urgent_keys[index]
        body = job_body(f"{run}-urgent-{index}", user, key)
        sent_at = time.monotonic()
        sqs.send_message(QueueUrl=priority, MessageBody=body)
        while iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
            if time.monotonic() - sent_at > 120:
                sys.exit(f"urgent job {index} not revoked within 120 s")
            time.sleep(0.02)
        return time.monotonic() - sent_at

    def enqueue(batch):
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(batch)]
        failed = sqs.send_message_batch(QueueUrl=queue, Entries=entries).get("Failed", [])
        assert not failed, failed

    def depth():
        a = sqs.get_queue_attributes(
            QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])

    if not args.feed and not args.urgent:
        print(f"Enqueueing {args.jobs} jobs ...", file=sys.stderr)
        for i in range(0, len(bodies), 10):
            enqueue(bodies[i : i + 10])

    port_of = lambda url: int(url.rsplit(":", 1)[1])
    front, iam_stats = start_front(
        port_of(args.iam_endpoint), port_of(args.sqs_endpoint), port_of(args.sinks_endpoint), args.iam_latency_ms, args.iam_quota
    )
    worker_endpoint = f"http://127.0.0.1:{front}"
    def start_worker(n):
        metrics_port = free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            "IAM_KEY_REVOKER__AWS__REGION": "us-east-1",
            "IAM_KEY_REVOKER__AWS__ENDPOINT_URL": worker_endpoint,
            "IAM_KEY_REVOKER__SQS__QUEUE_URL": queue,
            "IAM_KEY_REVOKER__SQS__WAIT_TIME_SECONDS": "1",
            "IAM_KEY_REVOKER__WORKER__MAX_IN_FLIGHT": str(args.max_in_flight),
            "IAM_KEY_REVOKER__METRICS__LISTEN": f"127.0.0.1:{metrics_port}",
        }
        if not args.iam_defaults:
            # No client-side bound: the runs measure the worker, not its IAM budget.
            env["IAM_KEY_REVOKER__IAM__MAX_REQUESTS_PER_SECOND"] = "10000"
            env["IAM_KEY_REVOKER__IAM__INITIAL_REQUESTS_PER_SECOND"] = "10000"
        if not args.no_mac_key:
            env["IAM_KEY_REVOKER__CONTINUATION__MAC_KEY_ID"] = mac_key
        if priority:
            env["IAM_KEY_REVOKER__SQS__PRIORITY_QUEUE_URL"] = priority
        if breaker_table:
            env["IAM_KEY_REVOKER__BREAKER__TABLE_NAME"] = breaker_table
            for lane in ["MAIN", "PRIORITY"]:
                env[f"IAM_KEY_REVOKER__BREAKER__{lane}__MAX_KEYS_PER_ACCOUNT"] = "1000000"
                env[f"IAM_KEY_REVOKER__BREAKER__{lane}__MAX_KEYS"] = "1000000"
        if args.notify:
            env["IAM_KEY_REVOKER__RESULTS__QUEUE_URL"] = sinks["queue"]
            env["IAM_KEY_REVOKER__RESULTS__SNS_TOPIC_ARN"] = sinks["topic"]
            env["IAM_KEY_REVOKER__RESULTS__EVENT_BUS"] = sinks["bus"]
        for setting in args.set:
            key, _, value = setting.partition("=")
            section, _, name = key.partition(".")
            env[f"IAM_KEY_REVOKER__{section.upper()}__{name.upper()}"] = value
        log = open(f"/tmp/{run}-worker-{n}.log", "w")
        process = subprocess.Popen([args.binary, "run"], env=env, stdout=log, stderr=log)
        # CPU spent starting up (loading CA certificates, configuration, discovering the
        # queues) is reported apart from the CPU per job.
        for _ in range(200):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        return process, metrics_port

    # With IAM's quota true, the quota's use is counted from the first worker's start:
    # the first workers work while the later ones start.
    first_started, iam_at_first = time.monotonic(), list(iam_stats)
    workers = [start_worker(n) for n in range(args.workers)]
    startup_cpu = sum(proc_stats(w.pid)[0] for w, _ in workers)
    idle, behind = [], []
    if args.urgent:
        print(f"Urgent jobs on an idle worker ...", file=sys.stderr)
        time.sleep(2)
        for i in range(args.urgent):
            idle.append(time_to_revoke(i))
            time.sleep(0.2)
        print(f"Enqueueing {args.jobs} jobs ...", file=sys.stderr)
        for i in range(0, len(bodies), 10):
            enqueue(bodies[i : i + 10])
    started = time.monotonic()
    iam_before = list(iam_stats)
    sent = 0 if args.feed else len(bodies)
    next_urgent = started + args.urgent_every
    while True:
        if len(behind) < args.urgent and time.monotonic() >= next_urgent:
            backlog = sum(depth())
            behind.append((time_to_revoke(args.urgent + len(behind)), backlog))
            next_urgent = time.monotonic() + args.urgent_every
        if args.feed and sent < len(bodies):
            visible, in_flight = depth()
            while visible + in_flight < args.backlog and sent < len(bodies):
                enqueue(bodies[sent : sent + 10])
                sent += len(bodies[sent : sent + 10])
                visible += 10
        elif depth() == (0, 0) and len(behind) >= args.urgent:
            break
        if any(w.poll() is not None for w, _ in workers):
            sys.exit(f"a worker exited early: see /tmp/{run}-worker-*.log")
        time.sleep(0.05)
    drain = time.monotonic() - started
    iam_requests, iam_seconds, iam_throttled = (after - before for after, before in zip(iam_stats, iam_before))
    stats = [proc_stats(w.pid) for w, _ in workers]
    cpu, peak_mib = sum(c for c, _ in stats), max(p for _, p in stats)
    samples = {}
    for _, port in workers:
        for series, value in scrape(port).items():
            samples[series] = samples.get(series, 0.0) + value
    for w, _ in workers:
        w.send_signal(signal.SIGTERM)
    for w, _ in workers:
        w.wait(30)

    gone = sum(1 for u, k in keys if not iam.list_access_keys(UserName=u)["AccessKeyMetadata"])
    deleted = total(samples, "iam_key_revoker_jobs_total", outcome="deleted")
    iam_calls = total(samples, "iam_key_revoker_aws_requests_total", service="iam")
    sqs_calls = total(samples, "iam_key_revoker_aws_requests_total", service="sqs")
    lat = "iam_key_revoker_revocation_latency_seconds"
    p50, p99 = quantile(samples, lat, 0.5, queue="main"), quantile(samples, lat, 0.99, queue="main")
    result = {
        "jobs": args.jobs,
        "max_in_flight": args.max_in_flight,
        "iam_latency_ms": args.iam_latency_ms,
        "feed": args.feed,
        "keys_gone": gone,
        "jobs_deleted": int(deleted),
        "drain_seconds": round(drain, 2),
        "jobs_per_second": round(args.jobs / drain, 1),
        "startup_cpu_ms": round(startup_cpu * 1000, 1),
        "cpu_ms_per_job": round((cpu - startup_cpu) * 1000 / args.jobs, 3),
        "cpu_seconds_per_1000_jobs": round((cpu - startup_cpu) * 1000 / args.jobs, 3),
        "peak_rss_mib": round(peak_mib, 1),
        "iam_calls_per_job": round(iam_calls / args.jobs, 3),
        "iam_response_ms_mean": round(1000 * iam_seconds / max(iam_requests, 1), 1),
        "sqs_calls_per_job": round(sqs_calls / args.jobs, 3),
        "sqs_calls_by_operation": {
            op: int(total(samples, "iam_key_revoker_aws_requests_total", service="sqs", operation=op))
            for op in ["ReceiveMessage", "DeleteMessageBatch", "DeleteMessage", "ChangeMessageVisibility", "SendMessage", "GetQueueAttributes"]
        },
        "latency_p50_seconds": None if p50 is None else round(p50, 3),
        "latency_p99_seconds": None if p99 is None else round(p99, 3),
    }
    if args.breaker:
        result["breaker"] = True
        result["dynamodb_calls_per_job"] = round(
            total(samples, "iam_key_revoker_aws_requests_total", service="dynamodb") / args.jobs, 3
        )
        result["dynamodb_calls_by_operation"] = {
            op: int(total(samples, "iam_key_revoker_aws_requests_total", service="dynamodb", operation=op))
            for op in ["TransactWriteItems", "UpdateItem", "GetItem", "PutItem"]
        }
    if args.events:
        exposure = "iam_key_revoker_exposure_to_revoke_seconds"
        e50 = quantile(samples, exposure, 0.5, source="aws.health")
        e99 = quantile(samples, exposure, 0.99, source="aws.health")
        result["events"] = True
        result["exposure_to_revoke_p50_seconds"] = None if e50 is None else round(e50, 3)
        result["exposure_to_revoke_p99_seconds"] = None if e99 is None else round(e99, 3)
    if args.iam_defaults:
        result["iam_defaults"] = True
    if args.key_only:
        # The owner lookup (IAM), the hand-on (SQS) and its MAC (KMS), made and checked.
        result["key_only"] = True
        for service in ["kms", "sts"]:
            calls = total(samples, "iam_key_revoker_aws_requests_total", service=service)
            result[f"{service}_calls_per_job"] = round(calls / args.jobs, 3)
    if args.urgent:
        behind_times = [t for t, _ in behind]
        result["urgent_jobs"] = args.urgent
        result["urgent_idle_seconds_max"] = round(max(idle), 3)
        result["urgent_idle_seconds_mean"] = round(sum(idle) / len(idle), 3)
        result["urgent_behind_backlog_seconds_max"] = round(max(behind_times), 3)
        result["urgent_behind_backlog_seconds_mean"] = round(sum(behind_times) / len(behind_times), 3)
        result["backlog_jobs_at_urgent_sends"] = [b for _, b in behind]
        result["backlog_seconds_at_start"] = round(args.jobs / result["jobs_per_second"], 1)
    if args.workers > 1:
        result["workers"] = args.workers
        result["peak_rss_mib"] = f"{result['peak_rss_mib']} (the largest worker)"
    if args.iam_quota:
        quota_seconds = drain + (started - first_started)
        answered, _, iam_throttled = (after - before for after, before in zip(iam_stats, iam_at_first))
        answered = int(answered)
        result["iam_quota_per_second"] = args.iam_quota
        result["iam_requests_answered"] = answered
        result["iam_requests_throttled"] = int(iam_throttled)
        result["quota_seconds"] = round(quota_seconds, 2)
        result["quota_held"] = round(answered / quota_seconds / args.iam_quota, 3)
        result["throttled_fraction"] = round(iam_throttled / max(answered + iam_throttled, 1), 3)
        result["iam_calls_per_key"] = round((answered + iam_throttled) / args.jobs, 3)
    if args.iam_latency_ms:
        bound = args.max_in_flight / (args.iam_latency_ms / 1000)
        result["bound_jobs_per_second"] = round(bound, 1)
        result["fraction_of_bound"] = round(result["jobs_per_second"] / bound, 3)
    print(json.dumps(result, indent=2))
    expected = args.jobs + 2 * args.urgent
    if gone != args.jobs or int(deleted) != expected:
        sys.exit(f"only {gone} of {args.jobs} keys are gone, {int(deleted)} of {expected} jobs deleted")
    if args.record:
        record(args, result)


def record(args, result):
    command = "scripts/bench " + " ".join(
        a for a in [
            f"--jobs {args.jobs}",
            f"--max-in-flight {args.max_in_flight}",
            f"--iam-latency-ms {args.iam_latency_ms}" if args.iam_latency_ms else "",
            "--feed" if args.feed else "",
            f"--backlog {args.backlog}" if args.feed else "",
            f"--urgent {args.urgent} --urgent-every {args.urgent_every:g}" if args.urgent else "",
            f"--iam-quota {args.iam_quota}" if args.iam_quota else "",
            f"--workers {args.workers}" if args.workers > 1 else "",
            "--notify" if args.notify else "",
            "--breaker" if args.breaker else "",
            "--key-only" if args.key_only else "",
            "--iam-defaults" if args.iam_defaults else "",
            "--events" if args.events else "",
            "--no-mac-key" if args.no_mac_key else "",
            *(f"--set {s}" for s in args.set),
        ] if a
    )
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
    machine = f"{os.cpu_count()} cores ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, {platform.system()} {platform.release()}"
    with open(args.record, "a") as f:
        f.write(f"\n### `{command}`\n\n")
        f.write(f"{datetime.date.today().isoformat()}, {machine}; emulators: moto server (IAM/STS and SQS processes) behind the benchmark front.\n\n")
        f.write("| measure | value |\n| --- | --- |\n")
        for key, value in result.items():
            f.write(f"| {key} | {value} |\n")


if __name__ == "__main__":
    main()
