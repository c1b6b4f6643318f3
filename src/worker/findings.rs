//! Closing the finding (docs, "Closing the finding"): with `intake.update_findings`, a
//! job from a GuardDuty finding marks the finding in Security Hub once its outcome is
//! settled: `RESOLVED` with the job's summary as the note when its key was revoked (or
//! already gone), `NOTIFIED` when the job was rejected for a reason a person must act on
//! (never for a sample, a root key or a message that is not a job). Like every step after the
//! revocation it never changes the job's outcome: a failure is retried by the retry
//! wrapper, then counted and logged, as are findings Security Hub did not process; the
//! outcome's `finding_update` says what became of it.

use crate::aws::findings::{self, FindingRef, Workflow};
use crate::aws::retry::RetryCounter;
use crate::intake::GUARDDUTY;
use crate::metrics;
use crate::outcome::{JobReport, Outcome, Reason};
use crate::worker::Worker;

impl Worker {
    /// Marks the GuardDuty finding `report`'s job came from, when asked to; returns what
    /// became of it.
    pub(super) async fn close_finding(
        &self,
        report: &JobReport,
        retries: &RetryCounter,
    ) -> Option<String> {
        if !self.intake.update_findings {
            return None;
        }
        let origin = report
            .facts
            .origin
            .as_ref()
            .filter(|o| o.source == GUARDDUTY)?;
        let workflow = match report.outcome {
            Outcome::Deleted
            | Outcome::Deactivated
            | Outcome::AlreadyAbsent
            | Outcome::SessionsRevoked => Workflow::Resolved,
            // What the finding names stays NEW for a person: a sample or a root key (never
            // the worker's to revoke), a message that is not a job or reuses a request id.
            // A forged event must not mark a real finding as handled (docs, "Threat
            // model").
            Outcome::Rejected(
                Reason::NotRevocable
                | Reason::InvalidMessage
                | Reason::RequestIdConflict
                | Reason::TooManyReceives,
            ) => return None,
            Outcome::Rejected(_) => Workflow::Notified,
            // Done by the earlier copy; or not finished yet.
            Outcome::Duplicate | Outcome::Cancelled | Outcome::Retry(_) | Outcome::Held(_) => {
                return None
            }
        };
        let request_id = report.facts.request_id.as_deref().unwrap_or("");
        if report.facts.role_name.is_some() {
            // A role session's finding names temporary credentials the worker never saw in
            // IAM: it verified the role, not the finding's resources. A person closes it.
            return Some(
                "Security Hub not updated: a finding about a role session is left for a person to close".to_owned(),
            );
        }
        let Some(finding) = origin.finding_arn.as_deref().and_then(FindingRef::parse) else {
            metrics::finding_updated("error");
            tracing::warn!(
                request_id,
                "The GuardDuty finding named no finding ARN: Security Hub not updated"
            );
            return Some("Security Hub not updated: the finding named no ARN".to_owned());
        };
        // Only a finding of the job's own account, about the key the job revoked: a
        // forged event must not close another finding (CONTRACT §2e).
        let own = self.accounts.own_identity(retries).await.ok();
        let account = report
            .facts
            .account_id
            .clone()
            .or_else(|| own.map(|o| o.account.clone()));
        if account.as_deref() != Some(finding.account.as_str()) {
            metrics::finding_updated("refused");
            tracing::warn!(request_id, finding_arn = %finding.arn, "The finding is not in the job's account: Security Hub not updated");
            return Some(format!(
                "Security Hub not updated: the finding is in account {}, the job acted in {}",
                finding.account,
                account.as_deref().unwrap_or("an unknown account")
            ));
        }
        let sdk = match self.accounts.sdk_for(Some(&finding.account), retries).await {
            Ok(sdk) => sdk,
            Err(e) => {
                metrics::finding_updated("error");
                tracing::warn!(request_id, finding_arn = %finding.arn, error = %e, "Could not act in the finding's account: Security Hub not updated");
                return Some(format!("Security Hub not updated: {e}"));
            }
        };
        let client = findings::client(&sdk, &finding.region);
        let key = report
            .facts
            .access_key_ids
            .first()
            .map(String::as_str)
            .unwrap_or("");
        let named = Box::pin(findings::names_key(
            &sdk,
            self.sqs.policy(),
            &finding,
            key,
            retries,
        ));
        match named.await {
            Ok(Some(true)) => {}
            Ok(named) => {
                metrics::finding_updated("refused");
                let why = match named {
                    None => "Security Hub holds no such finding".to_owned(),
                    Some(_) => format!("the finding does not name access key {key}"),
                };
                tracing::warn!(request_id, finding_arn = %finding.arn, why = %why, "Security Hub not updated");
                return Some(format!("Security Hub not updated: {why}"));
            }
            Err(e) => {
                metrics::finding_updated("error");
                tracing::warn!(request_id, finding_arn = %finding.arn, error = %e, "Could not read the Security Hub finding back");
                return Some(format!("Security Hub not updated: {e}"));
            }
        }
        let summary = report.summary();
        let updated = Box::pin(findings::update(
            &client,
            self.sqs.policy(),
            &finding,
            workflow,
            &summary,
            retries,
        ));
        match updated.await {
            Ok(None) => {
                metrics::finding_updated("ok");
                tracing::info!(request_id, finding_arn = %finding.arn, workflow = workflow.as_str(), "Security Hub finding updated");
                Some(format!("{} in Security Hub", workflow.as_str()))
            }
            Ok(Some(unprocessed)) => {
                metrics::finding_updated("unprocessed");
                tracing::warn!(
                    request_id,
                    finding_arn = %finding.arn,
                    error_code = %unprocessed.code,
                    error = %unprocessed.message,
                    "Security Hub did not process the finding update"
                );
                Some(format!(
                    "Security Hub not updated: {}: {}",
                    unprocessed.code, unprocessed.message
                ))
            }
            Err(e) => {
                metrics::finding_updated("error");
                tracing::warn!(request_id, finding_arn = %finding.arn, error = %e, "Could not update the Security Hub finding");
                Some(format!("Security Hub not updated: {e}"))
            }
        }
    }
}
