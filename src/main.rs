//! The `iam-key-revoker` binary: parses the command line and runs it with the library
//! (`cli::program`), which returns the exit code: 0 success, 2 usage/configuration, 1
//! other.

use std::process::ExitCode;

use clap::Parser;
use iam_key_revoker::cli::args::Cli;

/// mimalloc rather than the system allocator: an AWS request allocates and frees hundreds
/// of small buffers, and with glibc's allocator that was a fifth of the worker's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(cli) => ExitCode::from(iam_key_revoker::cli::program::run(cli)),
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
