//! `breaker.*`: the table, the window and each queue's limits (docs, "The breaker").

use serde::{Deserialize, Serialize};

use crate::config_error::{invalid, ConfigError};
use crate::outcome::Lane;

/// The breaker: unset `table_name`, no breaker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// The DynamoDB table of counts, holds, approvals and pauses; unset: no breaker.
    pub table_name: Option<String>,
    /// The sliding window keys are counted in, in seconds.
    pub window_seconds: u64,
    /// How often each replica reads the pause flags, in seconds.
    pub poll_seconds: u64,
    /// A pause older than this many seconds alerts (`IamKeyRevokerPausedTooLong`).
    pub pause_alert_seconds: u64,
    /// The main queue's jobs: bulk work, offboarding.
    pub main: MainLimits,
    /// The priority queue's jobs: leaks, security events.
    pub priority: PriorityLimits,
}

/// One queue's limits and what its jobs do when the table cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneLimits {
    /// Keys changed per window in one account by this queue's jobs.
    pub max_keys_per_account: u32,
    /// Keys changed per window in all accounts by this queue's jobs.
    pub max_keys: u32,
    /// With the table unreachable: `true` changes keys uncounted, `false` leaves the job
    /// on its queue until the table answers.
    pub fail_open: bool,
}

impl Default for BreakerSection {
    fn default() -> Self {
        Self {
            table_name: None,
            window_seconds: 3600,
            poll_seconds: 5,
            pause_alert_seconds: 3600,
            main: MainLimits::default(),
            priority: PriorityLimits::default(),
        }
    }
}

/// `breaker.main` and `breaker.priority`: the same keys, each queue's own defaults (a
/// section that sets one key keeps its queue's defaults for the others).
macro_rules! lane_section {
    ($name:ident, $per_account:expr, $all:expr, $fail_open:expr) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            /// Keys changed per window in one account by this queue's jobs.
            pub max_keys_per_account: u32,
            /// Keys changed per window in all accounts by this queue's jobs.
            pub max_keys: u32,
            /// With the table unreachable: `true` changes keys uncounted, `false` leaves
            /// the job on its queue until the table answers.
            pub fail_open: bool,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    max_keys_per_account: $per_account,
                    max_keys: $all,
                    fail_open: $fail_open,
                }
            }
        }

        impl From<$name> for LaneLimits {
            fn from(s: $name) -> Self {
                LaneLimits {
                    max_keys_per_account: s.max_keys_per_account,
                    max_keys: s.max_keys,
                    fail_open: s.fail_open,
                }
            }
        }
    };
}

lane_section!(MainLimits, 100, 500, false);
lane_section!(PriorityLimits, 200, 1000, true);

impl BreakerSection {
    /// The limits of `lane`'s jobs.
    pub fn limits(&self, lane: Lane) -> LaneLimits {
        match lane {
            Lane::Main => self.main.into(),
            Lane::Priority => self.priority.into(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(table) = &self.table_name {
            // DynamoDB API Reference, CreateTable: 3-255 characters of [a-zA-Z0-9_.-]; an
            // ARN names a table too.
            let name_ok = (3..=255).contains(&table.len())
                && table
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !name_ok && !table.starts_with("arn:") {
                return Err(invalid(
                    "breaker.table_name",
                    format!("must be a DynamoDB table name or ARN, not {table:?}"),
                ));
            }
        }
        if !(60..=7 * 86_400).contains(&self.window_seconds) {
            return Err(invalid(
                "breaker.window_seconds",
                format!("must be between 60 and 604800, not {}", self.window_seconds),
            ));
        }
        if !(1..=300).contains(&self.poll_seconds) {
            return Err(invalid(
                "breaker.poll_seconds",
                format!("must be between 1 and 300, not {}", self.poll_seconds),
            ));
        }
        for (keys, limits) in [
            (
                ["breaker.main.max_keys_per_account", "breaker.main.max_keys"],
                LaneLimits::from(self.main),
            ),
            (
                [
                    "breaker.priority.max_keys_per_account",
                    "breaker.priority.max_keys",
                ],
                LaneLimits::from(self.priority),
            ),
        ] {
            if limits.max_keys_per_account == 0 {
                return Err(invalid(
                    keys[0],
                    "must be at least 1 (a person approves what exceeds it)",
                ));
            }
            if limits.max_keys < limits.max_keys_per_account {
                return Err(invalid(
                    keys[1],
                    format!(
                        "must be at least {} = {} ({})",
                        keys[0], limits.max_keys_per_account, limits.max_keys
                    ),
                ));
            }
        }
        Ok(())
    }
}
