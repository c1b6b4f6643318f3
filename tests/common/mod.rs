//! Shared integration-test harness: clients for the local AWS emulator, per-test queues
//! and users (tests never share state), and a fault-injecting proxy.
//!
//! The emulator's address comes from `IAM_KEY_REVOKER_TEST_ENDPOINT`, which
//! `scripts/test` sets after starting it.

#![allow(dead_code)]

pub mod app;
pub mod cfn;
pub mod events;
pub mod process;
pub mod proxy;
pub mod staging;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_iam::types::StatusType;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use iam_key_revoker::aws::clients::{sdk_loader, Clients};
use iam_key_revoker::config::{Config, Settings};
use iam_key_revoker::{JobReport, Outcome, Reason, Worker};

pub const REGION: &str = "us-east-1";

/// The emulator's endpoint.
pub fn endpoint() -> String {
    std::env::var("IAM_KEY_REVOKER_TEST_ENDPOINT").expect(
        "IAM_KEY_REVOKER_TEST_ENDPOINT is not set: run the suite with scripts/test, \
         which starts the local AWS emulator",
    )
}

/// A short name unique to this test run and call, usable for queues and users.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}

/// SDK clients talking to `endpoint` with the emulator's fixed credentials.
pub async fn clients_for(config: &Config) -> Clients {
    let sdk = sdk_loader(config)
        .credentials_provider(aws_sdk_iam::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await;
    Clients::new(&sdk, config)
}

/// A job queue with its dead-letter queue, and a config pointing the worker at them.
pub struct TestEnv {
    pub name: String,
    pub config: Config,
    pub clients: Clients,
    pub queue_url: String,
    pub dlq_url: String,
}

impl TestEnv {
    /// Queue whose RedrivePolicy names the DLQ (the worker discovers it).
    pub async fn new(test: &str) -> Self {
        Self::build(test, true).await
    }

    /// Queue without a redrive policy; the DLQ is given in the config.
    pub async fn without_redrive(test: &str) -> Self {
        Self::build(test, false).await
    }

    async fn build(test: &str, redrive: bool) -> Self {
        let name = unique(test);
        let mut config = base_config();
        let clients = clients_for(&config).await;
        let dlq_url = create_queue(&clients.sqs, &format!("{name}-dlq"), None).await;
        let redrive_policy = if redrive {
            let arn = queue_arn(&clients.sqs, &dlq_url).await;
            Some(format!(
                r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"5"}}"#
            ))
        } else {
            None
        };
        let queue_url = create_queue(&clients.sqs, &name, redrive_policy).await;
        config.sqs.queue_url = queue_url.clone();
        // The worker's MAC key, as the worker stack makes it (docs, "Continuations").
        config.continuation.mac_key_id = Some(mac_key(&clients).await);
        if !redrive {
            config.sqs.dead_letter_queue_url = Some(dlq_url.clone());
        }
        Self {
            name,
            config,
            clients,
            queue_url,
            dlq_url,
        }
    }

    /// Creates a priority queue whose RedrivePolicy names its own dead-letter queue, and
    /// configures it; returns both URLs.
    pub async fn add_priority_queue(&mut self) -> (String, String) {
        let dlq = create_queue(&self.clients.sqs, &format!("{}-pdlq", self.name), None).await;
        let arn = queue_arn(&self.clients.sqs, &dlq).await;
        let policy = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"5"}}"#);
        let url = create_queue(
            &self.clients.sqs,
            &format!("{}-prio", self.name),
            Some(policy),
        )
        .await;
        self.config.sqs.priority_queue_url = Some(url.clone());
        (url, dlq)
    }

    /// This environment's config, validated.
    pub fn settings(&self) -> Settings {
        Settings::new(self.config.clone()).expect("the test's configuration is valid")
    }

    /// A worker for this environment's config and clients.
    pub async fn worker(&self) -> Worker {
        Worker::build(self.settings(), self.clients.clone())
            .await
            .expect("worker starts")
    }

    /// Creates a user with `keys` access keys; returns its name and key ids.
    pub async fn user_with_keys(&self, suffix: &str, keys: usize) -> (String, Vec<String>) {
        let user = format!("{}-{suffix}", self.name);
        let user: String = user
            .chars()
            .rev()
            .take(64)
            .collect::<String>()
            .chars()
            .rev()
            .collect();
        create_user_with_keys(&self.clients.iam, &user, keys).await
    }

    /// Sends up to ten bodies in one `SendMessageBatch`.
    pub async fn send_batch(&self, bodies: &[String]) {
        let mut batch = self
            .clients
            .sqs
            .send_message_batch()
            .queue_url(&self.queue_url);
        for (i, body) in bodies.iter().enumerate() {
            batch = batch.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .unwrap(),
            );
        }
        let sent = batch.send().await.expect("send batch");
        assert!(sent.failed().is_empty(), "{:?}", sent.failed());
    }

    pub async fn send(&self, body: &str) -> String {
        send(&self.clients.sqs, &self.queue_url, body).await
    }

    /// Receives one message as the worker would (system attributes included).
    pub async fn receive_one(&self) -> Message {
        receive(&self.clients.sqs, &self.queue_url, 1, 2)
            .await
            .into_iter()
            .next()
            .expect("a message is waiting")
    }

    /// Handles `message` to the job's end: while the worker hands the job on to a message
    /// of its own before changing anything (`retry/continued`, docs "Continuations"),
    /// that message too.
    pub async fn handle_job(&self, worker: &Worker, message: Message) -> JobReport {
        let mut report = worker.handle(message).await;
        while report.outcome == Outcome::Retry(Reason::Continued) {
            report = worker.handle(self.receive_one().await).await;
        }
        report
    }

    /// Sends `body` and receives it back, ready for `Worker::handle`.
    pub async fn deliver(&self, body: &str) -> Message {
        self.send(body).await;
        self.receive_one().await
    }

    pub async fn key_status(&self, user: &str, key: &str) -> Option<StatusType> {
        key_status(&self.clients.iam, user, key).await
    }

    /// Sets `key` of `user` to `status`, as a person would in the console.
    pub async fn set_key_status(&self, user: &str, key: &str, status: StatusType) {
        self.clients
            .iam
            .update_access_key()
            .user_name(user)
            .access_key_id(key)
            .status(status)
            .send()
            .await
            .expect("update key");
    }

    /// Every message on the dead-letter queue, with message attributes.
    pub async fn dead_letters(&self) -> Vec<Message> {
        let mut all = Vec::new();
        loop {
            let batch = receive(&self.clients.sqs, &self.dlq_url, 10, 1).await;
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    /// How many messages wait on the dead-letter queue (without receiving them).
    pub async fn dead_letters_peek(&self) -> u64 {
        queue_depth(&self.clients.sqs, &self.dlq_url).await.0
    }

    /// (visible, in flight) message counts of the job queue.
    pub async fn queue_depth(&self) -> (u64, u64) {
        queue_depth(&self.clients.sqs, &self.queue_url).await
    }

    /// Waits until the job queue holds no message at all, or panics after `limit`.
    pub async fn wait_until_drained(&self, limit: Duration) {
        self.wait_for_depth((0, 0), limit).await;
    }

    /// Waits until the job queue's (visible, in flight) counts are `depth`, or panics
    /// after `limit`.
    pub async fn wait_for_depth(&self, depth: (u64, u64), limit: Duration) {
        eventually_async(&format!("queue depth {depth:?}"), limit, || async {
            self.queue_depth().await == depth
        })
        .await;
    }

    /// Sends the IAM client's requests through `proxy` from now on.
    pub async fn route_iam_through(&mut self, proxy: &proxy::FaultProxy) {
        self.clients.iam = self.proxied(proxy).await.iam;
    }

    /// Sends the IAM and STS clients' requests through `proxy` (assumed roles included:
    /// they are built from the same SDK configuration); SQS stays direct.
    pub async fn route_iam_and_sts_through(&mut self, proxy: &proxy::FaultProxy) {
        let sqs = self.clients.sqs.clone();
        self.clients = self.proxied(proxy).await;
        self.clients.sqs = sqs;
    }

    /// Sends every request of the worker through `proxy`, SQS included.
    pub async fn route_all_through(&mut self, proxy: &proxy::FaultProxy) {
        self.config.aws.endpoint_url = Some(proxy.url.clone());
        self.clients = clients_for(&self.config).await;
    }

    async fn proxied(&self, proxy: &proxy::FaultProxy) -> Clients {
        let mut proxied = self.config.clone();
        proxied.aws.endpoint_url = Some(proxy.url.clone());
        clients_for(&proxied).await
    }

    /// Plays a competing consumer polling the job queue for `period`: how many messages it
    /// could receive (each kept invisible for 30 s once received).
    pub async fn steal_for(&self, period: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + period;
        let mut stolen = 0;
        while tokio::time::Instant::now() < deadline {
            stolen += receive(&self.clients.sqs, &self.queue_url, 10, 0)
                .await
                .len();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stolen
    }
}

/// Waits until `check` holds, polling every 100 ms; panics naming `what` after `limit`.
/// Awaits `check` until it answers true, every `POLL`, or panics after `limit` naming
/// `what`: for conditions that need the emulator or the worker to answer.
pub async fn eventually_async<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    const POLL: Duration = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

pub async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Configuration for the emulator with short timings for tests.
pub fn base_config() -> Config {
    let mut config = Config::default();
    config.aws.region = Some(REGION.to_owned());
    config.aws.endpoint_url = Some(endpoint());
    config.aws.request_timeout_seconds = 5;
    config.sqs.queue_url = "http://placeholder/q".to_owned();
    config.sqs.wait_time_seconds = 1;
    config.sqs.visibility_timeout_seconds = 30;
    config.iam.max_requests_per_second = 1_000;
    config.retry.initial_delay_ms = 20;
    config.retry.max_delay_ms = 200;
    config.retry.max_elapsed_seconds = 2;
    config.worker.shutdown_grace_seconds = 10;
    // Security events send themselves activity report tasks (tests/activity.rs); tests of
    // other things receive their own messages one by one and would get those instead.
    config.intake.report_activity = false;
    config
}

/// A KMS HMAC key for the worker's own messages, as the worker stack makes it.
pub async fn mac_key(clients: &Clients) -> String {
    let kms = aws_sdk_kms::Client::new(&clients.sdk);
    kms.create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::Hmac256)
        .key_usage(aws_sdk_kms::types::KeyUsageType::GenerateVerifyMac)
        .description("iam-key-revoker tests: the worker's MAC key")
        .send()
        .await
        .expect("create the MAC key")
        .key_metadata
        .expect("key metadata")
        .key_id
}

pub async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    redrive_policy: Option<String>,
) -> String {
    let mut request = sqs.create_queue().queue_name(name);
    if let Some(policy) = redrive_policy {
        request = request.attributes(QueueAttributeName::RedrivePolicy, policy);
    }
    request
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("queue arn")
}

