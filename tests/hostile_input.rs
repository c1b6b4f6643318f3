//! Hostile input. Property tests: any text either parses to a job that satisfies every
//! rule of the job message's (docs, "The job message") (checked by an oracle written independently of the parser)
//! or is rejected, never a panic. And thousands of random bodies through a live worker
//! all end dead-lettered byte-identical, with no IAM write.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::proxy::{FaultProxy, Scope};
use common::TestEnv;
use iam_key_revoker::job::{self, Job, Target};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

/// The rules of the job message's (docs, "The job message"), restated independently of `job::parse`.
fn oracle(object: &Map<String, Value>) -> bool {
    if object.keys().any(|k| !job::FIELDS.contains(&k.as_str())) {
        return false;
    }
    let text = |k: &str| object.get(k).map(|v| v.as_str());
    let chars_ok = |v: &str, min: usize, max: usize, ok: &dyn Fn(char) -> bool| {
        (min..=max).contains(&v.chars().count()) && v.chars().all(ok)
    };
    let Some(Some(request_id)) = text("request_id") else {
        return false;
    };
    if !chars_ok(request_id, 1, 128, &|c| {
        c.is_ascii_alphanumeric() || "._:/-".contains(c)
    }) {
        return false;
    }
    let key = match text("access_key_id") {
        None => None,
        Some(Some(k))
            if chars_ok(k, 16, 128, &|c| {
                c.is_ascii_uppercase() || c.is_ascii_digit()
            }) =>
        {
            Some(k)
        }
        Some(_) => return false,
    };
    let user = match text("user_name") {
        None => None,
        Some(Some(u))
            if chars_ok(u, 1, 64, &|c| {
                c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
            }) =>
        {
            Some(u)
        }
        Some(_) => return false,
    };
    let all_keys = match object.get("all_keys") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return false,
    };
    for flag in ["revoke_sessions", "quarantine_user", "report_activity"] {
        if !matches!(object.get(flag), None | Some(Value::Bool(_))) {
            return false;
        }
    }
    if !matches!(text("action"), None | Some(Some("delete" | "deactivate"))) {
        return false;
    }
    match text("account_id") {
        None => {}
        Some(Some(a)) if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) => {}
        Some(_) => return false,
    }
    for (field, max) in [("reason", 1024), ("requested_by", 256), ("batch_id", 128)] {
        match text(field) {
            None => {}
            Some(Some(v)) if v.chars().count() <= max => {}
            Some(_) => return false,
        }
    }
    match object.get("require_status") {
        None => {}
        Some(Value::String(status)) if status == "Inactive" && key.is_some() && user.is_some() => {}
        Some(_) => return false,
    }
    match object.get("delete_after") {
        None => {}
        Some(Value::String(when))
            if is_delete_after(when)
                && text("action") == Some(Some("deactivate"))
                && !object.contains_key("require_status") => {}
        Some(_) => return false,
    }
    // The clock from exposure: RFC 3339, not in the future.
    match object.get("detected_at") {
        None => {}
        Some(Value::String(when)) if DETECTED.contains(&when.as_str()) => {}
        Some(_) => return false,
    }
    // A role's sessions: the role alone, and nothing that acts on a key.
    match text("role_name") {
        None => {}
        Some(Some(role))
            if chars_ok(role, 1, 64, &|c| {
                c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
            }) =>
        {
            let keyed = [
                "access_key_id",
                "user_name",
                "all_keys",
                "action",
                "delete_after",
                "require_status",
                "quarantine_user",
                "report_activity",
            ];
            return !keyed.iter().any(|k| object.contains_key(*k))
                && object.get("revoke_sessions") != Some(&Value::Bool(false));
        }
        Some(_) => return false,
    }
    match (all_keys, key, user) {
        (true, Some(_), _) => false,
        (true, None, user) => user.is_some(),
        (false, key, _) => key.is_some(),
    }
}

/// The detection times the generator gives that are valid: RFC 3339, in the past.
const DETECTED: [&str; 3] = [
    "2026-12-07T10:00:00Z",
    "2026-12-07T11:00:00+01:00",
    "2020-01-01t00:00:00.5z",
];

