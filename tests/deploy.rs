//! The deployment files agree with the code: the IAM policies grant exactly the actions
//! the code calls, and the Kubernetes manifests, the Prometheus scrape configuration and
//! the Dockerfile name the ports, paths and configuration keys the worker really uses.

use std::collections::BTreeSet;

use iam_key_revoker::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `.rs` file under `dir`, folders included.
fn source_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(source_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Every AWS operation the source calls: each goes through `call(.., "<service>", "<Op>", ..)`
/// or maps its error with `AwsError::from_sdk("<Op>", ..)`.
fn operations_in_code() -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for path in source_files(std::path::Path::new(&format!("{ROOT}/src"))) {
        let text = std::fs::read_to_string(path).unwrap();
        let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for marker in ["from_sdk(\"", "\"iam\", \"", "\"sqs\", \"", "\"sts\", \""] {
            for (at, _) in text.match_indices(marker) {
                let rest = &text[at + marker.len()..];
                let op: String = rest
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .collect();
                if rest[op.len()..].starts_with('"')
                    && op.starts_with(|c: char| c.is_ascii_uppercase())
                {
                    ops.insert(op);
                }
            }
        }
    }
    ops
}

/// The IAM permission an operation needs; `None` for those that need none.
fn permission(op: &str) -> Option<&'static str> {
    Some(match op {
        "DeleteAccessKey" => "iam:DeleteAccessKey",
        "UpdateAccessKey" => "iam:UpdateAccessKey",
        "ListAccessKeys" => "iam:ListAccessKeys",
        "GetAccessKeyLastUsed" => "iam:GetAccessKeyLastUsed",
        "PutUserPolicy" => "iam:PutUserPolicy",
        "GetUserPolicy" => "iam:GetUserPolicy",
        "ReceiveMessage" => "sqs:ReceiveMessage",
        "DeleteMessage" | "DeleteMessageBatch" => "sqs:DeleteMessage",
        "ChangeMessageVisibility" => "sqs:ChangeMessageVisibility",
        "SendMessage" | "SendMessageBatch" => "sqs:SendMessage",
        "GetQueueAttributes" => "sqs:GetQueueAttributes",
        "GetQueueUrl" => "sqs:GetQueueUrl",
        "AssumeRole" => "sts:AssumeRole",
        // sts:GetCallerIdentity is always allowed; no policy can deny it.
        "GetCallerIdentity" => return None,
        other => {
            panic!("the code calls {other}: add the permission it needs here and to deploy/aws/")
        }
    })
}

fn policy_actions(path: &str) -> BTreeSet<String> {
    let policy: serde_json::Value = serde_json::from_str(&read(path)).expect("policy is JSON");
    let mut actions = BTreeSet::new();
    for statement in policy["Statement"].as_array().expect("statements") {
        assert_eq!(
            statement["Effect"], "Allow",
            "{path}: only Allow statements"
        );
        match &statement["Action"] {
            serde_json::Value::String(a) => {
                actions.insert(a.clone());
            }
            serde_json::Value::Array(list) => {
                actions.extend(list.iter().map(|a| a.as_str().unwrap().to_owned()));
            }
            other => panic!("{path}: unexpected Action {other}"),
        }
        assert!(
            !statement["Resource"].is_null(),
            "{path}: every statement names its resources"
        );
    }
    for action in &actions {
        assert!(
            !action.contains('*'),
            "{path}: no wildcard actions ({action})"
        );
    }
    actions
}

#[test]
fn the_worker_policy_grants_every_action_the_code_calls_and_nothing_else() {
    let ops = operations_in_code();
    for op in [
        "DeleteAccessKey",
        "ReceiveMessage",
        "DeleteMessageBatch",
        "AssumeRole",
        "GetQueueUrl",
    ] {
        assert!(ops.contains(op), "the scan finds {op}: {ops:?}");
    }
    let needed: BTreeSet<String> = ops
        .iter()
        .filter_map(|op| permission(op))
        .map(str::to_owned)
        .collect();
    assert_eq!(policy_actions("deploy/aws/worker-policy.json"), needed);
}

