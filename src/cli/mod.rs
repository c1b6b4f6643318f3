//! The command line: its flags (`args`), what the binary does with them (`program`),
//! and the tools besides the worker: `enqueue` (one job, or a batch file) and `plan` (a
//! read-only pre-flight of a batch file), `restore` (a person's undo of a staged
//! revocation) and `protect-policy` (`deny`: the protected
//! users as an IAM Deny).

pub mod args;
pub mod batch;
pub mod breaker;
pub mod cap;
pub mod commands;
pub mod deny;
pub mod enqueue;
pub mod plan;
pub mod program;
pub mod restore;
