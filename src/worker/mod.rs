//! The worker: the receive loop ([`Worker::run`]), the path of one job
//! ([`Worker::handle`], in `pipeline`), settling its message and the heartbeat (in
//! `settle`), and outcome events ([`results`]).

mod activity;
mod breaker;
mod continuation;
mod facts;
mod findings;
mod fit;
mod logins;
mod made;
mod pipeline;
mod quarantine;
pub mod results;
mod revocation;
mod roles;
mod sessions;
mod settle;
mod slots;
mod staging;
mod turns;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::aws::accounts::Accounts;
use crate::aws::classify::ErrorClass;
use crate::aws::clients::Clients;
use crate::aws::cloudtrail::LookupRates;
use crate::aws::deleter::{Deleter, DELETE_LINGER, DELETE_LINGER_RATE_BOUND};
use crate::aws::mac::Mac;
use crate::aws::notify::{Bus, Topic};
use crate::aws::ratelimit::AdaptiveRate;
use crate::aws::sqs::{Lane, QueueSetupError, Queues, Sqs, SQS_BATCH_MAX};
use crate::config::{Config, Settings};
use crate::guard::{Dedup, Protection};
use crate::intake::IntakeRules;
use crate::metrics;
use crate::server::Health;
use crate::worker::results::{Results, Sink};
use crate::worker::settle::{Settler, Source};
use turns::in_group_order;

/// IAM's rate, not the job slots, bounds the worker when its requests are booked at
/// least this far ahead: then receives and deletes can wait to fill their batches.
const RATE_BOUND: Duration = Duration::from_millis(250);

/// A replica holds the messages it can start within this long at IAM's rate, no more.
const HOLD_AHEAD: Duration = Duration::from_secs(2);

/// How long the receive loop waits for enough free slots to make a receive worthwhile
/// when no message waits for a slot, and how often it looks again while some do.
const RECEIVE_GATHER: Duration = Duration::from_millis(50);

/// How often the queues' depths are read for `iam_key_revoker_queue_messages`.
const QUEUE_DEPTH_INTERVAL: Duration = Duration::from_secs(30);

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Queue(#[from] QueueSetupError),
    #[error("the priority queue: {0}")]
    PriorityQueue(#[source] QueueSetupError),
    #[error("staged revocation (schedule.*): {0}")]
    Staging(#[source] crate::aws::classify::AwsError),
    #[error("staged revocation: {0} is a FIFO queue, which EventBridge Scheduler does not take as a schedule's dead-letter queue; set schedule.dead_letter_queue_url to a standard queue")]
    FifoScheduleDeadLetterQueue(String),
    #[error("staged revocation: no schedule group {0} (schedule.group_name) in EventBridge Scheduler; the worker stack creates iam-key-revoker")]
    NoScheduleGroup(String),
    #[error("staged revocation: the FIFO job queue {0} has no content-based deduplication, which EventBridge Scheduler needs to send to it; turn it on")]
    FifoWithoutContentDeduplication(String),
    #[error("cannot listen on metrics.listen = {0}: {1}")]
    Listen(String, #[source] std::io::Error),
}

impl StartupError {
    /// The process exit code (docs, "Running it"): 2 for what the operator must fix in
    /// the configuration (a missing dead-letter queue included), 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::Queue(QueueSetupError::NoDeadLetterQueue { .. })
            | StartupError::PriorityQueue(QueueSetupError::NoDeadLetterQueue { .. })
            | StartupError::FifoScheduleDeadLetterQueue(_)
            | StartupError::NoScheduleGroup(_)
            | StartupError::FifoWithoutContentDeduplication(_) => 2,
            _ => 1,
        }
    }
}

/// A running worker's shared state. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Worker {
    config: Arc<Config>,
    /// The job queues (`sqs.queue_url`; `sqs.priority_queue_url`, served first) and how
    /// their messages are settled.
    settler: Settler,
    /// Priority jobs waiting for a job slot: while any do, main-queue messages are
    /// neither received nor held waiting.
    urgent_waiting: watch::Sender<usize>,
    sqs: Sqs,
    accounts: Accounts,
    dedup: Dedup,
    protection: Protection,
    /// How security events become jobs.
    intake: IntakeRules,
    health: Arc<Health>,
    results: Option<Results>,
    /// Job slots: a job holds one while it is processed (parse, guards, IAM action), not
    /// while it waits for one or while its message is settled.
    working: Semaphore,
    /// With a priority queue, the job slots main-queue jobs may hold: all but a quarter,
    /// which stay free for urgent jobs (while IAM's rate is the bound, every slot a
    /// main-queue job holds waits for IAM, and an urgent job would wait for one).
    main_slots: Option<Semaphore>,
    /// Messages being handled, from receipt to their audit line.
    in_progress: Arc<AtomicUsize>,
    /// The IAM rate of the worker's own account.
    rate: Arc<AdaptiveRate>,
    /// CloudTrail's lookup rate, per account and Region (activity reports).
    lookup_rates: LookupRates,
    /// Staged revocation, when `schedule.role_arn` is set.
    staging: Option<staging::Staging>,
    /// `quarantine.policy_arn` in the worker's partition, once checked; `None` when IAM
    /// says it does not exist (nobody is quarantined, and the worker says so).
    quarantine_policy: tokio::sync::OnceCell<Option<String>>,
    /// The breaker, when `breaker.table_name` is set.
    breaker: Option<Arc<crate::breaker::Breaker>>,
}