#[test]
fn member_accounts_grant_the_iam_actions_and_trust_only_the_worker() {
    let iam_needed: BTreeSet<String> = operations_in_code()
        .iter()
        .filter_map(|op| permission(op))
        .filter(|p| p.starts_with("iam:"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        policy_actions("deploy/aws/member-role-permissions.json"),
        iam_needed
    );

    let trust: serde_json::Value =
        serde_json::from_str(&read("deploy/aws/member-role-trust-policy.json")).unwrap();
    let statement = &trust["Statement"][0];
    assert_eq!(statement["Action"], "sts:AssumeRole");
    assert!(
        statement["Principal"]["AWS"]
            .as_str()
            .unwrap()
            .contains(":role/"),
        "a role, not a whole account"
    );
    assert!(!statement["Condition"]["StringEquals"]["sts:ExternalId"].is_null());

    // The worker may assume exactly the role name member accounts create.
    let worker: serde_json::Value =
        serde_json::from_str(&read("deploy/aws/worker-policy.json")).unwrap();
    let assume = worker["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"] == "sts:AssumeRole")
        .unwrap();
    let config = configmap_config();
    let role = config.cross_account.role_name.expect("role configured");
    assert_eq!(assume["Resource"], format!("arn:aws:iam::*:role/{role}"));
}

