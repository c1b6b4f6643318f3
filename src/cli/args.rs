//! The command line (docs, "Running it"): `run`, `enqueue`, `plan` and
//! `protect-policy`, their flags and
//! what they become.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cli::batch::Format;
pub use crate::cli::breaker::{LaneArg, Which as BreakerWhich};
use crate::cli::commands::Input;

#[derive(Parser)]
#[command(
    version,
    about = "Revokes AWS IAM access keys from an SQS queue of jobs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Send a batch that alone exceeds the breaker's limits (what is over them is
        /// held for a person's approval).
        #[arg(long)]
        over_cap: bool,
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
        /// The role assumed in a line's account_id when it is not your credentials' own
        /// (default: cross_account.planner_role_name, a role with read rights only).
        #[arg(long, value_parser = role_name)]
        role_name: Option<String>,
        /// Print a table or JSON.
        #[arg(long, value_enum, default_value = "table")]
        output: OutputArg,
        /// Compare the batch with the priority queue's breaker limits, not the main's.
        #[arg(long)]
        priority: bool,
        /// Log lines on standard error: for people, or one JSON object each.
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormatArg,
    },
    /// Set a staged key back to Active (a person's undo, with your own credentials): its
    /// schedule is kept, disabled, as the record of the restore.
    #[command(group(clap::ArgGroup::new("lift").args(["lift_session_cutoff", "lift_quarantine"]).multiple(true)))]
    Restore {
        #[arg(long, value_name = "FILE")]
        /// TOML configuration file; IAM_KEY_REVOKER__SECTION__KEY variables override it.
        config: Option<PathBuf>,
        /// The key to set Active again.
        #[arg(long)]
        access_key_id: String,
        /// Its user (IAM confirms the key is theirs).
        #[arg(long)]
        user_name: String,
        /// The account the key is in, when it is not the one of your credentials (a
        /// restorer's role is assumed there, never the worker's).
        #[arg(long)]
        account_id: Option<String>,
        /// The role assumed in --account-id (default: cross_account.restorer_role_name).
        #[arg(long, requires = "account_id", value_parser = role_name)]
        role_name: Option<String>,
        /// Also lift the session cut-off this revocation put on the user (its statement in
        /// the inline policy iam-key-revoker-revoke-older-sessions-<time>); the latest
        /// cut-off another revocation of the user needs stays in force.
        #[arg(long)]
        lift_session_cutoff: bool,
        /// The request id of the job that revoked the key, whose cut-off is lifted, when
        /// no staged delete of the key names it.
        #[arg(long, requires = "lift")]
        request_id: Option<String>,
        /// With a lift: lift even when another incident may need it (another of the
        /// user's keys is Inactive, or other revocations' cut-offs stay), and lift every
        /// cut-off on the user when this revocation's own is not on record. Only for a
        /// person who has checked that no other incident needs them.
        #[arg(long, requires = "lift")]
        force: bool,
        /// Also detach the quarantine policy (quarantine.policy_arn) from the user;
        /// refused while another of the user's keys is Inactive or another revocation's
        /// cut-off stays, unless --force.
        #[arg(long)]
        lift_quarantine: bool,
        /// Why, for the audit record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print protect.users and protect.roles as an IAM policy denying the worker's writes on
    /// those users and roles, and on its own roles (for the worker's role and the member
    /// accounts' role). Calls no AWS API.
    ProtectPolicy {
        #[arg(long, value_name = "FILE")]
        /// TOML configuration file; IAM_KEY_REVOKER__SECTION__KEY variables override it.
        config: Option<PathBuf>,
        /// The AWS partition of the ARNs (aws, aws-cn, aws-us-gov).
        #[arg(long, default_value = "aws", value_parser = ["aws", "aws-cn", "aws-us-gov"])]
        partition: String,
        /// `policy`: the policy document; `parameter`: the users' ARN patterns separated
        /// by spaces, for the stacks' ProtectedUserArns parameter; `role-parameter`: the
        /// protected roles' ARN patterns, for ProtectedRoleArns.
        #[arg(long, default_value = "policy", value_parser = ["policy", "parameter", "role-parameter"])]
        format: String,
    },
    /// List the jobs the breaker held for a person, oldest first (one JSON object each).
    Held {
        #[arg(long, value_name = "FILE")]
        /// TOML configuration file; IAM_KEY_REVOKER__SECTION__KEY variables override it.
        config: Option<PathBuf>,
        /// Also list held jobs already approved or discarded.
        #[arg(long)]
        all: bool,
    },
    /// Release held jobs to be worked, whatever the breaker's limits (your own
    /// credentials; the approval binds to the job that was held, once).
    Approve {
        #[arg(long, value_name = "FILE")]
        /// TOML configuration file; IAM_KEY_REVOKER__SECTION__KEY variables override it.
        config: Option<PathBuf>,
        #[command(flatten)]
        which: BreakerWhich,
        /// Why, for the audit record.
        #[arg(long)]
        reason: String,
    },
    /// Decide held jobs are not to be worked; nothing is sent.
    Discard {
        #[arg(long, value_name = "FILE")]
        /// TOML configuration file; IAM_KEY_REVOKER__SECTION__KEY variables override it.
        config: Option<PathBuf>,
        #[command(flatten)]
        which: BreakerWhich,
        /// Why, for the audit record.
        #[arg(long)]
        reason: String,
    },
    /// Stop every replica's key changes (and receives) on a queue within seconds.
    Pause {
        #[arg(long, value_name = "FILE")]
        /// TOML configuration file; IAM_KEY_REVOKER__SECTION__KEY variables override it.
        config: Option<PathBuf>,
        /// Which queue's jobs.
        #[arg(long, value_enum, default_value = "all")]
        lane: LaneArg,
        /// Why, for the audit record, /readyz and the log.
        #[arg(long)]
        reason: String,
    },
    /// Let every replica change keys again on a queue.
    Resume {
        #[arg(long, value_name = "FILE")]
        /// TOML configuration file; IAM_KEY_REVOKER__SECTION__KEY variables override it.
        config: Option<PathBuf>,
        /// Which queue's jobs.
        #[arg(long, value_enum, default_value = "all")]
        lane: LaneArg,
    },
}

