//! `held`, `approve`, `discard`, `pause` and `resume` (docs, "The breaker"): an
//! operator's acts on the breaker's table, with the operator's own credentials. Each act
//! prints one JSON audit record per job or queue on standard output, naming who (the
//! caller's ARN, as STS says it, not as they say it) and why.

use clap::{ArgGroup, Args, ValueEnum};
use serde_json::json;

use crate::aws::classify::AwsError;
use crate::aws::clients::Clients;
use crate::aws::retry::RetryCounter;
use crate::aws::sqs::Sqs;
use crate::breaker::admin::{Admin, Held, Selector};
use crate::breaker::table::body_digest;
use crate::config::Settings;
use crate::outcome::Lane;

/// Which held jobs: exactly one of the three.
#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("which").required(true).args(["request_id", "batch_id", "account_id"])))]
pub struct Which {
    /// The held job with this request id.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Every held job of this batch.
    #[arg(long)]
    pub batch_id: Option<String>,
    /// Every held job in this account.
    #[arg(long)]
    pub account_id: Option<String>,
}

impl Which {
    fn selector(&self) -> Selector {
        match (&self.request_id, &self.batch_id, &self.account_id) {
            (Some(id), _, _) => Selector::RequestId(id.clone()),
            (_, Some(id), _) => Selector::BatchId(id.clone()),
            (_, _, Some(id)) => Selector::AccountId(id.clone()),
            // clap's group requires one.
            _ => Selector::RequestId(String::new()),
        }
    }
}

/// `--lane`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaneArg {
    Main,
    Priority,
    All,
}

impl LaneArg {
    fn lanes(self) -> Vec<Lane> {
        match self {
            LaneArg::Main => vec![Lane::Main],
            LaneArg::Priority => vec![Lane::Priority],
            LaneArg::All => vec![Lane::Main, Lane::Priority],
        }
    }
}

/// A breaker command's failure: its exit code and one line.
pub struct Failed(pub u8, pub String);

impl From<AwsError> for Failed {
    fn from(e: AwsError) -> Self {
        Failed(1, e.to_string())
    }
}

fn admin(config: &Settings, clients: &Clients) -> Result<Admin, Failed> {
    let table = config.breaker.table_name.clone().ok_or_else(|| {
        Failed(
            2,
            "breaker.table_name is not set (or IAM_KEY_REVOKER__BREAKER__TABLE_NAME): there is no breaker".to_owned(),
        )
    })?;
    Ok(Admin::new(clients.dynamodb(), table, config.backoff))
}

/// Who is acting: the caller's ARN, as STS says it.
async fn caller(clients: &Clients) -> Result<String, Failed> {
    let out = clients
        .sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| Failed::from(AwsError::from_sdk("GetCallerIdentity", e)))?;
    Ok(out.arn().unwrap_or_default().to_owned())
}

fn print(record: &serde_json::Value) {
    println!("{record}");
}

/// `held`: the held jobs, one JSON object per line, oldest first.
pub async fn held(config: &Settings, clients: &Clients, all: bool) -> Result<(), Failed> {
    let admin = admin(config, clients)?;
    let held = admin.held(all, &RetryCounter::default()).await?;
    for h in &held {
        print(&serde_json::to_value(h).unwrap_or_default());
    }
    eprintln!(
        "{} held job(s){}",
        held.len(),
        if all {
            ", decided ones included"
        } else {
            " waiting for a person"
        }
    );
    Ok(())
}

/// `approve`: each selected held job approved (for exactly the body that was held) and
/// sent back to the queue it came from, where the worker counts it whatever the limit.
pub async fn approve(
    config: &Settings,
    clients: &Clients,
    which: &Which,
    reason: &str,
) -> Result<(), Failed> {
    decide(config, clients, which, reason, true).await
}

/// `discard`: each selected held job marked discarded; nothing is sent.
pub async fn discard(
    config: &Settings,
    clients: &Clients,
    which: &Which,
    reason: &str,
) -> Result<(), Failed> {
    decide(config, clients, which, reason, false).await
}

