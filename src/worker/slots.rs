//! Job slots: a job holds one while it is worked. A priority job goes before every
//! main-queue job, and a quarter of the slots is kept for priority jobs (docs, "The
//! priority queue").

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::aws::sqs::Lane;

impl Worker {
    /// Waits for a job slot. A priority job goes before
    /// every main-queue job, and a quarter of the slots are kept for priority jobs; a
    /// main-queue job leaves the line for a slot while a priority job waits, and joins it
    /// again once none does (its message held meanwhile, its heartbeat running).
    pub(super) async fn slot(&self, lane: Lane, shutdown: &CancellationToken) -> SlotWait<'_> {
        match lane {
            Lane::Priority => {
                let _urgent = UrgentWaiting::new(&self.urgent_waiting);
                tokio::select! {
                    biased;
                    slot = self.working.acquire() => slot.map_or(SlotWait::Shutdown, |s| SlotWait::Slot(s, None)),
                    () = shutdown.cancelled() => SlotWait::Shutdown,
                }
            }
            Lane::Main => {
                let mut urgent = self.urgent_waiting.subscribe();
                loop {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return SlotWait::Shutdown,
                        _ = urgent.wait_for(|waiting| *waiting == 0) => {}
                    }
                    let slot = async {
                        let share = match &self.main_slots {
                            Some(main) => Some(main.acquire().await?),
                            None => None,
                        };
                        Ok::<_, tokio::sync::AcquireError>(SlotWait::Slot(
                            self.working.acquire().await?,
                            share,
                        ))
                    };
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return SlotWait::Shutdown,
                        slot = slot => return slot.unwrap_or(SlotWait::Shutdown),
                        // Give way: leave the line for a slot until no priority job waits.
                        _ = urgent.wait_for(|waiting| *waiting > 0) => {}
                    }
                }
            }
        }
    }
}

/// How the wait for a job slot ended.
pub(super) enum SlotWait<'a> {
    /// A job slot, and for a main-queue job with a priority queue configured, its share
    /// of the main queue's slots.
    Slot(
        tokio::sync::SemaphorePermit<'a>,
        Option<tokio::sync::SemaphorePermit<'a>>,
    ),
    Shutdown,
}

/// Counts a priority job as waiting for a slot while it lives.
struct UrgentWaiting<'a>(&'a tokio::sync::watch::Sender<usize>);

impl<'a> UrgentWaiting<'a> {
    fn new(waiting: &'a tokio::sync::watch::Sender<usize>) -> Self {
        waiting.send_modify(|n| *n += 1);
        Self(waiting)
    }
}

impl Drop for UrgentWaiting<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Counts one in `counter` while it lives.
pub(super) struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    pub(super) fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
