//! The `enqueue`, `plan` and `restore` commands end to end: read and validate the input, talk to
//! AWS, print the result. Each returns the process exit code (docs, "Running it"):
//! 0 success, 2 usage or validation error, 1 any other failure.

use std::path::PathBuf;
use std::time::Instant;

use crate::aws::accounts::Accounts;
use crate::aws::classify::AwsError;
use crate::aws::clients::Clients;
use crate::aws::retry::RetryCounter;
use crate::aws::sqs::Lane;
use crate::aws::sqs::Sqs;
use crate::breaker::admin::Admin;
use crate::cli::batch::{self, Format, Line};
use crate::cli::cap;
use crate::cli::enqueue::{self, Progress};
use crate::cli::plan::{self, Predicted};
use crate::config::Settings;

/// Where the jobs come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A batch file.
    File {
        path: PathBuf,
        format: Option<Format>,
    },
    /// One job given field by field (command-line flags).
    One(serde_json::Map<String, serde_json::Value>),
}

/// Writes `text` to standard output. A closed pipe (`plan ... | head`) is not an error
/// worth a word: the reader has what it wanted. Returns whether it was written.
fn write_stdout(text: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            false
        }
    }
}

/// How `plan` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanOutput {
    Table,
    Json,
}

fn load(input: &Input) -> Result<Vec<Line>, u8> {
    match input {
        Input::File { path, format } => {
            let format = format.unwrap_or_else(|| Format::of(path));
            batch::read(path, format).map_err(|e| {
                eprintln!("error: cannot read {}: {e}", path.display());
                2
            })
        }
        Input::One(fields) => Ok(vec![Line {
            number: 1,
            job: batch::validate_object(fields.clone()),
        }]),
    }
}

/// Reports every invalid line; true when there was at least one.
fn report_invalid(lines: &[Line], input: &Input) -> bool {
    let mut invalid = false;
    for line in lines {
        if let Err(e) = &line.job {
            invalid = true;
            match input {
                Input::File { path, .. } => eprintln!("{}:{}: {e}", path.display(), line.number),
                Input::One(_) => eprintln!("error: invalid job: {e}"),
            }
        }
    }
    invalid
}

/// `enqueue`: validates everything first; sends nothing if any line is invalid.
pub async fn enqueue(
    config: &Settings,
    clients: Clients,
    input: Input,
    concurrency: usize,
    (lane, over_cap): (Lane, bool),
) -> u8 {
    let lines = match load(&input) {
        Ok(lines) => lines,
        Err(code) => return code,
    };
    if report_invalid(&lines, &input) {
        eprintln!("Nothing was sent: fix the lines above and run again.");
        return 2;
    }
    if lines.is_empty() {
        eprintln!("Nothing to send: the file holds no jobs.");
        return 0;
    }
    let jobs: Vec<_> = lines.into_iter().filter_map(|l| l.job.ok()).collect();
    if config.breaker.table_name.is_some() && !over_cap {
        // Each job changes one key at least: a batch with more jobs than a limit trips it
        // whatever is counted already.
        let mut batch = cap::PerAccount::new();
        for job in &jobs {
            cap::add(&mut batch, job.account_id.as_deref(), 1);
        }
        let over = cap::over(&batch, lane, config.breaker.limits(lane), |_| 0);
        if !over.is_empty() {
            for line in &over {
                eprintln!("error: {line}");
            }
            eprintln!("Nothing was sent: the batch alone exceeds the breaker's limits, so the worker would hold what is over them for a person. Split it over windows, or send it anyway with --over-cap (and approve what is held: iam-key-revoker held, approve --batch-id).");
            return 2;
        }
    }
    let sqs = Sqs::new(clients.sqs, config.backoff);
    let started = Instant::now();
    let endpoint = endpoint(&clients.sdk);
    let sending = enqueue::send(
        &sqs,
        &config.sqs.queue_url,
        &jobs,
        concurrency,
        &Progress::new(jobs.len()),
    )
    .await;
    let mut failed = 0;
    for s in &sending.sent {
        match &s.result {
            Ok(()) => {
                // A reader that went away (`| head`) gets no more ids; the jobs are sent.
                let _ = write_stdout(&format!("{}\n", s.request_id));
            }
            Err(e) => {
                failed += 1;
                // After a stop, one line below says why for all of them.
                if sending.stopped_by.is_none() {
                    eprintln!("not sent: {}: {e}", s.request_id);
                }
            }
        }
    }
    if let Some(e) = &sending.stopped_by {
        eprintln!("error: {}", stopped(&endpoint, e));
    }
    eprintln!(
        "sent {}, failed {failed}, elapsed {:.1} s",
        sending.sent.len() - failed,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        1
    } else {
        0
    }
}

/// Where the commands' requests go: the configured endpoint, else AWS's in the Region.
fn endpoint(sdk: &aws_config::SdkConfig) -> String {
    match (sdk.endpoint_url(), sdk.region()) {
        (Some(url), _) => url.to_owned(),
        (None, Some(region)) => format!("AWS in Region {region}"),
        (None, None) => "AWS (no Region configured)".to_owned(),
    }
}

/// The one line that says why a command stopped: the endpoint and the cause.
fn stopped(endpoint: &str, e: &AwsError) -> String {
    if e.unanswered {
        format!("stopped: no answer from {endpoint}: {e}")
    } else {
        format!("stopped: {endpoint} refused the credentials: {e}")
    }
}

