//! What the binary does with its command line: loads and validates the configuration
//! once (into [`Settings`]), sets up logging, checks that AWS credentials are there, and
//! runs the command. Returns the process exit code (docs, "Running it"): 0 success, 2 usage, configuration or
//! validation error, 1 any other failure.

use anyhow::Context;

use crate::aws::clients::{load_sdk_config, Clients};
use crate::aws::sqs::Lane;
use crate::cli::args::{Cli, Command, LogFormatArg, OutputArg};
use crate::cli::batch::Format;
use crate::cli::breaker;
use crate::cli::commands::{self, Input, PlanOutput};
use crate::config::{Config, LogFormat, LogSection, Settings};
use crate::telemetry;
use crate::Application;

/// Runs `cli`'s command to its end; returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let config_path = match &cli.command {
        Command::Run { config }
        | Command::Enqueue { config, .. }
        | Command::Plan { config, .. }
        | Command::Restore { config, .. }
        | Command::ProtectPolicy { config, .. }
        | Command::Held { config, .. }
        | Command::Approve { config, .. }
        | Command::Discard { config, .. }
        | Command::Pause { config, .. }
        | Command::Resume { config, .. } => config.clone(),
    };
    let queue_url = match &cli.command {
        Command::Enqueue { queue_url, .. } => queue_url.as_deref(),
        _ => None,
    };
    let mut config = match Config::read(config_path.as_deref(), queue_url) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if let Command::Enqueue { priority: true, .. } = &cli.command {
        // The priority queue is the one to send to; it is not a second queue here.
        match config.sqs.priority_queue_url.take() {
            Some(url) => {
                config.sqs.queue_url = url;
                config.sqs.priority_dead_letter_queue_url = None;
            }
            None => {
                eprintln!("error: --priority needs sqs.priority_queue_url (or IAM_KEY_REVOKER__SQS__PRIORITY_QUEUE_URL)");
                return 2;
            }
        }
    }
    if let Command::ProtectPolicy {
        partition, format, ..
    } = &cli.command
    {
        // Only protect.* matters here: a configuration without its queues will do.
        if let Err(e) = config.protect.validate(&[]) {
            eprintln!("error: {e}");
            return 2;
        }
        return commands::protect_policy(&config.protect, partition, format);
    }
    let config = match Settings::new(config) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    // The worker logs to standard output as configured; the commands keep standard output
    // for their results and log for people unless asked for JSON.
    match &cli.command {
        Command::Run { .. } => telemetry::init(&config.log, false),
        Command::ProtectPolicy { .. } => {}
        // The audit record goes to standard output; log lines for people on standard error.
        Command::Restore { .. }
        | Command::Held { .. }
        | Command::Approve { .. }
        | Command::Discard { .. }
        | Command::Pause { .. }
        | Command::Resume { .. } => telemetry::init(
            &LogSection {
                format: LogFormat::Pretty,
                level: config.log.level.clone(),
            },
            true,
        ),
        Command::Enqueue { log_format, .. } | Command::Plan { log_format, .. } => {
            let log = LogSection {
                format: match log_format {
                    LogFormatArg::Human => LogFormat::Pretty,
                    LogFormatArg::Json => LogFormat::Json,
                },
                level: config.log.level.clone(),
            };
            telemetry::init(&log, true);
        }
    }
    // One thread: every command spends its time waiting on AWS, and IAM's request quota
    // caps the worker long before one core does (BENCHMARKS.md: over 100 jobs a second at
    // a few per cent of a core). A multi-threaded scheduler cost a sixth more CPU per job
    // in wake-ups across threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return 1;
        }
    };
    // On the heap: `block_on` keeps the future it runs on the main thread's stack, and
    // this one (configuration, credentials, the whole command) is tens of kilobytes.
    runtime.block_on(Box::pin(async move {
        let sdk = load_sdk_config(&config).await;
        if let Err((code, message)) = credentials_available(&sdk).await {
            eprintln!("error: {message}");
            return code;
        }
        let clients = Clients::new(&sdk, &config);
        match cli.command {
            Command::Run { .. } => worker(config, clients).await,
            Command::Enqueue {
                input,
                concurrency,
                priority,
                over_cap,
                ..
            } => {
                let lane = if priority { Lane::Priority } else { Lane::Main };
                commands::enqueue(
                    &config,
                    clients,
                    input.into_input(),
                    usize::from(concurrency),
                    (lane, over_cap),
                )
                .await
            }
            Command::ProtectPolicy { .. } => 0,
            Command::Restore {
                access_key_id,
                user_name,
                account_id,
                lift_session_cutoff,
                request_id,
                force,
                lift_quarantine,
                reason,
                role_name,
                ..
            } => {
                let request = crate::cli::restore::Request {
                    access_key_id,
                    user_name,
                    account_id,
                    lift_session_cutoff,
                    request_id,
                    force,
                    lift_quarantine,
                    reason,
                    role_name,
                };
                commands::restore(&config, &clients, request).await
            }
            Command::Held { all, .. } => breaker_exit(breaker::held(&config, &clients, all).await),
            Command::Approve { which, reason, .. } => {
                breaker_exit(breaker::approve(&config, &clients, &which, &reason).await)
            }
            Command::Discard { which, reason, .. } => {
                breaker_exit(breaker::discard(&config, &clients, &which, &reason).await)
            }
            Command::Pause { lane, reason, .. } => {
                breaker_exit(breaker::pause(&config, &clients, lane, Some(&reason)).await)
            }
            Command::Resume { lane, .. } => {
                breaker_exit(breaker::pause(&config, &clients, lane, None).await)
            }
            Command::Plan {
                file,
                format,
                output,
                role_name,
                priority,
                ..
            } => {
                let input = Input::File {
                    path: file,
                    format: format.map(Format::from),
                };
                let output = match output {
                    OutputArg::Table => PlanOutput::Table,
                    OutputArg::Json => PlanOutput::Json,
                };
                let lane = if priority { Lane::Priority } else { Lane::Main };
                commands::plan(&config, clients, input, output, role_name, lane).await
            }
        }
    }))
}

