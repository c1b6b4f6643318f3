//! The one-line human summary of a finished job (docs, "Notifications"): what was done,
//! to which key of whom, where, why, and what the session cut-off covers. It goes into
//! the audit line and every outcome event, and a shorter form into an SNS subject.

use crate::outcome::{JobReport, Outcome};

/// SNS refuses a subject of 100 characters or more (SNS API Reference, "Publish":
/// "Subject … must be less than 100 characters long").
const SUBJECT_MAX: usize = 99;
/// Longest summary: it is one line for a chat message, not the whole record.
const SUMMARY_MAX: usize = 600;
/// Keys named one by one before the rest are counted.
const KEYS_NAMED: usize = 3;

impl JobReport {
    /// One line saying what became of the job, e.g. "Deleted access key AKIA… of alice in
    /// 111122223333 after AWS Health AWS_RISK_CREDENTIALS_EXPOSED; sessions issued before
    /// 2026-11-30T12:00:01Z denied".
    pub fn summary(&self) -> String {
        let facts = &self.facts;
        let what = self.what();
        let mut line = match self.outcome {
            Outcome::Deleted => format!("Deleted {what}"),
            Outcome::Deactivated => format!("Deactivated {what}"),
            Outcome::AlreadyAbsent => format!("Nothing to revoke: {what} no longer exists"),
            Outcome::Duplicate => {
                format!("Nothing done: {what} was already revoked by an earlier copy of this job")
            }
            Outcome::SessionsRevoked if facts.role_session.is_some() => format!("Cut off {what}"),
            Outcome::SessionsRevoked => format!("Cut off the older sessions of {what}"),
            Outcome::Cancelled => format!(
                "Cancelled: did not {} {what}: a person restored it",
                self.verb()
            ),
            Outcome::Rejected(reason) if facts.action.is_none() => {
                format!("Rejected a message ({})", reason.as_str())
            }
            Outcome::Rejected(reason) => {
                format!(
                    "Rejected ({}): did not {} {what}",
                    reason.as_str(),
                    self.verb()
                )
            }
            Outcome::Retry(reason) => {
                format!(
                    "Not finished ({}), will retry: {} {what}",
                    reason.as_str(),
                    self.verb()
                )
            }
            Outcome::Held(reason) => format!(
                "Held for a person's approval ({}): did not {} {what}",
                reason.as_str(),
                self.verb()
            ),
        };
        if let Some(origin) = &facts.origin {
            match origin.source {
                crate::intake::GUARDDUTY => {
                    line.push_str(&format!(" after GuardDuty finding {}", origin.event_type));
                    if let Some(severity) = &origin.severity {
                        line.push_str(&format!(" (severity {severity})"));
                    }
                }
                _ => line.push_str(&format!(" after AWS Health {}", origin.event_type)),
            }
        }
        if let Some(seconds) = facts.exposure_to_revoke_seconds {
            line.push_str(&format!(
                ", {} after detection",
                crate::detection::human(seconds)
            ));
        }
        if let Some(before) = &facts.sessions_revoked_before {
            line.push_str(&format!("; sessions issued before {before} denied"));
        }
        match facts.scheduled_deletes.as_slice() {
            [] => {}
            [one] => line.push_str(&format!("; delete scheduled for {}", one.at)),
            [first, ..] => line.push_str(&format!(
                "; {} deletes scheduled for {}",
                facts.scheduled_deletes.len(),
                first.at
            )),
        }
        if matches!(self.outcome, Outcome::Rejected(_) | Outcome::Retry(_)) {
            if let Some(detail) = &self.detail {
                line.push_str(": ");
                line.push_str(detail);
            }
        }
        one_line(&line, SUMMARY_MAX, "…")
    }

    /// A short subject for an SNS message: "iam-key-revoker: deleted AKIA… (alice)".
    pub fn subject(&self) -> String {
        let facts = &self.facts;
        let mut subject = format!("iam-key-revoker: {}", self.outcome.as_str());
        if let Outcome::Rejected(reason) | Outcome::Retry(reason) = self.outcome {
            subject.push_str(&format!(" ({})", reason.as_str()));
        }
        match facts.access_key_ids.as_slice() {
            [] => {}
            [key] => subject.push_str(&format!(" {key}")),
            keys => subject.push_str(&format!(" {} keys", keys.len())),
        }
        if let Some(user) = &facts.user_name {
            subject.push_str(&format!(" of {user}"));
        }
        // SNS allows ASCII text only: letters, numbers, spaces and punctuation.
        let ascii: String = subject
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        one_line(&ascii, SUBJECT_MAX, "...")
    }

