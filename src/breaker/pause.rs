//! An operator's pause of a queue's key changes, as the table keeps it (`pause#<queue>`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::breaker::table::{self, n, s};
use crate::outcome::Lane;

/// What one queue's pause says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub reason: String,
    pub by: String,
    /// Unix seconds.
    pub since: u64,
}

/// Both queues' pauses as last read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pauses {
    pub main: Option<Pause>,
    pub priority: Option<Pause>,
}

impl Pauses {
    pub fn of(&self, lane: Lane) -> Option<&Pause> {
        match lane {
            Lane::Main => self.main.as_ref(),
            Lane::Priority => self.priority.as_ref(),
        }
    }

    /// One line for `/readyz` and the log; `None` when nothing is paused.
    pub fn describe(&self) -> Option<String> {
        let lines: Vec<String> = [Lane::Main, Lane::Priority]
            .into_iter()
            .filter_map(|lane| {
                self.of(lane).map(|p| {
                    format!(
                        "paused: {} queue's key changes, by {}: {}",
                        lane.as_str(),
                        p.by,
                        p.reason
                    )
                })
            })
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n") + "\n")
    }
}

/// A pause item's meaning: `None` when it does not pause.
pub fn pause_of(item: &HashMap<String, AttributeValue>) -> Option<Pause> {
    if table::boolean(item, "paused") != Some(true) {
        return None;
    }
    Some(Pause {
        reason: s(item, "reason").unwrap_or_default(),
        by: s(item, "by").unwrap_or_default(),
        since: n(item, "since")
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0),
    })
}