/// One job from flags, or a batch file.
#[derive(Args)]
pub struct InputArgs {
    /// A batch file (JSON Lines, or CSV with a header row of contract fields); `-` reads
    /// standard input.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["request_id", "access_key_id", "user_name", "all_keys", "action", "account_id", "reason", "requested_by", "batch_id", "revoke_sessions", "quarantine_user", "report_activity", "delete_after"])]
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
    /// Also attach the quarantine policy (quarantine.policy_arn) to the user.
    #[arg(long)]
    quarantine_user: bool,
    /// Also report what the key did, from CloudTrail.
    #[arg(long)]
    report_activity: bool,
    /// Staged revocation (with --action deactivate): deactivate now, delete after this
    /// long ("30d", "12h", "90m") or at this RFC 3339 time, unless a person restores the
    /// key first.
    #[arg(long, value_name = "WHEN")]
    delete_after: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ActionArg {
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
pub enum FormatArg {
    Jsonl,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines (coloured on a terminal).
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OutputArg {
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
    /// The job(s) the flags name.
    pub fn into_input(self) -> Input {
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
            ("delete_after", self.delete_after),
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
        if self.quarantine_user {
            fields.insert("quarantine_user".to_owned(), true.into());
        }
        if self.report_activity {
            fields.insert("report_activity".to_owned(), true.into());
        }
        Input::One(fields)
    }
}

/// An IAM role name, as `--role-name` takes it.
fn role_name(value: &str) -> Result<String, String> {
    if crate::job::is_iam_name(value, 64) {
        Ok(value.to_owned())
    } else {
        Err("must be an IAM role name (1-64 of A-Za-z0-9+=,.@_-)".into())
    }
}
