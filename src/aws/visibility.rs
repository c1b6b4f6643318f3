//! SQS's visibility limits: how long a received message may stay invisible, and the
//! growing delay of a job that ends `retry`.

use std::time::Duration;

/// SQS's longest visibility timeout: 12 hours (SQS API Reference,
/// `ChangeMessageVisibility`).
pub const SQS_MAX_VISIBILITY_SECONDS: u32 = 43_200;

/// How far a visibility change may reach: SQS keeps a message invisible for at most
/// 12 hours counted from its receive, and refuses a `ChangeMessageVisibility` that would
/// go past that (SQS API Reference, ChangeMessageVisibility). `held` is how long ago the
/// message was received; a minute of margin covers the clocks of the two sides.
pub fn within_visibility_limit(seconds: u32, held: Duration) -> u32 {
    const MARGIN_SECONDS: u64 = 60;
    let used = held.as_secs().saturating_add(MARGIN_SECONDS);
    let left = u64::from(SQS_MAX_VISIBILITY_SECONDS).saturating_sub(used);
    seconds.min(u32::try_from(left).unwrap_or(0))
}

/// Visibility delay for a job that ends `retry` on its `receive_count`-th receive:
/// `base * 2^(receive_count - 1)`, saturating, capped at `max`.
pub fn visibility_delay(receive_count: u32, base_seconds: u32, max_seconds: u32) -> u32 {
    let exponent = receive_count.saturating_sub(1).min(31);
    base_seconds
        .saturating_mul(1u32 << exponent)
        .min(max_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_delay_doubles_and_caps() {
        assert_eq!(visibility_delay(1, 30, SQS_MAX_VISIBILITY_SECONDS), 30);
        assert_eq!(visibility_delay(2, 30, SQS_MAX_VISIBILITY_SECONDS), 60);
        assert_eq!(visibility_delay(5, 30, SQS_MAX_VISIBILITY_SECONDS), 480);
        assert_eq!(visibility_delay(12, 30, SQS_MAX_VISIBILITY_SECONDS), 43_200);
        assert_eq!(
            visibility_delay(u32::MAX, u32::MAX, SQS_MAX_VISIBILITY_SECONDS),
            43_200
        );
        assert_eq!(visibility_delay(0, 30, SQS_MAX_VISIBILITY_SECONDS), 30);
    }

    #[test]
    fn visibility_never_reaches_past_twelve_hours_from_the_receive() {
        let hour = Duration::from_secs(3_600);
        assert_eq!(within_visibility_limit(30, Duration::ZERO), 30);
        assert_eq!(
            within_visibility_limit(SQS_MAX_VISIBILITY_SECONDS, Duration::ZERO),
            SQS_MAX_VISIBILITY_SECONDS - 60
        );
        assert_eq!(
            within_visibility_limit(SQS_MAX_VISIBILITY_SECONDS, 2 * hour),
            10 * 3_600 - 60
        );
        assert_eq!(within_visibility_limit(600, 13 * hour), 0);
    }
}
