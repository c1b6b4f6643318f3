//! The deployment files agree with the code: the worker stack's IAM policies grant exactly
//! the actions the code calls on exactly the resources it addresses, its outputs are the
//! worker's configuration, and the Kubernetes manifests (as kustomize renders them), the
//! Prometheus scrape configuration and the Dockerfile name the ports, paths and
//! configuration keys the worker really uses. tests/deploy_stack.rs deploys them.

#[path = "common/cfn.rs"]
mod cfn;

use std::collections::{BTreeMap, BTreeSet};

use cfn::{of_kind, rendered_manifests, Stack};
use iam_key_revoker::aws::sqs::Lane;
use iam_key_revoker::breaker::table;
use iam_key_revoker::config::{Config, Settings};
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

/// Every AWS operation the source calls: each goes through `call(.., "<service>", "<Op>", ..)`,
/// IAM's `request("<Op>", ..)` or `pages("<Op>", ..)`, or maps its error with `AwsError::from_sdk("<Op>", ..)`.
fn operations_in_code() -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for path in source_files(std::path::Path::new(&format!("{ROOT}/src"))) {
        let text = std::fs::read_to_string(path).unwrap();
        let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for marker in [
            "from_sdk(\"",
            "request(\"",
            "pages( \"",
            "\"iam\", \"",
            "\"sqs\", \"",
            "\"sts\", \"",
        ] {
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

/// What only `restore` calls, with a person's credentials (docs, "Staged revocation"):
/// the restore operators' policy grants it, never the worker's.
const RESTORE_ONLY: &[&str] = &["iam:ListAttachedUserPolicies", "iam:DetachUserPolicy"];

/// What only the breaker's operators call (`held` lists the table): their policy grants
/// it, never the worker's.
const BREAKER_OPERATORS_ONLY: &[&str] = &["dynamodb:Scan"];

/// What only a role's session cut-off calls (docs, "Role sessions"): a policy of its own,
/// which the stacks attach only when RevokeRoleSessions is true.
const ROLE_SESSIONS_ONLY: &[&str] = &[
    "iam:GetRole",
    "iam:ListRolePolicies",
    "iam:GetRolePolicy",
    "iam:PutRolePolicy",
    "iam:DeleteRolePolicy",
];

/// What the worker calls in its own account only: checking the quarantine policy exists
/// (AWS's managed policies are the same in every account), and signing its own messages.
const OWN_ACCOUNT_ONLY: &[&str] = &["iam:GetPolicy", "sts:GetAccessKeyInfo"];

/// The IAM permission an operation needs; `None` for those that need none.
fn permission(op: &str) -> Option<&'static str> {
    Some(match op {
        "DeleteAccessKey" => "iam:DeleteAccessKey",
        "UpdateAccessKey" => "iam:UpdateAccessKey",
        "ListAccessKeys" => "iam:ListAccessKeys",
        "GetAccessKeyLastUsed" => "iam:GetAccessKeyLastUsed",
        "PutUserPolicy" => "iam:PutUserPolicy",
        "GetUserPolicy" => "iam:GetUserPolicy",
        "ListUserPolicies" => "iam:ListUserPolicies",
        "DeleteUserPolicy" => "iam:DeleteUserPolicy",
        "GetLoginProfile" => "iam:GetLoginProfile",
        "DeleteLoginProfile" => "iam:DeleteLoginProfile",
        "GetRole" => "iam:GetRole",
        "ListRolePolicies" => "iam:ListRolePolicies",
        "GetRolePolicy" => "iam:GetRolePolicy",
        "PutRolePolicy" => "iam:PutRolePolicy",
        "DeleteRolePolicy" => "iam:DeleteRolePolicy",
        "AttachUserPolicy" => "iam:AttachUserPolicy",
        "GetPolicy" => "iam:GetPolicy",
        "ListAttachedUserPolicies" => "iam:ListAttachedUserPolicies",
        "DetachUserPolicy" => "iam:DetachUserPolicy",
        "BatchUpdateFindings" => "securityhub:BatchUpdateFindings",
        "GetFindings" => "securityhub:GetFindings",
        "GetAccessKeyInfo" => "sts:GetAccessKeyInfo",
        "GenerateMac" => "kms:GenerateMac",
        "VerifyMac" => "kms:VerifyMac",
        // Neither supports resource-level permissions: the statement names "*".
        "LookupEvents" => "cloudtrail:LookupEvents",
        "ListRegions" => "account:ListRegions",
        "ReceiveMessage" => "sqs:ReceiveMessage",
        "DeleteMessage" | "DeleteMessageBatch" => "sqs:DeleteMessage",
        "ChangeMessageVisibility" => "sqs:ChangeMessageVisibility",
        "SendMessage" | "SendMessageBatch" => "sqs:SendMessage",
        "GetQueueAttributes" => "sqs:GetQueueAttributes",
        "GetQueueUrl" => "sqs:GetQueueUrl",
        "AssumeRole" => "sts:AssumeRole",
        // SNS authorizes PublishBatch as sns:Publish.
        "PublishBatch" => "sns:Publish",
        "PutEvents" => "events:PutEvents",
        "CreateSchedule" => "scheduler:CreateSchedule",
        "GetSchedule" => "scheduler:GetSchedule",
        "UpdateSchedule" => "scheduler:UpdateSchedule",
        "GetScheduleGroup" => "scheduler:GetScheduleGroup",
        // The breaker's table; a transaction is authorized item by item as the action
        // each of its parts is ("Using IAM with DynamoDB transactions", DynamoDB
        // Developer Guide): the worker's updates its counts (its ConditionCheck is added
        // below), the operators' puts an approval and updates a hold.
        "GetItem" => "dynamodb:GetItem",
        "PutItem" => "dynamodb:PutItem",
        "UpdateItem" | "TransactWriteItems" => "dynamodb:UpdateItem",
        "Scan" => "dynamodb:Scan",
        // sts:GetCallerIdentity is always allowed; no policy can deny it.
        "GetCallerIdentity" => return None,
        other => {
            panic!("the code calls {other}: add the permission it needs here and to deploy/aws/")
        }
    })
}

fn policy_actions(path: &str) -> BTreeSet<String> {
    let policy: serde_json::Value = serde_json::from_str(&read(path)).expect("policy is JSON");
    actions_of(&policy, path)
}

/// The actions of a policy document's Allow statements (every statement names its
/// resources, no action is a wildcard, and a Deny only ever takes writes away).
fn actions_of(policy: &serde_json::Value, name: &str) -> BTreeSet<String> {
    let mut actions = BTreeSet::new();
    for statement in policy["Statement"].as_array().expect("statements") {
        if statement["Effect"] == "Deny" {
            assert!(
                statement["Sid"].as_str().unwrap_or("").starts_with("Never"),
                "{name}: a Deny says what it never lets happen"
            );
            continue;
        }
        assert_eq!(statement["Effect"], "Allow", "{name}: Allow or Deny");
        actions.extend(strings(&statement["Action"]));
        assert!(
            !statement["Resource"].is_null(),
            "{name}: every statement names its resources"
        );
    }
    for action in &actions {
        assert!(
            !action.contains('*'),
            "{name}: no wildcard actions ({action})"
        );
    }
    actions
}

/// The worker role's policies in the worker stack, resolved.
fn worker_policies(stack: &Stack) -> Vec<serde_json::Value> {
    let role = stack.resolve(&serde_json::json!({"Ref": "WorkerRole"}));
    let mut policies = Vec::new();
    for id in stack.of_type("AWS::IAM::ManagedPolicy") {
        if !stack.creates(&id) {
            continue;
        }
        let properties = stack.properties(&id);
        if properties["Roles"]
            .as_array()
            .unwrap_or(&vec![])
            .contains(&role)
        {
            policies.push(properties["PolicyDocument"].clone());
        }
    }
    assert!(
        stack.resource("WorkerRole")["Properties"]["Policies"].is_null(),
        "the worker's permissions are managed policies of their own"
    );
    policies
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
    let mut needed: BTreeSet<String> = ops
        .iter()
        .filter_map(|op| permission(op))
        .filter(|p| !RESTORE_ONLY.contains(p) && !BREAKER_OPERATORS_ONLY.contains(p))
        .map(str::to_owned)
        .collect();
    // A schedule names the role EventBridge Scheduler sends with: creating or updating one
    // passes it (EventBridge Scheduler User Guide, "Setting up the execution role").
    if ops.contains("CreateSchedule") {
        needed.insert("iam:PassRole".to_owned());
    }
    // The breaker's take checks its queue's pause in the same transaction.
    if ops.contains("TransactWriteItems") {
        needed.insert("dynamodb:ConditionCheckItem".to_owned());
    }
    let granted = |stack: &Stack| -> BTreeSet<String> {
        worker_policies(stack)
            .iter()
            .flat_map(|p| actions_of(p, "the worker's policies"))
            .collect()
    };
    let with_roles = worker_stack_with(&[("RevokeRoleSessions", "true")]);
    assert_eq!(granted(&with_roles), needed);
    // A role's cut-off is switched on, or the worker holds no right on roles at all.
    let stack = Stack::worker();
    let without: BTreeSet<String> = needed
        .iter()
        .filter(|a| !ROLE_SESSIONS_ONLY.contains(&a.as_str()))
        .cloned()
        .collect();
    assert_eq!(granted(&stack), without);
    // What only restore calls is the restore operators' to hold.
    let restore = stack.properties("RestoreOperatorPolicy")["PolicyDocument"].clone();
    let operators = actions_of(&restore, "the restore operators' policy");
    for action in RESTORE_ONLY {
        assert!(operators.contains(*action), "{action}");
    }
    assert!(
        !operators.contains("iam:PutUserPolicy"),
        "lifting a revocation's cut-off deletes its policy: no right to write one"
    );
}

#[test]
fn member_accounts_grant_the_iam_actions_and_trust_only_the_worker() {
    let iam_needed: BTreeSet<String> = operations_in_code()
        .iter()
        .filter_map(|op| permission(op))
        // What the worker does in a member account: IAM, closing the findings there and
        // reading its keys' CloudTrail history.
        .filter(|p| {
            ["iam:", "securityhub:", "cloudtrail:", "account:"]
                .iter()
                .any(|service| p.starts_with(service))
        })
        .filter(|p| !RESTORE_ONLY.contains(p) && !OWN_ACCOUNT_ONLY.contains(p))
        .map(str::to_owned)
        .collect();
    let (sessions, rest): (BTreeSet<String>, BTreeSet<String>) = iam_needed
        .into_iter()
        .partition(|p| ROLE_SESSIONS_ONLY.contains(&p.as_str()));
    assert_eq!(
        policy_actions("deploy/aws/member-role-permissions.json"),
        rest
    );
    assert_eq!(
        policy_actions("deploy/aws/member-role-sessions-permissions.json"),
        sessions,
        "a role's cut-off, a policy of its own"
    );

    let trust: serde_json::Value =
        serde_json::from_str(&read("deploy/aws/member-role-trust-policy.json")).unwrap();
    let statement = &trust["Statement"][0];
    assert_eq!(statement["Action"], "sts:AssumeRole");
    assert_eq!(
        statement["Principal"]["AWS"],
        "arn:PARTITION:iam::WORKER_ACCOUNT_ID:role/iam-key-revoker-worker",
        "exactly the worker's role, not a whole account"
    );
    // One model: the organization is the control; an external id in a ConfigMap is no
    // secret, and the shipped configuration sets none.
    assert_eq!(
        statement["Condition"]["StringEquals"]["aws:PrincipalOrgID"],
        "ORGANIZATION_ID"
    );
    assert!(!trust.to_string().contains("sts:ExternalId"));
    let config = configmap_config();
    assert_eq!(config.cross_account.external_id, None);

    // The worker may assume exactly the role name member accounts create, and only in
    // accounts of its organization, whatever account a job names.
    let stack = Stack::worker();
    let policies = worker_policies(&stack);
    let assume = policies
        .iter()
        .flat_map(|p| p["Statement"].as_array().unwrap())
        .find(|s| s["Action"] == "sts:AssumeRole")
        .unwrap();
    let role = config
        .cross_account
        .role_name
        .clone()
        .expect("role configured");
    assert_eq!(
        assume["Resource"],
        format!("arn:aws:iam::*:role/{role}"),
        "any account's role of that name ..."
    );
    assert_eq!(
        assume["Condition"]["StringEquals"]["aws:ResourceOrgID"], "o-exampleorgid",
        "... inside the organization"
    );
    let member: serde_json::Value =
        serde_json::from_str(&read("deploy/aws/member-role.cfn.json")).unwrap();
    assert_eq!(
        stack.template["Parameters"]["MemberRoleName"]["Default"],
        member["Parameters"]["RoleName"]["Default"]
    );
    assert_eq!(
        member["Parameters"]["WorkerRoleName"]["Default"],
        stack.properties("WorkerRole")["RoleName"]
    );
}

/// The worker and the member roles may attach one managed policy to users: the
/// quarantine policy the worker is configured with, AWS's newest by default.
#[test]
fn users_may_be_given_the_quarantine_policy_and_no_other() {
    let default = iam_key_revoker::config::QUARANTINE_POLICY_ARN;
    let stack = Stack::worker();
    let member = Stack::load(
        "deploy/aws/member-role.cfn.json",
        &[
            ("WorkerAccountId", "111122223333"),
            ("OrganizationId", "o-exampleorgid"),
        ],
    );
    let member_policy = member.properties("RevokerRole")["Policies"][0]["PolicyDocument"].clone();
    let file = filled("deploy/aws/member-role-permissions.json");
    for (name, policies) in [
        ("worker", worker_policies(&stack)),
        ("member role", vec![member_policy]),
        ("member role file", vec![file]),
    ] {
        let attach: Vec<&serde_json::Value> = policies
            .iter()
            .flat_map(|p| p["Statement"].as_array().unwrap())
            .filter(|s| {
                strings(&s["Action"])
                    .iter()
                    .any(|a| a == "iam:AttachUserPolicy")
            })
            .collect();
        assert_eq!(attach.len(), 1, "{name}: one statement allows it");
        assert_eq!(
            strings(&attach[0]["Action"]),
            vec!["iam:AttachUserPolicy"],
            "{name}: in a statement of its own"
        );
        assert_eq!(
            attach[0]["Condition"],
            serde_json::json!({"ArnEquals": {"iam:PolicyARN": default}}),
            "{name}: only the quarantine policy"
        );
    }
    // The restore operators may detach that one policy and no other.
    let restore = stack.properties("RestoreOperatorPolicy")["PolicyDocument"].clone();
    assert_detaches_only(&restore, default);
    // Left empty, the parameter means AWS's policy in the stack's own partition.
    assert!(member.condition("DefaultQuarantinePolicy"));
    assert_eq!(
        member.template["Parameters"]["QuarantinePolicyArn"]["Default"],
        ""
    );
    assert_eq!(Config::default().quarantine.policy_arn, default);
    assert_eq!(
        stack.template["Parameters"]["QuarantinePolicyArn"]["Default"],
        member.template["Parameters"]["QuarantinePolicyArn"]["Default"]
    );
}

/// `policy` may detach `quarantine` from users, in a statement of its own, and no other.
fn assert_detaches_only(policy: &serde_json::Value, quarantine: &str) {
    let detach = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| strings(&s["Action"]) == vec!["iam:DetachUserPolicy"])
        .expect("a statement of its own");
    assert_eq!(
        detach["Condition"],
        serde_json::json!({"ArnEquals": {"iam:PolicyARN": quarantine}})
    );
}

