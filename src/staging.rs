//! Staged revocation (docs, "Staged revocation"): `delete_after` as a job gives it, the
//! name of the one schedule per key, and the time in EventBridge Scheduler's one-time
//! form.
//!
//! EventBridge Scheduler's rules, from its API reference (`CreateSchedule`): a schedule
//! name is 1-64 characters of `[0-9a-zA-Z-_.]`; a one-time schedule's expression is
//! `at(yyyy-mm-ddThh:mm:ss)`, read in `ScheduleExpressionTimezone` (EventBridge Scheduler
//! User Guide, "Schedule types on EventBridge Scheduler": one-time schedules).

use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;
use sha2::{Digest, Sha256};

use crate::rules::InvalidJob;

/// The longest grace period: ten years.
const MAX_DAYS: u64 = 3650;
const MAX_SECONDS: i64 = MAX_DAYS as i64 * 86_400;
/// Scheduler's longest schedule name.
pub const NAME_MAX: usize = 64;

/// When a staged key is deleted: a duration from when the job is worked, or a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeleteAfter {
    /// `30d`, `12h`, `90m`: this many seconds after the staging job deactivates the key.
    In { seconds: u64, text: String },
    /// An RFC 3339 time, in Unix seconds (a fraction of a second is dropped).
    At { epoch_seconds: i64, text: String },
}

impl DeleteAfter {
    /// Reads the field: a whole number of minutes, hours or days (`90m`, `12h`, `30d`,
    /// at least one minute, at most ten years), or an RFC 3339 time with its offset.
    pub fn parse(text: &str) -> Result<Self, InvalidJob> {
        let bad = |why: &str| {
            InvalidJob(format!(
                "delete_after {text:?} {why}: give a duration such as \"30d\", \"12h\" or \"90m\", or an RFC 3339 time such as \"2026-12-31T09:00:00Z\""
            ))
        };
        if let Some(unit) = text.chars().last().filter(|c| "mhd".contains(*c)) {
            let digits = &text[..text.len() - 1];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("is not a duration"));
            }
            let n: u64 = digits.parse().map_err(|_| bad("is too long"))?;
            let per = match unit {
                'm' => 60,
                'h' => 3600,
                _ => 86_400,
            };
            let seconds = n.checked_mul(per).ok_or_else(|| bad("is too long"))?;
            if seconds == 0 {
                return Err(bad("is zero"));
            }
            if seconds > MAX_DAYS * 86_400 {
                return Err(bad("is longer than ten years"));
            }
            return Ok(Self::In {
                seconds,
                text: text.to_owned(),
            });
        }
        let epoch_seconds = rfc3339_secs(text).ok_or_else(|| bad("is not a time"))?;
        Ok(Self::At {
            epoch_seconds,
            text: text.to_owned(),
        })
    }

    /// The field as the job gave it.
    pub fn text(&self) -> &str {
        match self {
            Self::In { text, .. } | Self::At { text, .. } => text,
        }
    }

    /// The delete's time, in Unix seconds, for a job worked at `now` (Unix seconds).
    pub fn due(&self, now: i64) -> i64 {
        match self {
            Self::In { seconds, .. } => {
                now.saturating_add(i64::try_from(*seconds).unwrap_or(i64::MAX))
            }
            Self::At { epoch_seconds, .. } => *epoch_seconds,
        }
    }

    /// Refuses a time that is not in the future at `now` (a delete due already would
    /// be a delete, not a staged one), or more than ten years ahead.
    pub fn check_future(&self, now: i64) -> Result<i64, InvalidJob> {
        let due = self.due(now);
        if due <= now {
            return Err(InvalidJob(format!(
                "delete_after {:?} is not in the future (it is {})",
                self.text(),
                rfc3339(due)
            )));
        }
        if due - now > MAX_SECONDS {
            return Err(InvalidJob(format!(
                "delete_after {:?} is more than ten years ahead",
                self.text()
            )));
        }
        Ok(due)
    }
}