/// The contract's `delete_after`: a whole number of minutes, hours or days (not zero, at
/// most ten years), or an RFC 3339 time (the generator's own, plus what it mangles).
fn is_delete_after(when: &str) -> bool {
    const TIMES: [&str; 3] = [
        "2099-01-01T00:00:00Z",
        "2099-01-01T00:00:00+01:00",
        "2099-06-30t23:59:59.5z",
    ];
    if TIMES.contains(&when) {
        return true;
    }
    let Some(unit) = when.chars().last() else {
        return false;
    };
    let digits = &when[..when.len() - unit.len_utf8()];
    let per = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return false,
    };
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits
            .parse::<u64>()
            .is_ok_and(|n| n > 0 && n.checked_mul(per).is_some_and(|s| s <= 3650 * 86_400))
}

/// The job a valid object describes, as the oracle reads it.
fn satisfies(job: &Job, object: &Map<String, Value>) -> bool {
    let s = |k: &str| object.get(k).and_then(|v| v.as_str());
    job.request_id == s("request_id").unwrap_or_default()
        && job.user_name() == s("user_name")
        && job.access_key_id() == s("access_key_id")
        && matches!(job.target, Target::AllKeys { .. })
            == (object.get("all_keys") == Some(&Value::Bool(true)))
        && job.action.as_str() == s("action").unwrap_or("delete")
        && job.account_id.as_deref() == s("account_id")
        && job.revoke_sessions == (object.get("revoke_sessions") == Some(&Value::Bool(true)))
        && job.quarantine_user == (object.get("quarantine_user") == Some(&Value::Bool(true)))
        && job.report_activity == (object.get("report_activity") == Some(&Value::Bool(true)))
        && job.require_inactive == object.contains_key("require_status")
        && job.delete_after.as_deref().map(|d| d.text()) == s("delete_after")
        && job.role_name() == s("role_name")
        && job.detected_at_ms.is_some() == object.contains_key("detected_at")
}

/// A value that is often valid for `field`, often subtly not.
fn field_value(field: &'static str) -> BoxedStrategy<Value> {
    let text = |pattern: &'static str| pattern.prop_map(Value::from).boxed();
    let valid = match field {
        "request_id" => text("[A-Za-z0-9._:/-]{1,130}"),
        "access_key_id" => text("[A-Z0-9]{14,130}"),
        "user_name" => text("[A-Za-z0-9+=,.@_-]{0,66}"),
        "all_keys" | "revoke_sessions" | "quarantine_user" | "report_activity" => {
            any::<bool>().prop_map(Value::from).boxed()
        }
        "action" => prop_oneof![
            Just("delete"),
            Just("deactivate"),
            Just("Delete"),
            Just("destroy")
        ]
        .prop_map(Value::from)
        .boxed(),
        "account_id" => text("[0-9]{11,13}"),
        "require_status" => prop_oneof![Just("Inactive"), Just("Active"), Just("inactive")]
            .prop_map(Value::from)
            .boxed(),
        "delete_after" => prop_oneof![
            Just("30d"),
            Just("12h"),
            Just("90m"),
            Just("3650d"),
            Just("3651d"),
            Just("0d"),
            Just("1w"),
            Just("30D"),
            Just("2099-01-01T00:00:00Z"),
            Just("2099-01-01T00:00:00+01:00"),
            Just("2099-06-30t23:59:59.5z"),
            Just("2099-01-01"),
            Just("soon"),
        ]
        .prop_map(Value::from)
        .boxed(),
        "role_name" => text("[A-Za-z0-9+=,.@_-]{0,66}"),
        "detected_at" => prop_oneof![
            Just(DETECTED[0]),
            Just(DETECTED[1]),
            Just(DETECTED[2]),
            Just("2999-01-01T00:00:00Z"),
            Just("2026-12-07"),
            Just("yesterday"),
        ]
        .prop_map(Value::from)
        .boxed(),
        "reason" => text(".{0,1030}"),
        "requested_by" => text(".{0,260}"),
        _ => text(".{0,130}"),
    };
    prop_oneof![
        8 => valid,
        1 => Just(Value::Null),
        1 => any::<i64>().prop_map(Value::from),
        1 => ".{0,20}".prop_map(Value::from),
        1 => Just(json!(["x"])),
    ]
    .boxed()
}

