//! The shipped CloudFormation templates read the way CloudFormation would create them:
//! intrinsic functions resolved for one example account and Region, and the outputs as
//! the `stack.env` deploy/scripts/20-worker-account.sh writes. For checks that need no emulator; the
//! deploy test (tests/deploy_stack.rs) creates the stacks on the emulator.

#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

pub const ACCOUNT: &str = "111122223333";
pub const REGION: &str = "eu-west-1";
/// What `Ref: AWS::NoValue` resolves to here, before the element holding it is removed.
const NO_VALUE: &str = "<AWS::NoValue>";

/// A template with its parameters' values (defaults, then `overrides`).
pub struct Stack {
    pub template: Value,
    params: BTreeMap<String, String>,
}

impl Stack {
    pub fn load(path: &str, overrides: &[(&str, &str)]) -> Self {
        let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let template: Value = serde_json::from_str(&text).expect("the template is JSON");
        let mut params = BTreeMap::new();
        for (name, spec) in template["Parameters"].as_object().into_iter().flatten() {
            if let Some(default) = spec["Default"].as_str() {
                params.insert(name.clone(), default.to_owned());
            }
        }
        for (name, value) in overrides {
            assert!(
                template["Parameters"].get(*name).is_some(),
                "{path} has a parameter {name}"
            );
            params.insert((*name).to_owned(), (*value).to_owned());
        }
        Self { template, params }
    }

    /// The worker stack with example values for its required parameters.
    pub fn worker() -> Self {
        Self::load(
            "deploy/aws/worker.cfn.json",
            &[
                (
                    "OidcProvider",
                    "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE0123456789",
                ),
                ("OrganizationId", "o-exampleorgid"),
            ],
        )
    }

    pub fn resource(&self, logical: &str) -> &Value {
        let resource = &self.template["Resources"][logical];
        assert!(resource.is_object(), "the template has {logical}");
        resource
    }

    /// A resource's properties, resolved.
    pub fn properties(&self, logical: &str) -> Value {
        self.resolve(&self.resource(logical)["Properties"])
    }

    /// A policy document property, resolved (and parsed, when it is a string).
    pub fn document(&self, logical: &str, property: &str) -> Value {
        match self.properties(logical)[property].clone() {
            Value::String(text) => serde_json::from_str(&text).expect("a JSON document"),
            other => other,
        }
    }

