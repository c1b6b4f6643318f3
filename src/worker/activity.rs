//! Activity reports in the worker (docs, "Activity reports"). A job that revoked a key
//! and asked for a report (every security event, unless `intake.report_activity` is
//! false) sends, before its message is settled, two report tasks of its own to the main
//! job queue: pass 1 at once, pass 2 `activity.second_pass_delay_seconds` later. Being
//! messages, neither is lost to a restart. A task reads the key's CloudTrail history in
//! each Region, follows the temporary credentials it minted one level, and sends the
//! report to the sinks and the log. Nothing here changes a job's outcome: a failure is
//! counted, logged and said in the report.

use std::time::Duration;

use aws_config::SdkConfig;
use tokio::time::Instant;

use crate::activity::MANAGEMENT_EVENTS_ONLY;
use crate::activity::{iso, ActivityReport, KeyActivity, RegionFailure, Task, TrailEvent};
use crate::aws::cloudtrail;
use crate::aws::mac::{Purpose, Verified};
use crate::aws::retry::RetryCounter;
use crate::aws::sqs::Outgoing;
use crate::metrics;
use crate::outcome::{JobFacts, Lane, Outcome, Reason};
use crate::worker::settle::{Decision, CONTINUATION_TTL_MS};
use crate::worker::Worker;

/// Minted credentials followed per report; the others are listed, not followed.
const FOLLOWED_MAX: usize = 10;
/// How long a report task may read: a task holds a job slot, and a key with a long
/// history must not hold it from revocations. Regions not reached are named.
const REPORT_BUDGET: Duration = Duration::from_secs(120);

impl Worker {
    /// Sends the report tasks of a job that revoked its keys and asked for a report.
    pub(super) async fn schedule_reports(
        &self,
        facts: &JobFacts,
        outcome: Outcome,
        retries: &RetryCounter,
    ) {
        let revoked = matches!(
            outcome,
            Outcome::Deleted | Outcome::Deactivated | Outcome::AlreadyAbsent
        );
        if !facts.report_activity || !revoked || facts.access_key_ids.is_empty() {
            return;
        }
        let now = metrics::now_ms();
        let delay = self.config.activity.second_pass_delay_seconds;
        let queue_url = &self.source(Lane::Main).queues.queue_url;
        let fifo = queue_url.ends_with(".fifo");
        let mut messages = Vec::new();
        for key in &facts.access_key_ids {
            let user = facts
                .keys
                .iter()
                .find(|k| k.access_key_id == *key && !k.user_name.is_empty())
                .map(|k| k.user_name.clone())
                .or_else(|| facts.user_name.clone());
            for (pass, wait) in [(1u8, 0u32), (2, delay)] {
                let mut task = Task {
                    request_id: facts.request_id.clone().unwrap_or_default(),
                    access_key_id: key.clone(),
                    user_name: user.clone(),
                    account_id: facts.account_id.clone(),
                    pass,
                    revoked_at_ms: now,
                    not_before_ms: now + u64::from(wait) * 1000,
                    event_source: facts.event_source().map(str::to_owned),
                    event_type: facts.event_type().map(str::to_owned),
                    expires_at_ms: None,
                    mac: None,
                };
                if let Some(mac) = &self.settler.mac {
                    task.expires_at_ms = Some(now + CONTINUATION_TTL_MS);
                    let canonical = task.canonical();
                    match Box::pin(mac.sign(Purpose::ReportTask, &canonical, retries)).await {
                        Ok(signature) => task.mac = Some(signature),
                        Err(e) => {
                            tracing::warn!(error = %e, "Could not sign an activity report task; not sent");
                            metrics::activity_report(pass, "error");
                            continue;
                        }
                    }
                }
                // A FIFO queue takes no delay per message: the task waits by its
                // not_before (and a group of its own, so that it holds back no job).
                let group = format!("activity-{key}-{pass}");
                messages.push(Outgoing {
                    body: task.to_body(),
                    group_id: fifo.then(|| group.clone()),
                    deduplication_id: fifo.then(|| format!("{group}-{now}")),
                    delay_seconds: (!fifo && wait > 0).then_some(wait as i32),
                });
            }
        }
        for batch in messages.chunks(crate::aws::sqs::SQS_BATCH_MAX) {
            let failed = match self.sqs.send_batch(queue_url, batch, retries).await {
                Ok(refused) => refused.len(),
                Err(e) => {
                    tracing::warn!(error = %e, "Could not send the activity report tasks");
                    batch.len()
                }
            };
            for _ in 0..failed {
                metrics::activity_report(1, "error");
            }
        }
    }

