//! # iam-key-revoker
//!
//! A worker that revokes AWS IAM access keys on request. Upstream systems (a leaked-key
//! detector, an HR offboarding flow) put jobs on an SQS queue; the worker deletes or
//! deactivates exactly the key each job names, never another, survives throttling,
//! duplicates and crashes without losing a job, and writes an audit line per job.
//! The external contract (job message, outcomes, configuration, command line) is
//! documented in README.md.
//!
//! ## Layout
//! - [`batch`]: reading and validating batch files (JSON Lines, CSV) for `enqueue` and `plan`.
//! - [`commands`]: the `enqueue` and `plan` commands end to end.
//! - [`enqueue`]: sending jobs in batches, FIFO included, with progress.
//! - [`plan`]: the read-only pre-flight of a batch.
//! - [`config`]: the configuration schema, loading (TOML + environment) and validation.
//! - [`job`]: parsing and validating a job message, SNS envelope included.
//! - [`guard`]: the protected list and the record of recently finished request ids.
//! - [`accounts`]: which account a job acts in; cross-account roles, cached per account.
//! - [`iam`]: the IAM action, at the least cost in IAM calls.
//! - [`queue`]: SQS receive, batched delete, dead-letter copy, visibility, DLQ discovery.
//! - [`worker`]: the receive loop and the straight path of one job ([`worker::Worker::handle`]).
//! - [`outcome`]: outcomes, reason codes and the audit line.
//! - [`classify`]: the one function that classifies AWS errors.
//! - [`ratelimit`]: the adaptive IAM request rate (AIMD on throttling).
//! - [`retry`]: the backoff policy and the single retry wrapper for AWS calls.
//! - [`clients`]: building the AWS clients (SDK retries off, explicit timeouts).
//! - [`metrics`]: every metric name, label and bucket, and the functions that record them.
//! - [`server`]: the HTTP listener for `/metrics`, `/healthz` and `/readyz`.
//! - [`results`]: outcome events sent to the results queue.
//! - [`app`]: the application: the worker and its listener, built and run together.
//! - [`telemetry`]: logging set-up.

pub mod accounts;
pub mod app;
pub mod batch;
pub mod classify;
pub mod clients;
pub mod commands;
pub mod config;
pub mod enqueue;
pub mod guard;
pub mod iam;
pub mod job;
pub mod metrics;
pub mod outcome;
pub mod plan;
pub mod queue;
pub mod ratelimit;
pub mod results;
pub mod retry;
pub mod server;
pub mod telemetry;
pub mod worker;

pub use app::Application;
pub use config::Config;
pub use outcome::{JobReport, Outcome, Reason};
pub use worker::Worker;