/// The CloudFormation template (for a StackSet over every member account) creates the
/// same role as the policy files: the same trust, the same permissions.
#[test]
fn the_member_role_template_matches_the_policy_files() {
    let template: serde_json::Value =
        serde_json::from_str(&read("deploy/aws/member-role.cfn.json")).unwrap();
    let role = &template["Resources"]["RevokerRole"];
    assert_eq!(role["Type"], "AWS::IAM::Role");
    let properties = &role["Properties"];
    assert_eq!(
        template["Parameters"]["RoleName"]["Default"],
        configmap_config()
            .cross_account
            .role_name
            .clone()
            .unwrap()
            .as_str()
    );
    // The template's intrinsic functions, resolved to the policy files' placeholders.
    fn unsub(value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::Object(map) if map.len() == 1 && map.contains_key("Fn::If") => {
                // The default quarantine policy, AWS's, in the stack's partition.
                assert_eq!(map["Fn::If"][0], "DefaultQuarantinePolicy");
                unsub(&map["Fn::If"][1])
            }
            Value::Object(map) if map.len() == 1 && map.contains_key("Fn::Sub") => Value::from(
                map["Fn::Sub"]
                    .as_str()
                    .unwrap()
                    .replace("${AWS::Partition}", "PARTITION")
                    .replace("${AWS::AccountId}", "MEMBER_ACCOUNT_ID")
                    .replace("${WorkerAccountId}", "WORKER_ACCOUNT_ID")
                    .replace("${WorkerRoleName}", "iam-key-revoker-worker")
                    .replace("${WorkerRoleRevision}", "1"),
            ),
            Value::Object(map) if map.get("Ref") == Some(&Value::from("OrganizationId")) => {
                Value::from("ORGANIZATION_ID")
            }
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), unsub(v))).collect(),
            Value::Array(items) => items.iter().map(unsub).collect(),
            other => other.clone(),
        }
    }
    let permissions: serde_json::Value =
        serde_json::from_str(&read("deploy/aws/member-role-permissions.json")).unwrap();
    assert_eq!(
        unsub(&properties["Policies"][0]["PolicyDocument"]),
        permissions
    );
    let trust: serde_json::Value =
        serde_json::from_str(&read("deploy/aws/member-role-trust-policy.json")).unwrap();
    assert_eq!(unsub(&properties["AssumeRolePolicyDocument"]), trust);
    // The role-sessions policy, a resource of its own attached only when
    // RevokeRoleSessions is true, without the protected roles' Deny that only a filled
    // ProtectedRoleArns adds.
    let attached = &template["Resources"]["RevokerRoleSessionsPolicy"];
    assert_eq!(attached["Condition"], "WithRoleSessions");
    assert_eq!(attached["Properties"]["RoleName"]["Ref"], "RevokerRole");
    let mut document = attached["Properties"]["PolicyDocument"].clone();
    let statements = document["Statement"].as_array_mut().unwrap();
    statements.retain(|s| s.get("Fn::If").is_none());
    let sessions: serde_json::Value =
        serde_json::from_str(&read("deploy/aws/member-role-sessions-permissions.json")).unwrap();
    assert_eq!(unsub(&document), sessions);
}

/// The worker stack's outputs as deploy/scripts/20-worker-account.sh writes them into stack.env, and
/// the manifests kustomize renders with them.
fn stack_and_manifests() -> (Stack, BTreeMap<String, String>, Vec<serde_json::Value>) {
    let stack = Stack::worker();
    let outputs = stack.outputs();
    let manifests = rendered_manifests(&outputs, "registry.example/iam-key-revoker:1.0.0");
    (stack, outputs, manifests)
}

