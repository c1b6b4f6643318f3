//! The client-side IAM request budget (`iam.max_requests_per_second`), shared by every
//! job acting in one account, that learns where IAM's quota is and stays just under it.
//!
//! - Requests are spaced `1 / rate` apart (no bursts above the rate).
//! - A throttled answer to a request sent at the current rate is a measurement: IAM
//!   accepted what it answered without throttling over the last second (since the last
//!   cut, once IAM's bucket is empty; over half a second at least), and refuses more.
//!   That accepted rate is the ceiling; the rate goes 6-12% under it (drawn anew each
//!   time, so that replicas sharing one account's quota do not cut and climb in
//!   lockstep). Answers to requests sent before that cut are old news. Requests already
//!   booked at the old rate are spaced again at the new one, the first of them one
//!   interval after the cut (one let go at once would find IAM's bucket still empty).
//! - Refused again within half a second of a cut, too soon to measure anything new: what
//!   IAM accepted before that cut came from its bucket's reserve (a worker's first burst
//!   empties it), not from its refill. The rate halves then (at most once a second, so
//!   that a replica does not follow the others' throttles down), and climbs back after
//!   0.75 s towards the rate refused; the next cut measures.
//! - Refused before IAM accepted three requests since the last cut, there is nothing to
//!   measure: another replica or tool holds the quota. The rate goes to its floor and
//!   climbs back quickly (below); the next throttle measures its share. Refused so at
//!   no more than twice its floor (where three answers fit in a second, so that it could
//!   have measured), the rate refused is its share for now: as after a measured cut,
//!   the rate holds, climbs back to just under that, and probes above it.
//! - After a measured cut the rate holds for a few seconds (1.5-3, drawn), then, while
//!   requests wait for it, climbs: back to just under the ceiling quickly (50% of itself
//!   a second), above it slowly (2% of the ceiling, or 0.5% of the configured maximum,
//!   a second, whichever is more), probing for a quota AWS may have raised; past the
//!   ceiling without a throttle, the higher rate is the new ceiling. IAM's bucket covers
//!   a probe above the quota for a while, so the probe finds it late and rarely. Never
//!   above the configured maximum, never below a floor (5% of it). Once the rate is 20%
//!   above the one the waiting requests were spaced at, they are spaced again at the new
//!   one (a replica cut to its floor with twenty jobs in hand would otherwise send them
//!   at the floor's pace for ten seconds, however fast it climbs). Requests wait for the
//!   rate when more are booked than the one being answered, or when the caller holds
//!   work back for the rate ([`AdaptiveRate::held_back`]: a worker that takes only the
//!   messages it can start soon, while the queue has more); only then does it climb.
//! - Not throttled for half a minute, the ceiling learnt is stale (the replicas that held
//!   the rest of the quota may be gone, or AWS raised it): the rate climbs back quickly
//!   again, towards the configured maximum, until the next throttle measures.
//! - Replicas share the quota without talking: each one's accepted rate is its share, and
//!   the jittered margins and holds keep their probes apart. Shares need not be equal:
//!   the worker holds only the messages it can start within two seconds at its rate
//!   ([`AdaptiveRate::room`]), so the queue's jobs go to replicas in proportion to their
//!   shares, and they finish a drain together.
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

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Over how long IAM's accepted rate is measured.
const WINDOW: Duration = Duration::from_secs(1);
/// The shortest span an accepted rate is measured over (shorter is noise).
const SHORTEST_SPAN: Duration = Duration::from_millis(500);
/// After a throttle, the rate goes this far under the ceiling (drawn in this range).
const MARGIN: (f64, f64) = (0.06, 0.12);
/// After a throttle, the rate holds this long before it climbs (drawn in this range).
const HOLD: (Duration, Duration) = (Duration::from_millis(1500), Duration::from_secs(3));
/// A throttle right after a cut halves the rate, at most once in this long...
const HALVING_GAP: Duration = Duration::from_secs(1);
/// ... the rate climbs back quickly towards this fraction of the rate refused (the quota
/// is between the two)...
const HALVED_CEILING: f64 = 0.75;
/// ... after holding this long.
const HALVED_HOLD: Duration = Duration::from_millis(750);
/// Refused before measuring anything at no more than this multiple of the floor, the
/// rate refused is the share for now (see `AdaptiveRate::throttled`).
const NEAR_FLOOR: f64 = 2.0;
/// Fewer answers without throttling than this since the last cut measure nothing.
const MIN_SAMPLES: usize = 3;
/// Below the ceiling's margin, the rate grows by this fraction of itself a second.
const RECOVER_PER_SECOND: f64 = 0.5;
/// Near and above the ceiling, the rate climbs this fraction of the ceiling a second...
const PROBE_PER_SECOND: f64 = 0.02;
/// ... or this fraction of the configured maximum, when more: a replica whose share was
/// small when it learnt it climbs as fast as the others.
const PROBE_OF_MAX_PER_SECOND: f64 = 0.005;
/// Once the rate has climbed this far above the rate the waiting requests were spaced
/// at, they are spaced again at the new one.
const RESPACE: f64 = 1.2;
/// Not throttled for this long, the ceiling learnt is forgotten.
const FORGET: Duration = Duration::from_secs(30);
/// Before IAM has throttled anything, the rate doubles each second while requests wait
/// for it: from a start well under any account's quota to the quota within seconds.
const START_PER_SECOND: f64 = 1.0;