/// README "Revoking sessions": `iam:PutUserPolicy` can write any inline policy, so it
/// stands in a statement of its own that an operator can leave out.
#[test]
fn the_session_policy_permissions_stand_in_their_own_statement() {
    for path in [
        "deploy/aws/worker-policy.json",
        "deploy/aws/member-role-permissions.json",
    ] {
        let policy: serde_json::Value = serde_json::from_str(&read(path)).unwrap();
        let statements = policy["Statement"].as_array().unwrap();
        let own: Vec<&serde_json::Value> = statements
            .iter()
            .filter(|s| s["Action"].to_string().contains("iam:PutUserPolicy"))
            .collect();
        assert_eq!(own.len(), 1, "{path}");
        let mut actions: Vec<&str> = own[0]["Action"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        actions.sort_unstable();
        assert_eq!(
            actions,
            ["iam:GetUserPolicy", "iam:PutUserPolicy"],
            "{path}"
        );
        assert!(own[0]["Resource"].as_str().unwrap().ends_with(":user/*"));
    }
}

/// Whether `event` matches an EventBridge event pattern: every field the pattern names
/// must match one of its values (exact strings, or `{"numeric": [">=", n]}`), nested
/// objects field by field (EventBridge User Guide, "Creating event patterns").
fn matches_pattern(pattern: &serde_json::Value, event: &serde_json::Value) -> bool {
    pattern.as_object().unwrap().iter().all(|(field, want)| {
        let got = &event[field];
        match want {
            serde_json::Value::Object(_) => matches_pattern(want, got),
            serde_json::Value::Array(options) => options.iter().any(|option| match option {
                serde_json::Value::String(text) => got.as_str() == Some(text),
                serde_json::Value::Object(rule) => {
                    let numeric = rule["numeric"].as_array().unwrap();
                    assert_eq!(numeric[0], ">=", "the only comparison used");
                    got.as_f64()
                        .is_some_and(|n| n >= numeric[1].as_f64().unwrap())
                }
                other => panic!("unexpected pattern value {other}"),
            }),
            other => panic!("unexpected pattern {other}"),
        }
    })
}

/// README "Security events": the shipped rules catch the events the worker takes, as
/// AWS's documentation shows them, and the queue policy lets exactly those rules send.
#[test]
fn the_eventbridge_rules_match_the_documented_events_and_the_worker_agrees() {
    let rules: serde_json::Value =
        serde_json::from_str(&read("deploy/aws/eventbridge-rules.json")).unwrap();
    let health = &rules["iam-key-revoker-health-credentials"]["EventPattern"];
    let guardduty = &rules["iam-key-revoker-guardduty-access-keys"]["EventPattern"];
    let health_event = serde_json::json!({
        "version": "0", "id": "121345678-1234-1234-1234-123456789012",
        "detail-type": "AWS Health Event", "source": "aws.health", "account": "123456789012",
        "time": "2016-06-05T06:27:57Z", "region": "us-east-1", "resources": [],
        "detail": {
            "eventArn": "arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/AWS_RISK_CREDENTIALS_EXPOSED_ABC123",
            "service": "RISK", "eventTypeCode": "AWS_RISK_CREDENTIALS_EXPOSED",
            "eventTypeCategory": "issue", "startTime": "Sat, 05 Jun 2016 15:10:09 GMT",
            "eventDescription": [{"language": "en_US", "latestDescription": "A description of the event will be provided here"}],
            "affectedEntities": [{"entityValue": "AKIAIOSFODNN7EXAMPLE"}]
        }
    });
    let finding = |severity: f64, user_type: &str| {
        serde_json::json!({
            "version": "0", "id": "c8c4daa7-a20c-2f03-0070-b7393dd542ad",
            "detail-type": "GuardDuty Finding", "source": "aws.guardduty", "account": "123456789012",
            "time": "2019-03-04T08:55:11Z", "region": "us-east-1", "resources": [],
            "detail": {
                "schemaVersion": "2.0", "accountId": "123456789012", "region": "us-east-1",
                "partition": "aws", "id": "16afba5c5c43e07c9e3e5e2e544e95df",
                "type": "UnauthorizedAccess:IAMUser/MaliciousIPCaller",
                "resource": {"resourceType": "AccessKey", "accessKeyDetails": {
                    "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "principalId": "AIDACKCEVSQ6C2EXAMPLE",
                    "userType": user_type, "userName": "some_user"}},
                "severity": severity, "title": "API was invoked from a known malicious IP address."
            }
        })
    };
    assert!(matches_pattern(health, &health_event));
    assert!(matches_pattern(guardduty, &finding(8.0, "IAMUser")));
    assert!(matches_pattern(guardduty, &finding(7.0, "IAMUser")));
    assert!(!matches_pattern(guardduty, &finding(5.0, "IAMUser")));
    assert!(!matches_pattern(guardduty, &finding(8.0, "Root")));
    assert!(!matches_pattern(health, &finding(8.0, "IAMUser")));
    let mut other = health_event.clone();
    other["detail"]["eventTypeCode"] = "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED".into();
    assert!(!matches_pattern(health, &other));

    // The rules and the worker's defaults say the same.
    let intake = iam_key_revoker::intake::IntakeRules::default();
    let types: Vec<String> = health["detail"]["eventTypeCode"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, intake.health_event_types);
    assert_eq!(
        guardduty["detail"]["severity"][0]["numeric"][1].as_f64(),
        Some(intake.guardduty_min_severity)
    );
    // What the rules let through, the worker takes.
    for event in [health_event, finding(8.0, "IAMUser")] {
        assert!(matches!(
            iam_key_revoker::intake::read(&event.to_string(), &intake),
            Ok(iam_key_revoker::intake::Intake::Job(_))
        ));
    }

    // The queue policy lets EventBridge send to the priority queue, for these rules only.
    let policy: serde_json::Value =
        serde_json::from_str(&read("deploy/aws/priority-queue-policy.json")).unwrap();
    let statement = &policy["Statement"][0];
    assert_eq!(statement["Principal"]["Service"], "events.amazonaws.com");
    assert_eq!(statement["Action"], "sqs:SendMessage");
    let sources: Vec<&str> = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for (name, rule) in rules.as_object().unwrap() {
        if name.starts_with('_') {
            continue;
        }
        assert!(
            sources
                .iter()
                .any(|s| s.ends_with(&format!(":rule/{name}"))),
            "{name}"
        );
        assert_eq!(rule["Target"], statement["Resource"], "{name}");
    }
}

#[test]
fn producers_may_only_send() {
    let actions = policy_actions("deploy/aws/producer-policy.json");
    assert_eq!(actions, BTreeSet::from(["sqs:SendMessage".to_owned()]));
}

fn docs(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is YAML: {e}"))
}

fn kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("a {kind}"))
}

/// The worker configuration inside the ConfigMap, loaded and validated like any config.
fn configmap_config() -> Config {
    let docs = docs("deploy/kubernetes/configmap.yaml");
    let text = kind(&docs, "ConfigMap")["data"]["worker.toml"]
        .as_str()
        .expect("worker.toml");
    Config::from_toml(text).expect("the ConfigMap holds a valid worker configuration")
}

