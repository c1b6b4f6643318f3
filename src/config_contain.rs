//! `[contain]`: what becomes of what the leaked key made (docs, "What the leaked key
//! made").

use serde::{Deserialize, Serialize};

/// What the leaked key made (docs, "What the leaked key made").
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainSection {
    /// Access keys the leaked key created: revoked by a follow-up job, or reported.
    pub created_keys: ContainKeys,
    /// Console passwords the leaked key created or reset: removed by a follow-up job, or
    /// reported.
    pub login_profiles: ContainLogins,
}

/// What becomes of a console password the leaked key created or reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainLogins {
    /// A follow-up job deletes it (`DeleteLoginProfile`).
    #[default]
    Delete,
    /// Listed in the report for a person; nothing changes.
    Report,
}

/// What becomes of an access key the leaked key created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainKeys {
    /// A follow-up job deactivates it (staged when `intake.delete_after` is set).
    #[default]
    Deactivate,
    /// A follow-up job deletes it.
    Delete,
    /// Listed in the report for a person; nothing changes.
    Report,
}