pub async fn create_user_with_keys(
    iam: &aws_sdk_iam::Client,
    user: &str,
    keys: usize,
) -> (String, Vec<String>) {
    iam.create_user()
        .user_name(user)
        .send()
        .await
        .expect("create user");
    let mut ids = Vec::new();
    for _ in 0..keys {
        let key = iam
            .create_access_key()
            .user_name(user)
            .send()
            .await
            .expect("create key");
        ids.push(key.access_key.expect("key").access_key_id);
    }
    (user.to_owned(), ids)
}

pub async fn key_status(iam: &aws_sdk_iam::Client, user: &str, key: &str) -> Option<StatusType> {
    let keys = iam
        .list_access_keys()
        .user_name(user)
        .send()
        .await
        .expect("list keys");
    keys.access_key_metadata()
        .iter()
        .find(|k| k.access_key_id() == Some(key))
        .and_then(|k| k.status().cloned())
}

pub async fn send(sqs: &aws_sdk_sqs::Client, queue_url: &str, body: &str) -> String {
    sqs.send_message()
        .queue_url(queue_url)
        .message_body(body)
        .send()
        .await
        .expect("send")
        .message_id
        .expect("message id")
}

pub async fn receive(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    max: i32,
    wait_seconds: i32,
) -> Vec<Message> {
    sqs.receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(max)
        .wait_time_seconds(wait_seconds)
        .visibility_timeout(30)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default()
}

pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> (u64, u64) {
    let attrs: HashMap<QueueAttributeName, String> = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default();
    let n = |name| attrs.get(&name).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        n(QueueAttributeName::ApproximateNumberOfMessages),
        n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// The string value of a message attribute.
pub fn attribute(message: &Message, name: &str) -> Option<String> {
    message
        .message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value().map(str::to_owned))
}

/// A job body naming a user and a key.
pub fn job(request_id: &str, user: &str, key: &str) -> String {
    serde_json::json!({"request_id": request_id, "user_name": user, "access_key_id": key})
        .to_string()
}