#[test]
fn the_kubernetes_manifests_match_the_worker() {
    let config = configmap_config();
    let port: i64 = config
        .metrics
        .listen
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let deployment_docs = docs("deploy/kubernetes/deployment.yaml");
    let deployment = kind(&deployment_docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // Ports and probe paths are the ones the listener serves.
    let metrics_port = &container["ports"][0];
    assert_eq!(metrics_port["containerPort"].as_i64(), Some(port));
    let port_name = metrics_port["name"].as_str().unwrap();
    let server = read("src/server.rs");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"].as_str(), Some(path));
        assert_eq!(
            container[probe]["httpGet"]["port"].as_str(),
            Some(port_name)
        );
        assert!(
            server.contains(&format!(".route(\"{path}\"")),
            "the listener serves {path}"
        );
    }

    // Shutdown: the kubelet waits longer than the worker's own grace period.
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        grace > config.worker.shutdown_grace_seconds as i64 + 5,
        "{grace}"
    );

    // Locked down, and the same non-root user as the image.
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    let uid = pod["securityContext"]["runAsUser"].as_i64().unwrap();
    assert!(
        read("Dockerfile").contains(&format!("USER {uid}:")),
        "the image runs as {uid}"
    );
    assert!(container["resources"]["requests"]["memory"]
        .as_str()
        .is_some());
    assert!(container["resources"]["limits"]["memory"]
        .as_str()
        .is_some());

    // The config file is the ConfigMap's key, where the volume mounts it.
    let args: Vec<&str> = container["args"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(args, ["run", "--config", &format!("{mount}/worker.toml")]);

    // The identity: IRSA on the service account the pods use.
    let sa_docs = docs("deploy/kubernetes/serviceaccount.yaml");
    let sa = kind(&sa_docs, "ServiceAccount");
    assert_eq!(
        pod["serviceAccountName"].as_str(),
        sa["metadata"]["name"].as_str()
    );
    assert!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        .as_str()
        .unwrap()
        .contains(":role/"));

    // KEDA scales this Deployment on this queue.
    let keda_docs = docs("deploy/kubernetes/keda-scaledobject.yaml");
    let scaled = kind(&keda_docs, "ScaledObject");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"].as_str(), Some("aws-sqs-queue"));
    assert_eq!(
        trigger["metadata"]["queueURL"].as_str(),
        Some(config.sqs.queue_url.as_str())
    );
    assert!(
        kind(&keda_docs, "TriggerAuthentication")["metadata"]["name"]
            == trigger["authenticationRef"]["name"]
    );

    // Prometheus scrapes these pods on that port and path.
    let scrape_docs = docs("deploy/prometheus/scrape-config.yml");
    let job = &scrape_docs[0]["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    assert!(server.contains(".route(\"/metrics\""));
    let relabels = job["relabel_configs"].as_vec().unwrap();
    let keeps = |label: &str| {
        relabels
            .iter()
            .find(|r| r["source_labels"][0].as_str() == Some(label))
            .and_then(|r| r["regex"].as_str())
            .unwrap_or_else(|| panic!("relabel on {label}"))
            .to_owned()
    };
    assert_eq!(
        keeps("__meta_kubernetes_pod_container_port_name"),
        port_name
    );
    assert_eq!(
        keeps("__meta_kubernetes_pod_label_app_kubernetes_io_name"),
        pod_label(deployment)
    );
    assert_eq!(scrape_docs[0]["rule_files"][0].as_str(), Some("alerts.yml"));

    // The image exposes the default port.
    assert!(read("Dockerfile").contains(&format!("EXPOSE {port}")));
    assert_eq!(Config::default().metrics.listen, format!("0.0.0.0:{port}"));
}

fn pod_label(deployment: &Yaml) -> String {
    deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_image_is_built_and_run_as_deploying_says() {
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert_eq!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")),
        2,
        "multi-stage"
    );
    assert!(dockerfile.contains("COPY config/ /etc/iam-key-revoker/"));
    assert!(
        dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/iam-key-revoker\"]"),
        "exec form: SIGTERM reaches the worker"
    );
    let ignore = read(".dockerignore");
    for entry in ["target/", ".env", "*.pem", ".venv/"] {
        assert!(
            ignore.lines().any(|l| l == entry),
            ".dockerignore keeps {entry} out"
        );
    }
}