    /// "delete" or "deactivate".
    fn verb(&self) -> &'static str {
        self.facts.action.map_or("revoke", |a| a.as_str())
    }

    /// The keys and their owner, account: "access key AKIA… of alice in 111122223333".
    fn what(&self) -> String {
        let facts = &self.facts;
        let owner = |key: &str| {
            facts
                .keys
                .iter()
                .find(|k| k.access_key_id == key && !k.user_name.is_empty())
                .map(|k| k.user_name.as_str())
        };
        let mut what = match facts.access_key_ids.as_slice() {
            [] if facts.console_password => "the console password".to_owned(),
            [] if facts.role_name.is_some() => {
                let role = facts.role_name.as_deref().unwrap_or_default();
                match &facts.role_session {
                    Some(session) => format!("session {session} of role {role}"),
                    None => format!("role {role}"),
                }
            }
            [] => "every access key".to_owned(),
            [key] => format!("access key {key}"),
            keys => {
                let mut named: Vec<String> = keys
                    .iter()
                    .take(KEYS_NAMED)
                    .map(|key| match (facts.user_name.as_deref(), owner(key)) {
                        (None, Some(user)) => format!("{key} of {user}"),
                        _ => key.clone(),
                    })
                    .collect();
                if keys.len() > KEYS_NAMED {
                    named.push(format!("{} more", keys.len() - KEYS_NAMED));
                }
                format!("{} access keys ({})", keys.len(), named.join(", "))
            }
        };
        let single_owner = match facts.access_key_ids.as_slice() {
            [key] => owner(key),
            _ => None,
        };
        if let Some(user) = facts.user_name.as_deref().or(single_owner) {
            what.push_str(&format!(" of {user}"));
        }
        if let Some(account) = &facts.account_id {
            what.push_str(&format!(" in {account}"));
        }
        what
    }
}

