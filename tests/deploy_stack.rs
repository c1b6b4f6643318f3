//! The deploy scripts (`deploy/scripts/`), run as a person runs them, in the order the book's
//! `deploy-steps` block lists them (docs/src/deploy/deploying.md) (the block itself, not a copy), against an emulator of
//! this test's own, with the AWS CLI v1 that PyPI has (the scripts are written for v2 and
//! use only what both accept); all of them twice, the second run changing nothing; then
//! the teardown, twice. The emulator is one account, so every account of `deploy.env` is
//! it. What needs a cluster, Helm, Docker or Cargo is played by stand-ins on `PATH` that
//! record their arguments; `kubectl apply -k` renders the manifests with the real
//! kustomize, and the "cluster" then starts the worker exactly as the rendered Deployment
//! says (its ConfigMaps, its environment). Then: an AWS Health event on us-east-1's default
//! bus and a GuardDuty finding in another Region reach the priority queue through the
//! forwarding and the worker's rules, and their keys are revoked; and the worker runs with
//! credentials whose only policies are the stack's, the emulator enforcing them.
//!
//! What the emulator does differently from AWS, and how the test deals with it:
//! - it skips resource types it does not know (`AWS::SQS::QueuePolicy`,
//!   `AWS::Events::EventBusPolicy`, `AWS::Scheduler::ScheduleGroup`) with a warning;
//!   tests/deploy.rs checks those from the template, and `cfn-lint` (scripts/lint-deploy)
//!   the template itself; the schedule group the worker checks for at start is created
//!   here in the stack's stead;
//! - it has no `ActivateOrganizationsAccess`/`DescribeOrganizationsAccess` (StackSets'
//!   trusted access), no Security Hub `ListOrganizationAdminAccounts` and no GuardDuty
//!   `CreateSampleFindings`: the `aws` stand-in plays them (recorded), and the test puts
//!   the sample finding's event on the bus itself;
//! - its `DeleteStackInstances` reads only the self-managed `--accounts`, not a
//!   service-managed StackSet's `--deployment-targets`: the stand-in passes the account;
//! - deleting a stack, it deletes a managed policy without detaching it from the roles
//!   its `Roles` names (CloudFormation detaches it), and then cannot delete those roles:
//!   the test lets the stack's own attachments go before the teardown's last part;
//! - a service-managed StackSet deploys into the calling account too (AWS never deploys to
//!   the management account), so `MANAGEMENT_ACCOUNT_STACKS` stays false here (its roles'
//!   names would meet the StackSet's);
//! - it rewrites `account`, `region`, `id` and `time` when it forwards an event between
//!   buses (AWS keeps them), and its SQS delivery leaves out the event's `account`, which
//!   AWS delivers ("Amazon EventBridge events", EventBridge User Guide: every event has
//!   `account`); the test puts the delivered event back on the queue with it;
//! - it evaluates IAM policies for SQS queues and IAM roles, but checks IAM users'
//!   resources against `*` and evaluates no conditions: with enforcement on, the worker's
//!   IAM calls on users are refused here (tests/deploy.rs evaluates those statements);
//!   a trust policy's condition it cannot evaluate (`aws:PrincipalOrgID`) refuses every
//!   caller, and it matches a role session against the trust's role ARN as text, so the
//!   planner's and restorer's roles cannot be taken here at all: tests/deploy.rs
//!   evaluates their trust and rights with IAM's logic;
//! - with enforcement on, it refuses every EventBridge Scheduler request as
//!   `SignatureDoesNotMatch` (it computes REST requests' signatures differently), so the
//!   worker's start-up look at its schedule group is refused there: the worker warns and
//!   starts, as it does for any answer but "no such group"; tests/deploy.rs evaluates the
//!   Scheduler statements, tests/staged.rs runs staging against the emulator unenforced.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_iam::types::StatusType;
use common::process::{http_get, BIN};
use iam_key_revoker::aws::clients::{sdk_loader, Clients};
use iam_key_revoker::config::Config;
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The emulator's account.
const ACCOUNT: &str = "123456789012";
/// The worker's Region in deploy.env.
const REGION: &str = "eu-west-1";

fn venv(tool: &str) -> PathBuf {
    let path = Path::new(ROOT).join(".venv/bin").join(tool);
    assert!(
        path.exists(),
        "{} is missing: run the suite with scripts/test, which installs it",
        path.display()
    );
    path
}

/// An emulator of this test's own: it turns IAM policy enforcement on, which would
/// refuse every other test's requests.
struct Emulator {
    child: Child,
    url: String,
}

impl Emulator {
    async fn start(log: &Path) -> Self {
        let port = common::process::free_port();
        let child = Command::new(venv("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(log).unwrap(),
            ))
            .spawn()
            .expect("the emulator starts");
        let url = format!("http://127.0.0.1:{port}");
        common::eventually("the emulator to answer", Duration::from_secs(30), || {
            http_get(port, "/moto-api/").is_some()
        })
        .await;
        Self { child, url }
    }

