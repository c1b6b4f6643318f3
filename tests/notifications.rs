//! docs "Notifications": outcome events reach an SNS topic and an EventBridge bus, end
//! to end through the emulator: the topic delivers to SQS subscribers (one of them with a
//! filter policy on the message attributes), and a rule on the bus sends the events to an
//! SQS target. Against the local emulator through the real SDK.

mod common;

use std::time::Duration;

use aws_sdk_sqs::types::Message;
use common::TestEnv;
use iam_key_revoker::Outcome;
use serde_json::{json, Value};

/// The emulator's account.
const ACCOUNT: &str = "123456789012";

struct Sinks {
    topic_arn: String,
    /// Every message of the topic, in SNS's envelope.
    all: String,
    /// Only rejected jobs' messages: a subscription filter policy on `outcome`.
    rejected_only: String,
    bus: String,
    /// What the bus's rule sends on.
    from_bus: String,
}

async fn sinks(env: &TestEnv) -> Sinks {
    let sdk = &env.clients.sdk;
    let sns = aws_sdk_sns::Client::new(sdk);
    let events = aws_sdk_eventbridge::Client::new(sdk);
    let sqs = &env.clients.sqs;
    let topic_arn = sns
        .create_topic()
        .name(format!("{}-outcomes", env.name))
        .send()
        .await
        .expect("create topic")
        .topic_arn
        .expect("topic arn");
    let all = common::create_queue(sqs, &format!("{}-all", env.name), None).await;
    let rejected_only = common::create_queue(sqs, &format!("{}-rej", env.name), None).await;
    for (queue, filter) in [
        (&all, None),
        (&rejected_only, Some(r#"{"outcome": ["rejected"]}"#)),
    ] {
        let mut request = sns
            .subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(common::queue_arn(sqs, queue).await);
        if let Some(filter) = filter {
            request = request.attributes("FilterPolicy", filter);
        }
        request.send().await.expect("subscribe");
    }
    let bus = format!("{}-bus", env.name);
    events
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .expect("create bus");
    let from_bus = common::create_queue(sqs, &format!("{}-evt", env.name), None).await;
    events
        .put_rule()
        .name("revocations")
        .event_bus_name(&bus)
        .event_pattern(
            json!({"source": ["iam-key-revoker"], "detail-type": ["Key Revocation Outcome"]})
                .to_string(),
        )
        .send()
        .await
        .expect("put rule");
    events
        .put_targets()
        .rule("revocations")
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(common::queue_arn(sqs, &from_bus).await)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("put targets");
    Sinks {
        topic_arn,
        all,
        rejected_only,
        bus,
        from_bus,
    }
}

/// Receives from `queue` until `count` messages came or `limit` passed.
async fn collect(env: &TestEnv, queue: &str, count: usize, limit: Duration) -> Vec<Message> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while got.len() < count && tokio::time::Instant::now() < deadline {
        got.extend(common::receive(&env.clients.sqs, queue, 10, 1).await);
    }
    got
}

fn body(message: &Message) -> Value {
    serde_json::from_str(message.body().unwrap_or_default()).expect("JSON body")
}

fn health_event(id: &str, key: &str, user: &str) -> String {
    json!({
        "version": "0",
        "id": id,
        "detail-type": "AWS Health Event",
        "source": "aws.health",
        "account": ACCOUNT,
        "time": "2026-11-30T06:27:57Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "eventArn": format!("arn:aws:health:global::event/RISK/AWS_RISK_CREDENTIALS_EXPOSED/{id}"),
            "service": "RISK",
            "eventTypeCode": "AWS_RISK_CREDENTIALS_EXPOSED",
            "eventTypeCategory": "issue",
            "communicationId": format!("comm-{id}"),
            "startTime": "Mon, 30 Nov 2026 06:10:09 GMT",
            "eventDescription": [{"language": "en_US", "latestDescription": "Your AWS Access Key was found publicly available."}],
            "affectedEntities": [{"entityValue": key}],
            "eventMetadata": {"userName": user, "publicKey": key, "exposedUrl": "https://github.com/example/leak/blob/main/.env"}
        }
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_events_reach_sns_subscribers_and_an_eventbridge_rule_with_a_summary() {
    let mut env = TestEnv::new("notify").await;
    let sinks = sinks(&env).await;
    env.config.results.sns_topic_arn = Some(sinks.topic_arn.clone());
    env.config.results.event_bus = Some(sinks.bus.clone());
    let worker = env.worker().await;
    let (user, keys) = env.user_with_keys("leaky", 1).await;
    let (other, other_keys) = env.user_with_keys("other", 1).await;

    let leaked = env
        .handle_job(
            &worker,
            env.deliver(&health_event(&common::unique("h"), &keys[0], &user))
                .await,
        )
        .await;
    assert_eq!(leaked.outcome, Outcome::Deleted);
    // A job naming the wrong owner is rejected: a page-worthy notification.
    let mismatch = env
        .handle_job(
            &worker,
            env.deliver(&common::job("n-mismatch", &user, &other_keys[0]))
                .await,
        )
        .await;
    assert_eq!(mismatch.outcome.as_str(), "rejected");
    assert_eq!(
        env.key_status(&other, &other_keys[0])
            .await
            .map(|s| s.as_str().to_owned()),
        Some("Active".to_owned())
    );

    // SNS: both outcomes, in SNS's envelope, with subject and attributes.
    let all = collect(&env, &sinks.all, 2, Duration::from_secs(15)).await;
    assert_eq!(all.len(), 2, "one message per job on the topic");
    let envelope = all
        .iter()
        .map(body)
        .find(|e| e["MessageAttributes"]["outcome"]["Value"] == "deleted")
        .expect("the deletion's message");
    assert_eq!(envelope["Type"], "Notification");
    assert_eq!(envelope["TopicArn"], sinks.topic_arn);
    let subject = envelope["Subject"].as_str().expect("a subject");
    assert!(subject.len() < 100, "{subject}");
    assert_eq!(
        subject,
        format!("iam-key-revoker: deleted {} of {user}", keys[0])
    );
    let attributes = &envelope["MessageAttributes"];
    assert_eq!(attributes["reason"]["Value"], "none");
    assert_eq!(attributes["event_source"]["Value"], "aws.health");
    assert_eq!(attributes["action"]["Value"], "delete");
    assert_eq!(attributes["outcome"]["Type"], "String");
    let event: Value =
        serde_json::from_str(envelope["Message"].as_str().expect("message")).expect("event");
    let cut_off = event["sessions_revoked_before"]
        .as_str()
        .expect("sessions cut off for a security event");
    assert_eq!(
        event["summary"],
        format!(
            "Deleted access key {} of {user} after AWS Health AWS_RISK_CREDENTIALS_EXPOSED, {} \
             after detection; sessions issued before {cut_off} denied",
            keys[0],
            iam_key_revoker::detection::human(
                event["exposure_to_revoke_seconds"]
                    .as_f64()
                    .expect("the event's startTime starts the clock")
            )
        )
    );
    assert_eq!(
        event["exposed_url"],
        "https://github.com/example/leak/blob/main/.env"
    );
    assert_eq!(event["outcome"], "deleted");
    assert_eq!(event["access_key_ids"], json!([keys[0]]));

    // The filtered subscription got the rejection only.
    let rejected = collect(&env, &sinks.rejected_only, 2, Duration::from_secs(5)).await;
    assert_eq!(
        rejected.len(),
        1,
        "the filter policy let one message through"
    );
    let envelope = body(&rejected[0]);
    assert_eq!(
        envelope["MessageAttributes"]["reason"]["Value"],
        "owner_mismatch"
    );
    assert!(
        envelope["MessageAttributes"].get("event_source").is_none(),
        "no empty attribute for a job that came from no event"
    );
    let event: Value = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    assert!(
        event["summary"].as_str().unwrap().starts_with(&format!(
            "Rejected (owner_mismatch): did not delete access key {} of {user}",
            other_keys[0]
        )),
        "{}",
        event["summary"]
    );

    // EventBridge: the rule matched source and detail type and sent both on.
    let from_bus = collect(&env, &sinks.from_bus, 2, Duration::from_secs(15)).await;
    assert_eq!(from_bus.len(), 2, "both events matched the rule");
    for message in &from_bus {
        let event = body(message);
        assert_eq!(event["source"], "iam-key-revoker");
        assert_eq!(event["detail-type"], "Key Revocation Outcome");
        assert!(event["detail"]["summary"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
    }
    assert!(from_bus
        .iter()
        .map(body)
        .any(|e| e["detail"]["outcome"] == "deleted"
            && e["detail"]["event_type"] == "AWS_RISK_CREDENTIALS_EXPOSED"));
}
