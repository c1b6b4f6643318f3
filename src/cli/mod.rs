//! The command-line tools besides the worker: `enqueue` (one job, or a batch file) and
//! `plan` (a read-only pre-flight of a batch file).

pub mod batch;
pub mod commands;
pub mod enqueue;
pub mod plan;