impl Worker {
    /// Finds the dead-letter queue and starts the delete batcher.
    pub async fn build(settings: Settings, clients: Clients) -> Result<Self, StartupError> {
        let config = settings.config();
        let policy = settings.backoff;
        let protection = settings.protection.clone();
        let sqs = Sqs::new(clients.sqs.clone(), policy);
        let queues = sqs
            .discover(
                &config.sqs.queue_url,
                config.sqs.dead_letter_queue_url.as_deref(),
                "sqs.dead_letter_queue_url",
            )
            .await?;
        let priority_queues = match &config.sqs.priority_queue_url {
            Some(url) => Some(
                sqs.discover(
                    url,
                    config.sqs.priority_dead_letter_queue_url.as_deref(),
                    "sqs.priority_dead_letter_queue_url",
                )
                .await
                .map_err(StartupError::PriorityQueue)?,
            ),
            None => None,
        };
        let accounts = Accounts::from_settings(&settings, &clients);
        let rate = accounts.own_rate();
        let working = Semaphore::new(config.worker.max_in_flight);
        let reserved = config.worker.max_in_flight / 4;
        let main_slots = priority_queues
            .as_ref()
            .map(|_| Semaphore::new(config.worker.max_in_flight - reserved));
        let in_progress = Arc::new(AtomicUsize::new(0));
        let source = |queues: Queues| {
            let others = Arc::clone(&in_progress);
            let deletes_rate = Arc::clone(&rate);
            // While other messages are being handled their deletes are coming: let them
            // share a call, for longer while IAM's rate is the bound. A lone delete goes
            // at once.
            let (deleter, _task) =
                Deleter::spawn(sqs.clone(), queues.queue_url.clone(), move |n| {
                    if others.load(Ordering::Relaxed) <= n {
                        Duration::ZERO
                    } else if deletes_rate.booked_ahead() >= RATE_BOUND {
                        DELETE_LINGER_RATE_BOUND
                    } else {
                        DELETE_LINGER
                    }
                });
            Source { queues, deleter }
        };
        let main = source(queues);
        let priority = priority_queues.map(source);
        let dedup = Dedup::new(
            NonZeroUsize::new(config.worker.dedup_capacity).unwrap_or(NonZeroUsize::MIN),
            Duration::from_secs(config.worker.dedup_ttl_seconds),
        );
        tracing::info!(
            queue_url = %main.queues.queue_url,
            dead_letter_queue_url = %main.queues.dead_letter_queue_url,
            redrive_policy = main.queues.has_redrive_policy,
            priority_queue_url = priority.as_ref().map_or("", |p| p.queues.queue_url.as_str()),
            priority_dead_letter_queue_url = priority
                .as_ref()
                .map_or("", |p| p.queues.dead_letter_queue_url.as_str()),
            max_in_flight = config.worker.max_in_flight,
            protected_users = %config.protect.users.join(","),
            protected_access_keys = %config.protect.access_keys.join(","),
            "Worker ready"
        );
        let health = Arc::new(Health::new(
            Duration::from_secs(config.metrics.ready_max_receive_age_seconds),
            accounts.member_failures(),
        ));
        let mut sinks = Vec::new();
        if let Some(url) = &config.results.queue_url {
            sinks.push(Sink::Queue(sqs.clone(), url.clone()));
        }
        if let Some(arn) = &config.results.sns_topic_arn {
            sinks.push(Sink::Topic(Topic::new(&clients.sdk, policy, arn.clone())));
        }
        if let Some(bus) = &config.results.event_bus {
            sinks.push(Sink::Bus(Bus::new(&clients.sdk, policy, bus.clone())));
        }
        let results = Results::spawn(sinks, policy);
        let mac = config.continuation.mac_key_id.as_deref().map(|key_id| {
            let kms = aws_sdk_kms::Client::from_conf(
                aws_sdk_kms::config::Builder::from(&clients.sdk)
                    .interceptor(metrics::RequestCounter)
                    .build(),
            );
            Mac::new(kms, key_id, policy)
        });
        if mac.is_none() {
            tracing::warn!("continuation.mac_key_id is not set: the worker cannot tell its own messages from a producer's, so it believes no continuation's claims and hands no job on (docs, \"Continuations\")");
        }
        let quarantine_policy = tokio::sync::OnceCell::new();
        if settings.intake.quarantine_user {
            let checked = quarantine::check_policy(&accounts, config).await;
            let _ = quarantine_policy.set(checked);
        }
        let staging = match &config.schedule.role_arn {
            Some(role_arn) => Some(
                staging::Staging::build(
                    &sqs,
                    &clients,
                    &settings,
                    role_arn,
                    &main.queues,
                    priority.as_ref().map(|p| &p.queues),
                )
                .await?,
            ),
            None => None,
        };
        Ok(Self {
            breaker: breaker::build(config, &clients, policy).await,
            working,
            main_slots,
            in_progress,
            rate,
            health,
            results,
            settler: Settler::new(sqs.clone(), mac, main, priority, config),
            quarantine_policy,
            config: Arc::new(config.clone()),
            urgent_waiting: watch::Sender::new(0),
            sqs,
            accounts,
            dedup,
            protection,
            intake: settings.intake.clone(),
            lookup_rates: LookupRates::default(),
            staging,
        })
    }

