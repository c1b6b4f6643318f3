//! Guards that run before any IAM write: the protected list, and the record of request
//! ids that finished recently (or are being worked right now).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use lru::LruCache;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use crate::config::{ConfigError, ProtectSection};

/// Users and keys that are never changed, as glob patterns.
#[derive(Debug, Clone)]
pub struct Protection {
    users: GlobSet,
    keys: GlobSet,
}

impl Protection {
    /// Compiles the configured patterns. User names match case-insensitively, because
    /// IAM treats `Admin` and `admin` as the same user.
    pub fn new(section: &ProtectSection) -> Result<Self, ConfigError> {
        Ok(Self {
            users: compile("protect.users", &section.users)?,
            keys: compile("protect.access_keys", &section.access_keys)?,
        })
    }

    /// Whether this user may never be touched.
    pub fn user(&self, user_name: &str) -> bool {
        self.users.is_match(user_name)
    }

    /// Whether this key may never be touched.
    pub fn key(&self, access_key_id: &str) -> bool {
        self.keys.is_match(access_key_id)
    }

    /// Why `job` is refused before any IAM call, if the user or key it names is
    /// protected.
    pub fn refuses(&self, job: &crate::job::Job) -> Option<String> {
        if let Some(user) = job.user_name().filter(|u| self.user(u)) {
            return Some(format!("user {user} is protected"));
        }
        job.access_key_id()
            .filter(|k| self.key(k))
            .map(|key| format!("access key {key} is protected"))
    }
}

fn compile(key: &'static str, patterns: &[String]) -> Result<GlobSet, ConfigError> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = GlobBuilder::new(pattern)
            .case_insensitive(true)
            .literal_separator(false)
            .build()
            .map_err(|e| ConfigError::Invalid {
                key,
                problem: format!("has an invalid pattern {pattern:?}: {e}"),
            })?;
        set.add(glob);
    }
    set.build().map_err(|e| ConfigError::Invalid {
        key,
        problem: e.to_string(),
    })
}

/// What the record says about a request id that is about to be worked.
#[derive(Debug)]
pub enum Claim {
    /// Not seen recently: go ahead; the guard releases the in-flight mark when dropped.
    Fresh(InFlight),
    /// Finished recently: end `duplicate` without touching IAM.
    Finished,
    /// Another delivery is being worked right now: await this, then claim again.
    InProgress(OwnedNotified),
}

/// A bounded, expiring record of finished request ids, plus the ones in flight.
#[derive(Debug, Clone)]
pub struct Dedup {
    inner: Arc<Mutex<DedupState>>,
    ttl: Duration,
}

#[derive(Debug)]
struct DedupState {
    finished: LruCache<String, Instant>,
    /// Request ids being worked, each with the signal its waiters get when it ends.
    in_flight: HashMap<String, Arc<Notify>>,
}

impl Dedup {
    /// Remembers up to `capacity` ids for `ttl` each.
    pub fn new(capacity: NonZeroUsize, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(DedupState {
                finished: LruCache::new(capacity),
                in_flight: HashMap::new(),
            })),
            ttl,
        }
    }

    fn state(&self) -> MutexGuard<'_, DedupState> {
        // A panic while holding this lock leaves two plain collections behind, which are
        // still consistent enough to use: recover instead of poisoning every later job.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims `request_id` for this delivery.
    pub fn claim(&self, request_id: &str) -> Claim {
        let mut state = self.state();
        if let Some(finished_at) = state.finished.get(request_id) {
            if finished_at.elapsed() < self.ttl {
                return Claim::Finished;
            }
            state.finished.pop(request_id);
        }
        if let Some(done) = state.in_flight.get(request_id) {
            // Created under the lock, so the end of that delivery cannot be missed.
            return Claim::InProgress(Arc::clone(done).notified_owned());
        }
        state
            .in_flight
            .insert(request_id.to_owned(), Arc::new(Notify::new()));
        Claim::Fresh(InFlight {
            dedup: self.clone(),
            request_id: request_id.to_owned(),
        })
    }

    /// Whether `request_id` finished within the ttl.
    #[cfg(test)]
    fn is_finished(&self, request_id: &str) -> bool {
        let mut state = self.state();
        matches!(state.finished.get(request_id), Some(at) if at.elapsed() < self.ttl)
    }
}

/// The in-flight mark of one request id.
#[derive(Debug)]
pub struct InFlight {
    dedup: Dedup,
    request_id: String,
}

impl InFlight {
    /// Records the request id as finished (its outcome is durable).
    pub fn finish(self) {
        let mut state = self.dedup.state();
        state.finished.put(self.request_id.clone(), Instant::now());
        // Drop removes the in-flight mark.
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(done) = self.dedup.state().in_flight.remove(&self.request_id) {
            done.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dedup(capacity: usize, ttl_ms: u64) -> Dedup {
        Dedup::new(
            NonZeroUsize::new(capacity).unwrap(),
            Duration::from_millis(ttl_ms),
        )
    }

    #[test]
    fn protection_matches_globs_and_ignores_case_of_users() {
        let p = Protection::new(&ProtectSection {
            users: vec!["admin".into(), "break-glass-*".into()],
            access_keys: vec!["AKIAPROTECTED*".into()],
        })
        .unwrap();
        assert!(p.user("admin"));
        assert!(p.user("Admin"));
        assert!(p.user("break-glass-1"));
        assert!(!p.user("alice"));
        assert!(!p.user("administrator"));
        assert!(p.key("AKIAPROTECTED0001"));
        assert!(!p.key("AKIAOTHER00000001"));
        let none = Protection::new(&ProtectSection::default()).unwrap();
        assert!(!none.user("admin"));
    }

    #[tokio::test]
    async fn a_second_delivery_waits_for_the_first_then_is_a_duplicate() {
        let d = dedup(10, 60_000);
        let Claim::Fresh(first) = d.claim("r1") else {
            panic!("fresh")
        };
        let Claim::InProgress(wait) = d.claim("r1") else {
            panic!("in progress")
        };
        let waiter = tokio::spawn(wait);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while the first is in flight");
        first.finish();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(d.claim("r1"), Claim::Finished));
        assert!(d.is_finished("r1"));
    }

    #[tokio::test]
    async fn an_unfinished_claim_is_released_on_drop_and_wakes_waiters() {
        let d = dedup(10, 60_000);
        let Claim::Fresh(first) = d.claim("r1") else {
            panic!("fresh")
        };
        let Claim::InProgress(wait) = d.claim("r1") else {
            panic!("in progress")
        };
        drop(first);
        // Woken although the first did not finish; the id is free to be worked again.
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap();
        assert!(matches!(d.claim("r1"), Claim::Fresh(_)));
        assert!(!d.is_finished("r1"));
    }

    #[test]
    fn record_is_bounded_and_expires() {
        let d = dedup(2, 60_000);
        for id in ["a", "b", "c"] {
            let Claim::Fresh(g) = d.claim(id) else {
                panic!()
            };
            g.finish();
        }
        assert!(!d.is_finished("a"), "oldest evicted past capacity");
        assert!(d.is_finished("b") && d.is_finished("c"));

        let d = dedup(10, 1);
        let Claim::Fresh(g) = d.claim("x") else {
            panic!()
        };
        g.finish();
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            matches!(d.claim("x"), Claim::Fresh(_)),
            "expired ids are fresh again"
        );
    }
}