/// `text` on one line (control characters become spaces), at most `max` characters,
/// `mark` ending a cut.
fn one_line(text: &str, max: usize, mark: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max - mark.chars().count()).collect();
    cut.push_str(mark);
    cut
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::job::{Action, Origin};
    use crate::outcome::{JobFacts, KeyResult, Reason};

    fn report(outcome: Outcome, facts: JobFacts, detail: Option<&str>) -> JobReport {
        JobReport {
            message_id: "m-1".into(),
            outcome,
            detail: detail.map(str::to_owned),
            facts,
            attempts: 1,
            retries: 0,
            duration: Duration::from_millis(20),
            settled: true,
        }
    }

    fn alice(action: Action) -> JobFacts {
        JobFacts {
            request_id: Some("r-1".into()),
            user_name: Some("alice".into()),
            access_key_ids: vec!["AKIAIOSFODNN7EXAMPLE".into()],
            account_id: Some("111122223333".into()),
            action: Some(action),
            ..JobFacts::default()
        }
    }

    #[test]
    fn a_health_deletion_says_key_user_account_event_and_cut_off() {
        let mut facts = alice(Action::Delete);
        facts.origin = Some(Origin::new(
            "aws.health",
            "AWS_RISK_CREDENTIALS_EXPOSED".into(),
        ));
        facts.sessions_revoked_before = Some("2026-11-30T12:00:01Z".into());
        assert_eq!(
            report(Outcome::Deleted, facts, None).summary(),
            "Deleted access key AKIAIOSFODNN7EXAMPLE of alice in 111122223333 after AWS Health \
             AWS_RISK_CREDENTIALS_EXPOSED; sessions issued before 2026-11-30T12:00:01Z denied"
        );
    }

    #[test]
    fn a_staged_deactivation_says_when_the_delete_comes() {
        let mut facts = alice(Action::Deactivate);
        facts.scheduled_deletes = vec![crate::outcome::ScheduledDelete {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            user_name: "alice".into(),
            at: "2026-12-30T12:00:00Z".into(),
            schedule: "111122223333-AKIAIOSFODNN7EXAMPLE".into(),
            group: "iam-key-revoker".into(),
        }];
        assert_eq!(
            report(Outcome::Deactivated, facts, None).summary(),
            "Deactivated access key AKIAIOSFODNN7EXAMPLE of alice in 111122223333; delete \
             scheduled for 2026-12-30T12:00:00Z"
        );
    }

    #[test]
    fn a_guardduty_job_names_the_finding_type_and_severity() {
        let mut facts = alice(Action::Deactivate);
        facts.origin = Some(Origin {
            severity: Some("8.0".into()),
            ..Origin::new(
                "aws.guardduty",
                "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS".into(),
            )
        });
        let summary = report(Outcome::Deactivated, facts, None).summary();
        assert_eq!(
            summary,
            "Deactivated access key AKIAIOSFODNN7EXAMPLE of alice in 111122223333 after GuardDuty \
             finding UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS (severity 8.0)"
        );
    }

    #[test]
    fn a_rejection_says_why_and_what_was_not_done() {
        let summary = report(
            Outcome::Rejected(Reason::Protected),
            alice(Action::Delete),
            Some("user alice matches protect.users pattern \"al*\""),
        )
        .summary();
        assert_eq!(
            summary,
            "Rejected (protected): did not delete access key AKIAIOSFODNN7EXAMPLE of alice in \
             111122223333: user alice matches protect.users pattern \"al*\""
        );
        let invalid = report(
            Outcome::Rejected(Reason::InvalidMessage),
            JobFacts::default(),
            Some("body is not JSON\nat line 1"),
        )
        .summary();
        assert_eq!(
            invalid,
            "Rejected a message (invalid_message): body is not JSON at line 1"
        );
    }

    #[test]
    fn several_keys_of_several_owners_are_named_then_counted() {
        let keys: Vec<String> = (0..5)
            .map(|i| format!("AKIAIOSFODNN7EXAMP{i:02}"))
            .collect();
        let facts = JobFacts {
            access_key_ids: keys.clone(),
            action: Some(Action::Delete),
            keys: keys
                .iter()
                .map(|k| KeyResult {
                    access_key_id: k.clone(),
                    user_name: "bob".into(),
                    result: "deleted",
                    reason: None,
                })
                .collect(),
            ..JobFacts::default()
        };
        assert_eq!(
            report(Outcome::Deleted, facts, None).summary(),
            "Deleted 5 access keys (AKIAIOSFODNN7EXAMP00 of bob, AKIAIOSFODNN7EXAMP01 of bob, \
             AKIAIOSFODNN7EXAMP02 of bob, 2 more)"
        );
    }

    #[test]
    fn an_offboarding_names_every_key_of_the_user() {
        let facts = JobFacts {
            user_name: Some("carol".into()),
            action: Some(Action::Delete),
            ..JobFacts::default()
        };
        assert_eq!(
            report(Outcome::AlreadyAbsent, facts, None).summary(),
            "Nothing to revoke: every access key of carol no longer exists"
        );
    }

    #[test]
    fn the_subject_is_ascii_one_line_and_under_100_characters() {
        let mut facts = alice(Action::Delete);
        facts.user_name = Some("ålice".repeat(20));
        let subject = report(Outcome::Retry(Reason::TransientError), facts, None).subject();
        assert!(subject.chars().count() < 100, "{subject}");
        assert!(subject.chars().all(|c| c.is_ascii_graphic() || c == ' '));
        assert!(subject.ends_with("..."));
        assert!(subject
            .starts_with("iam-key-revoker: retry (transient_error) AKIAIOSFODNN7EXAMPLE of ?lice"));
        let short = report(Outcome::Deleted, alice(Action::Delete), None).subject();
        assert_eq!(
            short,
            "iam-key-revoker: deleted AKIAIOSFODNN7EXAMPLE of alice"
        );
    }

    #[test]
    fn a_long_detail_is_cut_to_one_bounded_line() {
        let detail = "x".repeat(5000);
        let summary = report(
            Outcome::Rejected(Reason::AwsError),
            alice(Action::Delete),
            Some(&detail),
        )
        .summary();
        assert_eq!(summary.chars().count(), SUMMARY_MAX);
        assert!(summary.ends_with('…'));
    }
}
