//! The client-side IAM request budget (`iam.max_requests_per_second`), shared by every
//! job acting in one account, that adapts to throttling: additive increase,
//! multiplicative decrease (AIMD), so a bulk run settles just below the account's real
//! limit instead of oscillating through errors.
//!
//! - Requests are spaced `1 / rate` apart (no bursts above the rate).
//! - A throttled answer halves the rate, at most once per second: the throttled answers
//!   of concurrent requests are one signal, not many.
//! - Each second without throttling adds 5% of the configured maximum back, so a halved
//!   rate recovers in about ten seconds, never above the maximum.
//!
//! - Urgent requests (those of priority-queue jobs, run inside [`urgent`]) go first: an
//!   urgent request takes the next free moment for urgent requests, ahead of the
//!   requests already booked, and the first booked request to come due gives up its
//!   moment and books again at the end. The rate over any second stays within one
//!   request of the budget, and a bulk backlog never delays an urgent job by more than
//!   one request interval.
//!
//! `governor`, the usual token bucket, can neither change its quota at run time nor run
//! on tokio's clock (which the tests pause), so this small scheduler is written here.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const DECREASE_FACTOR: f64 = 0.5;
const INCREASE_FRACTION_PER_SECOND: f64 = 0.05;
const ADJUST_INTERVAL: Duration = Duration::from_secs(1);

/// An adaptive request rate.
#[derive(Debug)]
pub struct AdaptiveRate {
    max: f64,
    floor: f64,
    state: Mutex<State>,
}

tokio::task_local! {
    static URGENT: bool;
}

/// Runs `work` with its IAM requests served before any other job's.
pub async fn urgent<F: std::future::Future>(work: F) -> F::Output {
    URGENT.scope(true, work).await
}

fn is_urgent() -> bool {
    URGENT.try_with(|u| *u).unwrap_or(false)
}

#[derive(Debug)]
struct State {
    rate: f64,
    /// The next free moment at the end of the booked requests.
    next_slot: Instant,
    /// The next free moment for an urgent request.
    next_urgent: Instant,
    /// Moments urgent requests took ahead of booked ones: that many booked requests
    /// book again.
    owed: u32,
    last_decrease: Option<Instant>,
    last_increase: Instant,
}

