//! Guards that run before any IAM write: the protected list, and the record of request
//! ids that finished recently (or are being worked right now).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use lru::LruCache;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Users and keys that are never changed, as glob patterns.
#[derive(Debug, Clone)]
pub struct Protection {
    users: GlobSet,
    keys: GlobSet,
    roles: GlobSet,
}

/// Which protected list a pattern is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtectedList {
    Users,
    AccessKeys,
    Roles,
}

/// A protected pattern that is not a valid glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("has an invalid pattern {pattern:?}: {problem}")]
pub struct PatternError {
    pub list: ProtectedList,
    pub pattern: String,
    pub problem: String,
}

impl Protection {
    /// Compiles the glob patterns of protected users and keys. User names match
    /// case-insensitively, because IAM treats `Admin` and `admin` as the same user.
    pub fn new(users: &[String], access_keys: &[String]) -> Result<Self, PatternError> {
        Ok(Self {
            users: compile(ProtectedList::Users, users)?,
            keys: compile(ProtectedList::AccessKeys, access_keys)?,
            roles: GlobSet::empty(),
        })
    }

    /// These, with the glob patterns of roles whose sessions are never cut off
    /// (case-insensitive, as IAM role names are).
    pub fn with_roles(mut self, roles: &[String]) -> Result<Self, PatternError> {
        self.roles = compile(ProtectedList::Roles, roles)?;
        Ok(self)
    }

    /// Whether this role's sessions may never be cut off.
    pub fn role(&self, role_name: &str) -> bool {
        self.roles.is_match(role_name)
    }

    /// Protects nothing.
    pub fn none() -> Self {
        Self {
            users: GlobSet::empty(),
            keys: GlobSet::empty(),
            roles: GlobSet::empty(),
        }
    }

    /// Whether this user may never be touched.
    pub fn user(&self, user_name: &str) -> bool {
        self.users.is_match(user_name)
    }

    /// Whether any access key is protected.
    pub fn protects_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Whether this key may never be touched.
    pub fn key(&self, access_key_id: &str) -> bool {
        self.keys.is_match(access_key_id)
    }

    /// Why `job` is refused before any IAM call, if the user or the one key it names is
    /// protected. A protected key among several a security event names refuses that key
    /// only, when the keys are placed: one protected key does not shield the rest.
    pub fn refuses(&self, job: &crate::job::Job) -> Option<String> {
        if let Some(role) = job.role_name().filter(|r| self.role(r)) {
            return Some(format!(
                "role {role} is protected (protect.roles, or a role the worker itself uses): its sessions are left alone"
            ));
        }
        if let Some(user) = job.user_name().filter(|u| self.user(u)) {
            return Some(format!("user {user} is protected"));
        }
        job.access_key_id()
            .filter(|k| self.key(k))
            .map(|key| format!("access key {key} is protected"))
    }
}

fn compile(list: ProtectedList, patterns: &[String]) -> Result<GlobSet, PatternError> {
    let error = |pattern: &str, e: globset::Error| PatternError {
        list,
        pattern: pattern.to_owned(),
        problem: e.to_string(),
    };
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = GlobBuilder::new(pattern)
            .case_insensitive(true)
            .literal_separator(false)
            .build()
            .map_err(|e| error(pattern, e))?;
        set.add(glob);
    }
    set.build().map_err(|e| error("", e))
}

/// What the record says about a request id that is about to be worked.
#[derive(Debug)]
pub enum Claim {
    /// Not seen recently: go ahead; the guard releases the in-flight mark when dropped.
    Fresh(InFlight),
    /// The same job finished recently: end `duplicate` without touching IAM.
    Finished,
    /// This request id finished recently for a job that does something else: end
    /// `rejected/request_id_conflict` without touching IAM.
    Conflict,
    /// Another delivery is being worked right now: await this, then claim again.
    InProgress(OwnedNotified),
}

/// A bounded, expiring record of the request ids whose job left IAM as it asked
/// (`deleted`, `deactivated`, `already_absent`), each with the digest of what the job
/// did ([`crate::job::Job::digest`]), plus the ones in flight.
#[derive(Debug, Clone)]
pub struct Dedup {
    inner: Arc<Mutex<DedupState>>,
    ttl: Duration,
    capacity: NonZeroUsize,
}

#[derive(Debug)]
struct DedupState {
    /// Grows as ids finish, up to `capacity`: nothing is allocated up front.
    finished: LruCache<String, Finished>,
    /// Request ids being worked, each with the signal its waiters get when it ends.
    in_flight: HashMap<String, Arc<Notify>>,
}

#[derive(Debug, Clone, Copy)]
struct Finished {
    at: Instant,
    digest: u64,
}