fn job_object() -> impl Strategy<Value = Map<String, Value>> {
    let fields: Vec<&'static str> = job::FIELDS.iter().copied().chain(["colour"]).collect();
    let entries: Vec<_> = fields
        .iter()
        .map(|f| {
            proptest::option::weighted(if *f == "colour" { 0.05 } else { 0.6 }, field_value(f))
        })
        .collect();
    entries.prop_map(move |values| {
        fields
            .iter()
            .zip(values)
            .filter_map(|(f, v)| v.map(|v| ((*f).to_owned(), v)))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_text_is_a_valid_job_or_rejected_never_a_panic(body in any::<String>()) {
        if let Ok(job) = job::parse(&body) {
            let object: Map<String, Value> = serde_json::from_str(&job.to_body()).unwrap();
            prop_assert!(oracle(&object), "accepted an invalid job: {body:?}");
        }
    }

    #[test]
    fn near_valid_objects_are_judged_exactly_as_the_contract_says(object in job_object()) {
        let body = Value::Object(object.clone()).to_string();
        let parsed = job::parse(&body);
        prop_assert_eq!(parsed.is_ok(), oracle(&object), "{}: {:?}", body, parsed);
        if let Ok(job) = parsed {
            prop_assert!(satisfies(&job, &object));
            prop_assert_eq!(job::parse(&job.to_body()).unwrap(), job);
        }
    }

    #[test]
    fn sns_envelopes_are_judged_by_their_message(object in job_object()) {
        let inner = Value::Object(object.clone()).to_string();
        let envelope = json!({"Type": "Notification", "MessageId": "m", "Message": inner}).to_string();
        prop_assert_eq!(job::parse(&envelope).is_ok(), oracle(&object));
    }
}

/// Text SQS accepts as a message body (XML 1.0 characters), random and never a job.
fn random_bodies(count: usize) -> Vec<String> {
    let chars = prop_oneof![
        4 => proptest::char::range(' ', '~'),
        1 => Just('\n'),
        1 => Just('\t'),
        1 => proptest::char::range('\u{a0}', '\u{d7ff}'),
        1 => proptest::char::range('\u{e000}', '\u{fffd}'),
        1 => proptest::char::range('\u{10000}', '\u{10ffff}'),
    ];
    let body = prop_oneof![
        3 => proptest::collection::vec(chars, 1..300).prop_map(|c| c.into_iter().collect::<String>()),
        1 => job_object().prop_filter("invalid", |o| !oracle(o)).prop_map(|o| Value::Object(o).to_string()),
    ];
    let mut runner = TestRunner::deterministic();
    (0..count)
        .map(|_| body.new_tree(&mut runner).unwrap().current())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_random_bodies_are_all_dead_lettered_byte_identical() {
    let mut env = TestEnv::new("random").await;
    env.config.worker.max_in_flight = 32;
    let proxy = FaultProxy::start(&common::endpoint(), Scope::Iam).await;
    env.route_iam_through(&proxy).await;
    let bodies = random_bodies(2_000);
    assert!(bodies.iter().all(|b| job::parse(b).is_err()));

    let worker = Arc::new(env.worker().await);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    // Fed as the queue drains, and the dead-letter queue read as it fills: the emulator
    // slows down on deep queues.
    let mut dead = Vec::new();
    let mut chunks = bodies.chunks(10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(400);
    while dead.len() < bodies.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker keeps up: {} done",
            dead.len()
        );
        let (visible, in_flight) = env.queue_depth().await;
        if visible + in_flight < 60 {
            if let Some(chunk) = chunks.next() {
                env.send_batch(chunk).await;
            }
        }
        for message in common::receive(&env.clients.sqs, &env.dlq_url, 10, 0).await {
            env.clients
                .sqs
                .delete_message()
                .queue_url(&env.dlq_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            dead.push(message);
        }
    }
    env.wait_until_drained(Duration::from_secs(60)).await;
    shutdown.cancel();
    running.await.unwrap();

    let mut expected: HashMap<&str, usize> = HashMap::new();
    for body in &bodies {
        *expected.entry(body.as_str()).or_default() += 1;
    }
    let mut got: HashMap<&str, usize> = HashMap::new();
    for message in &dead {
        *got.entry(message.body().unwrap()).or_default() += 1;
        assert_eq!(
            common::attribute(message, "revoker-reason").as_deref(),
            Some("invalid_message")
        );
    }
    assert_eq!(dead.len(), bodies.len(), "every body dead-lettered once");
    assert!(env.dead_letters().await.is_empty(), "and no more");
    assert_eq!(got, expected, "byte-identical copies");
    let writes = proxy.count("DeleteAccessKey") + proxy.count("UpdateAccessKey");
    assert_eq!(writes, 0, "no IAM write");
    assert!(proxy.operations().is_empty(), "not even an IAM read");
}
