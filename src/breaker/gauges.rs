//! The breaker's series (docs, "Metrics"): no label holds an account, a user or a key.

use metrics::{counter, describe_counter, describe_gauge, gauge};

use crate::breaker::pause::Pauses;
use crate::outcome::Lane;

pub const PAUSED: &str = "iam_key_revoker_breaker_paused";
pub const PAUSED_SECONDS: &str = "iam_key_revoker_breaker_paused_seconds";
pub const PAUSE_ALERT_AFTER: &str = "iam_key_revoker_breaker_pause_alert_after_seconds";
pub const UNAVAILABLE: &str = "iam_key_revoker_breaker_unavailable_total";

pub(crate) fn describe() {
    describe_gauge!(
        PAUSED,
        "1 while an operator has paused this queue's key changes (iam-key-revoker pause)"
    );
    describe_gauge!(
        PAUSED_SECONDS,
        "How long this queue's key changes have been paused, in seconds; 0 when not"
    );
    describe_gauge!(
        PAUSE_ALERT_AFTER,
        "breaker.pause_alert_seconds: a pause older than this alerts"
    );
    describe_counter!(
        UNAVAILABLE,
        "Jobs whose keys the breaker's table could not count: result failed_open (changed uncounted) or failed_closed (left on the queue)"
    );
}

/// The breaker is on: its series exist from the start, at zero.
pub fn started(pause_alert_seconds: u64) {
    gauge!(PAUSE_ALERT_AFTER).set(pause_alert_seconds as f64);
    for lane in [Lane::Main, Lane::Priority] {
        gauge!(PAUSED, "queue" => lane.as_str()).set(0.0);
        gauge!(PAUSED_SECONDS, "queue" => lane.as_str()).set(0.0);
        for result in ["failed_open", "failed_closed"] {
            counter!(UNAVAILABLE, "queue" => lane.as_str(), "result" => result).absolute(0);
        }
    }
}

/// The pauses as last read, at `now` (Unix seconds).
pub fn pauses(pauses: &Pauses, now: u64) {
    for lane in [Lane::Main, Lane::Priority] {
        let pause = pauses.of(lane);
        gauge!(PAUSED, "queue" => lane.as_str()).set(if pause.is_some() { 1.0 } else { 0.0 });
        gauge!(PAUSED_SECONDS, "queue" => lane.as_str())
            .set(pause.map_or(0.0, |p| now.saturating_sub(p.since) as f64));
    }
}

pub fn unavailable(lane: Lane, open: bool) {
    let result = if open { "failed_open" } else { "failed_closed" };
    counter!(UNAVAILABLE, "queue" => lane.as_str(), "result" => result).increment(1);
}