    /// IAM policy enforcement on (`true`) or off, for every request from now on.
    fn enforce(&self, on: bool) {
        // The number of requests left unauthenticated: none, or all.
        let count = if on { "0" } else { "inf" };
        let post = format!(
            "import urllib.request; urllib.request.urlopen(urllib.request.Request('{}/moto-api/reset-auth', data=b'{count}', headers={{'Content-Type': 'text/plain'}}, method='POST'))",
            self.url
        );
        let output = Command::new(venv("python"))
            .args(["-c", &post])
            .output()
            .expect("python runs");
        assert!(output.status.success(), "{output:?}");
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The deploy parts, in the book's order: the command lines of the `sh` block between
/// the markers of its "Deploying" chapter.
fn deploy_parts() -> Vec<String> {
    let readme = std::fs::read_to_string(format!("{ROOT}/docs/src/deploy/deploying.md")).unwrap();
    let start = readme
        .find("<!-- deploy-steps:")
        .expect("Deploying marks its deploy steps");
    let end = readme
        .find("<!-- deploy-steps: end -->")
        .expect("Deploying marks the end of its deploy steps");
    let mut parts = Vec::new();
    let mut block = false;
    for line in readme[start..end].lines() {
        match (block, line.trim_end()) {
            (false, "```sh") => block = true,
            (true, "```") => block = false,
            (true, line) if !line.is_empty() => parts.push(line.to_owned()),
            _ => {}
        }
    }
    assert!(parts.len() >= 8, "{parts:?}");
    parts
}

/// Stand-ins on `PATH`: `aws` is the real CLI pointed at the emulator (recorded, and
/// playing what the emulator lacks); `docker` records and "pushes" an image manifest to
/// the emulator's ECR; `helm` records and remembers KEDA; `cargo` records; `kubectl`
/// renders with the real kustomize, waits for the "cluster" (this test) at `rollout
/// status` and reads the worker's log for `logs`; `iam-key-revoker` is the binary under
/// test.
fn stand_ins(bin: &Path, state: &Path, emulator: &str) {
    let real_kubectl = which("kubectl");
    let real_aws = venv("aws");
    let scripts = [
        (
            "aws",
            format!(
                r#"#!/bin/bash
echo "aws $*" >>{state}/calls
case "$*" in
  *"cloudformation describe-organizations-access"*)
    if [ -e {state}/organizations-access ]; then echo ENABLED; else echo DISABLED; fi; exit 0 ;;
  *"cloudformation activate-organizations-access"*) touch {state}/organizations-access; exit 0 ;;
  *"guardduty create-sample-findings"*) touch {state}/sample-finding; exit 0 ;;
  *"securityhub list-organization-admin-accounts"*)
    if [ -e {state}/securityhub-admin ]; then echo ENABLED; fi; exit 0 ;;
  *"securityhub enable-organization-admin-account"*) touch {state}/securityhub-admin ;;
  *"cloudformation delete-stack-instances"*)
    args=(); skip=0
    for a in "$@"; do
      if [ "$skip" = 1 ]; then skip=0; args+=(--accounts {ACCOUNT}); continue; fi
      if [ "$a" = --deployment-targets ]; then skip=1; continue; fi
      args+=("$a")
    done
    exec {aws} --endpoint-url {emulator} "${{args[@]}}" ;;
esac
exec {aws} --endpoint-url {emulator} "$@"
"#,
                state = state.display(),
                aws = real_aws.display(),
            ),
        ),
        (
            "docker",
            format!(
                r#"#!/bin/bash
echo "docker $*" >>{state}/calls
[ "$1" = login ] && cat >/dev/null
if [ "$1" = buildx ]; then
  tag=""; prev=""
  for a in "$@"; do [ "$prev" = -t ] && tag=$a; prev=$a; done
  {aws} --endpoint-url {emulator} ecr put-image --repository-name iam-key-revoker \
    --image-tag "${{tag##*:}}" --image-manifest '{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}},"layers":[]}}' >/dev/null
fi
exit 0
"#,
                state = state.display(),
                aws = real_aws.display(),
            ),
        ),
        (
            "helm",
            format!(
                r#"#!/bin/bash
echo "helm $*" >>{state}/calls
case "$*" in
  "upgrade --install keda"*) touch {state}/keda ;;
esac
"#,
                state = state.display()
            ),
        ),
        ("cargo", record("cargo", state)),
        (
            "kubectl",
            format!(
                r#"#!/bin/bash
set -euo pipefail
echo "kubectl $*" >>{state}/calls
case "$*" in
  "apply -k "*) {real} kustomize "$3" >"{state}/applied-$(basename "$3").yaml"; touch "{state}/applied" ;;
  "apply -f -") cat >"{state}/applied-stdin.yaml" ;;
  "config current-context") echo "arn:aws:eks:{REGION}:{ACCOUNT}:cluster/revoker-cluster" ;;
  "get crd podmonitors.monitoring.coreos.com") ;;
  "get crd scaledobjects.keda.sh") [ -e "{state}/keda" ] ;;
  "-n security delete --ignore-not-found"*) touch "{state}/deleted" ;;
  kustomize*) exec {real} "$@" ;;
  "-n security rollout status"*)
    for _ in $(seq 1200); do [ -e "{state}/worker-running" ] && exit 0; sleep 0.1; done
    echo "the worker did not start" >&2; exit 1 ;;
  "-n security logs -l app.kubernetes.io/name=iam-key-revoker --prefix --tail=-1")
    cat "{state}"/worker*.log | sed 's|^|[pod/iam-key-revoker-7d9f/worker] |' ;;
  *) echo "kubectl: not played here: $*" >&2; exit 1 ;;
esac
"#,
                state = state.display(),
                real = real_kubectl.display()
            ),
        ),
    ];
    for (name, text) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        make_executable(&path);
    }
    std::os::unix::fs::symlink(BIN, bin.join("iam-key-revoker")).unwrap();
}