impl Dedup {
    /// Remembers up to `capacity` ids for `ttl` each.
    pub fn new(capacity: NonZeroUsize, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(DedupState {
                finished: LruCache::unbounded(),
                in_flight: HashMap::new(),
            })),
            ttl,
            capacity,
        }
    }

    fn state(&self) -> MutexGuard<'_, DedupState> {
        // A panic while holding this lock leaves two plain collections behind, which are
        // still consistent enough to use: recover instead of poisoning every later job.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims `request_id` for this delivery of a job whose digest is `digest`.
    pub fn claim(&self, request_id: &str, digest: u64) -> Claim {
        let mut state = self.state();
        if let Some(finished) = state.finished.get(request_id).copied() {
            if finished.at.elapsed() < self.ttl {
                return if finished.digest == digest {
                    Claim::Finished
                } else {
                    Claim::Conflict
                };
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
            digest,
        })
    }
}

/// The in-flight mark of one request id.
#[derive(Debug)]
pub struct InFlight {
    dedup: Dedup,
    request_id: String,
    digest: u64,
}

impl InFlight {
    /// Records the request id as finished: its job left IAM as it asked and the outcome
    /// is durable. Only for outcomes that [`crate::outcome::Outcome::is_remembered`].
    pub fn finish(self) {
        let capacity = self.dedup.capacity.get();
        let mut state = self.dedup.state();
        let finished = Finished {
            at: Instant::now(),
            digest: self.digest,
        };
        state.finished.put(self.request_id.clone(), finished);
        while state.finished.len() > capacity {
            state.finished.pop_lru();
        }
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
        let p = Protection::new(
            &["admin".into(), "break-glass-*".into()],
            &["AKIAPROTECTED*".into()],
        )
        .unwrap();
        assert!(p.user("admin"));
        assert!(p.user("Admin"));
        assert!(p.user("break-glass-1"));
        assert!(!p.user("alice"));
        assert!(!p.user("administrator"));
        assert!(p.key("AKIAPROTECTED0001"));
        assert!(!p.key("AKIAOTHER00000001"));
        assert!(!Protection::none().user("admin"));
        let err = Protection::new(&[], &["AKIA[".into()]).unwrap_err();
        assert_eq!(err.list, ProtectedList::AccessKeys);
        assert_eq!(err.pattern, "AKIA[");
    }

    const JOB: u64 = 1;
    const OTHER_JOB: u64 = 2;

    fn finished(d: &Dedup, id: &str) -> bool {
        matches!(d.claim(id, JOB), Claim::Finished)
    }

    #[tokio::test]
    async fn a_second_delivery_waits_for_the_first_then_is_a_duplicate() {
        let d = dedup(10, 60_000);
        let Claim::Fresh(first) = d.claim("r1", JOB) else {
            panic!("fresh")
        };
        let Claim::InProgress(wait) = d.claim("r1", JOB) else {
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
        assert!(finished(&d, "r1"));
    }

    #[tokio::test]
    async fn the_same_id_for_another_job_is_a_conflict() {
        let d = dedup(10, 60_000);
        let Claim::Fresh(first) = d.claim("r1", JOB) else {
            panic!("fresh")
        };
        first.finish();
        assert!(matches!(d.claim("r1", OTHER_JOB), Claim::Conflict));
        assert!(
            finished(&d, "r1"),
            "the conflict does not replace the record"
        );
    }

    #[tokio::test]
    async fn an_unfinished_claim_is_released_on_drop_and_wakes_waiters() {
        let d = dedup(10, 60_000);
        let Claim::Fresh(first) = d.claim("r1", JOB) else {
            panic!("fresh")
        };
        let Claim::InProgress(wait) = d.claim("r1", JOB) else {
            panic!("in progress")
        };
        drop(first);
        // Woken although the first did not finish; the id is free to be worked again.
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap();
        assert!(matches!(d.claim("r1", OTHER_JOB), Claim::Fresh(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn record_is_bounded_and_expires() {
        let d = dedup(2, 60_000);
        for id in ["a", "b", "c"] {
            let Claim::Fresh(g) = d.claim(id, JOB) else {
                panic!()
            };
            g.finish();
        }
        assert!(
            matches!(d.claim("a", JOB), Claim::Fresh(_)),
            "oldest evicted past capacity"
        );
        assert!(finished(&d, "b") && finished(&d, "c"));

        let d = dedup(10, 1_000);
        let Claim::Fresh(g) = d.claim("x", JOB) else {
            panic!()
        };
        g.finish();
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(finished(&d, "x"), "remembered within the ttl");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(
            matches!(d.claim("x", OTHER_JOB), Claim::Fresh(_)),
            "expired ids are fresh again"
        );
    }
}