/// An adaptive request rate.
#[derive(Debug)]
pub struct AdaptiveRate {
    max: f64,
    floor: f64,
    state: Mutex<State>,
    /// Wakes the waiting requests when they are to be spaced again (a new epoch).
    respaced: Notify,
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
    /// book again (none after a spacing, which puts the booked ones after them).
    owed: u32,
    /// Counts the spacings: a request booked before the last one books again at the
    /// new rate (after a cut, or a climb of `RESPACE`).
    epoch: u64,
    /// The rate the waiting requests are spaced at.
    spaced_at: f64,
    /// The latest moment given to a request (to an urgent one, when it was booked).
    last_slot: Instant,
    /// The rate IAM accepted when it last throttled (the configured maximum before).
    ceiling: f64,
    last_cut: Option<Instant>,
    /// No climbing before this moment.
    hold_until: Instant,
    last_adjust: Instant,
    /// When the answers without throttling of the last `WINDOW` came.
    accepted: VecDeque<Instant>,
    /// A little randomness for margins and holds (xorshift), seeded per process.
    seed: u64,
    /// When the rate was last halved without a measurement.
    last_halved: Option<Instant>,
    /// When the caller last held work back for the rate's sake.
    held_back: Option<Instant>,
}

impl State {
    /// A number in [0, 1).
    fn draw(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// How long the rate holds after a cut (drawn in `HOLD`).
    fn hold(&mut self) -> Duration {
        HOLD.0 + (HOLD.1 - HOLD.0).mul_f64(self.draw())
    }
}

impl AdaptiveRate {
    /// Starts at `max_per_second` (at least 1).
    pub fn new(max_per_second: u32) -> Self {
        Self::starting_at(max_per_second, max_per_second)
    }

    /// Never above `max_per_second`, starting at `start_per_second` (at most the
    /// maximum): until IAM first throttles, the rate doubles each second while requests
    /// wait for it (see the module's description).
    pub fn starting_at(max_per_second: u32, start_per_second: u32) -> Self {
        Self::seeded(
            max_per_second,
            start_per_second,
            std::collections::hash_map::RandomState::new().hash_one(0u8),
        )
    }