/// An RFC 3339 time in Unix seconds: `Z` or a numeric offset (`+01:00`), `T` or `t`.
fn rfc3339_secs(text: &str) -> Option<i64> {
    rfc3339_time(text).map(|t| t.secs())
}

/// An RFC 3339 time, fractions of a second kept: `Z` or a numeric offset (`+01:00`), `T`
/// or `t`.
pub fn rfc3339_time(text: &str) -> Option<DateTime> {
    let upper = text.to_ascii_uppercase();
    let bytes = upper.as_bytes();
    let n = bytes.len();
    let has_offset = n > 6 && matches!(bytes[n - 6], b'+' | b'-') && bytes[n - 3] == b':';
    if !has_offset {
        return DateTime::from_str(&upper, Format::DateTime).ok();
    }
    let (local, offset) = upper.split_at(n - 6);
    let hours: i64 = offset[1..3].parse().ok()?;
    let minutes: i64 = offset[4..6].parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let utc = DateTime::from_str(&format!("{local}Z"), Format::DateTime).ok()?;
    Some(DateTime::from_secs_and_nanos(
        utc.secs() - sign * (hours * 3600 + minutes * 60),
        utc.subsec_nanos(),
    ))
}

/// The one schedule of `key` in `account`: `<account>-<key>` (a key id is `[A-Z0-9]`), or
/// with the key's SHA-256 in hex when a key id too long for Scheduler's 64 characters.
pub fn schedule_name(account: &str, key: &str) -> String {
    let name = format!("{account}-{key}");
    if name.len() <= NAME_MAX {
        return name;
    }
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut name = format!("{account}-{hex}");
    name.truncate(NAME_MAX);
    name
}

/// What a staged delete's schedule says of itself: its key, user, account and the
/// request that staged it (a request id has no spaces, so it reads back whole).
pub fn staged_description(key: &str, user: &str, account: &str, request_id: &str) -> String {
    format!("iam-key-revoker: delete {key} of {user} in {account}, {STAGED_BY}{request_id}")
}

const STAGED_BY: &str = "staged by request ";

/// The request that staged a delete, read from its schedule's description
/// ([`staged_description`]); `None` for any other description (a restore's record).
pub fn staged_by(description: &str) -> Option<&str> {
    let rest = description.strip_prefix("iam-key-revoker: delete ")?;
    let (_, id) = rest.rsplit_once(&format!(", {STAGED_BY}"))?;
    crate::rules::check_request_id(id).ok().map(|()| id)
}

