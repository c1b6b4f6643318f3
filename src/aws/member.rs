//! Each member account's role session, and which member accounts fail now.
//!
//! A member account's role that cannot be assumed (deleted, its trust changed, the
//! account gone from the organization, a service control policy) or whose session AWS
//! refuses is that account's failure, not the worker's own credentials' (CONTRACT §3):
//! its jobs end `access_denied` or `retry` with the account in the detail, its session is
//! dropped so the next job assumes the role again, and every other account's jobs go on.
//! The accounts failing now are counted in `iam_key_revoker_member_accounts_failing` and
//! named by `/readyz` and the logs. An account leaves the list when its role works again,
//! or [`FORGET_AFTER`] after its last failure (no job for it since, or an account that
//! does not exist), so that nothing stays listed for the life of the process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::aws::classify::{AwsError, ErrorClass, MemberRoleFailed};

/// The most failing accounts `/readyz` lists one by one.
const LISTED: usize = 20;

/// How long an account stays listed after its last failure without a job trying again.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// The most accounts listed at once: more than an organization has, so that a producer
/// naming made-up accounts cannot grow the list without bound.
const MAX_TRACKED: usize = 10_000;

/// The member accounts whose role fails now, each with its last failure and when.
#[derive(Debug, Default)]
pub struct MemberFailures {
    failing: Mutex<BTreeMap<String, (String, Instant)>>,
}

impl MemberFailures {
    /// Acting in `account` failed with `error` (not the worker's own credentials).
    pub fn failed(&self, account: &str, error: &AwsError) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if failing.len() >= MAX_TRACKED && !failing.contains_key(account) {
            tracing::warn!(account_id = account, %error, "A member account's role fails (not listed: the list of failing accounts is full)");
            return;
        }
        let first = failing
            .insert(account.to_owned(), (error.to_string(), Instant::now()))
            .is_none();
        if first {
            tracing::warn!(account_id = account, %error, "A member account's role fails: only that account's jobs wait or are refused");
        }
        crate::metrics::member_accounts_failing(failing.len());
    }

    /// Forgets the accounts whose last failure is older than [`FORGET_AFTER`] (called
    /// periodically by the worker).
    pub fn forget_old(&self) {
        if let Some(before) = Instant::now().checked_sub(FORGET_AFTER) {
            self.forget_before(before);
        }
    }

    fn forget_before(&self, before: Instant) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let listed = failing.len();
        failing.retain(|_, (_, at)| *at >= before);
        if failing.len() != listed {
            crate::metrics::member_accounts_failing(failing.len());
        }
    }

    /// The role in `account` was assumed or renewed again.
    pub fn recovered(&self, account: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if failing.remove(account).is_some() {
            tracing::info!(account_id = account, "A member account's role works again");
            crate::metrics::member_accounts_failing(failing.len());
        }
    }

    /// The accounts failing now, one line each (the first [`LISTED`], then how many
    /// more), or `None` when none is.
    pub fn describe(&self) -> Option<String> {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if failing.is_empty() {
            return None;
        }
        let mut text = format!(
            "member accounts failing ({}; only their jobs are refused or retried):\n",
            failing.len()
        );
        for (account, (error, _)) in failing.iter().take(LISTED) {
            text.push_str(&format!("{account}: {error}\n"));
        }
        if failing.len() > LISTED {
            text.push_str(&format!("and {} more\n", failing.len() - LISTED));
        }
        Some(text)
    }
}

/// One assumption of the worker's role in a member account: marked stale when AWS
/// refuses it, so that the next job assumes the role again.
#[derive(Debug)]
pub struct MemberSession {
    account: String,
    stale: AtomicBool,
    failures: Arc<MemberFailures>,
}

impl MemberSession {
    pub fn new(account: &str, failures: Arc<MemberFailures>) -> Self {
        Self {
            account: account.to_owned(),
            stale: AtomicBool::new(false),
            failures,
        }
    }

    /// Whether the session failed since it was assumed.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// The credentials were renewed: a failure before is over.
    pub fn renewed(&self) {
        self.stale.store(false, Ordering::Relaxed);
        self.failures.recovered(&self.account);
    }

    /// Renewing the credentials failed with AssumeRole's `error`, which is not the
    /// worker's own credentials failing: the account's failure, as the member account's
    /// requests will report it.
    pub fn renewal_failed(&self, error: AwsError) -> MemberRoleFailed {
        self.stale.store(true, Ordering::Relaxed);
        self.failures.failed(&self.account, &error);
        MemberRoleFailed {
            account: self.account.clone(),
            error,
        }
    }

