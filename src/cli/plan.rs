//! `plan`: a read-only pre-flight of a batch. For every line it predicts what the worker
//! would do (`would_delete`, `would_deactivate`, `already_absent`, `owner_mismatch`,
//! `owner_unknown`, `protected`, `cross_account_disabled`, `invalid`, or `error` when IAM
//! could not be read), using only read calls: nothing changes in IAM or on the queue. A
//! failure of the endpoint's or the credentials' stops the whole plan (CONTRACT §6).
//! A job with `revoke_sessions` that would revoke (or find its key gone) also says
//! `would_revoke_sessions`; with `quarantine_user`, `would_quarantine`; a staged job
//! (`delete_after`) that would deactivate says when its delete would be scheduled for,
//! `would_schedule_delete_at`.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::aws::accounts::{AccountError, Accounts};
use crate::aws::classify::AwsError;
use crate::aws::retry::RetryCounter;
use crate::aws::verdict::Prediction;
use crate::cli::batch::Line;
use crate::job::Action;
use crate::outcome::Reason;

/// Lines previewed at once (the shared IAM rate still bounds the calls).
const CONCURRENCY: usize = 8;

/// What the worker would do with one line: the worker's own outcomes, predicted from
/// the same decision table ([`Prediction`]), plus what only a plan can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Predicted {
    Would(Action),
    AlreadyAbsent,
    /// The worker would reject the job for this reason.
    Rejected(Reason),
    /// The line is not a valid job.
    Invalid,
    /// IAM could not be read.
    Error,
}

impl Predicted {
    /// The name printed in the plan.
    pub fn as_str(self) -> &'static str {
        match self {
            Predicted::Would(Action::Delete) => "would_delete",
            Predicted::Would(Action::Deactivate) => "would_deactivate",
            Predicted::AlreadyAbsent => "already_absent",
            Predicted::Rejected(reason) => reason.as_str(),
            Predicted::Invalid => "invalid",
            Predicted::Error => "error",
        }
    }
}