/// Whether `name` keeps Scheduler's rules: 1-64 of `[0-9a-zA-Z-_.]`.
pub fn is_schedule_name(name: &str) -> bool {
    (1..=NAME_MAX).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `epoch_seconds` as a one-time schedule's expression, in UTC: `at(yyyy-mm-ddThh:mm:ss)`.
pub fn at_expression(epoch_seconds: i64) -> String {
    let text = rfc3339(epoch_seconds);
    format!("at({})", text.trim_end_matches('Z'))
}

/// Reads a one-time schedule's expression (in UTC) back to Unix seconds.
pub fn parse_at_expression(expression: &str) -> Option<i64> {
    let inner = expression.strip_prefix("at(")?.strip_suffix(')')?;
    DateTime::from_str(&format!("{inner}Z"), Format::DateTime)
        .ok()
        .map(|t| t.secs())
}

/// `epoch_seconds` as RFC 3339 in UTC, to the second.
pub fn rfc3339(epoch_seconds: i64) -> String {
    DateTime::from_secs(epoch_seconds)
        .fmt(Format::DateTime)
        .unwrap_or_else(|_| epoch_seconds.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request that staged a delete reads back whole from its description, whatever
    /// it looks like (`staged-…` included); a restore's description names none.
    #[test]
    fn a_staged_delete_names_the_request_that_staged_it() {
        let long = "r".repeat(128);
        for id in [
            "st-1",
            "staged-0123456789abcdef0123456789abcdef",
            long.as_str(),
        ] {
            let description =
                staged_description("AKIAEXAMPLE000000001", "a,b.c@d", "123456789012", id);
            assert_eq!(staged_by(&description), Some(id));
        }
        assert_eq!(
            staged_by("iam-key-revoker: restored to Active by arn:aws:iam::1:user/x at 2026-12-07T00:00:00Z; the delete will not be sent"),
            None
        );
        assert_eq!(
            staged_by("iam-key-revoker: delete K of u in 1, staged by request has space"),
            None
        );
    }

    #[test]
    fn durations_and_times_are_read_and_everything_else_refused() {
        assert_eq!(DeleteAfter::parse("30d").unwrap().due(0), 30 * 86_400);
        assert_eq!(DeleteAfter::parse("12h").unwrap().due(100), 100 + 12 * 3600);
        assert_eq!(DeleteAfter::parse("90m").unwrap().due(0), 5400);
        let at = DeleteAfter::parse("2026-12-31T09:00:00+01:00").unwrap();
        assert_eq!(rfc3339(at.due(0)), "2026-12-31T08:00:00Z");
        assert_eq!(at.text(), "2026-12-31T09:00:00+01:00");
        let west = DeleteAfter::parse("2026-12-31t03:30:00-04:30").unwrap();
        assert_eq!(rfc3339(west.due(0)), "2026-12-31T08:00:00Z");
        assert!(DeleteAfter::parse("2026-12-31T09:00:00+24:00").is_err());
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "1w",
            "1.5d",
            "30 d",
            "30D",
            "3651d",
            "tomorrow",
            "2026-12-31",
            "99999999999999999999d",
        ] {
            assert!(DeleteAfter::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(DeleteAfter::parse("3650d").is_ok());
    }

    #[test]
    fn a_time_must_be_in_the_future() {
        let now = DeleteAfter::parse("2026-11-30T12:00:00Z").unwrap().due(0);
        let past = DeleteAfter::parse("2026-11-30T11:59:59Z").unwrap();
        let err = past.check_future(now).unwrap_err();
        assert!(err.0.contains("not in the future"), "{err}");
        assert!(DeleteAfter::parse("2026-11-30T12:00:00Z")
            .unwrap()
            .check_future(now)
            .is_err());
        assert_eq!(
            DeleteAfter::parse("2026-11-30T12:00:01Z")
                .unwrap()
                .check_future(now),
            Ok(now + 1)
        );
        assert_eq!(
            DeleteAfter::parse("1m").unwrap().check_future(now),
            Ok(now + 60)
        );
    }

    #[test]
    fn schedule_names_keep_schedulers_rules_and_tell_keys_apart() {
        let name = schedule_name("111122223333", "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(name, "111122223333-AKIAIOSFODNN7EXAMPLE");
        assert!(is_schedule_name(&name));
        // IAM allows key ids of up to 128 characters.
        let long_a = format!("AKIA{}", "A".repeat(124));
        let long_b = format!("AKIA{}", "B".repeat(124));
        let (a, b) = (
            schedule_name("111122223333", &long_a),
            schedule_name("111122223333", &long_b),
        );
        assert!(is_schedule_name(&a) && is_schedule_name(&b), "{a} {b}");
        assert_eq!(a.len(), NAME_MAX);
        assert_ne!(a, b);
        assert_eq!(a, schedule_name("111122223333", &long_a), "stable");
        assert!(!is_schedule_name(""));
        assert!(!is_schedule_name("a/b"));
        assert!(!is_schedule_name(&"a".repeat(65)));
    }

    #[test]
    fn the_at_expression_is_utc_to_the_second_and_reads_back() {
        let due = DeleteAfter::parse("2026-12-30T23:05:09.750Z")
            .unwrap()
            .due(0);
        let expression = at_expression(due);
        assert_eq!(expression, "at(2026-12-30T23:05:09)");
        assert_eq!(parse_at_expression(&expression), Some(due));
        assert_eq!(parse_at_expression("rate(1 day)"), None);
    }
}
