//! The `iam-key-revoker` binary: parses the command line, sets up logging, runs the
//! library and maps errors to exit codes (0 success, 2 usage/configuration, 1 other).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use iam_key_revoker::aws::clients::{load_sdk_config, Clients};
use iam_key_revoker::aws::sqs::QueueSetupError;
use iam_key_revoker::cli::batch::Format;
use iam_key_revoker::cli::commands::{self, Input, PlanOutput};
use iam_key_revoker::config::{Config, LogFormat, LogSection};
use iam_key_revoker::telemetry;

/// mimalloc rather than the system allocator: an AWS request allocates and frees hundreds
/// of small buffers, and with glibc's allocator that was a fifth of the worker's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
        #[arg(long, value_name = "FILE")]
        /// TOML configuration file; IAM_KEY_REVOKER__SECTION__KEY variables override it.
        config: Option<PathBuf>,
    },
    /// Put one job (from flags) or a batch (--file) on the queue; prints the request ids.
    Enqueue {
        #[arg(long, value_name = "FILE")]
        /// TOML configuration file; IAM_KEY_REVOKER__SECTION__KEY variables override it.
        config: Option<PathBuf>,
        /// The job queue (instead of sqs.queue_url): a producer needs no worker config.
        #[arg(long, value_name = "URL")]
        queue_url: Option<String>,
        /// Send to the priority queue (sqs.priority_queue_url): urgent jobs, served first.
        #[arg(long, conflicts_with = "queue_url")]
        priority: bool,
        #[command(flatten)]
        input: Box<InputArgs>,
        /// SendMessageBatch calls in flight at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
        concurrency: u16,
        /// Log lines on standard error: for people, or one JSON object each.
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormatArg,
    },
    /// Read-only pre-flight of a batch: what the worker would do with each job.
    Plan {
        #[arg(long, value_name = "FILE")]
        /// TOML configuration file; IAM_KEY_REVOKER__SECTION__KEY variables override it.
        config: Option<PathBuf>,
        /// The batch file (JSON Lines, or CSV with a header row of contract fields).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// The file's format (default: from its extension; .csv is CSV).
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        /// Print a table or JSON.
        #[arg(long, value_enum, default_value = "table")]
        output: OutputArg,
        /// Log lines on standard error: for people, or one JSON object each.
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormatArg,
    },
}

