//! Turns per user: within one process, one change of a user's session policies at a time
//! (docs, "Revoking sessions").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Turns per user: one change of a user's session policies at a time in this process.
#[derive(Debug, Clone, Default)]
pub struct UserTurns(Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

/// A user's turn, held while their session policies change.
pub struct UserTurn {
    turns: UserTurns,
    user: String,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl UserTurns {
    /// Waits for `user`'s turn (user names compare as IAM compares them, ignoring case).
    pub async fn take(&self, user: &str) -> UserTurn {
        let user = user.to_ascii_lowercase();
        let lock = {
            let mut turns = self.0.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(turns.entry(user.clone()).or_default())
        };
        UserTurn {
            turns: self.clone(),
            user,
            _held: lock.lock_owned().await,
        }
    }
}

impl Drop for UserTurn {
    fn drop(&mut self) {
        let mut turns = self.turns.0.lock().unwrap_or_else(|p| p.into_inner());
        // The map's and this turn's: nobody else waits for the user.
        if turns
            .get(&self.user)
            .is_some_and(|lock| Arc::strong_count(lock) <= 2)
        {
            turns.remove(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_user_takes_turns_whatever_the_case_of_the_name() {
        let turns = UserTurns::default();
        let alice = turns.take("alice").await;
        let waiting = tokio::spawn({
            let turns = turns.clone();
            async move { turns.take("ALICE").await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "Alice's second change waits");
        let _bob = turns.take("bob").await;
        drop(alice);
        drop(waiting.await.unwrap());
        assert!(turns.0.lock().unwrap().keys().all(|u| u == "bob"));
    }
}