    /// Like [`AdaptiveRate::starting_at`], its margins and holds drawn from `seed`.
    fn seeded(max_per_second: u32, start_per_second: u32, seed: u64) -> Self {
        let max = f64::from(max_per_second.max(1));
        let start = f64::from(start_per_second.clamp(1, max_per_second.max(1)));
        crate::metrics::iam_rate_limit(start);
        let now = Instant::now();
        Self {
            max,
            // Never slower than one request every ten seconds, nor than 5% of the maximum.
            floor: (max * 0.05).max(0.1),
            state: Mutex::new(State {
                rate: start,
                next_slot: now,
                next_urgent: now,
                owed: 0,
                epoch: 0,
                spaced_at: start,
                last_slot: now,
                ceiling: max,
                last_cut: None,
                hold_until: now,
                last_adjust: now,
                accepted: VecDeque::new(),
                seed: seed | 1,
                last_halved: None,
                held_back: None,
            }),
            respaced: Notify::new(),
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

    /// Waits for this request's slot; an urgent request's comes first. Returns the moment
    /// the request may go: hand it back with [`AdaptiveRate::throttled`].
    pub async fn acquire(&self) -> Instant {
        if is_urgent() {
            return self.acquire_urgent().await;
        }
        loop {
            let (slot, epoch, respaced) = {
                let mut state = self.state();
                let now = Instant::now();
                let slot = state.next_slot.max(now);
                state.next_slot = slot + Duration::from_secs_f64(1.0 / state.rate);
                // Created under the lock that spacing takes: it wakes for a later epoch
                // only.
                (slot, state.epoch, self.respaced.notified())
            };
            tokio::select! {
                () = tokio::time::sleep_until(slot) => {}
                () = respaced => {}
            }
            let mut state = self.state();
            if state.epoch != epoch {
                // Booked at a rate that has changed since (IAM refused it, or it climbed
                // well above it): book again at the new one.
                continue;
            }
            if state.owed == 0 {
                state.last_slot = state.last_slot.max(slot);
                return slot;
            }
            // An urgent request used this moment: book again.
            state.owed -= 1;
        }
    }

    async fn acquire_urgent(&self) -> Instant {
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
            state.last_slot = state.last_slot.max(slot);
            slot
        };
        tokio::time::sleep_until(slot).await;
        slot
    }

    /// How far ahead requests are already scheduled: how long the requests waiting now
    /// will keep IAM busy. Long means the rate, not the callers, is the bound.
    pub fn booked_ahead(&self) -> Duration {
        self.state()
            .next_slot
            .saturating_duration_since(Instant::now())
    }

    /// How many more jobs of one request each start within `horizon` at the current
    /// rate, with `held` held already, and how many start in half of it; two at least
    /// (at a rate below two per `horizon` a worker still works, and only answers to
    /// requests that wait for the rate make it climb).
    pub fn room(&self, horizon: Duration, held: usize) -> (usize, usize) {
        let fit = (horizon.as_secs_f64() * self.current()).max(2.0);
        (
            (fit.floor() as usize).saturating_sub(held),
            (fit / 2.0).ceil() as usize,
        )
    }

    /// The caller holds work back for the rate's sake: it has work waiting (messages on
    /// the queue) that it would take if the rate allowed ([`AdaptiveRate::room`]). The
    /// rate is then the bound even when few requests wait in it: at a low rate, the few
    /// jobs a worker holds are mostly being settled, not waiting, and it would never
    /// climb. A mark counts for a second.
    pub fn held_back(&self) {
        self.state().held_back = Some(Instant::now());
    }

    /// IAM throttled the request sent at `sent`: the rate it accepted is the ceiling, and
    /// the rate goes just under it.
    pub fn throttled(&self, sent: Instant) {
        let mut state = self.state();
        if state.last_cut.is_some_and(|cut| sent <= cut) {
            return;
        }
        let now = Instant::now();
        // Since the last cut (IAM's bucket has been empty since), within the window, over
        // no less than the shortest span.
        let since = [now.checked_sub(WINDOW), state.last_cut]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(now)
            .min(now.checked_sub(SHORTEST_SPAN).unwrap_or(now));
        while state.accepted.front().is_some_and(|t| *t < since) {
            state.accepted.pop_front();
        }
        let span = now.duration_since(since).max(SHORTEST_SPAN).as_secs_f64();
        let margin = MARGIN.0 + (MARGIN.1 - MARGIN.0) * state.draw();
        let cut_just_now = state
            .last_cut
            .is_some_and(|cut| now.duration_since(cut) < SHORTEST_SPAN);
        let halved_lately = state
            .last_halved
            .is_some_and(|at| now.duration_since(at) < HALVING_GAP);
        if cut_just_now && !halved_lately {
            // Refused again right after a cut, too soon to measure anything new: what IAM
            // accepted before it came from its bucket's reserve (a worker's first burst),
            // not its refill. Halve, and climb back soon, towards the rate just refused;
            // the next cut measures. At most once in HALVING_GAP: a replica's own halving
            // must not follow the others' throttles down to nothing.
            state.last_halved = Some(now);
            state.ceiling = (state.rate * HALVED_CEILING).max(self.floor);
            state.rate = (state.rate * 0.5).max(self.floor);
            state.hold_until = now + HALVED_HOLD;
        } else if state.accepted.len() < MIN_SAMPLES {
            // Refused before IAM accepted anything to measure: another replica or tool
            // holds the quota. Start again from the floor, and climb back quickly to a
            // share; the first throttle after that measures it...
            let measurable = self.floor * NEAR_FLOOR * WINDOW.as_secs_f64() >= MIN_SAMPLES as f64;
            if measurable && state.rate <= self.floor * NEAR_FLOOR {
                // ...unless refused near the floor already, where it could have measured:
                // then the share to be had is no more than the rate refused for now (a
                // replica joining a quota the others hold was refused at its floor again
                // and again, each time climbing back too fast to measure). As after a
                // measured cut: hold, climb back under it, probe above it. (Below three
                // requests a second nothing is ever measured; such a limiter, CloudTrail's,
                // keeps climbing back quickly.)
                state.ceiling = state.ceiling.min(state.rate.max(self.floor));
                state.hold_until = now + state.hold();
            } else {
                state.hold_until = now + HALVED_HOLD;
            }
            state.rate = self.floor;
        } else {
            let accepted = state.accepted.len() as f64 / span;
            // Never above the rate refused, which, right after a halving, is the rate
            // before it (the halving's ceiling), not the halved one.
            let refused = if halved_lately {
                state.rate.max(state.ceiling)
            } else {
                state.rate
            };
            let ceiling = accepted.max(0.0).clamp(self.floor, refused.max(self.floor));
            state.ceiling = ceiling;
            // A cut never raises the rate (right after a halving, the ceiling measured
            // can be above the halved rate).
            state.rate = (ceiling * (1.0 - margin)).max(self.floor).min(state.rate);
            state.hold_until = now + state.hold();
        }
        state.last_cut = Some(now);
        state.last_adjust = now;
        // The next request waits one interval at the new rate: one let go at once after
        // each cut would be refused too while IAM's bucket is empty, and cut again.
        let next = now + Duration::from_secs_f64(1.0 / state.rate);
        self.respace(&mut state, next);
        crate::metrics::iam_rate_limit(state.rate);
        tracing::warn!(
            rate_per_second = state.rate,
            ceiling_per_second = state.ceiling,
            "IAM is throttling: lowering the request rate"
        );
    }

    /// IAM answered without throttling: count it, and, while requests wait for the rate,
    /// climb (see the module's description).
    pub fn succeeded(&self) {
        let mut state = self.state();
        let now = Instant::now();
        state.accepted.push_back(now);
        while state
            .accepted
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            state.accepted.pop_front();
        }
        // An idle spell is not a calm one: no more than a window's climb at once.
        let elapsed = now
            .duration_since(state.last_adjust)
            .min(WINDOW)
            .as_secs_f64();
        state.last_adjust = now;
        // Requests booked beyond the one just answered, or work held back lately: the
        // rate, not demand, is the bound.
        let interval = Duration::from_secs_f64(1.0 / state.rate);
        let waiting = state.next_slot > now + interval
            || state
                .held_back
                .is_some_and(|at| now.duration_since(at) < WINDOW);
        if now < state.hold_until || !waiting || state.rate >= self.max {
            return;
        }
        if state
            .last_cut
            .is_some_and(|cut| now.duration_since(cut) >= FORGET)
        {
            // Not throttled for a while: what was learnt may be stale (the replicas that
            // held the rest of the quota may be gone). Climb back quickly again.
            state.ceiling = self.max;
        }
        let below = state.ceiling * (1.0 - MARGIN.1);
        let climb = if state.last_cut.is_none() {
            // Nothing learnt yet: the quota is somewhere above.
            state.rate * START_PER_SECOND
        } else if state.rate < below {
            state.rate * RECOVER_PER_SECOND
        } else {
            (state.ceiling * PROBE_PER_SECOND).max(self.max * PROBE_OF_MAX_PER_SECOND)
        };
        state.rate = (state.rate + climb * elapsed).min(self.max);
        if state.rate > state.ceiling {
            // Above the last ceiling and not throttled: IAM accepts more now.
            state.ceiling = state.rate;
        }
        if state.rate >= state.spaced_at * RESPACE {
            // Requests booked at the lower rate would keep its pace long after the climb
            // (a replica cut to its floor holding twenty jobs would send them 0.5 s
            // apart for ten seconds, whatever its rate): space them again from the last
            // request let go.
            let next = (state.last_slot + Duration::from_secs_f64(1.0 / state.rate)).max(now);
            self.respace(&mut state, next);
        }
        crate::metrics::iam_rate_limit(state.rate);
    }