/// `plan`: predicts every line with read-only IAM calls and prints the plan.
pub async fn plan(
    config: &Settings,
    clients: Clients,
    input: Input,
    output: PlanOutput,
    role_name: Option<String>,
    lane: Lane,
) -> u8 {
    let lines = match load(&input) {
        Ok(lines) => lines,
        Err(code) => return code,
    };
    let endpoint = endpoint(&clients.sdk);
    // A planner's role of its own, read rights only; none when the worker acts in no
    // other account (its lines are then predicted `cross_account_disabled`).
    let accounts = Accounts::from_settings(config, &clients);
    let accounts = match &config.cross_account.role_name {
        Some(_) => accounts.with_role(
            role_name
                .as_deref()
                .unwrap_or(&config.cross_account.planner_role_name),
        ),
        None => accounts,
    };
    let rows = match plan::plan(&lines, std::sync::Arc::new(accounts)).await {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("error: {}", stopped(&endpoint, &e));
            return 1;
        }
    };
    match output {
        PlanOutput::Table => {
            let _ = write_stdout(&plan::table(&rows));
            eprintln!("{}", plan::summary(&rows));
        }
        PlanOutput::Json => match serde_json::to_string_pretty(&rows) {
            Ok(json) => {
                let _ = write_stdout(&format!("{json}\n"));
            }
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        },
    }
    if let Some(table) = &config.breaker.table_name {
        let admin = Admin::new(clients.dynamodb(), table.clone(), config.backoff);
        for line in breaker_check(config, &admin, &lines, &rows, lane).await {
            eprintln!("{line}");
        }
    }
    // The whole plan is printed either way; invalid lines make it a validation error.
    if rows.iter().any(|r| r.prediction == Predicted::Invalid) {
        2
    } else if rows.iter().any(|r| r.prediction == Predicted::Error) {
        1
    } else {
        0
    }
}

/// Whether the keys the plan would change trip the breaker on `lane`, with what is
/// counted in the table now (read with the operator's credentials; when it cannot be
/// read, the batch alone is compared).
async fn breaker_check(
    config: &Settings,
    admin: &Admin,
    lines: &[Line],
    rows: &[plan::PlanRow],
    lane: Lane,
) -> Vec<String> {
    let mut batch = cap::PerAccount::new();
    for row in rows {
        if let Predicted::Would(_) = row.prediction {
            let account = lines
                .iter()
                .find(|l| l.number == row.line)
                .and_then(|l| l.job.as_ref().ok())
                .and_then(|job| job.account_id.as_deref());
            cap::add(&mut batch, account, row.access_key_ids.len().max(1) as u64);
        }
    }
    let retries = RetryCounter::default();
    let window = config.breaker.window_seconds;
    let mut counted = std::collections::BTreeMap::new();
    let mut unread = None;
    // The worker's own account is counted under its id, which a line without an account
    // does not name: its keys are compared with the limit alone.
    let scopes = batch
        .keys()
        .filter(|a| *a != cap::OWN_ACCOUNT)
        .map(|a| Some(a.as_str()))
        .chain([None]);
    for scope in scopes {
        match admin.counted(lane, scope, window, &retries).await {
            Ok(n) => {
                counted.insert(scope.map(str::to_owned), u64::try_from(n).unwrap_or(0));
            }
            Err(e) => unread = Some(e),
        }
    }
    let mut out = cap::over(&batch, lane, config.breaker.limits(lane), |scope| {
        counted.get(&scope.map(str::to_owned)).copied().unwrap_or(0)
    });
    if out.is_empty() {
        out.push(format!(
            "breaker: the batch's {} key(s) fit breaker.{}'s limits",
            batch.values().sum::<u64>(),
            lane.as_str()
        ));
    } else {
        for line in &mut out {
            *line = format!("breaker: {line}");
        }
    }
    if let Some(e) = unread {
        out.push(format!(
            "breaker: what is counted now could not be read ({e}): the batch alone was compared"
        ));
    }
    out
}

/// `restore`: prints the audit record (one JSON object), or says why not.
pub async fn restore(
    config: &Settings,
    clients: &Clients,
    request: crate::cli::restore::Request,
) -> u8 {
    match crate::cli::restore::restore(config, clients, request).await {
        Ok(record) => {
            let text = serde_json::to_string(&record).unwrap_or_default();
            let _ = write_stdout(&format!("{text}\n"));
            eprintln!("{}", record.detail);
            record.exit_code()
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// `protect-policy`: prints the protected users' patterns as an IAM Deny policy, or as
/// the stacks' `ProtectedUserArns` parameter (exit 2 for a pattern IAM cannot express).
pub fn protect_policy(
    protect: &crate::config::ProtectSection,
    partition: &str,
    format: &str,
) -> u8 {
    use crate::cli::deny;
    let printed = match format {
        "parameter" => {
            deny::protected_user_arns(&protect.users, partition).map(|arns| arns.join(" "))
        }
        "role-parameter" => {
            deny::protected_role_arns(&protect.roles, partition).map(|arns| arns.join(" "))
        }
        _ => deny::protected_policy(&protect.users, &protect.roles, partition)
            .map(|policy| serde_json::to_string_pretty(&policy).unwrap_or_default()),
    };
    match printed {
        Ok(text) => {
            let _ = write_stdout(&format!("{text}\n"));
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