    /// The main job queue and its dead-letter queue.
    pub fn queues(&self) -> &Queues {
        &self.settler.main.queues
    }

    /// The priority queue and its dead-letter queue, when one is configured.
    pub fn priority_queues(&self) -> Option<&Queues> {
        self.settler.priority.as_ref().map(|p| &p.queues)
    }

    /// The queue a message came from.
    fn source(&self, lane: Lane) -> &Source {
        self.settler.source(lane)
    }

    /// Readiness, shared with the health endpoint.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Receives and works jobs until `shutdown` is cancelled, then lets in-flight jobs
    /// finish within `worker.shutdown_grace_seconds`. Messages received ahead
    /// (`worker.prefetch`) whose job has not started are released at shutdown, so SQS
    /// redelivers them at once. Once the grace period is over, jobs stop retrying and
    /// end within one request timeout: a job whose IAM write went through always gets
    /// its audit line.
    ///
    /// While the worker's own credentials fail, it receives nothing; it checks them again
    /// after a growing pause and resumes by itself once they work.
    ///
    /// A receive cut short by shutdown is dropped: SQS redelivers anything it had already
    /// handed out once the visibility timeout passes, so nothing is lost.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let depths = tokio::spawn(Arc::clone(&self).report_depths(shutdown.clone()));
        let pauses = tokio::spawn(Arc::clone(&self).watch_pauses(shutdown.clone()));
        let main = Arc::clone(&self).receive(Lane::Main, &tracker, &shutdown, &hard_stop);
        if self.settler.priority.is_some() {
            let priority =
                Arc::clone(&self).receive(Lane::Priority, &tracker, &shutdown, &hard_stop);
            tokio::join!(main, priority);
        } else {
            main.await;
        }
        depths.abort();
        pauses.abort();
        // Not ready from the moment shutdown starts until the process exits.
        self.health.stopping();
        tracker.close();
        tracing::info!(
            in_flight = tracker.len(),
            "Shutting down: no longer receiving"
        );
        let grace = Duration::from_secs(self.config.worker.shutdown_grace_seconds);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                in_flight = tracker.len(),
                "Shutdown grace period over: jobs stop retrying and end now"
            );
            hard_stop.cancel();
            tracker.wait().await;
        }
        if let Some(results) = &self.results {
            if tokio::time::timeout(Duration::from_secs(5), results.flush())
                .await
                .is_err()
            {
                tracing::warn!("Outcome events still unsent at shutdown");
            }
        }
        tracing::info!("Shutdown complete");
    }

    /// The receive loop of one job queue, until shutdown. The priority queue is
    /// long-polled all the time; the main queue only while no priority job waits for a
    /// job slot.
    async fn receive(
        self: Arc<Self>,
        lane: Lane,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        hard_stop: &CancellationToken,
    ) {
        // A message holds one of these from its receive until it is settled: never more
        // than max_in_flight + prefetch from the main queue (a few wait for a job slot,
        // their heartbeat running; none sits unwatched in a local buffer), and
        // max_in_flight from the priority queue.
        let held = match lane {
            Lane::Main => self.config.worker.max_in_flight + self.config.worker.prefetch,
            Lane::Priority => self.config.worker.max_in_flight,
        };
        let permits = Arc::new(Semaphore::new(held));
        let queue_url = self.source(lane).queues.queue_url.clone();
        let mut urgent_idle = self.urgent_waiting.subscribe();
        let mut backoff = self.sqs.policy().endless();
        // Whether the last receive brought all it asked for: the queue has more. One-sided:
        // SQS may return fewer than asked with more on the queue (API Reference,
        // ReceiveMessage, MaxNumberOfMessages), and then the rate only climbs less.
        let mut full = false;
        loop {
            if self.health.credentials_failing() {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(self.health.credentials_check_delay()) => {}
                }
                // One loop asks STS; the other waits for its answer.
                if lane == Lane::Main {
                    self.check_credentials().await;
                }
                continue;
            }
            // Paused by an operator: no receive spends a message's receive count.
            if !self.until_resumed(lane, shutdown).await {
                break;
            }
            if lane == Lane::Main {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = urgent_idle.wait_for(|waiting| *waiting == 0) => {}
                }
            }
            let first = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let mut taken = vec![first];
            match lane {
                Lane::Main => {
                    if !self
                        .gather(held, &permits, &mut taken, full, shutdown)
                        .await
                    {
                        break;
                    }
                }
                // An urgent job never waits for company.
                Lane::Priority => take_free(&permits, &mut taken),
            }
            let receive = self.sqs.receive(
                &queue_url,
                taken.len(),
                self.config.sqs.wait_time_seconds,
                self.config.sqs.visibility_timeout_seconds,
            );
            tokio::pin!(receive);
            let mut stopping = false;
            let received = tokio::select! {
                // A receive given up here could still be answered with messages that then
                // nobody sees for the visibility timeout: let it end (within its long
                // poll) and hand what it brings to the usual path, which releases it at
                // shutdown.
                () = shutdown.cancelled() => {
                    stopping = true;
                    receive.await
                }
                received = &mut receive => received,
            };
            let messages = match received {
                Ok(messages) => {
                    full = messages.len() >= taken.len();
                    backoff = self.sqs.policy().endless();
                    self.health.receive_succeeded();
                    metrics::receive_succeeded();
                    metrics::messages_received(messages.len());
                    messages
                }
                Err(e) if e.class == ErrorClass::Credentials => {
                    self.health.credentials_failed(e.code.as_deref());
                    tracing::error!(error = %e, queue = lane.as_str(), "Receive refused: the worker's credentials failed");
                    continue;
                }
                Err(_) if stopping => break,
                Err(e) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %e, queue = lane.as_str(), delay_ms = delay.as_millis() as u64, "Receive failed, backing off");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            for (message, turn) in in_group_order(messages) {
                // Cannot be empty: SQS returns at most as many messages as were asked for.
                let Some(permit) = taken.pop() else { break };
                let worker = Arc::clone(&self);
                let shutdown = shutdown.clone();
                let hard_stop = hard_stop.clone();
                tracker.spawn(async move {
                    let _held = permit;
                    worker
                        .handle_message(message, lane, turn, shutdown, hard_stop)
                        .await;
                });
            }
            if stopping {
                break;
            }
        }
    }

    /// Reads every queue's depth every `QUEUE_DEPTH_INTERVAL` for
    /// `iam_key_revoker_queue_messages`, so alerts need no CloudWatch exporter, and
    /// forgets member accounts whose last failure no job has repeated for a while.
    async fn report_depths(self: Arc<Self>, shutdown: CancellationToken) {
        let mut queues = vec![
            ("jobs", self.settler.main.queues.queue_url.clone()),
            (
                "dead_letter",
                self.settler.main.queues.dead_letter_queue_url.clone(),
            ),
        ];
        if let Some(priority) = &self.settler.priority {
            queues.push(("priority", priority.queues.queue_url.clone()));
            queues.push((
                "priority_dead_letter",
                priority.queues.dead_letter_queue_url.clone(),
            ));
        }
        if let Some(url) = &self.config.schedule.dead_letter_queue_url {
            // Staged deletes EventBridge Scheduler could not send.
            queues.push(("schedule_dead_letter", url.clone()));
        }
        let mut tick = tokio::time::interval(QUEUE_DEPTH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for (label, url) in &queues {
                match self.sqs.depth(url).await {
                    Ok(depth) => metrics::queue_depth(label, depth),
                    Err(e) => {
                        tracing::warn!(error = %e, queue = label, "Could not read the queue's depth")
                    }
                }
            }
            self.accounts.member_failures().forget_old();
        }
    }

    /// Takes more free message permits before a receive, so that one receive asks for
    /// as many messages as is worthwhile, and holds no more messages than it can start
    /// within `HOLD_AHEAD` at IAM's rate: the rest stay in the queue for replicas with
    /// room (one whose share of the account's quota is small would keep them, and their
    /// keys alive, until it came to them), and replicas sharing a quota finish a drain
    /// together. While IAM's rate is the bound (requests booked `RATE_BOUND` ahead), it
    /// receives once half of that is free; otherwise the job slots are the bound and must
    /// not idle: it waits at most `RECEIVE_GATHER` for a quarter of the permits. `full`:
    /// the queue had more at the last receive. False when shutdown came.
    async fn gather(
        &self,
        held: usize,
        permits: &Arc<Semaphore>,
        taken: &mut Vec<OwnedSemaphorePermit>,
        full: bool,
        shutdown: &CancellationToken,
    ) -> bool {
        let worthwhile = (held / 4).clamp(1, SQS_BATCH_MAX);
        let gather = tokio::time::sleep(RECEIVE_GATHER);
        tokio::pin!(gather);
        let mut gathered = false;
        loop {
            take_free(permits, taken);
            let in_use = held.saturating_sub(permits.available_permits() + taken.len());
            let (room, batch) = self.rate.room(HOLD_AHEAD, in_use);
            if full && room < taken.len() {
                self.rate.held_back();
            }
            let enough = if self.rate.booked_ahead() >= RATE_BOUND {
                let batch = batch.clamp(1, SQS_BATCH_MAX.min(held));
                room >= batch && taken.len() >= batch
            } else {
                room > 0 && (taken.len() >= SQS_BATCH_MAX || gathered || taken.len() >= worthwhile)
            };
            if enough {
                taken.truncate(room);
                return true;
            }
            tokio::select! {
                permit = permits.clone().acquire_owned(), if taken.len() < SQS_BATCH_MAX => match permit {
                    Ok(permit) => taken.push(permit),
                    Err(_) => return true,
                },
                () = &mut gather, if !gathered => gathered = true,
                // The waiting ones may have found job slots meanwhile: look again.
                () = tokio::time::sleep(RECEIVE_GATHER) => {}
                () = shutdown.cancelled() => return false,
            }
        }
    }

    /// Asks STS whether the worker's credentials work again.
    async fn check_credentials(&self) {
        match self.accounts.check_credentials().await {
            Ok(()) => self.health.credentials_recovered(),
            Err(e) if e.class == ErrorClass::Credentials => {
                tracing::warn!(error = %e, "The worker's credentials still fail");
                self.health.credentials_still_failing(e.code.as_deref());
            }
            // Not a credential problem: let the receive loop find out what it is.
            Err(e) => {
                tracing::warn!(error = %e, "Could not check the worker's credentials");
                self.health.credentials_recovered();
            }
        }
    }
}

/// Adds the message permits free right now to `taken`, up to a receive's worth.
fn take_free(permits: &Arc<Semaphore>, taken: &mut Vec<OwnedSemaphorePermit>) {
    while taken.len() < SQS_BATCH_MAX {
        match permits.clone().try_acquire_owned() {
            Ok(permit) => taken.push(permit),
            Err(_) => break,
        }
    }
}