async fn decide(
    config: &Settings,
    clients: &Clients,
    which: &Which,
    reason: &str,
    approve: bool,
) -> Result<(), Failed> {
    if reason.trim().is_empty() {
        return Err(Failed(2, "--reason must say why".to_owned()));
    }
    let admin = admin(config, clients)?;
    let by = caller(clients).await?;
    let retries = RetryCounter::default();
    let selected = admin.select(&which.selector(), &retries).await?;
    if selected.is_empty() {
        return Err(Failed(
            1,
            "no held job waiting for a person matches".to_owned(),
        ));
    }
    let sqs = Sqs::new(clients.sqs.clone(), config.backoff);
    let mut failures = 0;
    for held in &selected {
        let done = if !approve && held.state != "held" {
            Ok((false, None))
        } else if approve {
            approve_one(config, &admin, &sqs, held, &by, reason, &retries).await
        } else {
            admin
                .discard(held, &by, reason, &retries)
                .await
                .map(|decided| (decided, None))
                .map_err(|e| e.to_string())
        };
        let action = if approve { "approved" } else { "discarded" };
        let mut record = json!({
            "action": action,
            "request_id": held.request_id,
            "queue": held.queue,
            "account_id": held.account_id,
            "batch_id": held.batch_id,
            "keys": held.keys,
            "by": by,
            "reason": reason,
        });
        match done {
            Ok((true, message_id)) => {
                if let Some(id) = message_id {
                    record["message_id"] = json!(id);
                }
            }
            Ok((false, _)) => {
                record["action"] = json!("skipped");
                record["detail"] = json!("decided meanwhile by someone else");
            }
            Err(e) => {
                failures += 1;
                record["action"] = json!("failed");
                record["detail"] = json!(e);
            }
        }
        print(&record);
    }
    if failures > 0 {
        return Err(Failed(
            1,
            format!(
                "{failures} of {} held job(s) could not be {}",
                selected.len(),
                if approve {
                    "approved and sent"
                } else {
                    "discarded"
                }
            ),
        ));
    }
    Ok(())
}

/// Approves `held` and sends its body back to its queue. `(false, _)`: decided by
/// someone else first.
async fn approve_one(
    config: &Settings,
    admin: &Admin,
    sqs: &Sqs,
    held: &Held,
    by: &str,
    reason: &str,
    retries: &RetryCounter,
) -> Result<(bool, Option<String>), String> {
    let queue_url = match held.lane() {
        Some(Lane::Main) => config.sqs.queue_url.clone(),
        Some(Lane::Priority) => config
            .sqs
            .priority_queue_url
            .clone()
            .ok_or("held from the priority queue, but sqs.priority_queue_url is not set")?,
        None => return Err(format!("held from an unknown queue {:?}", held.queue)),
    };
    if body_digest(&held.body) != held.body_sha256 {
        return Err("the held body does not match its digest: not sent".to_owned());
    }
    // Approved first, then sent: a message the worker received before its approval was
    // written would be held again and deleted. One approved but not sent (the send
    // failed) is only sent, by the next `approve` that selects it.
    if held.state == "held"
        && !admin
            .approve(held, by, reason, retries)
            .await
            .map_err(|e| e.to_string())?
    {
        return Ok((false, None));
    }
    let fifo = queue_url
        .ends_with(".fifo")
        .then_some((held.request_id.as_str(), held.body_sha256.as_str()));
    let id = sqs
        .send_continuation(&queue_url, &held.body, 0, fifo, retries)
        .await
        .map_err(|e| {
            format!(
                "approved, but sending it to {queue_url} failed: {e}; run approve again to send it"
            )
        })?;
    if let Err(e) = admin.mark_sent(held, &id, retries).await {
        // Sent: a second send would only be a duplicate of it.
        tracing::warn!(request_id = %held.request_id, error = %e, "Sent, but not recorded as sent");
    }
    Ok((true, Some(id)))
}

/// `pause` (`Some(reason)`) or `resume` (`None`) of `lane`'s key changes.
pub async fn pause(
    config: &Settings,
    clients: &Clients,
    lane: LaneArg,
    reason: Option<&str>,
) -> Result<(), Failed> {
    if reason.is_some_and(|r| r.trim().is_empty()) {
        return Err(Failed(2, "--reason must say why".to_owned()));
    }
    let admin = admin(config, clients)?;
    let by = caller(clients).await?;
    for lane in lane.lanes() {
        admin
            .set_pause(lane, reason, &by, &RetryCounter::default())
            .await?;
        print(&json!({
            "action": if reason.is_some() { "paused" } else { "resumed" },
            "queue": lane.as_str(),
            "by": by,
            "reason": reason,
        }));
    }
    eprintln!(
        "Every replica {} within breaker.poll_seconds = {} s; each key change checks its queue's flag as it is counted.",
        if reason.is_some() { "stops changing keys and receiving" } else { "resumes" },
        config.breaker.poll_seconds
    );
    Ok(())
}