fn record(tool: &str, state: &Path) -> String {
    format!(
        "#!/bin/sh\necho \"{tool} $*\" >>{}\n",
        state.join("calls").display()
    )
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn which(tool: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap()
        .split(':')
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is installed"))
}

/// The AWS CLI against the emulator, for what the deploy takes as given (an
/// organization, a cluster) and for the checks; its output as JSON.
fn aws(emulator: &str, credentials: (&str, &str), args: &[&str]) -> Value {
    let output = Command::new(venv("aws"))
        .args(["--endpoint-url", emulator, "--output", "json"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("AWS_ACCESS_KEY_ID", credentials.0)
        .env("AWS_SECRET_ACCESS_KEY", credentials.1)
        .env("AWS_DEFAULT_REGION", REGION)
        .output()
        .expect("the AWS CLI runs");
    assert!(
        output.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

const TESTING: (&str, &str) = ("testing", "testing");

/// The worker as the rendered Deployment runs it: worker.toml from its ConfigMap, its
/// environment from stack.env's ConfigMap; only the endpoint (the emulator), the
/// credentials and the listener (any free port) are this test's.
struct Pod {
    config: PathBuf,
    env: BTreeMap<String, String>,
}

impl Pod {
    fn from_manifests(rendered: &str, dir: &Path) -> Self {
        let docs = common::cfn::documents(rendered);
        let config_maps: BTreeMap<String, &Value> = docs
            .iter()
            .filter(|d| d["kind"] == "ConfigMap")
            .map(|d| (d["metadata"]["name"].as_str().unwrap().to_owned(), d))
            .collect();
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let volume = &pod["volumes"][0]["configMap"]["name"];
        let files = &config_maps[volume.as_str().unwrap()]["data"];
        let config = dir.join("worker.toml");
        std::fs::write(&config, files["worker.toml"].as_str().unwrap()).unwrap();
        assert_eq!(
            container["args"],
            json!(["run", "--config", "/etc/iam-key-revoker/worker.toml"])
        );
        let mut env = BTreeMap::new();
        for variable in container["env"].as_array().unwrap() {
            let reference = &variable["valueFrom"]["configMapKeyRef"];
            let map = &config_maps[reference["name"].as_str().unwrap()]["data"];
            match map[reference["key"].as_str().unwrap()].as_str() {
                Some(value) => {
                    env.insert(
                        variable["name"].as_str().unwrap().to_owned(),
                        value.to_owned(),
                    );
                }
                None => assert_eq!(reference["optional"], true, "{variable}"),
            }
        }
        Self { config, env }
    }

    fn start(&self, emulator: &str, credentials: (&str, &str), log: &Path) -> Running {
        let mut command = Command::new(BIN);
        command
            .args(["run", "--config"])
            .arg(&self.config)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("AWS_ACCESS_KEY_ID", credentials.0)
            .env("AWS_SECRET_ACCESS_KEY", credentials.1)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(&self.env)
            .env("IAM_KEY_REVOKER__AWS__ENDPOINT_URL", emulator)
            .env("IAM_KEY_REVOKER__METRICS__LISTEN", "127.0.0.1:0")
            .env("IAM_KEY_REVOKER__SQS__WAIT_TIME_SECONDS", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(Stdio::null());
        Running(Some(command.spawn().expect("the worker starts")))
    }
}

/// A process of this test's, killed if the test ends before it does (a failed assertion
/// must not leave a worker behind).
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The worker's metrics listener, from its "Serving /metrics" log line.
async fn metrics_port(log: &Path) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let port = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "Serving /metrics, /healthz and /readyz")
            .and_then(|l| l["address"].as_str()?.rsplit(':').next()?.parse().ok());
        if let Some(port) = port {
            return port;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker to listen; it said: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the worker as Kubernetes does (SIGTERM) and checks it exits cleanly.
fn stop(mut worker: Running) {
    let mut child = worker.0.take().unwrap();
    common::process::sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

async fn clients(emulator: &str, credentials: (&str, &str)) -> Clients {
    let mut config = Config::default();
    config.aws.region = Some(REGION.to_owned());
    config.aws.endpoint_url = Some(emulator.to_owned());
    let sdk = sdk_loader(&config)
        .credentials_provider(aws_sdk_iam::config::Credentials::new(
            credentials.0,
            credentials.1,
            None,
            None,
            "tests",
        ))
        .load()
        .await;
    Clients::new(&sdk, &config)
}

fn health_event(key: &str, user: &str) -> Value {
    json!({
        "service": "RISK",
        "eventTypeCode": "AWS_RISK_CREDENTIALS_EXPOSED",
        "eventTypeCategory": "issue",
        "communicationId": "deploy-test-communication",
        "affectedAccount": ACCOUNT,
        "eventArn": "arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/deploy-test",
        "startTime": "Mon, 30 Nov 2026 06:10:09 GMT",
        "eventDescription": [{"language": "en_US", "latestDescription": "Your AWS Access Key was found publicly available on GitHub."}],
        "affectedEntities": [{"entityValue": key}],
        "eventMetadata": {"userName": user, "publicKey": key}
    })
}

fn guardduty_finding(key: &str, user: &str) -> Value {
    json!({
        "schemaVersion": "2.0",
        "accountId": ACCOUNT,
        "region": "eu-central-1",
        "partition": "aws",
        "id": "deploy-test-finding",
        "arn": format!("arn:aws:guardduty:eu-central-1:{ACCOUNT}:detector/12abc34d567e8fa901bc2d34e56789f0/finding/deploy-test-finding"),
        "type": "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
        "resource": {
            "resourceType": "AccessKey",
            "accessKeyDetails": {"accessKeyId": key, "principalId": "AIDACKCEVSQ6C2EXAMPLE", "userType": "IAMUser", "userName": user}
        },
        "service": {
            "serviceName": "guardduty",
            "action": {"actionType": "AWS_API_CALL", "awsApiCallAction": {"api": "ListAccessKeys", "serviceName": "iam.amazonaws.com", "callerType": "Remote IP", "remoteIpDetails": {"ipAddressV4": "198.51.100.0"}}},
            "count": 1
        },
        "severity": 8.0,
        "createdAt": "2026-11-30T08:54:11Z",
        "updatedAt": "2026-11-30T08:54:11Z",
        "title": "Credentials used from an external IP address.",
        "description": "An API was used to access a resource from a remote IP address."
    })
}

/// Puts an event on the default bus of `region`, as AWS Health or GuardDuty would.
fn put_event(emulator: &str, region: &str, source: &str, detail_type: &str, detail: &Value) {
    let entries =
        json!([{"Source": source, "DetailType": detail_type, "Detail": detail.to_string()}]);
    let answer = aws(
        emulator,
        TESTING,
        &[
            "--region",
            region,
            "events",
            "put-events",
            "--entries",
            &entries.to_string(),
        ],
    );
    assert_eq!(answer["FailedEntryCount"], 0, "{answer}");
}

/// Every event the rules delivered to the priority queue (the emulator delivers while it
/// answers PutEvents, so they are all there), taken off it and put back with the
/// `account` AWS delivers (the emulator leaves it out).
async fn delivered(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let messages = common::receive(sqs, queue, 10, 0).await;
        if messages.is_empty() {
            break;
        }
        for message in messages {
            events.push(serde_json::from_str::<Value>(message.body().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    for event in &mut events {
        if event.get("account").is_none() {
            event["account"] = json!(ACCOUNT);
        }
        common::send(sqs, queue, &event.to_string()).await;
    }
    events
}

/// The deploy's settings, as a person fills deploy.env in: every account is the
/// emulator's.
fn deploy_env() -> String {
    format!(
        r#"WORKER_ACCOUNT={ACCOUNT}
MANAGEMENT_ACCOUNT={ACCOUNT}
STACKSETS_ACCOUNT={ACCOUNT}
GUARDDUTY_ADMIN_ACCOUNT={ACCOUNT}
REGION={REGION}
GUARDDUTY_REGIONS="eu-west-1 eu-central-1"
CLUSTER=revoker-cluster
TARGET_OUS=""
VERSION=1.0.0
IMAGE_PLATFORM=linux/amd64
PLANNERS="arn:aws:iam::{ACCOUNT}:role/secops-analyst"
RESTORERS="arn:aws:iam::{ACCOUNT}:role/secops-oncall"
BREAKER_OPERATORS="arn:aws:iam::{ACCOUNT}:role/secops-lead"
PRODUCERS=""
MANAGEMENT_ACCOUNT_STACKS=false
ALARM_TOPIC_NAME=""
ALARM_TOPIC_ACCOUNT=""
UPDATE_FINDINGS=true
DELIVER_SAMPLE_FINDINGS=true
BOOK_URL=https://docs.example.org/iam-key-revoker/
PROMETHEUS_RELEASE=kube-prometheus-stack
"#
    )
}

/// Where the deploy runs: a checkout's `deploy/`, the stand-ins, the "cluster"'s state.
struct Deploy {
    dir: tempfile::TempDir,
    bin: PathBuf,
    state: PathBuf,
    work: PathBuf,
    url: String,
}

impl Deploy {
    /// Runs `line` (one part, as the book writes it) with the deploy's environment, and
    /// plays the cluster meanwhile: once the part applies the manifests, the worker is
    /// started as the rendered Deployment says (`pod`, `worker`). Its output, and whether
    /// it succeeded.
    async fn run(
        &self,
        line: &str,
        name: &str,
        pod: &mut Option<Pod>,
        worker: &mut Option<Running>,
    ) -> (String, bool) {
        let out = self.dir.path().join(format!("{name}.out"));
        let child = Command::new("bash")
            .args(["-c", line])
            .current_dir(&self.work)
            .env_clear()
            .env(
                "PATH",
                format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("HOME", self.dir.path())
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // The binary's commands (protect-policy, enqueue) go to the emulator too.
            .env("IAM_KEY_REVOKER__AWS__ENDPOINT_URL", &self.url)
            .env("MEMBER_ACCOUNT", ACCOUNT)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&out).unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut child = Running(Some(child));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        let status = loop {
            if let Some(status) = child.0.as_mut().unwrap().try_wait().unwrap() {
                break status;
            }
            if worker.is_none() && self.state.join("applied").exists() {
                let rendered =
                    std::fs::read_to_string(self.state.join("applied-kubernetes.yaml")).unwrap();
                let started = Pod::from_manifests(&rendered, self.dir.path());
                let log = self.state.join("worker.log");
                *worker = Some(started.start(&self.url, TESTING, &log));
                metrics_port(&log).await;
                std::fs::write(self.state.join("worker-running"), "").unwrap();
                *pod = Some(started);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{line}: {}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        child.0 = None;
        (std::fs::read_to_string(&out).unwrap(), status.success())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_scripts_run_twice_and_the_worker_revokes_from_every_source() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, state, work) = (
        dir.path().join("bin"),
        dir.path().join("state"),
        dir.path().join("work"),
    );
    for d in [&bin, &state, &work] {
        std::fs::create_dir(d).unwrap();
    }
    let emulator = Emulator::start(&dir.path().join("emulator.log")).await;
    let url = emulator.url.clone();
    stand_ins(&bin, &state, &url);
    // The checkout the scripts run in (they write stack.env into deploy/, and read the
    // version from Cargo.toml).
    let status = Command::new("cp")
        .args([
            "-r",
            &format!("{ROOT}/deploy"),
            &format!("{ROOT}/Cargo.toml"),
            work.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(work.join("deploy/scripts/deploy.env"), deploy_env()).unwrap();
    let deploy = Deploy {
        dir,
        bin,
        state: state.clone(),
        work: work.clone(),
        url: url.clone(),
    };

    // What the deploy takes as given: the organization, the cluster, the operators'
    // roles, GuardDuty.
    aws(
        &url,
        TESTING,
        &[
            "organizations",
            "create-organization",
            "--feature-set",
            "ALL",
        ],
    );
    aws(
        &url,
        TESTING,
        &[
            "eks",
            "create-cluster",
            "--name",
            "revoker-cluster",
            "--role-arn",
            &format!("arn:aws:iam::{ACCOUNT}:role/eks-cluster"),
            "--resources-vpc-config",
            "subnetIds=subnet-0a1b2c3d",
        ],
    );
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "sts:AssumeRole"}]});
    for role in ["secops-analyst", "secops-oncall", "secops-lead"] {
        aws(
            &url,
            TESTING,
            &[
                "iam",
                "create-role",
                "--role-name",
                role,
                "--assume-role-policy-document",
                &trust.to_string(),
            ],
        );
    }
    aws(
        &url,
        TESTING,
        &[
            "--region",
            "eu-west-1",
            "guardduty",
            "create-detector",
            "--enable",
        ],
    );
    // The stack's schedule group, which the emulator's CloudFormation skips.
    aws(
        &url,
        TESTING,
        &[
            "scheduler",
            "create-schedule-group",
            "--name",
            "iam-key-revoker",
        ],
    );

    // The book's parts, top to bottom, twice; the "cluster" starts the worker once the
    // manifests are applied.
    let parts = deploy_parts();
    let clients = clients(&url, TESTING).await;
    let (mut pod, mut worker) = (None, None);
    let mut outputs = Vec::new();
    let mut calls_of_first_run = 0;
    for run in 1..=2 {
        for (index, line) in parts.iter().enumerate() {
            let (output, ok) = deploy
                .run(
                    line,
                    &format!("run{run}-part{index}"),
                    &mut pod,
                    &mut worker,
                )
                .await;
            assert!(ok, "run {run}, {line}: {output}");
            if run == 1 && line.contains("70-sample-finding.sh") {
                // GuardDuty's sample finding, as GuardDuty puts it on the bus (the
                // emulator has no CreateSampleFindings): it travels the forwarding.
                assert!(state.join("sample-finding").exists());
                stop(worker.take().unwrap());
                let priority = std::fs::read_to_string(work.join("deploy/kubernetes/stack.env"))
                    .unwrap()
                    .lines()
                    .find_map(|l| l.strip_prefix("IAM_KEY_REVOKER__SQS__PRIORITY_QUEUE_URL="))
                    .unwrap()
                    .to_owned();
                let mut sample =
                    guardduty_finding("AKIAIOSFODNN7EXAMPLE", "GeneratedFindingUserName");
                sample["id"] = json!("deploy-sample-finding");
                sample["service"]["additionalInfo"] = json!({"sample": true});
                put_event(
                    &url,
                    "eu-central-1",
                    "aws.guardduty",
                    "GuardDuty Finding",
                    &sample,
                );
                let events = delivered(&clients.sqs, &priority).await;
                assert_eq!(events.len(), 1, "{events:?}");
                worker = Some(pod.as_ref().unwrap().start(
                    &url,
                    TESTING,
                    &state.join("worker-2.log"),
                ));
                metrics_port(&state.join("worker-2.log")).await;
            }
            outputs.push((run, line.clone(), output));
        }
        if run == 1 {
            calls_of_first_run = std::fs::read_to_string(state.join("calls"))
                .unwrap()
                .lines()
                .count();
        }
    }
    let worker = worker.expect("the cluster runs the worker");
    let pod = pod.unwrap();

    // The second run changed nothing and said so.
    let calls = std::fs::read_to_string(state.join("calls")).unwrap();
    let second: Vec<&str> = calls.lines().skip(calls_of_first_run).collect();
    for change in [
        "cloudformation create-stack ",
        "cloudformation create-stack-set",
        "cloudformation create-stack-instances",
        "cloudformation update-stack-set",
        "activate-organizations-access",
        "enable-organization-admin-account",
        "create-open-id-connect-provider",
        "attach-role-policy",
        "ecr create-repository",
        "docker buildx",
        "helm upgrade",
    ] {
        assert!(
            !second.iter().any(|c| c.contains(change)),
            "the second run: {change} in {second:?}"
        );
    }
    let said: String = outputs
        .iter()
        .filter(|(run, _, _)| *run == 2)
        .map(|(_, _, output)| output.as_str())
        .collect();
    for unchanged in [
        "Trusted access: enabled already",
        "eu-central-1: administrator already",
        "New accounts: enabled already",
        "OIDC provider: exists",
        "Stack iam-key-revoker in eu-west-1: unchanged",
        "secops-analyst: has iam-key-revoker-plan already",
        "secops-oncall: has iam-key-revoker-restore already",
        "secops-lead: has iam-key-revoker-breaker-operator already",
        "pushed already",
        "StackSet iam-key-revoker-health-forwarding: unchanged",
        "StackSet iam-key-revoker-member-role: unchanged",
        "StackSet iam-key-revoker-member-role: no instance failed",
        "Stack iam-key-revoker-guardduty-forwarding in eu-central-1: unchanged",
        "KEDA is installed already",
        "The sample finding reached the worker, which changed nothing",
        "Every instance is current",
    ] {
        assert!(
            said.contains(unchanged),
            "the second run said {unchanged}: {said}"
        );
    }
    for changed in [
        ": created",
        ": updated",
        "Registered\n",
        "given iam-key-revoker",
    ] {
        assert!(
            !said.contains(changed),
            "the second run: {changed} in {said}"
        );
    }
    let first: String = outputs
        .iter()
        .filter(|(run, _, _)| *run == 1)
        .map(|(_, _, output)| output.as_str())
        .collect();
    for created in [
        "Trusted access: enabled\n",
        "Stack iam-key-revoker in eu-west-1: created",
        "StackSet iam-key-revoker-member-role: created",
        "StackSet iam-key-revoker-member-role: no instance failed",
        "Stack iam-key-revoker-guardduty-forwarding in eu-central-1: created",
        "KEDA: installed",
        "revoked",
        "The sample finding reached the worker, which changed nothing",
        "Credentials: arn:aws:sts::",
    ] {
        assert!(
            first.contains(created),
            "the first run said {created}: {first}"
        );
    }

    // Every part did what it says.
    let rendered = std::fs::read_to_string(state.join("applied-kubernetes.yaml")).unwrap();
    let env: BTreeMap<String, String> =
        std::fs::read_to_string(work.join("deploy/kubernetes/stack.env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
    let image = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/iam-key-revoker:1.0.0");
    assert_eq!(env["IMAGE"], image);
    for call in [
        format!(
            "docker buildx build --platform linux/amd64 -t {image} --push {}",
            work.display()
        ),
        format!(
            "helm upgrade --install keda kedacore/keda --namespace keda --create-namespace --version 2.20.2 --set podIdentity.aws.irsa.enabled=true --set podIdentity.aws.irsa.roleArn={}",
            env["KEDA_SCALER_ROLE_ARN"]
        ),
        format!("kubectl apply -k {}/deploy/kubernetes/", work.display()),
        "aws cloudformation activate-organizations-access".to_owned(),
    ] {
        assert!(calls.lines().any(|l| l == call), "{call} in {calls}");
    }
    // kubeconfig before anything touches the cluster.
    let first_kubectl = calls
        .lines()
        .position(|l| l.starts_with("kubectl") || l.starts_with("helm"))
        .unwrap();
    let kubeconfig = calls
        .lines()
        .position(|l| l.contains("eks update-kubeconfig"))
        .unwrap();
    assert!(kubeconfig < first_kubectl, "{calls}");
    assert!(rendered.contains(&format!("image: {image}")));
    let monitoring = std::fs::read_to_string(state.join("applied-stdin.yaml")).unwrap();
    assert_eq!(
        monitoring.matches("release: kube-prometheus-stack").count(),
        2
    );
    // Every alert's runbook link leads into the published book.
    assert!(!monitoring.contains("BOOK_URL"), "{monitoring}");
    assert_eq!(
        monitoring
            .matches("runbook_url: https://docs.example.org/iam-key-revoker/operate/runbooks.html#")
            .count()
            + monitoring
                .matches("runbook_url: \"https://docs.example.org/iam-key-revoker/operate/runbooks.html#")
                .count(),
        monitoring.matches("runbook_url:").count()
    );
    let stack = &aws(
        &url,
        TESTING,
        &[
            "cloudformation",
            "describe-stacks",
            "--stack-name",
            "iam-key-revoker",
        ],
    )["Stacks"][0];
    assert_eq!(stack["StackStatus"], "CREATE_COMPLETE");
    for (variable, key) in [
        ("IAM_KEY_REVOKER__SQS__QUEUE_URL", "QueueUrl"),
        (
            "IAM_KEY_REVOKER__SQS__PRIORITY_QUEUE_URL",
            "PriorityQueueUrl",
        ),
        ("WORKER_ROLE_ARN", "WorkerRoleArn"),
    ] {
        let output = stack["Outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["OutputKey"] == key)
            .unwrap();
        assert_eq!(output["OutputValue"].as_str(), Some(env[variable].as_str()));
        assert_eq!(
            pod.env.get(variable).or(env.get(variable)),
            Some(&env[variable])
        );
    }
    let queues = clients.sqs.list_queues().send().await.unwrap();
    for name in [
        "iam-key-revocations",
        "iam-key-revocations-dlq",
        "iam-key-revocations-priority",
        "iam-key-revocations-priority-dlq",
        "iam-key-revoker-results",
    ] {
        assert!(
            queues
                .queue_urls()
                .iter()
                .any(|u| u.ends_with(&format!("/{name}"))),
            "{name}"
        );
    }
    for role in [
        "iam-key-revoker-worker",
        "iam-key-revoker-keda-scaler",
        "iam-key-revoker",
        "iam-key-revoker-planner",
        "iam-key-revoker-restorer",
    ] {
        clients
            .iam
            .get_role()
            .role_name(role)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{role}: {e:?}"));
    }
    // The protected users' Deny, from protect-policy through ProtectedUserArns: in the
    // worker's policy, the restore operators' and the member roles of the worker and the
    // restorer.
    let document = |policy: &str| {
        let arn = format!("arn:aws:iam::{ACCOUNT}:policy/{policy}");
        let version = aws(
            &url,
            TESTING,
            &[
                "iam",
                "get-policy-version",
                "--policy-arn",
                &arn,
                "--version-id",
                "v1",
            ],
        );
        version["PolicyVersion"]["Document"].to_string()
    };
    for policy in ["iam-key-revoker-worker", "iam-key-revoker-restore"] {
        let text = document(policy);
        assert!(
            text.contains("NeverChangeProtectedUsers") && text.contains("user/break-glass-*"),
            "{policy}: {text}"
        );
    }
    for role in ["iam-key-revoker", "iam-key-revoker-restorer"] {
        let policies = aws(
            &url,
            TESTING,
            &["iam", "list-role-policies", "--role-name", role],
        );
        let text = if role == "iam-key-revoker" {
            let protected = clients
                .iam
                .get_role_policy()
                .role_name(role)
                .policy_name("protected-users")
                .send()
                .await
                .expect("the member role refuses the protected users");
            protected.policy_document().to_owned()
        } else {
            let only = policies["PolicyNames"][0].as_str().unwrap().to_owned();
            let got = clients
                .iam
                .get_role_policy()
                .role_name(role)
                .policy_name(&only)
                .send()
                .await
                .unwrap();
            got.policy_document().to_owned()
        };
        // URL-encoded as IAM returns it (IAM API Reference, GetRolePolicy).
        assert!(
            text.contains("Deny") && text.contains("break-glass-"),
            "{role}: {text}"
        );
    }
    let planner = aws(
        &url,
        TESTING,
        &["iam", "get-role", "--role-name", "iam-key-revoker-planner"],
    );
    assert!(
        planner["Role"]["AssumeRolePolicyDocument"]
            .to_string()
            .contains(&format!("arn:aws:iam::{ACCOUNT}:role/secops-analyst")),
        "{planner}"
    );
    let providers = aws(&url, TESTING, &["iam", "list-open-id-connect-providers"]);
    assert_eq!(
        providers["OpenIDConnectProviderList"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let rules = |region: &str, bus: &str| -> Vec<String> {
        aws(
            &url,
            TESTING,
            &[
                "--region",
                region,
                "events",
                "list-rules",
                "--event-bus-name",
                bus,
            ],
        )["Rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["Name"].as_str().unwrap().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    assert_eq!(
        rules(REGION, "iam-key-revoker"),
        [
            "iam-key-revoker-guardduty-access-keys",
            "iam-key-revoker-health-credentials"
        ]
    );
    for region in ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1"] {
        assert!(
            !rules(region, "default").is_empty(),
            "forwarding rules in {region}"
        );
    }
    let logs = format!(
        "{}{}",
        std::fs::read_to_string(state.join("worker.log")).unwrap(),
        std::fs::read_to_string(state.join("worker-2.log")).unwrap()
    );
    let first_jobs = logs
        .lines()
        .filter(|l| l.contains("\"Job finished\"") && l.contains("iam-key-revoker-first-job"))
        .filter(|l| l.contains("\"outcome\":\"deleted\""))
        .count();
    assert_eq!(first_jobs, 2, "the first job of each run, revoked once");
    let sample = logs
        .lines()
        .find(|l| {
            l.contains("\"Job finished\"") && l.contains("aws.guardduty:deploy-sample-finding")
        })
        .expect("the sample finding reached the worker");
    assert!(
        sample.contains("\"not_revocable\"") && sample.contains("\"keys_changed\":0"),
        "{sample}"
    );
    stop(worker);

    // Security events from where AWS delivers them, through the forwarding stacks and the
    // worker's rules to the priority queue, and revoked.
    let priority = env["IAM_KEY_REVOKER__SQS__PRIORITY_QUEUE_URL"].clone();
    let leaked = |user: &'static str| {
        let iam = clients.iam.clone();
        async move {
            iam.create_user().user_name(user).send().await.unwrap();
            let key = iam
                .create_access_key()
                .user_name(user)
                .send()
                .await
                .unwrap();
            key.access_key().unwrap().access_key_id().to_owned()
        }
    };
    let health_key = leaked("deploy-test-health").await;
    let guardduty_key = leaked("deploy-test-guardduty").await;
    put_event(
        &url,
        "us-east-1",
        "aws.health",
        "AWS Health Event",
        &health_event(&health_key, "deploy-test-health"),
    );
    put_event(
        &url,
        "eu-central-1",
        "aws.guardduty",
        "GuardDuty Finding",
        &guardduty_finding(&guardduty_key, "deploy-test-guardduty"),
    );
    // A finding below the rules' severity goes nowhere.
    let mut low = guardduty_finding(&guardduty_key, "deploy-test-guardduty");
    low["severity"] = json!(5.0);
    put_event(
        &url,
        "eu-central-1",
        "aws.guardduty",
        "GuardDuty Finding",
        &low,
    );
    let events = delivered(&clients.sqs, &priority).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let health = events.iter().find(|e| e["source"] == "aws.health").unwrap();
    assert_eq!(health["detail-type"], "AWS Health Event");
    assert_eq!(
        health["detail"]["affectedEntities"][0]["entityValue"],
        health_key.as_str()
    );
    let finding = events
        .iter()
        .find(|e| e["source"] == "aws.guardduty")
        .unwrap();
    assert_eq!(
        finding["detail"]["resource"]["accessKeyDetails"]["accessKeyId"],
        guardduty_key.as_str()
    );
    assert_eq!(finding["detail"]["severity"], 8.0);

    let log = state.join("worker-events.log");
    let worker = pod.start(&url, TESTING, &log);
    let key_status = |user: &'static str, key: String| {
        let iam = clients.iam.clone();
        async move {
            iam.list_access_keys()
                .user_name(user)
                .send()
                .await
                .unwrap()
                .access_key_metadata()
                .iter()
                .find(|k| k.access_key_id() == Some(key.as_str()))
                .and_then(|k| k.status().cloned())
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(key_status("deploy-test-health", health_key.clone())
        .await
        .is_none()
        && key_status("deploy-test-guardduty", guardduty_key.clone()).await
            == Some(StatusType::Inactive))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both keys revoked; the worker said: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(worker);
    // Both were counted in the stack's breaker table, on the priority queue's limits (with
    // the sample findings' and first jobs' keys before them).
    let counted = clients
        .dynamodb()
        .get_item()
        .table_name("iam-key-revoker-breaker")
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("count#priority#all".to_owned()),
        )
        .send()
        .await
        .expect("the stack's breaker table");
    let total = match counted.item().and_then(|i| i.get("total")) {
        Some(aws_sdk_dynamodb::types::AttributeValue::N(n)) => n.parse::<u32>().unwrap(),
        _ => 0,
    };
    assert!(total >= 2, "{counted:?}");

    // The stack's policies, enforced: the worker's credentials have the stack's managed
    // policies and, where the emulator reads IAM differently from AWS, those grants as
    // it reads them: for what it can only check against `*` (an IAM user's ARN; the
    // queue of GetQueueUrl, which names it by QueueName) the same actions on `*`
    // (tests/deploy.rs evaluates them on their ARNs), and the batch calls under their
    // own names on the same queues, where AWS asks for the single action's permission
    // ("Amazon SQS API permissions: Actions and resource reference": DeleteMessageBatch
    // needs sqs:DeleteMessage, SendMessageBatch sqs:SendMessage).
    let admin = credentials_for(&clients, "deploy-test-admin", None).await;
    put_user_policy(
        &clients,
        "deploy-test-admin",
        json!([{"Effect": "Allow", "Action": "*", "Resource": "*"}]),
    )
    .await;
    let worker_credentials = credentials_for(
        &clients,
        "deploy-test-worker",
        Some(&[
            format!("arn:aws:iam::{ACCOUNT}:policy/iam-key-revoker-worker"),
            format!("arn:aws:iam::{ACCOUNT}:policy/iam-key-revoker-worker-results"),
        ]),
    )
    .await;
    let statements = |policy: &str| -> Vec<Value> {
        let version = aws(
            &url,
            TESTING,
            &[
                "iam",
                "get-policy-version",
                "--policy-arn",
                &format!("arn:aws:iam::{ACCOUNT}:policy/{policy}"),
                "--version-id",
                "v1",
            ],
        );
        let document = &version["PolicyVersion"]["Document"];
        let document: Value = match document {
            Value::String(text) => serde_json::from_str(text).unwrap(),
            other => other.clone(),
        };
        document["Statement"].as_array().unwrap().clone()
    };
    let stack_statements: Vec<Value> = ["iam-key-revoker-worker", "iam-key-revoker-worker-results"]
        .iter()
        .flat_map(|p| statements(p))
        .collect();
    let batches: Vec<Value> = stack_statements
        .iter()
        .filter_map(|s| {
            let actions: Vec<String> = match &s["Action"] {
                Value::Array(actions) => actions.clone(),
                one => vec![one.clone()],
            }
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .filter(|a| {
                [
                    "sqs:DeleteMessage",
                    "sqs:SendMessage",
                    "sqs:ChangeMessageVisibility",
                ]
                .contains(&a.as_str())
            })
            .map(|a| format!("{a}Batch"))
            .collect();
            (!actions.is_empty())
                .then(|| json!({"Effect": "Allow", "Action": actions, "Resource": s["Resource"]}))
        })
        .collect();
    let stack_grants = |resource: &str| -> Vec<String> {
        stack_statements
            .iter()
            .filter(|s| s["Effect"] == "Allow" && s["Resource"].to_string().contains(resource))
            .flat_map(|s| match &s["Action"] {
                Value::Array(actions) => actions.clone(),
                one => vec![one.clone()],
            })
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    let on_users = stack_grants(":user/*");
    // Revocation, sessions (four each), console passwords the leaked key set (two) and
    // quarantine (iam:AttachUserPolicy, whose condition on the policy ARN tests/deploy.rs
    // checks).
    assert_eq!(on_users.len(), 11, "{on_users:?}");
    let mut as_the_emulator_reads_them = vec![
        json!({"Effect": "Allow", "Action": on_users, "Resource": "*"}),
        json!({"Effect": "Allow", "Action": "sqs:GetQueueUrl", "Resource": "*"}),
    ];
    as_the_emulator_reads_them.extend(batches);
    put_user_policy(
        &clients,
        "deploy-test-worker",
        Value::Array(as_the_emulator_reads_them),
    )
    .await;
    assert!(stack_grants("-dlq").contains(&"sqs:GetQueueUrl".to_owned()));
    let (user, key) = ("deploy-test-enforced", leaked("deploy-test-enforced").await);
    let protected = leaked("break-glass-deploy-test").await;
    emulator.enforce(true);
    let admin_clients = self::clients(&url, (&admin.0, &admin.1)).await;
    let as_worker = self::clients(&url, (&worker_credentials.0, &worker_credentials.1)).await;
    let dead_letter = env["IAM_KEY_REVOKER__SQS__QUEUE_URL"].clone() + "-dlq";
    let refused = as_worker
        .sqs
        .receive_message()
        .queue_url(&dead_letter)
        .send()
        .await
        .expect_err("the worker may not receive from its dead-letter queue");
    assert!(
        format!("{refused:?}").contains("AccessDenied"),
        "{refused:?}"
    );

    let results = &env["IAM_KEY_REVOKER__RESULTS__QUEUE_URL"];
    let published_before = common::queue_depth(&admin_clients.sqs, results).await.0;
    let log = state.join("worker-enforced.log");
    // Without the breaker here: the emulator takes a condition it cannot resolve
    // (`dynamodb:LeadingKeys`) for an explicit deny of every DynamoDB request, where IAM
    // separates the worker's items from the operators' by it (tests/deploy.rs evaluates
    // those statements with IAM's logic; the unenforced run above counted every job in
    // the stack's table).
    let mut env_enforced = pod.env.clone();
    assert!(env_enforced
        .remove("IAM_KEY_REVOKER__BREAKER__TABLE_NAME")
        .is_some_and(|t| t == "iam-key-revoker-breaker"));
    let enforced = Pod {
        config: pod.config.clone(),
        env: env_enforced,
    };
    let worker = enforced.start(&url, (&worker_credentials.0, &worker_credentials.1), &log);
    let port = metrics_port(&log).await;
    let metrics = || {
        http_get(port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    // The depth gauge of both dead-letter queues: what IamKeyRevokerDeadLetterQueueNotEmpty
    // reads.
    common::eventually(
        "the dead-letter queues' depth is read",
        Duration::from_secs(30),
        || {
            let text = metrics();
            ["dead_letter", "priority_dead_letter"].iter().all(|q| {
                text.contains(&format!(
                    "iam_key_revoker_queue_messages{{queue=\"{q}\",state=\"visible\"}}"
                ))
            })
        },
    )
    .await;
    let jobs = &env["IAM_KEY_REVOKER__SQS__QUEUE_URL"];
    for (id, user, key) in [
        ("deploy-enforced-1", user, key.as_str()),
        (
            "deploy-enforced-2",
            "break-glass-deploy-test",
            protected.as_str(),
        ),
    ] {
        let job = json!({"request_id": id, "user_name": user, "access_key_id": key});
        common::send(&admin_clients.sqs, jobs, &job.to_string()).await;
    }
    // The protected user's job is refused and copied to the dead-letter queue.
    common::eventually_async(
        "the protected user's job dead-lettered",
        Duration::from_secs(60),
        || async {
            common::queue_depth(&admin_clients.sqs, &dead_letter)
                .await
                .0
                == 1
        },
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while common::queue_depth(&admin_clients.sqs, results).await.0 != published_before + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both outcome events published; the worker said: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(worker);

    emulator.enforce(false);
    let lines = std::fs::read_to_string(&log).unwrap();
    let outcomes: BTreeMap<String, String> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "Job finished")
        .map(|l| {
            (
                l["request_id"].as_str().unwrap().to_owned(),
                format!(
                    "{}/{}",
                    l["outcome"].as_str().unwrap(),
                    l["reason"].as_str().unwrap()
                ),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        BTreeMap::from([
            ("deploy-enforced-1".to_owned(), "deleted/none".to_owned()),
            (
                "deploy-enforced-2".to_owned(),
                "rejected/protected".to_owned()
            ),
        ]),
        "{lines}"
    );
    assert!(!lines.contains("AccessDenied"), "{lines}");

    // The teardown, part by part in the book's order, each in its account, twice: the second
    // finds nothing left and fails nowhere.
    std::fs::remove_file(state.join("applied")).unwrap();
    // This test's own user holds the stack's policies: it lets them go first, as anyone
    // who attached them by hand must (CloudFormation deletes a managed policy only when
    // nothing else holds it).
    for policy in ["iam-key-revoker-worker", "iam-key-revoker-worker-results"] {
        clients
            .iam
            .detach_user_policy()
            .user_name("deploy-test-worker")
            .policy_arn(format!("arn:aws:iam::{ACCOUNT}:policy/{policy}"))
            .send()
            .await
            .unwrap();
    }
    // The emulator deletes a stack's managed policy without detaching it from the roles
    // its `Roles` names, which CloudFormation does, and then cannot delete those roles:
    // the stack's own attachments are let go here in its stead.
    for role in ["iam-key-revoker-worker", "iam-key-revoker-keda-scaler"] {
        let attached = clients
            .iam
            .list_attached_role_policies()
            .role_name(role)
            .send()
            .await
            .unwrap();
        for policy in attached.attached_policies() {
            clients
                .iam
                .detach_role_policy()
                .role_name(role)
                .policy_arn(policy.policy_arn().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    let mut said = [String::new(), String::new()];
    for run in 1..=2 {
        for part in ["cluster", "guardduty", "management", "stacksets", "worker"] {
            let (output, ok) = deploy
                .run(
                    &format!("deploy/scripts/90-teardown.sh {part}"),
                    &format!("teardown{run}-{part}"),
                    &mut None,
                    &mut None,
                )
                .await;
            assert!(ok, "teardown {run}, {part}: {output}");
            said[run - 1].push_str(&output);
        }
    }
    assert!(
        state.join("deleted").exists(),
        "the cluster's part deletes the manifests"
    );
    for gone in [
        "Stack iam-key-revoker-guardduty-forwarding in eu-central-1: deleted",
        "StackSet iam-key-revoker-member-role: deleted",
        "StackSet iam-key-revoker-health-forwarding: deleted",
        "Repository iam-key-revoker: deleted",
        "Stack iam-key-revoker in eu-west-1: deleted",
        "secops-analyst: iam-key-revoker-plan taken off",
        "secops-lead: iam-key-revoker-breaker-operator taken off",
    ] {
        assert!(
            said[0].contains(gone),
            "the teardown said {gone}: {}",
            said[0]
        );
    }
    for none in [
        "Stack iam-key-revoker-guardduty-forwarding in eu-central-1: none",
        "StackSet iam-key-revoker-member-role: none",
        "Repository iam-key-revoker: none",
        "Stack iam-key-revoker in eu-west-1: none",
    ] {
        assert!(
            said[1].contains(none),
            "the second teardown said {none}: {}",
            said[1]
        );
    }
    let stacks = aws(&url, TESTING, &["cloudformation", "list-stacks"]);
    let live: Vec<&Value> = stacks["StackSummaries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["StackStatus"] != "DELETE_COMPLETE")
        .collect();
    assert!(live.is_empty(), "{live:?}");
    let sets = aws(&url, TESTING, &["cloudformation", "list-stack-sets"]);
    assert!(
        sets["Summaries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["Status"] == "DELETED"),
        "{sets}"
    );
    assert!(!work.join("deploy/kubernetes/stack.env").exists());
}

/// A user with an access key and, when given, these managed policies (and nothing else).
async fn credentials_for(
    clients: &Clients,
    user: &str,
    policies: Option<&[String]>,
) -> (String, String) {
    clients
        .iam
        .create_user()
        .user_name(user)
        .send()
        .await
        .unwrap();
    for arn in policies.unwrap_or_default() {
        clients
            .iam
            .attach_user_policy()
            .user_name(user)
            .policy_arn(arn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{arn}: {e:?}"));
    }
    let key = clients
        .iam
        .create_access_key()
        .user_name(user)
        .send()
        .await
        .unwrap();
    let key = key.access_key().unwrap();
    (
        key.access_key_id().to_owned(),
        key.secret_access_key().to_owned(),
    )
}

async fn put_user_policy(clients: &Clients, user: &str, statements: Value) {
    clients
        .iam
        .put_user_policy()
        .user_name(user)
        .policy_name("test")
        .policy_document(json!({"Version": "2012-10-17", "Statement": statements}).to_string())
        .send()
        .await
        .unwrap();
}