    /// IAM refused a request made with this session's credentials as credentials
    /// (`ExpiredToken`, `InvalidClientTokenId`, ...): the session is the account's
    /// failure, retried, and the role assumed again on the job's next try. The worker's
    /// own credentials are not involved: the session's are the role's alone. A request
    /// refused for its time (`RequestExpired`, `SignatureDoesNotMatch`: the clock is
    /// off) is the worker's, as it is.
    pub fn refused(&self, error: &mut AwsError) {
        if error.class != ErrorClass::Credentials
            || matches!(
                error.code.as_deref(),
                Some("RequestExpired" | "SignatureDoesNotMatch")
            )
        {
            return;
        }
        self.stale.store(true, Ordering::Relaxed);
        error.class = ErrorClass::Transient;
        error.message = format!(
            "account {}: the role's session was refused; the role is assumed again on the job's next try: {}",
            self.account, error.message
        );
        self.failures.failed(&self.account, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> AwsError {
        AwsError {
            operation: "AssumeRole",
            class: ErrorClass::Permanent,
            code: Some("AccessDenied".into()),
            message: "not authorized".into(),
            unanswered: false,
        }
    }

    #[test]
    fn failing_accounts_are_listed_until_they_recover() {
        let failures = Arc::new(MemberFailures::default());
        assert_eq!(failures.describe(), None);
        let session = MemberSession::new("222222222222", Arc::clone(&failures));
        let failed = session.renewal_failed(denied());
        assert!(session.is_stale());
        assert_eq!(
            failed.to_string(),
            "account 222222222222: the worker's role there could not be assumed again: AssumeRole: AccessDenied: not authorized"
        );
        assert_eq!(
            failures.describe().as_deref(),
            Some("member accounts failing (1; only their jobs are refused or retried):\n222222222222: AssumeRole: AccessDenied: not authorized\n")
        );
        MemberSession::new("222222222222", Arc::clone(&failures)).renewed();
        assert_eq!(failures.describe(), None);

        // An account no job tries again is forgotten after a while.
        failures.failed("444444444444", &denied());
        failures.forget_old();
        assert!(failures.describe().is_some(), "kept while recent");
        failures.forget_before(Instant::now() + Duration::from_secs(1));
        assert_eq!(failures.describe(), None);
    }

    #[test]
    fn a_refused_session_is_retried_and_named() {
        let failures = Arc::new(MemberFailures::default());
        let session = MemberSession::new("333333333333", Arc::clone(&failures));
        let mut throttled = AwsError {
            class: ErrorClass::Transient,
            code: Some("Throttling".into()),
            ..denied()
        };
        session.refused(&mut throttled);
        assert_eq!(throttled.class, ErrorClass::Transient);
        assert!(
            !session.is_stale(),
            "only credential answers concern the session"
        );
        assert_eq!(failures.describe(), None);

        let mut expired = AwsError {
            operation: "DeleteAccessKey",
            class: ErrorClass::Credentials,
            code: Some("ExpiredToken".into()),
            message: "expired".into(),
            unanswered: false,
        };
        session.refused(&mut expired);
        assert_eq!(expired.class, ErrorClass::Transient, "not the worker's own");
        assert!(session.is_stale());
        assert!(expired.to_string().contains("account 333333333333"));
        assert!(failures.describe().unwrap().contains("333333333333"));
        session.renewed();
        assert!(!session.is_stale(), "renewed credentials end the failure");
        assert_eq!(failures.describe(), None);

        // The worker's clock being off is the worker's failure, in any account.
        let mut skewed = AwsError {
            code: Some("SignatureDoesNotMatch".into()),
            ..expired.clone()
        };
        skewed.class = ErrorClass::Credentials;
        session.refused(&mut skewed);
        assert_eq!(skewed.class, ErrorClass::Credentials);
        assert!(!session.is_stale());
    }

    #[test]
    fn a_thousand_failing_accounts_are_counted_not_listed() {
        let failures = MemberFailures::default();
        for i in 0..1000 {
            failures.failed(&format!("{i:012}"), &denied());
        }
        let text = failures.describe().unwrap();
        assert_eq!(text.lines().count(), 1 + LISTED + 1);
        assert!(text.ends_with("and 980 more\n"));

        // Made-up accounts named by a producer fill the list up to its cap, no further.
        for i in 1000..MAX_TRACKED + 500 {
            failures.failed(&format!("{i:012}"), &denied());
        }
        let text = failures.describe().unwrap();
        assert!(text.starts_with(&format!("member accounts failing ({MAX_TRACKED};")));
        failures.failed("000000000007", &denied());
        assert!(
            failures.describe().unwrap().contains("(10000;"),
            "a listed one is updated"
        );
    }
}