impl Serialize for Predicted {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanRow {
    pub line: usize,
    pub request_id: Option<String>,
    pub prediction: Predicted,
    pub user_name: Option<String>,
    pub access_key_ids: Vec<String>,
    /// The worker would also put the session policy on the user.
    pub would_revoke_sessions: bool,
    /// The worker would also attach the quarantine policy to the user.
    pub would_quarantine: bool,
    /// A staged job: when the delete of each key it deactivates would be scheduled for,
    /// were the job worked now (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_schedule_delete_at: Option<String>,
    pub detail: Option<String>,
}

/// Predicts every line, each in the account it names. Stops at the first failure that is
/// not a line's own but the endpoint's or the credentials' (every other line would fail
/// the same way, each after its whole retry budget): that failure is the error.
pub async fn plan(lines: &[Line], accounts: Arc<Accounts>) -> Result<Vec<PlanRow>, AwsError> {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for (index, line) in lines.iter().enumerate() {
        let (line, accounts, slots, stop) =
            (line.clone(), accounts.clone(), slots.clone(), stop.clone());
        tasks.spawn(async move {
            // Cannot fail: the semaphore is never closed.
            let _slot = slots.acquire_owned().await.expect("semaphore open");
            let retries = RetryCounter::for_command(stop);
            (index, predict(&line, &accounts, &retries).await)
        });
    }
    let mut rows: Vec<Option<PlanRow>> = vec![None; lines.len()];
    while let Some(Ok((index, row))) = tasks.join_next().await {
        match row {
            Ok(row) => rows[index] = Some(row),
            Err(e) => {
                stop.cancel();
                tasks.abort_all();
                return Err(e);
            }
        }
    }
    Ok(rows.into_iter().flatten().collect())
}

async fn predict(
    line: &Line,
    accounts: &Accounts,
    retries: &RetryCounter,
) -> Result<PlanRow, AwsError> {
    let mut row = PlanRow {
        line: line.number,
        request_id: None,
        prediction: Predicted::Invalid,
        user_name: None,
        access_key_ids: Vec::new(),
        would_revoke_sessions: false,
        would_quarantine: false,
        would_schedule_delete_at: None,
        detail: None,
    };
    let job = match &line.job {
        Ok(job) => job,
        Err(e) => {
            row.detail = Some(e.to_string());
            return Ok(row);
        }
    };
    row.request_id = Some(job.request_id.clone());
    row.user_name = job.user_name().map(str::to_owned);
    row.access_key_ids = job.access_key_id().map(str::to_owned).into_iter().collect();
    let iam = match accounts.iam_for(job.account_id.as_deref(), retries).await {
        Ok(iam) => iam,
        Err(AccountError::Aws(e)) if e.is_the_endpoints() => return Err(e),
        Err(e) => {
            row.prediction = match e {
                AccountError::Disabled { .. } => Predicted::Rejected(Reason::CrossAccountDisabled),
                AccountError::Aws(_) => Predicted::Error,
            };
            row.detail = Some(e.to_string());
            return Ok(row);
        }
    };
    let home = match accounts.home_for(job.account_id.as_deref(), retries).await {
        Ok(home) => home,
        Err(e) if e.is_the_endpoints() => return Err(e),
        Err(e) => {
            row.prediction = Predicted::Error;
            row.detail = Some(e.to_string());
            return Ok(row);
        }
    };
    match iam.preview(job, &home, retries).await {
        Ok(preview) => {
            if preview.user_name.is_some() {
                row.user_name = preview.user_name;
            }
            if !preview.access_key_ids.is_empty() {
                row.access_key_ids = preview.access_key_ids;
            }
            (row.prediction, row.detail) = match preview.prediction {
                Prediction::Would(action) => (Predicted::Would(action), None),
                Prediction::AlreadyAbsent => (Predicted::AlreadyAbsent, None),
                Prediction::Rejected(reason, detail) => (Predicted::Rejected(reason), Some(detail)),
            };
            let acts = matches!(
                row.prediction,
                Predicted::Would(_) | Predicted::AlreadyAbsent
            );
            row.would_revoke_sessions = job.revoke_sessions && acts;
            row.would_quarantine = job.quarantine_user && acts;
            if let (Predicted::Would(Action::Deactivate), Some(after)) =
                (row.prediction, &job.delete_after)
            {
                let now = i64::try_from(crate::metrics::now_ms() / 1000).unwrap_or(0);
                row.would_schedule_delete_at = Some(crate::staging::rfc3339(after.due(now)));
            }
        }
        Err(e) if e.is_the_endpoints() => return Err(e),
        Err(e) => {
            row.prediction = Predicted::Error;
            row.detail = Some(e.to_string());
        }
    }
    Ok(row)
}

/// The plan as an aligned text table.
pub fn table(rows: &[PlanRow]) -> String {
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.line.to_string(),
                r.request_id.clone().unwrap_or_default(),
                r.prediction.as_str().to_owned(),
                r.user_name.clone().unwrap_or_default(),
                r.access_key_ids.join(","),
                [
                    (r.would_revoke_sessions, "would_revoke_sessions"),
                    (r.would_quarantine, "would_quarantine"),
                ]
                .iter()
                .filter(|(would, _)| *would)
                .map(|(_, what)| (*what).to_owned())
                .chain(
                    r.would_schedule_delete_at
                        .iter()
                        .map(|at| format!("would_schedule_delete_at={at}")),
                )
                .collect::<Vec<_>>()
                .join(","),
                r.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = [
        "LINE",
        "REQUEST_ID",
        "PREDICTION",
        "USER",
        "ACCESS_KEYS",
        "THEN",
        "DETAIL",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&cells) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// How many lines got each prediction, in the order they first appear.
pub fn summary(rows: &[PlanRow]) -> String {
    let mut counts: Vec<(Predicted, usize)> = Vec::new();
    for row in rows {
        match counts.iter_mut().find(|(p, _)| *p == row.prediction) {
            Some((_, n)) => *n += 1,
            None => counts.push((row.prediction, 1)),
        }
    }
    counts
        .iter()
        .map(|(p, n)| format!("{}: {n}", p.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_aligned() {
        let rows = vec![
            PlanRow {
                line: 1,
                request_id: Some("r-1".into()),
                prediction: Predicted::Would(Action::Delete),
                user_name: Some("alice".into()),
                access_key_ids: vec!["AKIA1".into()],
                would_revoke_sessions: true,
                would_quarantine: true,
                would_schedule_delete_at: Some("2026-12-30T12:00:00Z".into()),
                detail: None,
            },
            PlanRow {
                line: 12,
                request_id: None,
                prediction: Predicted::Invalid,
                user_name: None,
                access_key_ids: vec![],
                would_revoke_sessions: false,
                would_quarantine: false,
                would_schedule_delete_at: None,
                detail: Some("not JSON".into()),
            },
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let column = lines[0].find("PREDICTION").unwrap();
        assert_eq!(lines[1].find("would_delete"), Some(column));
        assert_eq!(lines[2].find("invalid"), Some(column));
        assert!(lines[1].contains(
            "would_revoke_sessions,would_quarantine,would_schedule_delete_at=2026-12-30T12:00:00Z"
        ));
        assert!(!lines[2].contains("would_revoke_sessions"));
        assert_eq!(summary(&rows), "would_delete: 1, invalid: 1");
    }
}
