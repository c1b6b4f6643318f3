//! The sliding window as the table keeps it: each count item holds one number per
//! bucket of `window / BUCKETS` seconds (`b<index>`, the index counted from the Unix
//! epoch), their sum (`total`) and the oldest bucket it holds (`oldest`).
//!
//! A key changed at time `t` is counted in the bucket `t` falls in, and that bucket
//! counts as long as any of it is inside the window: a key counts for at least the window
//! and at most one bucket (1/60 of the window: a minute of an hour) longer. The count is
//! never lower than the keys changed in the last window, at most higher by what was
//! changed in the bucket just before it.

use std::collections::BTreeMap;

/// Buckets per window.
pub const BUCKETS: u64 = 60;

/// The bucket arithmetic of one window length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    bucket_seconds: u64,
}

impl Window {
    pub fn new(window_seconds: u64) -> Self {
        Self {
            bucket_seconds: (window_seconds / BUCKETS).max(1),
        }
    }

    /// The window whose buckets are `bucket_seconds` long.
    pub fn of_buckets(bucket_seconds: u64) -> Self {
        Self {
            bucket_seconds: bucket_seconds.max(1),
        }
    }

    /// How long a bucket is: a count item records it (`w`), so that buckets of another
    /// window length are never read as this one's.
    pub fn bucket_seconds(self) -> u64 {
        self.bucket_seconds
    }

    /// The bucket `unix_seconds` falls in.
    pub fn bucket(self, unix_seconds: u64) -> u64 {
        unix_seconds / self.bucket_seconds
    }

    /// The oldest bucket still counted at `unix_seconds`: the one the window's start
    /// falls in.
    pub fn oldest_live(self, unix_seconds: u64) -> u64 {
        self.bucket(unix_seconds).saturating_sub(BUCKETS)
    }

    /// The attribute name of bucket `index`.
    pub fn attribute(index: u64) -> String {
        format!("b{index}")
    }

    /// The bucket a `b<index>` attribute names.
    pub fn index_of(attribute: &str) -> Option<u64> {
        attribute.strip_prefix('b')?.parse().ok()
    }
}

/// A count item as read: its buckets and total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    pub total: i64,
    pub oldest: Option<u64>,
    /// The bucket length its buckets were counted in (`None`: none recorded yet).
    pub width: Option<u64>,
    pub buckets: BTreeMap<u64, i64>,
}

impl Counted {
    /// What counts at `unix_seconds` in `window`: the live buckets' sum.
    pub fn live(&self, window: Window, unix_seconds: u64) -> i64 {
        let oldest = window.oldest_live(unix_seconds);
        self.buckets
            .range(oldest..)
            .map(|(_, n)| *n)
            .sum::<i64>()
            .max(0)
    }

    /// Whether its buckets were counted in another bucket length (`breaker.window_seconds`
    /// changed): they are collapsed into the current bucket before anything else.
    pub fn is_other_width(&self, window: Window) -> bool {
        self.width.is_some_and(|w| w != window.bucket_seconds)
    }

    /// What counts at `unix_seconds` in the window its own buckets were counted in.
    pub fn live_as_counted(&self, window: Window, unix_seconds: u64) -> i64 {
        self.live(self.width.map_or(window, Window::of_buckets), unix_seconds)
    }

    /// Whether the item holds buckets past the window, to be rolled out before its total
    /// can be compared with a limit.
    pub fn is_stale(&self, window: Window, unix_seconds: u64) -> bool {
        self.oldest
            .is_some_and(|oldest| oldest < window.oldest_live(unix_seconds))
    }

    /// The buckets to remove at `unix_seconds`, and the oldest bucket left (`None`: none
    /// left).
    pub fn roll(&self, window: Window, unix_seconds: u64) -> (Vec<(u64, i64)>, Option<u64>) {
        let live = window.oldest_live(unix_seconds);
        let expired = self
            .buckets
            .range(..live)
            .map(|(index, n)| (*index, *n))
            .collect();
        (expired, self.buckets.range(live..).next().map(|(i, _)| *i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_counts_for_at_least_the_window_and_at_most_a_bucket_more() {
        let window = Window::new(3600);
        let changed_at = 1_000_000u64;
        let mut item = Counted::default();
        item.buckets.insert(window.bucket(changed_at), 1);
        item.oldest = Some(window.bucket(changed_at));
        // Counted throughout the window after it...
        for later in [0, 1, 60, 1800, 3599, 3600] {
            assert_eq!(item.live(window, changed_at + later), 1, "+{later}s");
            assert!(!item.is_stale(window, changed_at + later));
        }
        // ...and gone a bucket (60 s) after the window at the latest.
        assert_eq!(item.live(window, changed_at + 3600 + 60), 0);
        assert!(item.is_stale(window, changed_at + 3660));
        let (expired, oldest) = item.roll(window, changed_at + 3660);
        assert_eq!(expired, vec![(window.bucket(changed_at), 1)]);
        assert_eq!(oldest, None);
    }

    #[test]
    fn rolling_keeps_the_live_buckets() {
        let window = Window::new(600);
        let now = 50_000u64;
        let mut item = Counted::default();
        for (ago, n) in [(700, 2), (595, 1), (300, 4), (0, 1)] {
            item.buckets.insert(window.bucket(now - ago), n);
        }
        item.oldest = item.buckets.keys().next().copied();
        item.total = 8;
        assert!(item.is_stale(window, now));
        assert_eq!(
            item.live(window, now),
            6,
            "the bucket 595 s ago is still inside"
        );
        let (expired, oldest) = item.roll(window, now);
        assert_eq!(expired, vec![(window.bucket(now - 700), 2)]);
        assert_eq!(oldest, Some(window.bucket(now - 595)));
        assert_eq!(Window::index_of(&Window::attribute(42)), Some(42));
        assert_eq!(Window::index_of("total"), None);
    }
}