/// KEDA reads the queues' depth with a role of its own that can do nothing else, taken
/// with the KEDA operator's own web identity; the worker's role trusts only its service
/// account, through the cluster's OIDC provider. The manifests name the stack's roles.
#[test]
fn the_scaler_and_the_worker_have_roles_of_their_own() {
    let (stack, outputs, manifests) = stack_and_manifests();
    let auth = of_kind(&manifests, "TriggerAuthentication");
    assert_eq!(auth["spec"]["podIdentity"]["provider"], "aws");
    assert!(
        auth["spec"]["podIdentity"]["identityOwner"].is_null(),
        "not the workload's (the worker's) role"
    );
    assert_eq!(
        auth["spec"]["podIdentity"]["roleArn"],
        outputs["KEDA_SCALER_ROLE_ARN"].as_str()
    );
    assert!(outputs["KEDA_SCALER_ROLE_ARN"].ends_with(":role/iam-key-revoker-keda-scaler"));
    let scaler = stack.properties("KedaScalerPolicy");
    assert_eq!(
        scaler["Roles"],
        serde_json::json!([stack.properties("KedaScalerRole")["RoleName"]])
    );
    let policy = &scaler["PolicyDocument"];
    assert_eq!(
        actions_of(policy, "the scaler's policy"),
        BTreeSet::from(["sqs:GetQueueAttributes".to_owned()])
    );
    let resources = strings(&policy["Statement"][0]["Resource"]);
    let scaled = of_kind(&manifests, "ScaledObject");
    for trigger in scaled["spec"]["triggers"].as_array().unwrap() {
        let url = trigger["metadata"]["queueURL"].as_str().unwrap();
        let name = url.rsplit('/').next().unwrap();
        assert!(
            resources.iter().any(|r| r.ends_with(&format!(":{name}"))),
            "the scaler may read {name}"
        );
        assert_eq!(trigger["metadata"]["awsRegion"], cfn::REGION);
    }
    let oidc = "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE0123456789";
    let web_identity = |role: &str, subject: &str| {
        let trust = stack.document(role, "AssumeRolePolicyDocument");
        let statement = &trust["Statement"][0];
        assert_eq!(
            statement["Action"], "sts:AssumeRoleWithWebIdentity",
            "{role}"
        );
        assert_eq!(
            statement["Principal"]["Federated"],
            format!("arn:aws:iam::{}:oidc-provider/{oidc}", cfn::ACCOUNT)
        );
        let conditions = &statement["Condition"]["StringEquals"];
        assert_eq!(conditions[format!("{oidc}:aud")], "sts.amazonaws.com");
        assert_eq!(conditions[format!("{oidc}:sub")], subject, "{role}");
    };
    web_identity("KedaScalerRole", "system:serviceaccount:keda:keda-operator");

    // IRSA: the worker role trusts exactly the service account the pods use, for STS.
    let sa = of_kind(&manifests, "ServiceAccount");
    let deployment = of_kind(&manifests, "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        sa["metadata"]["name"]
    );
    web_identity(
        "WorkerRole",
        &format!(
            "system:serviceaccount:{}:{}",
            sa["metadata"]["namespace"].as_str().unwrap(),
            sa["metadata"]["name"].as_str().unwrap()
        ),
    );
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        outputs["WORKER_ROLE_ARN"].as_str()
    );
    assert!(outputs["WORKER_ROLE_ARN"].ends_with(":role/iam-key-revoker-worker"));
}

#[test]
fn producers_may_only_send_to_the_job_queues() {
    let stack = Stack::worker();
    let policy = stack.properties("ProducerPolicy")["PolicyDocument"].clone();
    assert_eq!(
        actions_of(&policy, "the producers' policy"),
        BTreeSet::from(["sqs:SendMessage".to_owned()])
    );
    let resources = strings(&policy["Statement"][0]["Resource"]);
    let arn = |id: &str| stack.resolve(&serde_json::json!({"Fn::GetAtt": [id, "Arn"]}));
    assert_eq!(
        resources,
        [arn("JobQueue"), arn("PriorityQueue")].map(|v| v.as_str().unwrap().to_owned())
    );
}

/// The stack's outputs are the worker's configuration: each IAM_KEY_REVOKER__ output is
/// a key the worker reads, set in the Deployment's environment from stack.env; the
/// rendered manifests keep no placeholder.
#[test]
fn the_stack_outputs_configure_the_worker() {
    let (_, outputs, manifests) = stack_and_manifests();
    let deployment = of_kind(&manifests, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env: BTreeMap<&str, &serde_json::Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                &e["valueFrom"]["configMapKeyRef"],
            )
        })
        .collect();
    let stack_map = manifests
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("iam-key-revoker-stack-")
        })
        .expect("the stack.env ConfigMap");
    for (variable, value) in outputs
        .iter()
        .filter(|(k, _)| k.starts_with("IAM_KEY_REVOKER__"))
    {
        let reference = env
            .get(variable.as_str())
            .unwrap_or_else(|| panic!("the Deployment sets {variable}"));
        assert_eq!(reference["name"], stack_map["metadata"]["name"]);
        assert_eq!(reference["key"], variable.as_str());
        assert_eq!(stack_map["data"][variable], value.as_str());
    }
    assert_eq!(container["image"], "registry.example/iam-key-revoker:1.0.0");
    let config = configmap_config();
    assert_eq!(
        config.sqs.queue_url,
        outputs["IAM_KEY_REVOKER__SQS__QUEUE_URL"]
    );
    assert_eq!(
        config.results.queue_url.as_deref(),
        Some(outputs["IAM_KEY_REVOKER__RESULTS__QUEUE_URL"].as_str())
    );
    assert_eq!(
        config.results.sns_topic_arn.as_deref(),
        Some(outputs["IAM_KEY_REVOKER__RESULTS__SNS_TOPIC_ARN"].as_str())
    );
    // The stack's own outcome bus, not the default bus anyone in the account may put on.
    assert_eq!(
        config.results.event_bus.as_deref(),
        Some(outputs["IAM_KEY_REVOKER__RESULTS__EVENT_BUS"].as_str())
    );
    assert_eq!(
        outputs["IAM_KEY_REVOKER__RESULTS__EVENT_BUS"],
        "iam-key-revoker-outcomes"
    );
    assert_eq!(
        config.quarantine.policy_arn,
        outputs["IAM_KEY_REVOKER__QUARANTINE__POLICY_ARN"]
    );
    let text = serde_json::to_string(&manifests).unwrap();
    for placeholder in [
        ".REGION.",
        "WORKER_ACCOUNT_ID",
        "REGISTRY/",
        ":VERSION",
        "OIDC_PROVIDER_ID",
    ] {
        assert!(
            !text.contains(placeholder),
            "{placeholder} left in the manifests"
        );
    }
}

/// The security event rules: on the bus the forwarding stacks put events on, into the
/// priority queue, whose policy admits exactly these rules; the patterns match what the
/// worker takes by default, and the forwarding stacks forward the same.
#[test]
fn the_security_event_rules_feed_the_priority_queue_what_the_worker_takes() {
    let stack = Stack::worker();
    let forwarding = Stack::load(
        "deploy/aws/forwarding.cfn.json",
        &[(
            "SecurityEventBusArn",
            "arn:aws:events:eu-west-1:111122223333:event-bus/iam-key-revoker",
        )],
    );
    let priority = stack.resolve(&serde_json::json!({"Fn::GetAtt": ["PriorityQueue", "Arn"]}));
    let bus = stack.properties("SecurityEventBus")["Name"].clone();
    let defaults = iam_key_revoker::intake::IntakeRules::default();
    let mut rule_arns = Vec::new();
    for (rule, forward) in [
        ("HealthRule", "HealthForward"),
        ("GuardDutyRule", "GuardDutyForward"),
    ] {
        let properties = stack.properties(rule);
        assert_eq!(properties["EventBusName"], bus, "{rule}");
        assert_eq!(properties["Targets"].as_array().unwrap().len(), 1);
        assert_eq!(properties["Targets"][0]["Arn"], priority, "{rule}");
        assert!(
            properties["Targets"][0]["InputTransformer"].is_null(),
            "{rule}: the whole event, as AWS delivers it"
        );
        let forwarded = forwarding.properties(forward);
        assert_eq!(
            forwarded["EventPattern"], properties["EventPattern"],
            "{forward}"
        );
        assert_eq!(
            forwarded["Targets"][0]["Arn"],
            forwarding.resolve(&serde_json::json!({"Ref": "SecurityEventBusArn"}))
        );
        assert!(
            forwarded["Targets"][0]["RoleArn"]
                .as_str()
                .is_some_and(|arn| arn.contains(":role/")),
            "{forward}: a bus in another Region or account needs a role"
        );
        rule_arns.push(stack.resolve(&serde_json::json!({"Fn::GetAtt": [rule, "Arn"]})));
    }
    let health = stack.properties("HealthRule")["EventPattern"].clone();
    assert_eq!(
        strings(&health["detail"]["eventTypeCode"]),
        defaults.health_event_types
    );
    let guardduty = stack.properties("GuardDutyRule")["EventPattern"].clone();
    let numeric = &guardduty["detail"]["severity"][0]["numeric"];
    assert_eq!(numeric[0], ">=");
    assert_eq!(numeric[1].as_f64(), Some(defaults.guardduty_min_severity));
    // GuardDuty's sample findings are left out (they never change anything anyway),
    // unless the stack asks for them, for the end-to-end check after a deploy.
    assert_eq!(
        guardduty["detail"]["$or"],
        serde_json::json!([
            {"service": {"additionalInfo": {"sample": [{"exists": false}]}}},
            {"service": {"additionalInfo": {"sample": [false]}}}
        ])
    );
    let with_samples = Stack::load(
        "deploy/aws/worker.cfn.json",
        &[
            (
                "OidcProvider",
                "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE0123456789",
            ),
            ("OrganizationId", "o-exampleorgid"),
            ("DeliverSampleFindings", "true"),
        ],
    );
    assert!(with_samples.properties("GuardDutyRule")["EventPattern"]["detail"]["$or"].is_null());
    let queue_policy = stack.properties("PriorityQueuePolicy");
    let statement = &queue_policy["PolicyDocument"]["Statement"][0];
    assert_eq!(statement["Principal"]["Service"], "events.amazonaws.com");
    assert_eq!(statement["Action"], "sqs:SendMessage");
    assert_eq!(statement["Resource"], priority);
    assert_eq!(
        statement["Condition"]["ArnEquals"]["aws:SourceArn"],
        serde_json::Value::Array(rule_arns)
    );
    let bus_policy = stack.properties("SecurityEventBusPolicy");
    assert_eq!(
        bus_policy["Statement"]["Condition"]["StringEquals"]["aws:PrincipalOrgID"],
        "o-exampleorgid",
        "only accounts of the organization may put events on the bus"
    );
}

fn docs(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is YAML: {e}"))
}

fn kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("a {kind}"))
}

