//! The clock from exposure (docs, "The clock from exposure"): when a leak was detected, as
//! a producer's `detected_at` (RFC 3339), an AWS Health event's `startTime` (HTTP date,
//! `Sat, 05 Jun 2016 15:10:09 GMT`; "Reference: AWS Health events Amazon EventBridge
//! schema") or a GuardDuty finding's `service.eventFirstSeen` (ISO 8601; GuardDuty User
//! Guide, "Finding details"), and how long from then to the revocation.
//!
//! A producer's time that is not RFC 3339, or later than now, makes the job invalid: it is
//! the producer's own field. An event's time that does not read, or lies ahead, is left
//! out: a leak is never refused over its clock.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_smithy_types::date_time::{DateTime, Format};

use crate::rules::InvalidJob;

/// How far ahead of this worker's clock a detection time may be (another host's clock):
/// a minute.
pub const AHEAD_TOLERANCE_MS: u64 = 60_000;

/// A producer's `detected_at`, in Unix milliseconds: RFC 3339, not in the future.
pub fn read_detected_at(text: &str) -> Result<u64, InvalidJob> {
    let at = crate::staging::rfc3339_time(text).ok_or_else(|| {
        InvalidJob(format!(
            "detected_at must be an RFC 3339 time (2026-12-07T10:00:00Z), not {text:?}"
        ))
    })?;
    let ms = u64::try_from(at.to_millis().unwrap_or(-1))
        .map_err(|_| InvalidJob("detected_at is before 1970".to_owned()))?;
    if ms > now_ms() + AHEAD_TOLERANCE_MS {
        return Err(InvalidJob(format!("detected_at {text:?} is in the future")));
    }
    Ok(ms)
}

/// An AWS Health event's `startTime` in Unix milliseconds, when it reads and is not
/// ahead.
pub fn health_start(text: &str) -> Option<u64> {
    let at = DateTime::from_str(text, Format::HttpDate)
        .ok()
        .or_else(|| crate::staging::rfc3339_time(text))?;
    not_ahead(at)
}

/// A GuardDuty finding's `service.eventFirstSeen` in Unix milliseconds, when it reads
/// and is not ahead.
pub fn guardduty_first_seen(text: &str) -> Option<u64> {
    not_ahead(crate::staging::rfc3339_time(text)?)
}

fn not_ahead(at: DateTime) -> Option<u64> {
    let ms = u64::try_from(at.to_millis().ok()?).ok()?;
    (ms <= now_ms() + AHEAD_TOLERANCE_MS).then_some(ms)
}

/// `ms` as RFC 3339, UTC, to the millisecond.
pub fn text(ms: u64) -> String {
    DateTime::from_millis(ms as i64)
        .fmt(Format::DateTime)
        .unwrap_or_default()
}

/// Seconds from detection to the revocation (never negative: a detection a little ahead
/// of this clock counts as zero).
pub fn exposure_seconds(detected_ms: u64, revoked_ms: u64) -> f64 {
    revoked_ms.saturating_sub(detected_ms) as f64 / 1000.0
}

/// A duration as people read it in a summary: `42 s`, `3 min 20 s`, `2 h 5 min`,
/// `3 d 4 h`.
pub fn human(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86400, (s % 86400) / 3600),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_producers_time_is_rfc_3339_and_not_ahead() {
        assert_eq!(
            read_detected_at("2026-12-07T10:00:00Z").unwrap(),
            1_796_637_600_000
        );
        assert_eq!(
            read_detected_at("2026-12-07T11:00:00.250+01:00").unwrap(),
            1_796_637_600_250
        );
        for bad in [
            "yesterday",
            "2026-12-07",
            "2026-12-07 10:00:00",
            "",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(read_detected_at(bad).is_err(), "{bad}");
        }
        let ahead = text(now_ms() + 3_600_000);
        let refused = read_detected_at(&ahead).unwrap_err();
        assert!(refused.0.contains("in the future"), "{}", refused.0);
        // Another host's clock a few seconds ahead is not the future.
        assert!(read_detected_at(&text(now_ms() + 5_000)).is_ok());
    }

    #[test]
    fn events_give_their_time_in_their_own_format_and_never_fail_for_it() {
        // AWS Health's example: "startTime": "Sat, 05 Jun 2016 15:10:09 GMT".
        assert_eq!(
            health_start("Sat, 05 Jun 2016 15:10:09 GMT"),
            Some(1_465_139_409_000)
        );
        assert_eq!(
            guardduty_first_seen("2020-02-05T16:29:08.000Z"),
            Some(1_580_920_148_000)
        );
        assert_eq!(health_start("soon"), None);
        assert_eq!(guardduty_first_seen(&text(now_ms() + 3_600_000)), None);
    }

    #[test]
    fn the_exposure_is_from_detection_to_revocation() {
        assert_eq!(exposure_seconds(1_000, 43_500), 42.5);
        assert_eq!(exposure_seconds(50_000, 43_500), 0.0);
        assert_eq!(human(42.4), "42 s");
        assert_eq!(human(200.0), "3 min 20 s");
        assert_eq!(human(7_500.0), "2 h 5 min");
        assert_eq!(human(273_600.0), "3 d 4 h");
        use crate::outcome::{Outcome, Reason};
        assert!(Outcome::Deleted.closes_exposure());
        assert!(Outcome::SessionsRevoked.closes_exposure());
        assert!(!Outcome::Duplicate.closes_exposure());
        assert!(!Outcome::Held(Reason::AccountLimit).closes_exposure());
    }
}