/// One job from flags, or a batch file.
#[derive(Args)]
struct InputArgs {
    /// A batch file (JSON Lines, or CSV with a header row of contract fields); `-` reads
    /// standard input.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["request_id", "access_key_id", "user_name", "all_keys", "action", "account_id", "reason", "requested_by", "batch_id", "revoke_sessions"])]
    file: Option<PathBuf>,
    /// The file's format (default: from its extension; .csv is CSV).
    #[arg(long, value_enum, requires = "file")]
    format: Option<FormatArg>,
    /// Request id (generated when absent).
    #[arg(long)]
    request_id: Option<String>,
    /// The access key to revoke (AKIA...).
    #[arg(long)]
    access_key_id: Option<String>,
    /// Its user; without it the worker asks IAM who owns the key.
    #[arg(long)]
    user_name: Option<String>,
    /// Revoke every key of --user-name.
    #[arg(long)]
    all_keys: bool,
    /// What to do with the key(s) (default: delete).
    #[arg(long, value_enum)]
    action: Option<ActionArg>,
    /// Act in this account (12 digits) through the configured cross-account role.
    #[arg(long)]
    account_id: Option<String>,
    /// Why, for the audit trail.
    #[arg(long)]
    reason: Option<String>,
    /// Who asks, for the audit trail.
    #[arg(long)]
    requested_by: Option<String>,
    /// Groups the jobs of one bulk batch.
    #[arg(long)]
    batch_id: Option<String>,
    /// Also cut off the user's temporary credentials issued before the revocation.
    #[arg(long)]
    revoke_sessions: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ActionArg {
    /// Delete the key (irreversible).
    Delete,
    /// Set the key Inactive (reversible).
    Deactivate,
}

impl ActionArg {
    fn as_str(self) -> &'static str {
        match self {
            ActionArg::Delete => "delete",
            ActionArg::Deactivate => "deactivate",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Jsonl,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines (coloured on a terminal).
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputArg {
    Table,
    Json,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Jsonl => Format::JsonLines,
            FormatArg::Csv => Format::Csv,
        }
    }
}

impl InputArgs {
    fn into_input(self) -> Input {
        if let Some(path) = self.file {
            return Input::File {
                path,
                format: self.format.map(Format::from),
            };
        }
        let mut fields = serde_json::Map::new();
        let text_fields = [
            ("request_id", self.request_id),
            ("access_key_id", self.access_key_id),
            ("user_name", self.user_name),
            ("action", self.action.map(|a| a.as_str().to_owned())),
            ("account_id", self.account_id),
            ("reason", self.reason),
            ("requested_by", self.requested_by),
            ("batch_id", self.batch_id),
        ];
        for (name, value) in text_fields {
            if let Some(value) = value {
                fields.insert(name.to_owned(), value.into());
            }
        }
        if self.all_keys {
            fields.insert("all_keys".to_owned(), true.into());
        }
        if self.revoke_sessions {
            fields.insert("revoke_sessions".to_owned(), true.into());
        }
        Input::One(fields)
    }
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
    let config_path = match &cli.command {
        Command::Run { config }
        | Command::Enqueue { config, .. }
        | Command::Plan { config, .. } => config.clone(),
    };
    let queue_url = match &cli.command {
        Command::Enqueue { queue_url, .. } => queue_url.as_deref(),
        _ => None,
    };
    let mut config = match Config::load_with_queue(config_path.as_deref(), queue_url) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
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
                return ExitCode::from(2);
            }
        }
    }
    // The worker logs to standard output as configured; the commands keep standard output
    // for their results and log for people unless asked for JSON.
    match &cli.command {
        Command::Run { .. } => telemetry::init(&config.log, false),
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
            return ExitCode::FAILURE;
        }
    };
    // On the heap: `block_on` keeps the future it runs on the main thread's stack, and
    // this one (configuration, credentials, the whole command) is tens of kilobytes.
    runtime.block_on(Box::pin(async move {
        let sdk = load_sdk_config(&config).await;
        if let Err((code, message)) = credentials_available(&sdk).await {
            eprintln!("error: {message}");
            return ExitCode::from(code);
        }
        let clients = Clients::new(&sdk, &config);
        match cli.command {
            Command::Run { .. } => run(config, clients).await,
            Command::Enqueue {
                input, concurrency, ..
            } => ExitCode::from(
                commands::enqueue(
                    &config,
                    clients,
                    input.into_input(),
                    usize::from(concurrency),
                )
                .await,
            ),
            Command::Plan {
                file,
                format,
                output,
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
                ExitCode::from(commands::plan(&config, clients, input, output).await)
            }
        }
    }))
}

/// Whether the AWS credential chain finds credentials, before anything else is tried: one
/// line that says where the chain looked beats the SDK's error chain of a whole screen.
/// Exit code 2 when there are none (the environment must be set up), 1 when a provider
/// failed (it may work next time).
async fn credentials_available(sdk: &aws_config::SdkConfig) -> Result<(), (u8, String)> {
    use aws_credential_types::provider::error::CredentialsError;
    use aws_credential_types::provider::ProvideCredentials;
    let one_line = |e: &CredentialsError| {
        let text = iam_key_revoker::aws::classify::causes(e);
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

async fn run(config: Config, clients: Clients) -> ExitCode {
    let app = match Application::build(config, clients)
        .await
        .context("Failed to start the worker")
    {
        Ok(app) => app,
        Err(e) => {
            let code = match e.downcast_ref::<StartupError>() {
                Some(
                    StartupError::Config(_)
                    | StartupError::Queue(QueueSetupError::NoDeadLetterQueue { .. })
                    | StartupError::PriorityQueue(QueueSetupError::NoDeadLetterQueue { .. }),
                ) => 2,
                _ => 1,
            };
            tracing::error!(error = format!("{e:#}"), "Worker stopped");
            eprintln!("error: {e:#}");
            return ExitCode::from(code);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await;
    ExitCode::SUCCESS
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