/// The worker configuration of the pods: the ConfigMap's worker.toml with the stack's
/// outputs (stack.env, in the environment) over it, loaded and validated like any
/// config.
fn configmap_config() -> Settings {
    let kustomization = docs("deploy/kubernetes/kustomization.yaml");
    let generator = &kustomization[0]["configMapGenerator"][0];
    let file = generator["files"][0].as_str().expect("a file");
    let mut table: toml::Table =
        toml::from_str(&read(&format!("deploy/kubernetes/{file}"))).expect("TOML");
    for (variable, value) in Stack::worker().outputs() {
        let Some(key) = variable.strip_prefix("IAM_KEY_REVOKER__") else {
            continue;
        };
        let (section, key) = key
            .to_lowercase()
            .split_once("__")
            .map(|(s, k)| (s.to_owned(), k.to_owned()))
            .unwrap();
        table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap()
            .insert(key, toml::Value::String(value));
    }
    Config::from_toml(&toml::to_string(&table).unwrap())
        .expect("the ConfigMap and the stack's outputs make a valid worker configuration")
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

    // KEDA scales this Deployment on the visible messages of both job queues, and owns
    // the replica count.
    let keda_docs = docs("deploy/kubernetes/keda-scaledobject.yaml");
    let scaled = kind(&keda_docs, "ScaledObject");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(
        deployment["spec"]["replicas"].is_badvalue(),
        "no replicas where KEDA owns the count"
    );
    for trigger in scaled["spec"]["triggers"].as_vec().unwrap() {
        assert_eq!(trigger["type"].as_str(), Some("aws-sqs-queue"));
        assert_eq!(
            trigger["metadata"]["scaleOnInFlight"].as_str(),
            Some("false"),
            "parked retries and prefetched messages must not hold replicas up"
        );
        assert!(
            kind(&keda_docs, "TriggerAuthentication")["metadata"]["name"]
                == trigger["authenticationRef"]["name"]
        );
    }
    let (_, _, manifests) = stack_and_manifests();
    let urls: Vec<&str> = of_kind(&manifests, "ScaledObject")["spec"]["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|trigger| trigger["metadata"]["queueURL"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            config.sqs.queue_url.as_str(),
            config.sqs.priority_queue_url.as_deref().unwrap()
        ]
    );

    // The fleet stays within the account's IAM budget.
    let budget: u32 = scaled["metadata"]["annotations"]
        ["iam-key-revoker/iam-account-budget-requests-per-second"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let max_replicas = scaled["spec"]["maxReplicaCount"].as_i64().unwrap() as u32;
    assert!(
        max_replicas * config.iam.max_requests_per_second <= budget,
        "{max_replicas} replicas × {} requests/s exceed the budget of {budget}",
        config.iam.max_requests_per_second
    );

    // Disruptions and zones: never every replica at once, never all in one zone; no
    // Kubernetes API token in a pod that never calls the API.
    let min_replicas = scaled["spec"]["minReplicaCount"].as_i64().unwrap();
    assert!(min_replicas >= 2, "one replica per zone at least");
    let pdb_docs = docs("deploy/kubernetes/poddisruptionbudget.yaml");
    let pdb = kind(&pdb_docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_i64(), Some(1));
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
        Some(pod_label(deployment).as_str())
    );
    let spread = pod["topologySpreadConstraints"].as_vec().unwrap();
    assert!(spread
        .iter()
        .any(|c| c["topologyKey"].as_str() == Some("topology.kubernetes.io/zone")));
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));

    // kustomize generates the ConfigMap with a hash in its name, so a change rolls the
    // pods; the volume names the generator's ConfigMap, and every manifest is listed.
    let kustomization = docs("deploy/kubernetes/kustomization.yaml");
    let generated = kustomization[0]["configMapGenerator"][0]["name"].as_str();
    assert_eq!(
        pod["volumes"][0]["configMap"]["name"].as_str(),
        generated,
        "the volume mounts the generated ConfigMap"
    );
    let listed: Vec<&str> = kustomization[0]["resources"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for file in [
        "serviceaccount.yaml",
        "deployment.yaml",
        "poddisruptionbudget.yaml",
        "keda-scaledobject.yaml",
    ] {
        assert!(listed.contains(&file), "{file}");
    }

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
    assert!(
        scrape_docs[0]["global"].is_badvalue(),
        "merged into an existing configuration: no global block"
    );
    // The Prometheus Operator's PodMonitor scrapes the same pods, port and path.
    let monitor_docs = docs("deploy/prometheus/podmonitor.yaml");
    let monitor = kind(&monitor_docs, "PodMonitor");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
        Some(pod_label(deployment).as_str())
    );
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"].as_str(), Some(port_name));
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));

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
    // build.rs and the linker script it names are in the build context before the first
    // build, or the image's binary would be linked differently from everyone else's.
    let first_build = dockerfile.find("cargo build").unwrap();
    for copied in ["COPY Cargo.toml Cargo.lock build.rs ./", "COPY link ./link"] {
        let at = dockerfile.find(copied).unwrap_or(usize::MAX);
        assert!(at < first_build, "{copied} before the first cargo build");
    }
    assert!(read("build.rs").contains("link/cold-code.ld"));
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

/// IAM's wildcard match of a policy's `Action` or `Resource` element: `*` any run of
/// characters, `?` any one ("IAM JSON policy elements: Resource", IAM User Guide).
fn wildcard(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    // matched[j]: the pattern so far matches value[..j].
    let mut matched = vec![false; v.len() + 1];
    matched[0] = true;
    for c in p {
        let mut next = vec![false; v.len() + 1];
        for j in 0..=v.len() {
            next[j] = match c {
                '*' => matched[j] || (j > 0 && next[j - 1]),
                '?' => j > 0 && matched[j - 1],
                c => j > 0 && matched[j - 1] && v[j - 1] == c,
            };
        }
        matched = next;
    }
    matched[v.len()]
}

fn strings(element: &serde_json::Value) -> Vec<String> {
    match element {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(list) => list
            .iter()
            .map(|s| s.as_str().expect("a string").to_owned())
            .collect(),
        other => panic!("unexpected policy element {other}"),
    }
}

/// Whether `policies` (identity policies of one role) allow `action` on `resource`: an
/// explicit Deny wins, then an Allow, else the implicit deny. Conditions are taken as
/// met (the emulator cannot evaluate them either; tests elsewhere check each one).
fn allows(policies: &[serde_json::Value], action: &str, resource: &str) -> bool {
    evaluate(policies, action, resource, |_| true)
}

/// IAM's evaluation of identity policies: an explicit Deny wins, then an Allow, else the
/// implicit deny; a statement applies when its action and resource match and
/// `conditions_met` says its conditions hold.
fn evaluate(
    policies: &[serde_json::Value],
    action: &str,
    resource: &str,
    conditions_met: impl Fn(&serde_json::Value) -> bool,
) -> bool {
    let applies = |s: &serde_json::Value| {
        strings(&s["Action"])
            .iter()
            .any(|a| wildcard(&a.to_lowercase(), &action.to_lowercase()))
            && strings(&s["Resource"])
                .iter()
                .any(|r| wildcard(r, resource))
            && conditions_met(s)
    };
    let statements: Vec<&serde_json::Value> = policies
        .iter()
        .flat_map(|p| p["Statement"].as_array().expect("statements"))
        .collect();
    !statements
        .iter()
        .any(|s| s["Effect"] == "Deny" && applies(s))
        && statements
            .iter()
            .any(|s| s["Effect"] == "Allow" && applies(s))
}

/// A shipped policy with its placeholders filled in as an operator would.
fn filled(path: &str) -> serde_json::Value {
    let text = read(path)
        .replace("PARTITION", "aws")
        .replace("WORKER_ACCOUNT_ID", "111122223333")
        .replace("REGION", "eu-west-1")
        .replace("ORGANIZATION_ID", "o-exampleorgid")
        .replace("MEMBER_ACCOUNT_ID", "444455556666");
    serde_json::from_str(&text).expect("policy is JSON")
}

const IAM_READS: &[&str] = &[
    "iam:ListAccessKeys",
    "iam:GetAccessKeyLastUsed",
    "iam:ListUserPolicies",
    "iam:GetUserPolicy",
    "iam:GetLoginProfile",
];

/// What the worker reads of a role before its cut-off.
const ROLE_READS: &[&str] = &["iam:GetRole", "iam:ListRolePolicies", "iam:GetRolePolicy"];