    /// Whether a report task is the worker's own (docs, "Activity reports"): with a MAC
    /// key, its MAC must verify and not have expired (a producer could otherwise make the
    /// worker read any key's history and send it to the sinks); without one, every task
    /// is taken, as the worker cannot tell. `Err` is the task's decision when it is not.
    pub(super) async fn own_task(
        &self,
        task: &Task,
        retries: &RetryCounter,
    ) -> Result<(), Decision> {
        let Some(mac) = &self.settler.mac else {
            return Ok(());
        };
        let claims = (task.mac.as_deref(), task.expires_at_ms);
        let canonical = task.canonical();
        let verified = mac
            .verify_within(
                Purpose::ReportTask,
                &canonical,
                claims,
                metrics::now_ms(),
                retries,
            )
            .await
            .map_err(|e| self.aws_failure(e, 0))?;
        match verified {
            Verified::Yes => Ok(()),
            Verified::No(why) => {
                metrics::unverified_message("report_task");
                tracing::warn!(request_id = %task.request_id, why = %why, "An activity report task that does not verify: refused");
                Err(Decision::new(
                    Outcome::Rejected(Reason::InvalidMessage),
                    format!("an activity report task that is not the worker's own ({why}); nothing read"),
                ))
            }
        }
    }

    /// Works one report task: the report of its key, sent and logged. A task received
    /// before its time goes back until then.
    pub(super) async fn report(&self, task: &Task, retries: &RetryCounter) -> Decision {
        if metrics::now_ms() < task.not_before_ms {
            return Decision::new(
                Outcome::Retry(Reason::ReportLater),
                format!("activity report pass {} is due later", task.pass),
            );
        }
        let mut report = self.read_activity(task, retries).await;
        // Containment before the report goes out: it says what became of what was made.
        let unsent = Box::pin(self.contain_made(task, &mut report, retries))
            .await
            .err();
        let result = report.result();
        metrics::activity_report(task.pass, result);
        tracing::info!(
            target: "audit",
            request_id = %task.request_id,
            access_key_id = %task.access_key_id,
            user_name = task.user_name.as_deref().unwrap_or(""),
            account_id = task.account_id.as_deref().unwrap_or(""),
            pass = task.pass,
            result,
            report = %serde_json::to_string(&report).unwrap_or_default(),
            summary = %report.summary,
            "Activity report"
        );
        if let Some(results) = &self.results {
            results.publish_report(&report);
        }
        if let Some(unsent) = unsent {
            // The task stays on the queue: its next delivery sends what was not sent.
            return Decision::new(Outcome::Retry(Reason::TransientError), unsent);
        }
        Decision::new(Outcome::Retry(Reason::Reported), report.summary)
    }