    /// Spaces the waiting requests again at the current rate, the first at `next` or
    /// after the urgent requests booked, whichever is later (so none of them owes its
    /// moment to an urgent one any more).
    fn respace(&self, state: &mut State, next: Instant) {
        state.epoch += 1;
        state.spaced_at = state.rate;
        state.next_slot = next.max(state.next_urgent);
        state.owed = 0;
        self.respaced.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A request through `rate`, refused by IAM.
    async fn refuse(rate: &AdaptiveRate) {
        let sent = rate.acquire().await;
        rate.throttled(sent);
    }

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

    /// IAM's quota as AWS keeps it: a token bucket per account.
    struct Quota {
        per_second: f64,
        capacity: f64,
        tokens: f64,
        at: Instant,
    }

    impl Quota {
        fn new(per_second: f64) -> Arc<Mutex<Self>> {
            Arc::new(Mutex::new(Self {
                per_second,
                capacity: per_second,
                tokens: per_second,
                at: Instant::now(),
            }))
        }

        fn take(&mut self) -> bool {
            let now = Instant::now();
            let refill = now.duration_since(self.at).as_secs_f64() * self.per_second;
            self.tokens = (self.tokens + refill).min(self.capacity);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        }
    }

    /// Requests answered and throttled by `quota` in `seconds`, each limiter with
    /// `in_flight` callers sending one request after another (IAM answering in 10 ms).
    async fn drive(
        limiters: &[Arc<AdaptiveRate>],
        quota: &Arc<Mutex<Quota>>,
        seconds: u64,
        in_flight: usize,
    ) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut callers = tokio::task::JoinSet::new();
        for (n, limiter) in limiters.iter().enumerate() {
            for _ in 0..in_flight {
                let (limiter, quota) = (limiter.clone(), quota.clone());
                // Replicas start one after another, as a scaler starts them.
                let start = Instant::now() + Duration::from_millis(400) * n as u32;
                callers.spawn(async move {
                    tokio::time::sleep_until(start).await;
                    let (mut answered, mut throttled) = (0, 0);
                    loop {
                        let sent = limiter.acquire().await;
                        if sent >= deadline {
                            return (answered, throttled);
                        }
                        let accepted = quota.lock().unwrap().take();
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        if accepted {
                            answered += 1;
                            limiter.succeeded();
                        } else {
                            throttled += 1;
                            limiter.throttled(sent);
                        }
                    }
                });
            }
        }
        callers
            .join_all()
            .await
            .into_iter()
            .fold((0, 0), |(a, t), (ca, ct)| (a + ca, t + ct))
    }