/// Every (action, resource) the worker addresses, granted by the shipped worker policy;
/// nothing it does not address on the queues granted.
#[test]
fn the_worker_policy_allows_each_action_on_each_resource_the_worker_addresses() {
    let policy = worker_policies(&Stack::worker());
    let queue = |name: &str| format!("arn:aws:sqs:eu-west-1:111122223333:{name}");
    let job_queues = [
        queue("iam-key-revocations"),
        queue("iam-key-revocations-priority"),
    ];
    let dead_letter_queues = [
        queue("iam-key-revocations-dlq"),
        queue("iam-key-revocations-priority-dlq"),
    ];
    let results = queue("iam-key-revoker-results");
    let mut needed: Vec<(&str, String)> = Vec::new();
    for q in &job_queues {
        for action in [
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
            // Discovery (RedrivePolicy) and the depth gauge.
            "sqs:GetQueueAttributes",
            // Continuations.
            "sqs:SendMessage",
        ] {
            needed.push((action, q.clone()));
        }
    }
    for q in &dead_letter_queues {
        // The dead-letter copy; the queue found from RedrivePolicy; the depth gauge
        // that IamKeyRevokerDeadLetterQueueNotEmpty reads.
        for action in [
            "sqs:SendMessage",
            "sqs:GetQueueUrl",
            "sqs:GetQueueAttributes",
        ] {
            needed.push((action, q.clone()));
        }
    }
    needed.push(("sqs:SendMessage", results.clone()));
    needed.push((
        "sns:Publish",
        "arn:aws:sns:eu-west-1:111122223333:iam-key-revoker-outcomes".into(),
    ));
    for action in ["cloudtrail:LookupEvents", "account:ListRegions"] {
        needed.push((action, "*".into()));
    }
    needed.push((
        "securityhub:BatchUpdateFindings",
        "arn:aws:securityhub:us-east-1:111122223333:hub/default".into(),
    ));
    needed.push((
        "events:PutEvents",
        "arn:aws:events:eu-west-1:111122223333:event-bus/iam-key-revoker-outcomes".into(),
    ));
    for user in ["user/alice", "user/engineering/ci/alice"] {
        let arn = format!("arn:aws:iam::111122223333:{user}");
        for action in IAM_READS
            .iter()
            .chain(iam_key_revoker::cli::deny::WRITE_ACTIONS)
            .filter(|a| !RESTORE_ONLY.contains(a))
        {
            needed.push((action, arn.clone()));
        }
    }
    needed.push((
        "securityhub:GetFindings",
        "arn:aws:securityhub:us-east-1:111122223333:hub/default".into(),
    ));
    needed.push(("sts:GetAccessKeyInfo", "*".into()));
    needed.push((
        "iam:GetPolicy",
        "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV4".into(),
    ));
    for action in ["kms:GenerateMac", "kms:VerifyMac"] {
        needed.push((
            action,
            "arn:aws:kms:eu-west-1:111122223333:key/ContinuationKey-GENERATED".into(),
        ));
    }
    needed.push((
        "sts:AssumeRole",
        "arn:aws:iam::444455556666:role/iam-key-revoker".into(),
    ));
    // Staged revocation: its schedules, the role they send with, the queue Scheduler
    // parks what it cannot send in (its ARN for the schedules, its depth for the alert).
    for action in [
        "scheduler:CreateSchedule",
        "scheduler:GetSchedule",
        "scheduler:UpdateSchedule",
    ] {
        needed.push((
            action,
            "arn:aws:scheduler:eu-west-1:111122223333:schedule/iam-key-revoker/111122223333-AKIAIOSFODNN7EXAMPLE".into(),
        ));
    }
    needed.push((
        "scheduler:GetScheduleGroup",
        "arn:aws:scheduler:eu-west-1:111122223333:schedule-group/iam-key-revoker".into(),
    ));
    needed.push((
        "iam:PassRole",
        "arn:aws:iam::111122223333:role/iam-key-revoker-scheduler".into(),
    ));
    needed.push((
        "sqs:GetQueueAttributes",
        queue("iam-key-revoker-schedule-dlq"),
    ));
    for (action, resource) in &needed {
        assert!(allows(&policy, action, resource), "{action} on {resource}");
    }

    // Nothing more on the queues: the worker never receives from a dead-letter queue or
    // the results queue, nor deletes there.
    for q in dead_letter_queues.iter().chain([&results]) {
        for action in ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:PurgeQueue"] {
            assert!(!allows(&policy, action, q), "{action} on {q}");
        }
    }
    assert!(!allows(
        &policy,
        "iam:DeleteAccessKey",
        "arn:aws:iam::444455556666:user/alice"
    ));
    assert!(!allows(
        &policy,
        "sts:AssumeRole",
        "arn:aws:iam::444455556666:role/admin"
    ));
    // Schedules of other groups, and any other role, are not the worker's.
    assert!(!allows(
        &policy,
        "scheduler:UpdateSchedule",
        "arn:aws:scheduler:eu-west-1:111122223333:schedule/default/payroll"
    ));
    assert!(!allows(
        &policy,
        "iam:PassRole",
        "arn:aws:iam::111122223333:role/admin"
    ));
}