    async fn read_activity(&self, task: &Task, retries: &RetryCounter) -> ActivityReport {
        let deadline = Instant::now() + REPORT_BUDGET;
        let settings = &self.config.activity;
        let now = metrics::now_ms();
        let start = task
            .revoked_at_ms
            .saturating_sub(u64::from(settings.lookback_hours) * 3_600_000);
        let mut report = ActivityReport {
            kind: "activity_report",
            summary: String::new(),
            request_id: task.request_id.clone(),
            access_key_id: task.access_key_id.clone(),
            user_name: task.user_name.clone(),
            account_id: task.account_id.clone(),
            event_source: task.event_source.clone(),
            event_type: task.event_type.clone(),
            pass: task.pass,
            revoked_at: iso(task.revoked_at_ms),
            window_start: iso(start),
            window_end: iso(now),
            regions: Vec::new(),
            failed_regions: Vec::new(),
            skipped_regions: Vec::new(),
            source: MANAGEMENT_EVENTS_ONLY,
            activity: KeyActivity {
                access_key_id: task.access_key_id.clone(),
                ..KeyActivity::default()
            },
        };
        let sdk = match self
            .accounts
            .sdk_for(task.account_id.as_deref(), retries)
            .await
        {
            Ok(sdk) => sdk,
            Err(e) => {
                report.failed_regions.push(RegionFailure {
                    region: "*".to_owned(),
                    error: format!("could not act in the account: {e}"),
                });
                report.summarize();
                return report;
            }
        };
        report.regions = if settings.regions.is_empty() {
            match cloudtrail::enabled_regions(&sdk, self.sqs.policy(), retries).await {
                Ok(regions) if !regions.is_empty() => regions,
                Ok(_) | Err(_) => {
                    let fallback = self
                        .config
                        .aws
                        .region
                        .clone()
                        .unwrap_or_else(|| "us-east-1".to_owned());
                    report.failed_regions.push(RegionFailure {
                        region: "*".to_owned(),
                        error: format!("could not list the account's Regions (account:ListRegions): only {fallback} was read; set activity.regions to read others"),
                    });
                    vec![fallback]
                }
            }
        } else {
            settings.regions.clone()
        };
        // IAM's calls (the keys and passwords the leaked key made) are in the event history
        // of its partition's home Region only, whatever activity.regions says (AWS,
        // "CloudTrail Lookup: global service events", since 22 November 2021: "CloudTrail's
        // Lookup service within each region will only show global service events in
        // us-east-1").
        let partition = self
            .accounts
            .own_identity(retries)
            .await
            .map(|i| i.partition.clone())
            .unwrap_or_else(|_| "aws".to_owned());
        // First: what the key made is contained from there, and a budget or an event
        // cap that runs out must not leave it unread.
        if let Some(home) = iam_events_region(&partition) {
            report.regions.retain(|r| r != home);
            report.regions.insert(0, home.to_owned());
        }
        let account = task.account_id.as_deref().unwrap_or("own");
        // Regions where CloudTrail refused lookups before are not asked again: said once,
        // when first refused (events_of), not after every event.
        let (skipped, read): (Vec<String>, Vec<String>) = std::mem::take(&mut report.regions)
            .into_iter()
            .partition(|region| self.lookup_rates.refused(account, region));
        report.regions = read;
        report.skipped_regions = skipped;
        let max = settings.max_events as usize;
        let (events, capped) = self
            .events_of(
                &sdk,
                account,
                &report.regions,
                &task.access_key_id,
                (start, now),
                max,
                deadline,
                &mut report.failed_regions,
                retries,
            )
            .await;
        report.activity =
            KeyActivity::build(&task.access_key_id, &events, capped, &report.revoked_at);
        // The temporary credentials the key minted, followed one level: what they did,
        // in the account the worker acts in.
        let own_account = match task.account_id.clone() {
            Some(account) => Some(account),
            None => self
                .accounts
                .own_identity(retries)
                .await
                .ok()
                .map(|i| i.account.clone()),
        };
        let regions = report.regions.clone();
        for (index, minted) in report.activity.minted.iter_mut().enumerate() {
            if index >= FOLLOWED_MAX {
                minted.not_followed = Some(format!(
                    "only the first {FOLLOWED_MAX} minted credentials are followed"
                ));
                continue;
            }
            let role_account = minted
                .role_arn
                .as_deref()
                .and_then(|arn| arn.split(':').nth(4))
                .map(str::to_owned);
            match (&minted.access_key_id, role_account) {
                (None, _) => {
                    minted.not_followed = Some("CloudTrail recorded no access key id".to_owned());
                }
                (Some(_), Some(role_account)) if Some(&role_account) != own_account.as_ref() => {
                    minted.not_followed = Some(format!(
                        "a role in account {role_account}: not followed (the worker reads the history of the account it acts in)"
                    ));
                }
                (Some(key), _) => {
                    let from = crate::activity::parse_iso_ms(&minted.time).unwrap_or(start);
                    let mut failures = Vec::new();
                    let (events, capped) = self
                        .events_of(
                            &sdk,
                            account,
                            &regions,
                            key,
                            (from, now),
                            max,
                            deadline,
                            &mut failures,
                            retries,
                        )
                        .await;
                    let mut followed =
                        KeyActivity::build(key, &events, capped, &iso(task.revoked_at_ms));
                    // One level: what these credentials minted is listed, not followed.
                    for deeper in &mut followed.minted {
                        deeper.not_followed = Some("two levels deep: not followed".to_owned());
                    }
                    if !failures.is_empty() {
                        minted.not_followed = Some(format!(
                            "not read in {}",
                            failures
                                .iter()
                                .map(|f| f.region.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    minted.activity = Some(Box::new(followed));
                }
            }
        }
        report.summarize();
        report
    }

    /// The events of `key` in every Region of `regions` within `window` (Unix
    /// milliseconds), at most `max` in all; a Region not reached by `deadline` is named
    /// in `failures`.
    #[allow(clippy::too_many_arguments)]
    async fn events_of(
        &self,
        sdk: &SdkConfig,
        account: &str,
        regions: &[String],
        key: &str,
        (start_ms, end_ms): (u64, u64),
        max: usize,
        deadline: Instant,
        failures: &mut Vec<RegionFailure>,
        retries: &RetryCounter,
    ) -> (Vec<TrailEvent>, bool) {
        let mut events = Vec::new();
        let mut capped = false;
        for region in regions {
            if Instant::now() >= deadline {
                failures.push(RegionFailure {
                    region: region.clone(),
                    error: format!(
                        "not read: the report's time budget of {} s was spent",
                        REPORT_BUDGET.as_secs()
                    ),
                });
                continue;
            }
            let left = max.saturating_sub(events.len());
            if left == 0 {
                capped = true;
                break;
            }
            let client = cloudtrail::client(sdk, region);
            let rate = self.lookup_rates.of(account, region);
            match cloudtrail::lookup(
                &client,
                self.sqs.policy(),
                &rate,
                key,
                start_ms,
                end_ms,
                left,
                retries,
            )
            .await
            {
                Ok((found, more)) => {
                    capped |= more;
                    events.extend(found);
                }
                Err(e) if e.is_access_denied() && self.lookup_rates.refuse(account, region) => {
                    tracing::warn!(
                        region = %region,
                        account,
                        error = %e,
                        "CloudTrail refused LookupEvents in this Region of this account (a service control policy denying the Region?): it is not read there again until the worker restarts; set activity.regions to the Regions your keys are used in"
                    );
                    failures.push(RegionFailure {
                        region: region.clone(),
                        error: e.to_string(),
                    });
                }
                Err(e) => {
                    tracing::warn!(region = %region, access_key_id = key, error = %e, "Could not read CloudTrail's event history");
                    failures.push(RegionFailure {
                        region: region.clone(),
                        error: e.to_string(),
                    });
                }
            }
        }
        (events, capped)
    }
}

/// The Region whose CloudTrail event history holds IAM's events in `partition`.
fn iam_events_region(partition: &str) -> Option<&'static str> {
    match partition {
        "aws" => Some("us-east-1"),
        "aws-cn" => Some("cn-north-1"),
        "aws-us-gov" => Some("us-gov-west-1"),
        _ => None,
    }
}