/// A breaker command's exit code, its failure said on standard error.
fn breaker_exit(result: Result<(), breaker::Failed>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(breaker::Failed(code, message)) => {
            eprintln!("error: {message}");
            code
        }
    }
}

/// Whether the AWS credential chain finds credentials, before anything else is tried: one
/// line that says where the chain looked beats the SDK's error chain of a whole screen.
/// Exit code 2 when there are none (the environment must be set up), 1 when a provider
/// failed (it may work next time).
async fn credentials_available(sdk: &aws_config::SdkConfig) -> Result<(), (u8, String)> {
    use aws_credential_types::provider::error::CredentialsError;
    use aws_credential_types::provider::ProvideCredentials;
    let one_line = |e: &CredentialsError| {
        let text = crate::aws::classify::causes(e);
        text.lines().map(str::trim).collect::<Vec<_>>().join("; ")
    };
    let Some(provider) = sdk.credentials_provider() else {
        return Err((
            2,
            "no AWS credentials: no credential provider is configured".into(),
        ));
    };
    match provider.provide_credentials().await {
        Ok(_) => Ok(()),
        Err(e @ CredentialsError::CredentialsNotLoaded(_)) => Err((
            2,
            format!(
                "no AWS credentials (environment, shared files and AWS_PROFILE, web identity/IRSA, ECS container, EC2 instance metadata): {}",
                one_line(&e)
            ),
        )),
        Err(e) => Err((1, format!("could not load AWS credentials: {}", one_line(&e)))),
    }
}

/// The worker, until SIGTERM or SIGINT.
async fn worker(config: Settings, clients: Clients) -> u8 {
    let app = match Application::build(config, clients)
        .await
        .context("Failed to start the worker")
    {
        Ok(app) => app,
        Err(e) => {
            let code = e
                .downcast_ref::<crate::worker::StartupError>()
                .map_or(1, crate::worker::StartupError::exit_code);
            tracing::error!(error = format!("{e:#}"), "Worker stopped");
            eprintln!("error: {e:#}");
            return code;
        }
    };
    app.run_until_signal().await;
    0
}
