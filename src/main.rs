//! The `iam-key-revoker` binary: parses the command line, sets up logging, runs the
//! library and maps errors to exit codes (0 success, 2 usage/configuration, 1 other).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use iam_key_revoker::clients::{load_sdk_config, Clients};
use iam_key_revoker::config::Config;
use iam_key_revoker::telemetry;
use iam_key_revoker::worker::StartupError;
use iam_key_revoker::Application;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "Revokes AWS IAM access keys from an SQS queue of jobs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker until SIGTERM or SIGINT.
    Run {
        /// TOML configuration file; IAM_KEY_REVOKER__SECTION__KEY variables override it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let Command::Run { config } = cli.command;
    let config = match Config::load(config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = match e.downcast_ref::<StartupError>() {
                Some(StartupError::Config(_)) => 2,
                Some(StartupError::Queue(
                    iam_key_revoker::queue::QueueSetupError::NoDeadLetterQueue,
                )) => 2,
                _ => 1,
            };
            tracing::error!(error = format!("{e:#}"), "Worker stopped");
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let sdk = load_sdk_config(&config).await;
    let clients = Clients::new(&sdk, &config);
    let app = Application::build(config, clients)
        .await
        .context("Failed to start the worker")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await;
    Ok(())
}

/// Cancels `shutdown` on SIGTERM (what Kubernetes and most supervisors send) or SIGINT
/// (Ctrl-C at a terminal): both mean "finish what you hold, take nothing new".
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "Stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "Stopping"),
    }
    shutdown.cancel();
}