/// Staged revocation's deploy (docs, "Staged revocation"): EventBridge Scheduler alone,
/// for this account alone, may assume the scheduler role, which may only send to the job
/// queues and its dead-letter queue; the worker passes it to Scheduler only; the restore
/// operators' policy can undo a staged revocation and nothing more.
#[test]
fn the_scheduler_role_sends_only_to_the_job_queues_and_only_scheduler_may_use_it() {
    let stack = Stack::worker();
    let role = stack.resource("SchedulerRole");
    let trust = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"];
    assert_eq!(trust.as_array().unwrap().len(), 1);
    assert_eq!(
        trust[0]["Principal"],
        serde_json::json!({"Service": "scheduler.amazonaws.com"})
    );
    assert_eq!(trust[0]["Action"], "sts:AssumeRole");
    assert_eq!(
        stack.resolve(&trust[0]["Condition"]["StringEquals"]["aws:SourceAccount"]),
        stack.resolve(&serde_json::json!({"Ref": "AWS::AccountId"}))
    );
    // Only schedules of the worker's group: one in another group, made by whoever may
    // pass the role, cannot use it (EventBridge Scheduler User Guide, "Set up the
    // execution role": aws:SourceArn is the schedule group's ARN).
    assert_eq!(
        stack.resolve(&trust[0]["Condition"]["StringEquals"]["aws:SourceArn"]),
        "arn:aws:scheduler:eu-west-1:111122223333:schedule-group/iam-key-revoker"
    );
    let policies = role["Properties"]["Policies"].as_array().unwrap();
    let documents: Vec<serde_json::Value> = policies
        .iter()
        .map(|p| stack.resolve(&p["PolicyDocument"]))
        .collect();
    let actions: BTreeSet<String> = documents
        .iter()
        .flat_map(|d| actions_of(d, "the scheduler role"))
        .collect();
    assert_eq!(actions, BTreeSet::from(["sqs:SendMessage".to_owned()]));
    let arn = |id: &str| stack.resolve(&serde_json::json!({"Fn::GetAtt": [id, "Arn"]}));
    for queue in ["JobQueue", "PriorityQueue", "ScheduleDeadLetterQueue"] {
        let arn = arn(queue);
        assert!(
            allows(&documents, "sqs:SendMessage", arn.as_str().unwrap()),
            "{queue}"
        );
    }
    for queue in ["DeadLetterQueue", "ResultsQueue"] {
        let arn = arn(queue);
        assert!(
            !allows(
                &documents,
                "sqs:SendMessage",
                arn.as_str().unwrap_or("none")
            ),
            "{queue}"
        );
    }
    // The worker passes it to EventBridge Scheduler and to nothing else.
    let pass: Vec<serde_json::Value> = worker_policies(&stack)
        .iter()
        .flat_map(|p| p["Statement"].as_array().unwrap().clone())
        .filter(|s| strings(&s["Action"]).contains(&"iam:PassRole".to_owned()))
        .collect();
    assert_eq!(pass.len(), 1);
    assert_eq!(strings(&pass[0]["Action"]), vec!["iam:PassRole"]);
    assert_eq!(pass[0]["Resource"], arn("SchedulerRole"));
    assert_eq!(
        pass[0]["Condition"],
        serde_json::json!({"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}})
    );
    // The group the worker's schedules live in is the one its configuration names.
    let group = stack.properties("ScheduleGroup")["Name"].clone();
    assert_eq!(group, Config::default().schedule.group_name.as_str());
    // Restore operators: reactivate, lift the cut-off, keep the schedule as the record
    // (or create one); never delete a key, a schedule or a message, never receive jobs.
    let restore = stack.resolve(&stack.properties("RestoreOperatorPolicy")["PolicyDocument"]);
    let actions = actions_of(&restore, "the restore policy");
    for action in [
        "iam:UpdateAccessKey",
        "iam:ListAccessKeys",
        "iam:DeleteUserPolicy",
        "scheduler:GetSchedule",
        "scheduler:UpdateSchedule",
        "scheduler:CreateSchedule",
        "iam:PassRole",
        "sqs:GetQueueAttributes",
    ] {
        assert!(actions.contains(action), "restore needs {action}");
    }
    assert!(!actions
        .iter()
        .any(|a| a.contains("Delete") && a != "iam:DeleteUserPolicy"));
    assert!(!actions.contains("sqs:ReceiveMessage") && !actions.contains("sqs:SendMessage"));
}

/// `protect-policy` on the shipped configuration, added to the worker's role, makes IAM
/// refuse every write on the protected users, with or without a path, in any account;
/// reads and other users stay allowed.
#[test]
fn the_protect_policy_denies_writes_on_the_shipped_protected_users() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_iam-key-revoker"))
        .env_clear()
        .args([
            "protect-policy",
            "--config",
            &format!("{ROOT}/deploy/kubernetes/worker.toml"),
        ])
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deny: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let mut worker = worker_policies(&Stack::worker());
    worker.push(deny.clone());
    let member = [filled("deploy/aws/member-role-permissions.json"), deny];
    let config = configmap_config();
    assert!(
        !config.protect.users.is_empty(),
        "the shipped file protects users"
    );
    for (policies, account) in [(&worker[..], "111122223333"), (&member[..], "444455556666")] {
        for user in ["break-glass-admin", "ops/terraform-ci"] {
            let arn = format!("arn:aws:iam::{account}:user/{user}");
            for action in iam_key_revoker::cli::deny::WRITE_ACTIONS {
                assert!(!allows(policies, action, &arn), "{action} on {arn}");
            }
            for action in IAM_READS {
                assert!(allows(policies, action, &arn), "{action} on {arn}");
            }
        }
        let alice = format!("arn:aws:iam::{account}:user/alice");
        assert!(allows(policies, "iam:DeleteAccessKey", &alice));
    }
}

/// `protect-policy` denies every IAM action with which the code changes a user: the IAM
/// actions the code calls, less the reads.
#[test]
fn the_protect_policy_covers_every_write_the_code_makes() {
    let writes: BTreeSet<String> = operations_in_code()
        .iter()
        .filter_map(|op| permission(op))
        .filter(|p| p.starts_with("iam:"))
        .filter(|p| !IAM_READS.contains(p) && !ROLE_READS.contains(p))
        // Reads whose resource is no user (a policy) or that change nothing.
        .filter(|p| !["iam:GetPolicy", "iam:ListAttachedUserPolicies"].contains(p))
        .map(str::to_owned)
        .collect();
    let denied: BTreeSet<String> = iam_key_revoker::cli::deny::WRITE_ACTIONS
        .iter()
        .chain(iam_key_revoker::cli::deny::ROLE_WRITE_ACTIONS)
        .map(|a| (*a).to_owned())
        .collect();
    assert_eq!(denied, writes);
}

/// The member role's policies: its inline ones, and the role-sessions policy when the
/// stack creates it.
fn member_role_policies(stack: &Stack) -> Vec<serde_json::Value> {
    let mut policies: Vec<serde_json::Value> = stack.properties("RevokerRole")["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["PolicyDocument"].clone())
        .collect();
    if stack.creates("RevokerRoleSessionsPolicy") {
        policies.push(stack.properties("RevokerRoleSessionsPolicy")["PolicyDocument"].clone());
    }
    policies
}

/// The worker stack with example values, and these parameters.
fn worker_stack_with(overrides: &[(&str, &str)]) -> Stack {
    let mut all = vec![
        (
            "OidcProvider",
            "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE0123456789",
        ),
        ("OrganizationId", "o-exampleorgid"),
    ];
    all.extend_from_slice(overrides);
    Stack::load("deploy/aws/worker.cfn.json", &all)
}

/// `PutRolePolicy` is as strong as `PutUserPolicy`: the worker holds it on its account's
/// roles only when RevokeRoleSessions is true, and never on its own roles or the protected
/// ones, in its account or a member account.
#[test]
fn role_cutoffs_are_granted_only_when_switched_on_and_never_on_the_workers_roles() {
    let arn = |account: &str, role: &str| format!("arn:aws:iam::{account}:role/{role}");
    let off = worker_policies(&Stack::worker());
    assert!(!allows(
        &off,
        "iam:PutRolePolicy",
        &arn("111122223333", "app")
    ));
    assert!(!allows(&off, "iam:GetRole", &arn("111122223333", "app")));
    let on = worker_policies(&worker_stack_with(&[
        ("RevokeRoleSessions", "true"),
        (
            "ProtectedRoleArns",
            "arn:aws:iam::*:role/prod-* arn:aws:iam::*:role/*/prod-*",
        ),
    ]));
    let member = Stack::load(
        "deploy/aws/member-role.cfn.json",
        &[
            ("WorkerAccountId", "111122223333"),
            ("OrganizationId", "o-exampleorgid"),
            ("RevokeRoleSessions", "true"),
            ("ProtectedRoleArns", "arn:aws:iam::*:role/prod-*"),
        ],
    );
    let member_policies = member_role_policies(&member);
    // The stacks' own account, as the resolver names it.
    for (policies, account) in [(&on, "111122223333"), (&member_policies, "111122223333")] {
        for action in iam_key_revoker::cli::deny::ROLE_WRITE_ACTIONS {
            assert!(allows(policies, action, &arn(account, "app")), "{action}");
            for own in [
                "iam-key-revoker-worker",
                "iam-key-revoker",
                "iam-key-revoker-scheduler",
                "ci/iam-key-revoker-keda-scaler",
                "prod-db",
            ] {
                assert!(
                    !allows(policies, action, &arn(account, own)),
                    "{action} on {own}"
                );
            }
            assert!(
                !allows(policies, action, &arn("999999999999", "app")),
                "another account's role"
            );
        }
        assert!(allows(policies, "iam:GetRole", &arn(account, "app")));
    }
    // Without it, the member role holds no right on roles either.
    let off = Stack::load(
        "deploy/aws/member-role.cfn.json",
        &[
            ("WorkerAccountId", "111122223333"),
            ("OrganizationId", "o-exampleorgid"),
        ],
    );
    let policies = member_role_policies(&off);
    assert!(!off.creates("RevokerRoleSessionsPolicy"));
    assert!(!allows(
        &policies,
        "iam:PutRolePolicy",
        &arn("111122223333", "app")
    ));
}

#[test]
fn the_wildcard_match_is_iams() {
    assert!(wildcard("user/*", "user/a/b"));
    assert!(wildcard("user/*/x", "user/p/q/x"));
    assert!(!wildcard("user/*/x", "user/x"));
    assert!(wildcard("a?c", "abc") && !wildcard("a?c", "ac"));
    assert!(!wildcard("user/admin", "user/Admin"));
}

/// What a fresh cluster needs from the files themselves: the namespace is created with
/// the objects, the disruption budget never blocks a drain while every pod is unready,
/// and the Prometheus Operator objects carry the label kube-prometheus-stack selects.
#[test]
fn a_fresh_cluster_gets_its_namespace_drains_and_monitoring() {
    let kustomization = docs("deploy/kubernetes/kustomization.yaml");
    let namespace = kustomization[0]["namespace"].as_str().expect("a namespace");
    let resources: Vec<&str> = kustomization[0]["resources"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let created = resources
        .iter()
        .flat_map(|r| docs(&format!("deploy/kubernetes/{r}")))
        .find(|d| d["kind"].as_str() == Some("Namespace"))
        .expect("the kustomization creates its namespace");
    assert_eq!(created["metadata"]["name"].as_str(), Some(namespace));
    let trust = Stack::worker().document("WorkerRole", "AssumeRolePolicyDocument");
    assert!(
        trust.to_string().contains(&format!(
            "system:serviceaccount:{namespace}:iam-key-revoker"
        )),
        "the worker's trust names the service account in that namespace"
    );

    let pdb_docs = docs("deploy/kubernetes/poddisruptionbudget.yaml");
    let pdb = kind(&pdb_docs, "PodDisruptionBudget");
    assert_eq!(
        pdb["spec"]["unhealthyPodEvictionPolicy"].as_str(),
        Some("AlwaysAllow")
    );

    let monitoring = docs("deploy/prometheus/kustomization.yaml");
    let resources: Vec<&str> = monitoring[0]["resources"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(resources, ["podmonitor.yaml", "prometheus-rule.yaml"]);
    let label = &monitoring[0]["labels"][0];
    assert!(label["pairs"]["release"].as_str().is_some());
    assert_eq!(
        label["includeSelectors"].as_bool(),
        Some(false),
        "the PodMonitor's pod selector stays as it is"
    );
}

/// The worker's MAC key (docs, "Continuations"): only the worker's role may make or
/// check a MAC with it, and no statement lets anyone hand that right on (`CreateGrant`,
/// or a wildcard that covers it or the MAC actions), which would let them forge what the
/// worker writes for itself.
#[test]
fn only_the_workers_role_macs_with_its_key() {
    let stack = Stack::worker();
    let key = stack.properties("ContinuationKey");
    assert_eq!(key["KeySpec"], "HMAC_256");
    assert_eq!(key["KeyUsage"], "GENERATE_VERIFY_MAC");
    let statements = key["KeyPolicy"]["Statement"].as_array().unwrap();
    for statement in statements {
        let actions: Vec<&str> = match &statement["Action"] {
            serde_json::Value::String(a) => vec![a.as_str()],
            other => other
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect(),
        };
        for forbidden in ["kms:CreateGrant", "kms:GenerateMac", "kms:VerifyMac"] {
            if actions.iter().any(|a| wildcard(a, forbidden)) {
                assert_eq!(
                    statement["Principal"]["AWS"],
                    "arn:aws:iam::111122223333:role/iam-key-revoker-worker",
                    "{forbidden} only to the worker's role: {statement}"
                );
                assert_ne!(
                    forbidden, "kms:CreateGrant",
                    "nobody may grant: {statement}"
                );
            }
        }
    }
}

/// The protected users as the stacks' `ProtectedUserArns` parameter takes them, from
/// `protect-policy --format parameter` on the shipped configuration.
fn protected_user_arns() -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_iam-key-revoker"))
        .env_clear()
        .args([
            "protect-policy",
            "--format",
            "parameter",
            "--config",
            &format!("{ROOT}/deploy/kubernetes/worker.toml"),
        ])
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The identity policies of a role of the member-role stack, resolved.
fn role_policies(stack: &Stack, role: &str) -> Vec<serde_json::Value> {
    stack.properties(role)["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["PolicyDocument"].clone())
        .collect()
}

/// What `plan` and `restore` call in a member account (src/cli/plan.rs, src/cli/restore.rs
/// through src/aws: preview, key_statuses, reactivate, other_cutoffs, lift_session_cutoff,
/// quarantined, release).
const PLAN_CALLS: &[&str] = &["iam:ListAccessKeys", "iam:GetAccessKeyLastUsed"];
const RESTORE_CALLS: &[&str] = &[
    "iam:ListAccessKeys",
    "iam:UpdateAccessKey",
    "iam:ListUserPolicies",
    "iam:GetUserPolicy",
    "iam:DeleteUserPolicy",
    "iam:ListAttachedUserPolicies",
    "iam:DetachUserPolicy",
];

/// Each person gets only their rights: in a member account the planner's role can read
/// keys and change nothing, the restorer's can do what `restore` does and cannot write a
/// policy, delete a key or touch a protected user; the worker's member role refuses the
/// protected users too; in the worker account the plan and restore operators' policies may
/// assume only their own role of a member account, never the worker's, which may write
/// every user's policies. Evaluated here with IAM's logic (an explicit Deny wins): the
/// emulator does not evaluate user ARNs or conditions.
#[test]
fn each_operator_gets_only_the_rights_of_their_command() {
    let protected = protected_user_arns();
    assert!(protected.contains("arn:aws:iam::*:user/break-glass-*"));
    let planners = "arn:aws:iam::111122223333:role/secops-planner";
    let restorers =
        "arn:aws:iam::111122223333:role/secops-oncall arn:aws:iam::111122223333:role/secops-lead";
    let member = Stack::load(
        "deploy/aws/member-role.cfn.json",
        &[
            ("WorkerAccountId", "111122223333"),
            ("OrganizationId", "o-exampleorgid"),
            ("ProtectedUserArns", &protected),
            ("PlannerPrincipalArns", planners),
            ("RestorerPrincipalArns", restorers),
        ],
    );
    let user = |name: &str| format!("arn:aws:iam::111122223333:user/{name}");
    let (alice, admin, terraform) = (
        user("alice"),
        user("break-glass-admin"),
        user("ops/terraform-ci"),
    );
    let config = Config::default();
    assert_eq!(
        member.properties("PlannerRole")["RoleName"],
        config.cross_account.planner_role_name.as_str()
    );
    assert_eq!(
        member.properties("RestorerRole")["RoleName"],
        config.cross_account.restorer_role_name.as_str()
    );

    let planner = role_policies(&member, "PlannerRole");
    for action in PLAN_CALLS {
        assert!(allows(&planner, action, &alice), "planner: {action}");
    }
    let everything = [
        iam_key_revoker::cli::deny::WRITE_ACTIONS,
        &[
            "iam:CreateAccessKey",
            "iam:AttachUserPolicy",
            "iam:ListUserPolicies",
        ],
    ]
    .concat();
    for action in &everything {
        assert!(!allows(&planner, action, &alice), "planner: {action}");
    }

    let restorer = role_policies(&member, "RestorerRole");
    for action in RESTORE_CALLS {
        assert!(allows(&restorer, action, &alice), "restorer: {action}");
    }
    for action in [
        "iam:PutUserPolicy",
        "iam:AttachUserPolicy",
        "iam:DeleteAccessKey",
        "iam:CreateAccessKey",
        "iam:CreateLoginProfile",
    ] {
        assert!(!allows(&restorer, action, &alice), "restorer: {action}");
    }
    for victim in [&admin, &terraform] {
        for action in iam_key_revoker::cli::deny::WRITE_ACTIONS {
            assert!(
                !allows(&restorer, action, victim),
                "restorer: {action} on {victim}"
            );
        }
        assert!(allows(&restorer, "iam:ListAccessKeys", victim));
    }
    // Only the quarantine policy may be detached.
    assert_detaches_only(&restorer[0], &config.quarantine.policy_arn);

    // Each trusts exactly the principals its parameter names, from inside the organization.
    for (role, principals) in [("PlannerRole", planners), ("RestorerRole", restorers)] {
        let trust = &member.properties(role)["AssumeRolePolicyDocument"]["Statement"];
        assert_eq!(trust.as_array().unwrap().len(), 1);
        assert_eq!(trust[0]["Action"], "sts:AssumeRole");
        assert_eq!(
            strings(&trust[0]["Principal"]["AWS"]),
            principals.split(' ').collect::<Vec<_>>()
        );
        assert_eq!(
            trust[0]["Condition"]["StringEquals"]["aws:PrincipalOrgID"],
            "o-exampleorgid"
        );
    }

    // The worker's member role: the same Deny, from the same parameter.
    let worker = role_policies(&member, "RevokerRole");
    assert_eq!(
        worker.len(),
        2,
        "the worker's permissions and the protected users' Deny"
    );
    for action in iam_key_revoker::cli::deny::WRITE_ACTIONS {
        assert!(!allows(&worker, action, &admin), "worker: {action}");
    }
    assert!(allows(&worker, "iam:DeleteAccessKey", &alice));

    // Without the parameters: no planner or restorer role, and no empty Deny.
    let bare = Stack::load(
        "deploy/aws/member-role.cfn.json",
        &[
            ("WorkerAccountId", "111122223333"),
            ("OrganizationId", "o-exampleorgid"),
        ],
    );
    assert!(!bare.creates("PlannerRole") && !bare.creates("RestorerRole"));
    assert!(bare.creates("RevokerRole"));
    assert_eq!(role_policies(&bare, "RevokerRole").len(), 1);

    // The worker account: the operators' policies assume their own role, never the
    // worker's; the restore operators' policy refuses the protected users.
    let stack = Stack::load(
        "deploy/aws/worker.cfn.json",
        &[
            (
                "OidcProvider",
                "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE0123456789",
            ),
            ("OrganizationId", "o-exampleorgid"),
            ("ProtectedUserArns", &protected),
        ],
    );
    let role_in = |name: &str| format!("arn:aws:iam::444455556666:role/{name}");
    let worker_member_role = role_in(
        config
            .cross_account
            .role_name
            .as_deref()
            .unwrap_or("iam-key-revoker"),
    );
    let plan = vec![stack.properties("PlanOperatorPolicy")["PolicyDocument"].clone()];
    let restore = vec![stack.properties("RestoreOperatorPolicy")["PolicyDocument"].clone()];
    let here = |name: &str| format!("arn:aws:iam::111122223333:user/{name}");
    assert!(allows(
        &plan,
        "sts:AssumeRole",
        &role_in("iam-key-revoker-planner")
    ));
    assert!(allows(
        &restore,
        "sts:AssumeRole",
        &role_in("iam-key-revoker-restorer")
    ));
    for (name, policy) in [("plan", &plan), ("restore", &restore)] {
        assert!(
            !allows(policy, "sts:AssumeRole", &worker_member_role),
            "{name} operators never take the worker's member role"
        );
        assert!(
            !allows(
                policy,
                "sts:AssumeRole",
                "arn:aws:iam::111122223333:role/iam-key-revoker-worker"
            ),
            "{name} operators never take the worker's role"
        );
        for action in [
            "iam:PutUserPolicy",
            "iam:AttachUserPolicy",
            "iam:DeleteAccessKey",
        ] {
            assert!(!allows(policy, action, &here("alice")), "{name}: {action}");
        }
    }
    assert!(!allows(
        &plan,
        "sts:AssumeRole",
        &role_in("iam-key-revoker-restorer")
    ));
    for action in PLAN_CALLS {
        assert!(allows(&plan, action, &here("alice")), "plan: {action}");
    }
    for action in iam_key_revoker::cli::deny::WRITE_ACTIONS {
        assert!(!allows(&plan, action, &here("alice")), "plan: {action}");
        assert!(
            !allows(&restore, action, &here("break-glass-admin")),
            "restore: {action} on a protected user"
        );
    }
    assert!(allows(&restore, "iam:UpdateAccessKey", &here("alice")));
    // The worker's own role refuses them too.
    let worker = worker_policies(&stack);
    for action in iam_key_revoker::cli::deny::WRITE_ACTIONS {
        assert!(
            !allows(&worker, action, &here("ops/terraform-ci")),
            "worker: {action}"
        );
    }
    assert!(allows(&worker, "iam:DeleteAccessKey", &here("alice")));
}

/// What the worker writes for others is its own: the outcome topic is encrypted with KMS,
/// and outcome events go to a bus of the stack's own whose policy denies `PutEvents` to
/// every principal but the worker's role (within one account an identity policy alone
/// would grant it: only an explicit Deny keeps others out, "Policy evaluation logic", IAM
/// User Guide). Producers in other accounts of the organization may send jobs, when named.
#[test]
fn outcome_sinks_are_the_workers_and_producers_elsewhere_are_named() {
    let stack = Stack::worker();
    assert_eq!(
        stack.properties("OutcomeTopic")["KmsMasterKeyId"],
        "alias/aws/sns"
    );
    let bus = stack.properties("OutcomeEventBus");
    assert_eq!(bus["Name"], "iam-key-revoker-outcomes");
    let policy = stack.properties("OutcomeEventBusPolicy");
    assert_eq!(policy["EventBusName"], "iam-key-revoker-outcomes");
    let statement = &policy["Statement"];
    assert_eq!(statement["Effect"], "Deny");
    assert_eq!(statement["Principal"], "*");
    assert_eq!(statement["Action"], "events:PutEvents");
    assert_eq!(
        statement["Resource"],
        "arn:aws:events:eu-west-1:111122223333:event-bus/iam-key-revoker-outcomes"
    );
    assert_eq!(
        statement["Condition"],
        serde_json::json!({"ArnNotEquals": {"aws:PrincipalArn": "arn:aws:iam::111122223333:role/iam-key-revoker-worker"}})
    );

    // No producer elsewhere unless named; named, on both job queues, from the organization.
    assert!(!stack.creates("JobQueuePolicy"));
    assert_eq!(
        stack.properties("PriorityQueuePolicy")["PolicyDocument"]["Statement"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let hr = "arn:aws:iam::777788889999:role/hr-offboarding";
    let with = Stack::load(
        "deploy/aws/worker.cfn.json",
        &[
            (
                "OidcProvider",
                "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE0123456789",
            ),
            ("OrganizationId", "o-exampleorgid"),
            ("ProducerPrincipalArns", hr),
        ],
    );
    assert!(with.creates("JobQueuePolicy"));
    for (policy, queue) in [
        ("JobQueuePolicy", "JobQueue"),
        ("PriorityQueuePolicy", "PriorityQueue"),
    ] {
        let statements = with.properties(policy)["PolicyDocument"]["Statement"].clone();
        let producers = statements
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == "ProducersOfOurOrganizationSend")
            .unwrap_or_else(|| panic!("{policy}"))
            .clone();
        assert_eq!(strings(&producers["Principal"]["AWS"]), vec![hr]);
        assert_eq!(
            producers["Resource"],
            with.resolve(&serde_json::json!({"Fn::GetAtt": [queue, "Arn"]}))
        );
        assert!(strings(&producers["Action"]).contains(&"sqs:SendMessage".to_owned()));
        assert!(!strings(&producers["Action"])
            .iter()
            .any(|a| a.contains("Receive") || a.contains("Delete")));
        assert_eq!(
            producers["Condition"]["StringEquals"]["aws:PrincipalOrgID"],
            "o-exampleorgid"
        );
    }
}

/// A forwarding that fails is seen: each rule's target has a dead-letter queue (an event
/// EventBridge could not deliver after its retries goes there instead of being dropped:
/// "Using dead-letter queues to process undelivered events", EventBridge User Guide),
/// which only those rules may send to; an alarm watches each rule's FailedInvocations and
/// one the dead-letter queue's depth, notifying the topic AlarmTopicName of the stack's
/// own Region, in AlarmTopicAccountId, when it is set.
#[test]
fn a_failing_forwarding_is_kept_and_alarmed() {
    let forwarding = Stack::load(
        "deploy/aws/forwarding.cfn.json",
        &[
            (
                "SecurityEventBusArn",
                "arn:aws:events:eu-west-1:111122223333:event-bus/iam-key-revoker",
            ),
            ("AlarmTopicName", "oncall"),
            ("AlarmTopicAccountId", "999988887777"),
        ],
    );
    let dlq = forwarding
        .resolve(&serde_json::json!({"Fn::GetAtt": ["ForwardingDeadLetterQueue", "Arn"]}));
    let mut rules = Vec::new();
    for rule in ["HealthForward", "GuardDutyForward"] {
        let targets = forwarding.properties(rule)["Targets"].clone();
        for target in targets.as_array().unwrap() {
            assert_eq!(target["DeadLetterConfig"]["Arn"], dlq, "{rule}");
        }
        rules.push(forwarding.resolve(&serde_json::json!({"Fn::GetAtt": [rule, "Arn"]})));
    }
    let policy = forwarding.properties("ForwardingDeadLetterQueuePolicy")["PolicyDocument"].clone();
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(
        statements[0]["Principal"],
        serde_json::json!({"Service": "events.amazonaws.com"})
    );
    assert_eq!(statements[0]["Action"], "sqs:SendMessage");
    assert_eq!(statements[0]["Resource"], dlq);
    assert_eq!(
        statements[0]["Condition"]["ArnEquals"]["aws:SourceArn"],
        serde_json::Value::Array(rules)
    );
    let alarms = forwarding.of_type("AWS::CloudWatch::Alarm");
    assert_eq!(alarms.len(), 3, "{alarms:?}");
    for alarm in &alarms {
        let properties = forwarding.properties(alarm);
        assert_eq!(
            properties["AlarmActions"],
            serde_json::json!(["arn:aws:sns:eu-west-1:999988887777:oncall"]),
            "{alarm}"
        );
        assert_eq!(properties["ComparisonOperator"], "GreaterThanThreshold");
        assert_eq!(properties["Threshold"], 0);
    }
    for rule in ["HealthForward", "GuardDutyForward"] {
        let alarm = forwarding.properties(&format!("{rule}Failing"));
        assert_eq!(alarm["MetricName"], "FailedInvocations");
        assert_eq!(alarm["Namespace"], "AWS/Events");
        assert_eq!(
            alarm["Dimensions"][0]["Value"],
            forwarding.resolve(&serde_json::json!({"Ref": rule}))
        );
    }
    // A Health-only instance (the StackSet's) keeps only its rule's alarm and grant.
    let health_only = Stack::load(
        "deploy/aws/forwarding.cfn.json",
        &[
            (
                "SecurityEventBusArn",
                "arn:aws:events:eu-west-1:111122223333:event-bus/iam-key-revoker",
            ),
            ("ForwardGuardDuty", "false"),
        ],
    );
    assert!(!health_only.creates("GuardDutyForwardFailing"));
    let policy =
        health_only.properties("ForwardingDeadLetterQueuePolicy")["PolicyDocument"].clone();
    assert_eq!(
        strings(&policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"]).len(),
        1
    );
    assert!(health_only
        .properties("ForwardingDeadLetters")
        .get("AlarmActions")
        .is_none());
}

/// The worker stack's own rules keep what they could not put on the priority queue (its
/// policy or encryption refusing EventBridge): a dead-letter queue of their own, which
/// only they may send to and the worker never reads, with an alarm on its depth.
#[test]
fn the_worker_stacks_rules_keep_what_they_could_not_deliver() {
    let stack = Stack::worker();
    let arn = |id: &str| stack.resolve(&serde_json::json!({"Fn::GetAtt": [id, "Arn"]}));
    let dlq = arn("SecurityEventDeadLetterQueue");
    for rule in ["HealthRule", "GuardDutyRule"] {
        let targets = stack.properties(rule)["Targets"].clone();
        for target in targets.as_array().unwrap() {
            assert_eq!(target["DeadLetterConfig"]["Arn"], dlq, "{rule}");
        }
    }
    let policy = stack.properties("SecurityEventDeadLetterQueuePolicy")["PolicyDocument"].clone();
    let statement = &policy["Statement"][0];
    assert_eq!(policy["Statement"].as_array().unwrap().len(), 1);
    assert_eq!(
        statement["Principal"],
        serde_json::json!({"Service": "events.amazonaws.com"})
    );
    assert_eq!(statement["Action"], "sqs:SendMessage");
    assert_eq!(
        statement["Condition"]["ArnEquals"]["aws:SourceArn"],
        serde_json::json!([arn("HealthRule"), arn("GuardDutyRule")])
    );
    let worker = worker_policies(&stack);
    for action in ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage"] {
        assert!(!allows(&worker, action, dlq.as_str().unwrap()), "{action}");
    }
    let alarm = stack.properties("SecurityEventsUndelivered");
    assert_eq!(alarm["MetricName"], "ApproximateNumberOfMessagesVisible");
    assert_eq!(
        alarm["Dimensions"][0]["Value"],
        "iam-key-revoker-security-events-dlq"
    );
}

/// Whether `policies` allow `action` on `resource` for a request whose
/// `dynamodb:LeadingKeys` are `leading` (`None`: the request carries no key, as a `Scan`),
/// with IAM's condition logic for the operators this repository's policies use on that
/// key ("IAM JSON policy elements: Condition operators", IAM User Guide): `ForAllValues`
/// is true of a key the request does not carry, which is why each statement also says
/// `Null: false`; every other condition is taken as met (tests above check each one).
fn allows_on_item(
    policies: &[serde_json::Value],
    action: &str,
    resource: &str,
    leading: Option<&[&str]>,
) -> bool {
    let conditions_met = |s: &serde_json::Value| {
        let Some(condition) = s["Condition"].as_object() else {
            return true;
        };
        condition.iter().all(|(operator, keys)| {
            let Some(patterns) = keys.get("dynamodb:LeadingKeys") else {
                return true;
            };
            match operator.as_str() {
                "ForAllValues:StringLike" => leading.is_none_or(|values| {
                    values
                        .iter()
                        .all(|v| strings(patterns).iter().any(|p| wildcard(p, v)))
                }),
                "Null" => (patterns == "true") == leading.is_none(),
                other => panic!("condition operator {other} on dynamodb:LeadingKeys"),
            }
        })
    };
    evaluate(policies, action, resource, conditions_met)
}

/// The breaker's table (docs, "The breaker") separates who counts from who decides by
/// the partition key's prefix (`dynamodb:LeadingKeys`, DynamoDB Developer Guide, "Using
/// IAM policy conditions for fine-grained access control"): the worker's role may update
/// counts, record holds and read approvals and pauses, never write an approval or a
/// pause; the breaker operators may approve, decide, pause and resume and list the
/// table, never change a count; the plan operators only read counts; producers and
/// restorers nothing. The emulator evaluates no condition: this is IAM's logic on the
/// shipped policies.
#[test]
fn only_operators_approve_or_pause_and_only_the_worker_counts() {
    let stack = Stack::worker();
    let table = stack.resolve(&serde_json::json!({"Fn::GetAtt": ["BreakerTable", "Arn"]}));
    let table = table.as_str().unwrap();
    assert_eq!(
        stack.outputs()["IAM_KEY_REVOKER__BREAKER__TABLE_NAME"],
        "iam-key-revoker-breaker"
    );
    let keys = stack.properties("BreakerTable");
    assert_eq!(keys["KeySchema"][0]["AttributeName"], "pk");
    assert_eq!(
        keys["KeySchema"].as_array().unwrap().len(),
        1,
        "a partition key alone: LeadingKeys is the whole key"
    );
    assert_eq!(
        keys["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    let count = table::count_key(Lane::Main, Some("444455556666"));
    let all = table::count_key(Lane::Priority, None);
    let held = table::held_key("r-1");
    let approval = table::approval_key("r-1");
    let pause = table::pause_key(Lane::Main);
    let on = |policies: &[serde_json::Value], action: &str, pk: &str| {
        allows_on_item(policies, action, table, Some(&[pk]))
    };

    let worker = worker_policies(&stack);
    for (action, pk) in [
        ("dynamodb:UpdateItem", &count),
        ("dynamodb:UpdateItem", &all),
        ("dynamodb:PutItem", &held),
        // Reading a hold, and spending an approval on it (the approval itself is an
        // operator's item).
        ("dynamodb:GetItem", &held),
        ("dynamodb:UpdateItem", &held),
        ("dynamodb:GetItem", &approval),
        ("dynamodb:GetItem", &pause),
        ("dynamodb:ConditionCheckItem", &pause),
    ] {
        assert!(on(&worker, action, pk), "worker: {action} on {pk}");
    }
    for (action, pk) in [
        ("dynamodb:PutItem", &approval),
        ("dynamodb:UpdateItem", &approval),
        ("dynamodb:PutItem", &pause),
        ("dynamodb:UpdateItem", &pause),
        ("dynamodb:ConditionCheckItem", &approval),
        ("dynamodb:PutItem", &count),
        ("dynamodb:DeleteItem", &pause),
        ("dynamodb:DeleteItem", &approval),
        ("dynamodb:BatchWriteItem", &approval),
    ] {
        assert!(!on(&worker, action, pk), "worker: {action} on {pk}");
    }
    // A request with a key of each kind is refused whole.
    assert!(!allows_on_item(
        &worker,
        "dynamodb:UpdateItem",
        table,
        Some(&[count.as_str(), approval.as_str()])
    ));
    // Without a key to check (a Scan, a PartiQL statement), nothing.
    for action in [
        "dynamodb:Scan",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "dynamodb:PartiQLUpdate",
    ] {
        assert!(
            !allows_on_item(&worker, action, table, None),
            "worker: {action}"
        );
    }

    let operators = vec![stack.properties("BreakerOperatorPolicy")["PolicyDocument"].clone()];
    for (action, pk) in [
        ("dynamodb:PutItem", &approval),
        ("dynamodb:UpdateItem", &held),
        ("dynamodb:PutItem", &pause),
        ("dynamodb:GetItem", &count),
    ] {
        assert!(on(&operators, action, pk), "operators: {action} on {pk}");
    }
    assert!(allows_on_item(&operators, "dynamodb:Scan", table, None));
    for action in [
        "dynamodb:UpdateItem",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
    ] {
        assert!(
            !on(&operators, action, &count),
            "operators: {action} on counts"
        );
    }
    let queue = |name: &str| format!("arn:aws:sqs:eu-west-1:111122223333:{name}");
    for q in ["iam-key-revocations", "iam-key-revocations-priority"] {
        assert!(allows(&operators, "sqs:SendMessage", &queue(q)));
    }
    for action in iam_key_revoker::cli::deny::WRITE_ACTIONS {
        assert!(
            !allows(&operators, action, "arn:aws:iam::111122223333:user/alice"),
            "operators: {action}"
        );
    }

    let plan = vec![stack.properties("PlanOperatorPolicy")["PolicyDocument"].clone()];
    assert!(on(&plan, "dynamodb:GetItem", &count));
    for (action, pk) in [
        ("dynamodb:GetItem", &held),
        ("dynamodb:PutItem", &approval),
        ("dynamodb:UpdateItem", &count),
    ] {
        assert!(!on(&plan, action, pk), "plan: {action} on {pk}");
    }
    for name in ["ProducerPolicy", "RestoreOperatorPolicy"] {
        let policy = vec![stack.properties(name)["PolicyDocument"].clone()];
        for pk in [&count, &held, &approval, &pause] {
            for action in [
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:GetItem",
            ] {
                assert!(!on(&policy, action, pk), "{name}: {action} on {pk}");
            }
        }
    }
}