    /// Logical ids of the resources of `kind`.
    pub fn of_type(&self, kind: &str) -> Vec<String> {
        self.template["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, r)| r["Type"] == kind)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The outputs as `stack.env` holds them: the description names the variable.
    pub fn outputs(&self) -> BTreeMap<String, String> {
        self.template["Outputs"]
            .as_object()
            .unwrap()
            .values()
            .map(|o| {
                (
                    o["Description"].as_str().unwrap().to_owned(),
                    self.resolve(&o["Value"]).as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn name(&self, logical: &str, property: &str) -> String {
        let properties = &self.resource(logical)["Properties"];
        // A queue or rule without a name gets one CloudFormation makes up.
        if ["QueueName", "Name"].contains(&property) && properties.get(property).is_none() {
            return format!("stack-{logical}-GENERATED");
        }
        self.resolve(&properties[property])
            .as_str()
            .unwrap_or_else(|| panic!("{logical} has a {property}"))
            .to_owned()
    }

    fn sub(&self, text: &str) -> String {
        let mut out = text
            .replace("${AWS::Partition}", "aws")
            .replace("${AWS::AccountId}", ACCOUNT)
            .replace("${AWS::Region}", REGION);
        for (name, value) in &self.params {
            out = out.replace(&format!("${{{name}}}"), value);
        }
        // `${Logical}` of a resource is its `Ref`.
        while let Some(start) = out.find("${") {
            let end = start + out[start..].find('}').expect("a closing brace");
            let logical = out[start + 2..end].to_owned();
            if self.template["Resources"].get(&logical).is_none() {
                break;
            }
            let value = self.reference(&logical);
            out.replace_range(start..=end, value.as_str().unwrap());
        }
        assert!(!out.contains("${"), "unresolved in {text}");
        out
    }

    fn reference(&self, name: &str) -> Value {
        match name {
            "AWS::NoValue" => return json!(NO_VALUE),
            "AWS::Region" => return json!(REGION),
            "AWS::AccountId" => return json!(ACCOUNT),
            "AWS::Partition" => return json!("aws"),
            _ => {}
        }
        if let Some(value) = self.params.get(name) {
            return json!(value);
        }
        let resource = self.resource(name);
        json!(match resource["Type"].as_str().unwrap() {
            "AWS::SQS::Queue" => format!(
                "https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{}",
                self.name(name, "QueueName")
            ),
            "AWS::IAM::Role" => self.name(name, "RoleName"),
            // CloudFormation: Ref of a rule on the default bus is its name.
            "AWS::Events::Rule" => self.name(name, "Name"),
            // CloudFormation: Ref of a schedule group is its name.
            "AWS::Scheduler::ScheduleGroup" => self.name(name, "Name"),
            "AWS::SNS::Topic" => format!(
                "arn:aws:sns:{REGION}:{ACCOUNT}:{}",
                self.name(name, "TopicName")
            ),
            // CloudFormation: Ref of an alias is its name.
            "AWS::KMS::Alias" => self.name(name, "AliasName"),
            // CloudFormation: Ref of a table is its name.
            "AWS::DynamoDB::Table" => self.name(name, "TableName"),
            "AWS::IAM::ManagedPolicy" => format!(
                "arn:aws:iam::{ACCOUNT}:policy/{}",
                self.name(name, "ManagedPolicyName")
            ),
            other => panic!("Ref of a {other}"),
        })
    }

    fn attribute(&self, logical: &str, attribute: &str) -> Value {
        let resource = self.resource(logical);
        json!(match (resource["Type"].as_str().unwrap(), attribute) {
            ("AWS::SQS::Queue", "Arn") => format!(
                "arn:aws:sqs:{REGION}:{ACCOUNT}:{}",
                self.name(logical, "QueueName")
            ),
            ("AWS::SQS::Queue", "QueueName") => self.name(logical, "QueueName"),
            ("AWS::IAM::Role", "Arn") => {
                // A role without a name gets one CloudFormation makes up.
                let name = match resource["Properties"].get("RoleName") {
                    Some(_) => self.name(logical, "RoleName"),
                    None => format!("stack-{logical}-GENERATED"),
                };
                format!("arn:aws:iam::{ACCOUNT}:role/{name}")
            }
            ("AWS::Events::EventBus", "Arn") => format!(
                "arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{}",
                self.name(logical, "Name")
            ),
            ("AWS::Events::EventBus", "Name") => self.name(logical, "Name"),
            ("AWS::DynamoDB::Table", "Arn") => format!(
                "arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}",
                self.name(logical, "TableName")
            ),
            ("AWS::KMS::Key", "Arn") => {
                format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{logical}-GENERATED")
            }
            ("AWS::Events::Rule", "Arn") => {
                let bus = self.resolve(&resource["Properties"]["EventBusName"]);
                let name = self.name(logical, "Name");
                match bus.as_str() {
                    Some(bus) if bus != "default" => {
                        format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/{bus}/{name}")
                    }
                    _ => format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}"),
                }
            }
            (kind, attribute) => panic!("GetAtt {attribute} of a {kind}"),
        })
    }

    /// `value` with `Ref`, `Fn::GetAtt` and `Fn::Sub` resolved.
    pub fn resolve(&self, value: &Value) -> Value {
        match value {
            Value::Object(map) if map.len() == 1 => {
                let (key, arg) = map.iter().next().unwrap();
                match key.as_str() {
                    "Ref" => self.reference(arg.as_str().unwrap()),
                    "Fn::GetAtt" => {
                        self.attribute(arg[0].as_str().unwrap(), arg[1].as_str().unwrap())
                    }
                    "Fn::Sub" => match arg {
                        Value::Array(form) => {
                            // The list form: the text, and variables of its own.
                            let mut text = form[0].as_str().unwrap().to_owned();
                            for (name, value) in form[1].as_object().unwrap() {
                                let value = self.resolve(value);
                                text =
                                    text.replace(&format!("${{{name}}}"), value.as_str().unwrap());
                            }
                            json!(self.sub(&text))
                        }
                        text => json!(self.sub(text.as_str().unwrap())),
                    },
                    "Fn::If" => {
                        let chosen = if self.condition(arg[0].as_str().unwrap()) {
                            &arg[1]
                        } else {
                            &arg[2]
                        };
                        self.resolve(chosen)
                    }
                    // CloudFormation: an empty string split is one empty string.
                    "Fn::Split" => {
                        let text = self.resolve(&arg[1]);
                        json!(text
                            .as_str()
                            .unwrap()
                            .split(arg[0].as_str().unwrap())
                            .collect::<Vec<_>>())
                    }
                    _ => Value::Object(self.resolve_map(map)),
                }
            }
            Value::Object(map) => Value::Object(self.resolve_map(map)),
            // `AWS::NoValue` removes the element it stands for.
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.resolve(v))
                    .filter(|v| *v != json!(NO_VALUE))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Whether the template's condition `name` holds for these parameters (`Fn::Equals`
    /// and `Fn::Not`, the kinds the templates use).
    pub fn condition(&self, name: &str) -> bool {
        self.holds(&self.template["Conditions"][name], name)
    }

    fn holds(&self, condition: &Value, name: &str) -> bool {
        if let Some(inner) = condition["Fn::Not"].as_array() {
            return !self.holds(&inner[0], name);
        }
        let equals = condition["Fn::Equals"]
            .as_array()
            .unwrap_or_else(|| panic!("condition {name} is an Fn::Equals or Fn::Not"));
        self.resolve(&equals[0]) == self.resolve(&equals[1])
    }

    /// Whether the resource `logical` is created for these parameters (its `Condition`).
    pub fn creates(&self, logical: &str) -> bool {
        self.resource(logical)["Condition"]
            .as_str()
            .is_none_or(|c| self.condition(c))
    }

    fn resolve_map(&self, map: &Map<String, Value>) -> Map<String, Value> {
        map.iter()
            .map(|(k, v)| (k.clone(), self.resolve(v)))
            .filter(|(_, v)| *v != json!(NO_VALUE))
            .collect()
    }
}

/// `deploy/kubernetes` as `kubectl apply -k` renders it, with `stack.env` written from
/// `outputs` and `image`: every document.
pub fn rendered_manifests(outputs: &BTreeMap<String, String>, image: &str) -> Vec<Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kubernetes");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(format!("{root}/deploy/kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "stack.env" {
            std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
    }
    let mut env: String = outputs.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    env.push_str(&format!("IMAGE={image}\n"));
    std::fs::write(copy.join("stack.env"), env).unwrap();
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&copy)
        .output()
        .expect("kubectl (with its built-in kustomize) is installed");
    assert!(
        output.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    documents(&String::from_utf8(output.stdout).unwrap())
}

/// The documents of a multi-document YAML text, as JSON.
pub fn documents(text: &str) -> Vec<Value> {
    text.split("\n---\n").map(yaml_to_json).collect()
}

fn yaml_to_json(doc: &str) -> Value {
    let docs = yaml_rust2::YamlLoader::load_from_str(doc).expect("kustomize writes YAML");
    convert(&docs[0])
}

fn convert(yaml: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match yaml {
        Yaml::String(s) => json!(s),
        Yaml::Integer(i) => json!(i),
        Yaml::Real(r) => json!(r.parse::<f64>().unwrap()),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(items) => Value::Array(items.iter().map(convert).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().expect("string keys").to_owned(), convert(v)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// The document of `kind` among `docs`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("a {kind}"))
}
