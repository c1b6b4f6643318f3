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
//!
//! Imports point one way, down the list: the job and its outcome at the bottom, then
//! metrics, then the AWS boundary, then configuration, then the worker and the command
//! line, then the binary (`../shared/tools/module-cycles` finds none going up).
//!
//! - [`job`], [`rules`], [`continuation`]: the job message, the rules of its fields, and
//!   what a job knows beyond them (the security event, owners, earlier deliveries).
//! - [`staging`]: staged revocation's rules: `delete_after`, the schedule's name and
//!   time.
//! - [`intake`]: what a body asks for: a job message, or an AWS Health or GuardDuty
//!   event from EventBridge that becomes one.
//! - [`outcome`]: outcomes, reason codes, the queue a job came from and the audit line;
//!   [`summary`] the one-line human summary of a finished job.
//! - [`guard`]: the protected list and the record of recently finished request ids.
//! - [`metrics`]: every metric name, label and bucket, and the functions that record them.
//! - [`aws`]: the AWS boundary: [`aws::clients`] (SDK retries off, explicit timeouts),
//!   [`aws::classify`] (the one function that classifies AWS errors), [`aws::retry`]
//!   (the backoff policy and the single retry wrapper), [`aws::ratelimit`] (the adaptive
//!   IAM rate), [`aws::iam`] (IAM's client and raw calls), [`aws::verdict`] (what IAM's
//!   answers mean), [`aws::revoke`] (the job's IAM action at the least cost in calls),
//!   [`aws::sessions`] (the session cut-off, on IAM's clock from [`aws::clock`], one
//!   change per user at a time by [`aws::turns`]), [`aws::sqs`] (receive, dead-letter
//!   copy, continuations; [`aws::visibility`] its limits, [`aws::deleter`] the batched
//!   delete), [`aws::accounts`] (which account a job acts in; cross-account roles) and
//!   [`aws::schedule`] (EventBridge Scheduler, for staged deletes).
//! - [`config`], [`config_checks`]: the configuration schema and loading (TOML +
//!   environment), and each section's rules.
//! - [`worker`]: the receive loop and the straight path of one job
//!   ([`worker::Worker::handle`]), its slot, session cut-off, continuations, settling
//!   and heartbeat, outcome events ([`worker::results`]).
//! - [`cli`]: the command line ([`cli::args`], [`cli::program`]), the `enqueue`, `plan`
//!   and `restore` commands and the batch files they read.
//! - [`server`]: the HTTP listener for `/metrics`, `/healthz` and `/readyz`.
//! - [`app`]: the application: the worker and its listener, built and run together,
//!   until a signal.
//! - [`telemetry`]: logging set-up.

pub mod activity;
pub mod app;
pub mod aws;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod config_checks;
mod config_contain;
mod config_error;
mod config_lists;
pub mod continuation;
pub mod detection;
pub mod guard;
pub mod intake;
pub mod job;
pub mod login_task;
pub mod metrics;
pub mod outcome;
pub mod rules;
pub mod server;
pub mod sessions;
pub mod staging;
pub mod summary;
pub mod telemetry;
pub mod worker;

pub use app::Application;
pub use config::Config;
pub use outcome::{JobReport, Outcome, Reason};
pub use worker::Worker;