    /// How long `requests` requests (each retried until IAM accepts it) take through
    /// `limiter` against `quota`, with `in_flight` callers, and how many were throttled.
    async fn burst(
        limiter: &Arc<AdaptiveRate>,
        quota: &Arc<Mutex<Quota>>,
        requests: usize,
        in_flight: usize,
    ) -> (Duration, u64) {
        let started = Instant::now();
        let left = Arc::new(std::sync::atomic::AtomicUsize::new(requests));
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..in_flight {
            let (limiter, quota, left) = (limiter.clone(), quota.clone(), left.clone());
            callers.spawn(async move {
                let mut throttled = 0;
                while left
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| n.checked_sub(1),
                    )
                    .is_ok()
                {
                    loop {
                        let sent = limiter.acquire().await;
                        let accepted = quota.lock().unwrap().take();
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        if accepted {
                            limiter.succeeded();
                            break;
                        }
                        throttled += 1;
                        limiter.throttled(sent);
                    }
                }
                throttled
            });
        }
        let throttled = callers.join_all().await.into_iter().sum();
        (started.elapsed(), throttled)
    }

    /// At the defaults (a maximum of 100 a second, starting at 20), a burst of 100
    /// requests is bound by the account's quota, not by the configuration: within 10% of
    /// 100 / quota + 1 s, with at most 5% of the requests throttled.
    #[tokio::test(start_paused = true)]
    async fn a_burst_at_the_defaults_is_bound_by_the_quota() {
        for (per_second, seed) in [(15.0, 1), (15.0, 2), (40.0, 3), (40.0, 4), (100.0, 5)] {
            let quota = Quota::new(per_second);
            let limiter = Arc::new(AdaptiveRate::seeded(100, 20, seed));
            let (took, throttled) = burst(&limiter, &quota, 100, 16).await;
            let bound = Duration::from_secs_f64(100.0 / per_second + 1.0).mul_f64(1.1);
            assert!(
                took <= bound,
                "quota {per_second}: {took:?}, bound {bound:?}"
            );
            assert!(throttled <= 5, "quota {per_second}: {throttled} throttled");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_worker_above_the_quota_holds_it_with_few_throttles() {
        let quota = Quota::new(15.0);
        let limiter = Arc::new(AdaptiveRate::seeded(40, 40, 5));
        let (answered, throttled) = drive(std::slice::from_ref(&limiter), &quota, 120, 16).await;
        let held = answered as f64 / (15.0 * 120.0);
        let refused = throttled as f64 / (answered + throttled) as f64;
        assert!(held >= 0.95, "held {held:.3} of the quota");
        assert!(refused <= 0.05, "{refused:.3} of requests throttled");
        // Near the quota: probing above it, by at most a quarter, while IAM's bucket
        // still covers the difference.
        assert!(limiter.current() < 15.0 * 1.3, "{}", limiter.current());
    }

    #[tokio::test(start_paused = true)]
    async fn three_workers_share_one_quota_without_multiplying_throttles() {
        let quota = Quota::new(15.0);
        let limiters: Vec<_> = (0..3)
            .map(|n| Arc::new(AdaptiveRate::seeded(40, 40, 11 + n)))
            .collect();
        let (answered, throttled) = drive(&limiters, &quota, 120, 16).await;
        let held = answered as f64 / (15.0 * 120.0);
        let refused = throttled as f64 / (answered + throttled) as f64;
        assert!(held >= 0.90, "held {held:.3} of the quota");
        assert!(refused <= 0.05, "{refused:.3} of requests throttled");
    }

    /// Seconds and throttled requests to work `jobs` jobs of one request each with
    /// `limiters` as replicas, each working 16 at once and holding, as the worker's
    /// receive loop does, no more than it can start within two seconds at its rate (a
    /// message held until it is settled, a second after its answer).
    async fn drain(
        limiters: &[Arc<AdaptiveRate>],
        quota: &Arc<Mutex<Quota>>,
        jobs: u64,
    ) -> (f64, u64) {
        let queue = Arc::new(Mutex::new(jobs));
        let start = Instant::now();
        let mut callers = tokio::task::JoinSet::new();
        for (n, limiter) in limiters.iter().enumerate() {
            let held = Arc::new(Mutex::new(0usize));
            for _ in 0..16 {
                let (limiter, quota, queue, held) =
                    (limiter.clone(), quota.clone(), queue.clone(), held.clone());
                // A second apart, as the bench's workers start.
                let begin = start + Duration::from_secs(1) * n as u32;
                callers.spawn(async move {
                    tokio::time::sleep_until(begin).await;
                    let mut throttled = 0;
                    loop {
                        let taken = {
                            let mut queue = queue.lock().unwrap();
                            if *queue == 0 {
                                return throttled;
                            }
                            let mut held = held.lock().unwrap();
                            let room = limiter.room(Duration::from_secs(2), *held).0 > 0;
                            if room {
                                *queue -= 1;
                                *held += 1;
                            } else {
                                limiter.held_back();
                            }
                            room
                        };
                        if !taken {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        loop {
                            let sent = limiter.acquire().await;
                            let accepted = quota.lock().unwrap().take();
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            if accepted {
                                limiter.succeeded();
                                break;
                            }
                            throttled += 1;
                            limiter.throttled(sent);
                        }
                        // The message is settled about a second after its answer (the
                        // batch delete lingers for company while IAM's rate is the
                        // bound), held until then.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        *held.lock().unwrap() -= 1;
                    }
                });
            }
        }
        let throttled = callers.join_all().await.into_iter().sum();
        (start.elapsed().as_secs_f64(), throttled)
    }

    #[tokio::test(start_paused = true)]
    async fn replicas_started_one_after_another_drain_a_batch_at_the_quota() {
        // One replica, and three with margins and holds drawn from several seeds.
        for (replicas, seed) in [(1, 1), (3, 1), (3, 2), (3, 3), (3, 4), (3, 5)] {
            let quota = Quota::new(15.0);
            let limiters: Vec<_> = (0..replicas)
                .map(|n| Arc::new(AdaptiveRate::seeded(40, 40, seed * 7919 + n)))
                .collect();
            let (seconds, throttled) = drain(&limiters, &quota, 300).await;
            let held = 300.0 / seconds / 15.0;
            let refused = throttled as f64 / (300 + throttled) as f64;
            assert!(
                held >= 0.9,
                "{replicas} ({seed}): held {held:.3} of the quota"
            );
            assert!(
                refused <= 0.05,
                "{replicas} ({seed}): {refused:.3} of requests throttled"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_raised_later_is_found() {
        let quota = Quota::new(15.0);
        let limiter = Arc::new(AdaptiveRate::seeded(100, 100, 3));
        let (answered, throttled) = drive(std::slice::from_ref(&limiter), &quota, 60, 16).await;
        // Configured far above it, the limiter holds the quota with few throttles.
        assert!(answered as f64 >= 0.95 * 15.0 * 60.0, "{answered}");
        assert!(
            throttled as f64 <= 0.05 * (answered + throttled) as f64,
            "{throttled}"
        );
        quota.lock().unwrap().per_second = 30.0;
        quota.lock().unwrap().capacity = 30.0;
        drive(std::slice::from_ref(&limiter), &quota, 60, 16).await;
        let (answered, _) = drive(std::slice::from_ref(&limiter), &quota, 30, 16).await;
        let held = answered as f64 / (30.0 * 30.0);
        assert!(held >= 0.9, "held {held:.3} of the raised quota");
    }

    /// `n` callers sending one request after another through `rate`, each answered at
    /// once without throttling, until the set is dropped.
    fn busy(rate: &Arc<AdaptiveRate>, n: usize) -> tokio::task::JoinSet<()> {
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..n {
            let rate = rate.clone();
            callers.spawn(async move {
                loop {
                    rate.acquire().await;
                    rate.succeeded();
                }
            });
        }
        callers
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_cuts_just_under_what_iam_accepted_and_old_answers_are_ignored() {
        let rate = AdaptiveRate::new(40);
        let before = Instant::now();
        // IAM answered 20 requests in the last second, then refused one.
        for _ in 0..20 {
            tokio::time::advance(Duration::from_millis(50)).await;
            rate.succeeded();
        }
        let sent = rate.acquire().await;
        rate.throttled(sent);
        let cut = rate.current();
        assert!(
            (20.0 * (1.0 - MARGIN.1)..=20.0 * (1.0 - MARGIN.0)).contains(&cut),
            "{cut}"
        );
        // Answers to requests sent before the cut say nothing new.
        rate.throttled(before);
        rate.throttled(sent);
        assert_eq!(rate.current(), cut);
        // With requests waiting for the rate, it holds 1.5-3 s after the cut, then climbs.
        let cut_at = Instant::now();
        let rate = Arc::new(rate);
        let callers = busy(&rate, 16);
        tokio::time::sleep_until(cut_at + HOLD.0 - Duration::from_millis(100)).await;
        assert!(rate.booked_ahead() > Duration::from_millis(500));
        assert_eq!(rate.current(), cut);
        tokio::time::sleep_until(cut_at + HOLD.1 + Duration::from_millis(500)).await;
        assert!(rate.current() > cut, "{} after the hold", rate.current());
        drop(callers);
    }

    #[tokio::test(start_paused = true)]
    async fn room_is_what_starts_within_the_horizon_and_two_jobs_at_the_floor() {
        let rate = AdaptiveRate::new(10);
        let two = Duration::from_secs(2);
        assert_eq!(rate.room(two, 0), (20, 10));
        assert_eq!(rate.room(two, 16), (4, 10));
        assert_eq!(rate.room(two, 25), (0, 10));
        // Throttled down to its floor (0.1 a second at a configured 1): 0.2 jobs start
        // within two seconds, yet a worker takes two.
        let slow = AdaptiveRate::new(1);
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(2)).await;
            refuse(&slow).await;
        }
        assert_eq!(slow.current(), 0.1);
        assert_eq!(slow.room(two, 0), (2, 1));
        assert_eq!(slow.room(two, 1), (1, 1));
        assert_eq!(slow.room(two, 2), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn work_held_back_for_the_rate_makes_it_climb_with_no_request_waiting() {
        let rate = AdaptiveRate::seeded(40, 40, 1);
        // Refused before IAM accepted anything: the floor, and a quick climb back...
        refuse(&rate).await;
        assert_eq!(rate.current(), 2.0);
        // ...but only while the rate is the bound. One request at a time, each answered
        // before the next is booked: the caller, not the rate, is the bound.
        for _ in 0..8 {
            rate.acquire().await;
            tokio::time::advance(Duration::from_millis(10)).await;
            rate.succeeded();
        }
        assert_eq!(rate.current(), 2.0);
        // A mark more than a second old counts for nothing.
        rate.held_back();
        tokio::time::advance(Duration::from_millis(1_100)).await;
        rate.acquire().await;
        tokio::time::advance(Duration::from_millis(10)).await;
        rate.succeeded();
        assert_eq!(rate.current(), 2.0);
        // The same requests from a caller that holds work back for the rate (a worker
        // whose few messages are mostly being settled): the rate is the bound; it climbs.
        for _ in 0..8 {
            rate.held_back();
            rate.acquire().await;
            tokio::time::advance(Duration::from_millis(10)).await;
            rate.succeeded();
        }
        assert!(rate.current() > 4.0, "{}", rate.current());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_booked_at_a_low_rate_go_sooner_when_it_climbs() {
        let rate = Arc::new(AdaptiveRate::seeded(40, 40, 1));
        // Refused before IAM accepted anything: the floor (2/s), and a quick climb back.
        refuse(&rate).await;
        assert_eq!(rate.current(), 2.0);
        // Twenty requests booked at once: ten seconds at 2/s.
        let start = Instant::now();
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let rate = rate.clone();
            requests.spawn(async move {
                let sent = rate.acquire().await;
                // The rate the request went at (it only climbs here).
                let at = rate.current();
                tokio::time::sleep(Duration::from_millis(10)).await;
                rate.succeeded();
                (sent, at)
            });
        }
        let mut sent = requests.join_all().await;
        // Answered without throttling, the rate climbs (50% of itself a second) and the
        // requests booked at 2/s go at the new rate...
        assert!(rate.current() > 6.0, "{}", rate.current());
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "{:?}",
            start.elapsed()
        );
        // ...one after another, never closer than the rate allows.
        sent.sort_by_key(|(at, _)| *at);
        for pair in sent.windows(2) {
            let ((before, _), (after, rate)) = (pair[0], pair[1]);
            let gap = after.duration_since(before).as_secs_f64();
            assert!(gap >= 0.999 / rate, "{gap} s apart at {rate}/s");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn urgent_requests_ahead_of_a_backlog_waste_no_moment_when_it_is_spaced_again() {
        let rate = Arc::new(AdaptiveRate::seeded(40, 40, 1));
        refuse(&rate).await;
        assert_eq!(rate.current(), 2.0);
        // Ten booked requests at the floor, then three urgent ones ahead of them, while
        // the answers make the rate climb and the booked ones are spaced again.
        let mut requests = tokio::task::JoinSet::new();
        for n in 0..13 {
            let rate = rate.clone();
            requests.spawn(async move {
                let sent = if n < 10 {
                    rate.acquire().await
                } else {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    urgent(rate.acquire()).await
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
                rate.succeeded();
                sent
            });
        }
        let mut sent = requests.join_all().await;
        sent.sort();
        // No moment given up for nothing: never more than an interval at the floor
        // between two requests.
        for pair in sent.windows(2) {
            let gap = pair[1].duration_since(pair[0]);
            assert!(
                gap <= Duration::from_millis(510),
                "{gap:?} without a request"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn below_three_a_second_a_refusal_at_the_floor_never_pins_the_rate() {
        // CloudTrail's 2/s: fewer than three answers ever fit in a second, so nothing is
        // measured and a refusal at the floor (0.1/s) is no share learnt.
        let rate = Arc::new(AdaptiveRate::seeded(2, 2, 1));
        for _ in 0..2 {
            refuse(&rate).await;
        }
        assert_eq!(rate.current(), 0.1);
        // It climbs back quickly (50% of itself an answer here), not at the probing pace
        // (0.01/s: 0.13/s by then), well before a ceiling would be forgotten.
        let callers = busy(&rate, 4);
        tokio::time::sleep(FORGET - Duration::from_secs(2)).await;
        assert!(rate.current() > 0.5, "{}", rate.current());
        drop(callers);
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_learnt_with_other_replicas_is_forgotten_once_they_are_gone() {
        // A replica that learnt a share of 3-4/s while two others held the rest...
        let quota = Quota::new(15.0);
        let rate = Arc::new(AdaptiveRate::seeded(40, 40, 2));
        for _ in 0..6 {
            tokio::time::advance(Duration::from_millis(330)).await;
            rate.succeeded();
        }
        refuse(&rate).await;
        assert!(rate.current() < 4.0, "{}", rate.current());
        // ...now alone on the quota: it probes up slowly, is never throttled, and after
        // half a minute climbs back quickly to the whole quota.
        tokio::time::sleep(Duration::from_secs(1)).await;
        drive(std::slice::from_ref(&rate), &quota, 40, 16).await;
        let (answered, _) = drive(std::slice::from_ref(&rate), &quota, 10, 16).await;
        let held = answered as f64 / (15.0 * 10.0);
        assert!(held >= 0.9, "held {held:.3} of the quota");
    }

    #[tokio::test(start_paused = true)]
    async fn refused_at_its_floor_before_measuring_it_holds_that_share_and_probes() {
        let rate = Arc::new(AdaptiveRate::seeded(40, 40, 1));
        // A replica joining a quota the others hold: refused at once, the floor (2/s)...
        refuse(&rate).await;
        assert_eq!(rate.current(), 2.0);
        // ...and refused again there before IAM accepted anything.
        tokio::time::advance(Duration::from_millis(500)).await;
        refuse(&rate).await;
        assert_eq!(rate.current(), 2.0);
        // Requests waiting for the rate, answered: it holds 1.5 s at least, then climbs
        // at the probing pace (0.2/s here), not back towards the configured 40/s at 50%
        // of itself a second (over 4/s within these four seconds).
        let callers = busy(&rate, 8);
        tokio::time::sleep(HOLD.0 - Duration::from_millis(100)).await;
        assert_eq!(rate.current(), 2.0);
        tokio::time::sleep(Duration::from_millis(2_600)).await;
        assert!(rate.current() < 3.0, "{}", rate.current());
        drop(callers);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_has_a_floor() {
        let rate = AdaptiveRate::new(10);
        for _ in 0..20 {
            tokio::time::advance(Duration::from_secs(2)).await;
            refuse(&rate).await;
        }
        assert_eq!(rate.current(), 0.5);
    }
}