impl AdaptiveRate {
    /// Starts at `max_per_second` (at least 1).
    pub fn new(max_per_second: u32) -> Self {
        let max = f64::from(max_per_second.max(1));
        crate::metrics::iam_rate_limit(max);
        Self {
            max,
            // Never slower than one request every ten seconds, nor than 5% of the maximum.
            floor: (max * 0.05).max(0.1),
            state: Mutex::new(State {
                rate: max,
                next_slot: Instant::now(),
                next_urgent: Instant::now(),
                owed: 0,
                last_decrease: None,
                last_increase: Instant::now(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain numbers, consistent after any panic: recover, don't poison.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current rate, requests per second.
    pub fn current(&self) -> f64 {
        self.state().rate
    }

    /// Waits for this request's slot; an urgent request's comes first.
    pub async fn acquire(&self) {
        if is_urgent() {
            return self.acquire_urgent().await;
        }
        loop {
            let slot = {
                let mut state = self.state();
                let now = Instant::now();
                let slot = state.next_slot.max(now);
                state.next_slot = slot + Duration::from_secs_f64(1.0 / state.rate);
                slot
            };
            tokio::time::sleep_until(slot).await;
            let mut state = self.state();
            if state.owed == 0 {
                return;
            }
            // An urgent request used this moment: book again.
            state.owed -= 1;
        }
    }

    async fn acquire_urgent(&self) {
        let slot = {
            let mut state = self.state();
            let now = Instant::now();
            let interval = Duration::from_secs_f64(1.0 / state.rate);
            let slot = state.next_urgent.max(now);
            state.next_urgent = slot + interval;
            if slot + interval <= state.next_slot {
                // Ahead of booked requests: one of them gives its moment up.
                state.owed += 1;
            } else {
                state.next_slot = state.next_slot.max(slot + interval);
            }
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// How far ahead requests are already scheduled: how long the requests waiting now
    /// will keep IAM busy. Long means the rate, not the callers, is the bound.
    pub fn booked_ahead(&self) -> Duration {
        self.state()
            .next_slot
            .saturating_duration_since(Instant::now())
    }

    /// IAM answered with throttling: slow down (once per second at most).
    pub fn throttled(&self) {
        let mut state = self.state();
        let now = Instant::now();
        if state
            .last_decrease
            .is_some_and(|at| now.duration_since(at) < ADJUST_INTERVAL)
        {
            return;
        }
        state.rate = (state.rate * DECREASE_FACTOR).max(self.floor);
        state.last_decrease = Some(now);
        crate::metrics::iam_rate_limit(state.rate);
        tracing::warn!(
            rate_per_second = state.rate,
            "IAM is throttling: lowering the request rate"
        );
    }

    /// IAM answered without throttling: speed back up, slowly, up to the maximum.
    pub fn succeeded(&self) {
        let mut state = self.state();
        if state.rate >= self.max {
            return;
        }
        let now = Instant::now();
        let calm = state
            .last_decrease
            .is_none_or(|at| now.duration_since(at) >= ADJUST_INTERVAL);
        if calm && now.duration_since(state.last_increase) >= ADJUST_INTERVAL {
            state.rate = (state.rate + self.max * INCREASE_FRACTION_PER_SECOND).min(self.max);
            state.last_increase = now;
            crate::metrics::iam_rate_limit(state.rate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn an_urgent_request_goes_before_a_booked_backlog_and_the_rate_holds() {
        let rate = Arc::new(AdaptiveRate::new(10));
        let start = Instant::now();
        let mut backlog = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let rate = rate.clone();
            backlog.spawn(async move {
                rate.acquire().await;
                Instant::now()
            });
        }
        tokio::task::yield_now().await;
        assert_eq!(rate.booked_ahead(), Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        let urgent_at = urgent(async {
            rate.acquire().await;
            Instant::now()
        })
        .await;
        assert!(
            urgent_at - start <= Duration::from_millis(1_150),
            "served within one interval, not after the backlog: {:?}",
            urgent_at - start
        );
        let mut times: Vec<Instant> = backlog.join_all().await;
        times.push(urgent_at);
        times.sort();
        // Over any window of one second: at most the rate, plus one.
        for (i, t) in times.iter().enumerate() {
            let within = times[i..]
                .iter()
                .take_while(|u| **u - *t < Duration::from_secs(1))
                .count();
            assert!(
                within <= 11,
                "{within} requests within a second from {:?}",
                *t - start
            );
        }
        // The backlog gave exactly one moment up.
        assert_eq!(*times.last().unwrap() - start, Duration::from_millis(5_000));
    }

    #[tokio::test(start_paused = true)]
    async fn booked_ahead_is_the_time_the_waiting_requests_take() {
        let rate = Arc::new(AdaptiveRate::new(10));
        assert_eq!(rate.booked_ahead(), Duration::ZERO);
        let mut waiting = tokio::task::JoinSet::new();
        for _ in 0..5 {
            let rate = rate.clone();
            waiting.spawn(async move { rate.acquire().await });
        }
        tokio::task::yield_now().await;
        assert_eq!(rate.booked_ahead(), Duration::from_millis(500));
        waiting.join_all().await;
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(rate.booked_ahead(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_never_exceeds_the_configured_rate() {
        let rate = Arc::new(AdaptiveRate::new(10));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let rate = rate.clone();
            tasks.spawn(async move {
                rate.acquire().await;
                start.elapsed()
            });
        }
        let mut times = tasks.join_all().await;
        times.sort();
        // Any one-second window holds at most ten requests.
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(
                in_window <= 10,
                "{in_window} requests within a second from {t:?}"
            );
        }
        let last = *times.last().unwrap();
        assert!(
            last >= Duration::from_millis(4_900) && last < Duration::from_millis(5_000),
            "{last:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_once_per_second_and_it_recovers_slowly() {
        let rate = AdaptiveRate::new(20);
        rate.throttled();
        rate.throttled(); // the same burst of throttled answers: one signal
        assert_eq!(rate.current(), 10.0);
        tokio::time::advance(Duration::from_millis(1_100)).await;
        rate.throttled();
        assert_eq!(rate.current(), 5.0);

        // Requests now come 200 ms apart.
        let start = Instant::now();
        rate.acquire().await;
        rate.acquire().await;
        rate.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );

        // One step (+1/s) per calm second, never above the maximum.
        let mut seconds = 0;
        while rate.current() < 20.0 {
            tokio::time::advance(Duration::from_secs(1)).await;
            rate.succeeded();
            seconds += 1;
            assert!(seconds < 60, "recovers");
        }
        assert_eq!(seconds, 15, "from 5/s to 20/s in steps of 1/s");
        rate.succeeded();
        assert_eq!(rate.current(), 20.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_has_a_floor() {
        let rate = AdaptiveRate::new(10);
        for _ in 0..20 {
            rate.throttled();
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert_eq!(rate.current(), 0.5);
    }
}
