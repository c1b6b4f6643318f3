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
//! - [`worker`]: the receive loop and the straight path of one job
//!   ([`worker::Worker::handle`]), settling and the heartbeat, outcome events
//!   ([`worker::results`]).
//! - [`aws`]: the AWS boundary: [`aws::clients`] (SDK retries off, explicit timeouts),
//!   [`aws::classify`] (the one function that classifies AWS errors), [`aws::retry`]
//!   (the backoff policy and the single retry wrapper), [`aws::ratelimit`] (the adaptive
//!   IAM rate), [`aws::iam`] (the IAM action at the least cost in calls),
//!   [`aws::sessions`] (the session cut-off, on IAM's clock from [`aws::clock`], one
//!   change per user at a time by [`aws::turns`]), [`aws::sqs`] (receive, batched
//!   delete, dead-letter copy, continuations; [`aws::visibility`] its limits) and
//!   [`aws::accounts`] (which account a job acts in; cross-account roles).
//! - [`cli`]: the `enqueue` and `plan` commands and the batch files they read.
//! - [`config`]: the configuration schema, loading (TOML + environment) and validation.
//! - [`job`]: parsing and validating a job message, SNS envelope included.
//! - [`intake`]: what a body asks for: a job message, or an AWS Health or GuardDuty
//!   event from EventBridge that becomes one.
//! - [`guard`]: the protected list and the record of recently finished request ids.
//! - [`outcome`]: outcomes, reason codes and the audit line.
//! - [`metrics`]: every metric name, label and bucket, and the functions that record them.
//! - [`server`]: the HTTP listener for `/metrics`, `/healthz` and `/readyz`.
//! - [`app`]: the application: the worker and its listener, built and run together.
//! - [`telemetry`]: logging set-up.

pub mod app;
pub mod aws;
pub mod cli;
pub mod config;
pub mod guard;
pub mod intake;
pub mod job;
pub mod metrics;
pub mod outcome;
pub mod server;
pub mod telemetry;
pub mod worker;

pub use app::Application;
pub use config::Config;
pub use outcome::{JobReport, Outcome, Reason};
pub use worker::Worker;
