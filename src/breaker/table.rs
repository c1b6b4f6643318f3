//! The breaker's table: one partition key, `pk`, whose prefix says what an item is and
//! who may write it (IAM's `dynamodb:LeadingKeys`, DynamoDB Developer Guide, "Using IAM
//! policy conditions for fine-grained access control"):
//!
//! | `pk` | what | written by |
//! | --- | --- | --- |
//! | `count#<queue>#<account>`, `count#<queue>#all` | keys changed per bucket (`breaker::window`) | the worker |
//! | `held#<request id>` | a held job: its message body, why, its state | the worker (created), operators (decided) |
//! | `approval#<request id>` | an operator's approval of one held body | operators only |
//! | `pause#<queue>` | whether that queue's key changes are paused, why, by whom | operators only |

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};

use crate::breaker::window::{Counted, Window};
use crate::job::{Job, Target};
use crate::outcome::Lane;

/// The partition key's attribute name.
pub const PK: &str = "pk";

/// The count item of `lane`'s jobs in `account`, or in all accounts (`None`).
pub fn count_key(lane: Lane, account: Option<&str>) -> String {
    format!("count#{}#{}", lane.as_str(), account.unwrap_or("all"))
}

pub fn held_key(request_id: &str) -> String {
    format!("held#{request_id}")
}

pub fn approval_key(request_id: &str) -> String {
    format!("approval#{request_id}")
}

pub fn pause_key(lane: Lane) -> String {
    format!("pause#{}", lane.as_str())
}

/// The key map of the item `pk`.
pub fn key(pk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_owned(), AttributeValue::S(pk))])
}

/// What an approval binds to: the SHA-256 of the held message body, hex. An approval
/// releases exactly the bytes that were held, never another job under the same request
/// id.
pub fn body_digest(body: &str) -> String {
    Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What an approval binds to besides the request id: what the job changes (its keys or
/// user, account and action, as `Job::digest` compares jobs), hashed with SHA-256 so that
/// every build of the worker computes the same. A redelivery, a copy sent again and the
/// job's own continuation have the same; another job under the same request id has not.
pub fn job_digest(job: &Job) -> String {
    let target = match &job.target {
        Target::Key {
            access_key_id,
            user_name,
        } => format!(
            "key:{access_key_id}:{}",
            user_name.as_deref().unwrap_or("").to_ascii_lowercase()
        ),
        Target::AllKeys { user_name } => format!("all_keys:{}", user_name.to_ascii_lowercase()),
        Target::Keys(keys) => {
            let mut keys = keys.clone();
            keys.sort();
            format!("keys:{}", keys.join(","))
        }
        Target::Role {
            role_name,
            session,
            every_session,
        } => format!(
            "role:{}:{}:{every_session}",
            role_name.to_ascii_lowercase(),
            session.as_deref().unwrap_or("")
        ),
    };
    body_digest(&format!(
        "{target}|{}|{}|{}|{}|{}",
        job.account_id.as_deref().unwrap_or(""),
        job.action.as_str(),
        job.revoke_sessions,
        job.quarantine_user,
        job.require_inactive
    ))
}

pub fn s(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    match item.get(name)? {
        AttributeValue::S(s) => Some(s.clone()),
        _ => None,
    }
}

pub fn n(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    match item.get(name)? {
        AttributeValue::N(n) => n.parse().ok(),
        _ => None,
    }
}

pub fn boolean(item: &HashMap<String, AttributeValue>, name: &str) -> Option<bool> {
    match item.get(name)? {
        AttributeValue::Bool(b) => Some(*b),
        _ => None,
    }
}

pub fn num(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn text(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A count item as read.
pub fn counted(item: &HashMap<String, AttributeValue>) -> Counted {
    Counted {
        total: n(item, "total").unwrap_or(0),
        oldest: n(item, "oldest").and_then(|o| u64::try_from(o).ok()),
        width: n(item, "w").and_then(|o| u64::try_from(o).ok()),
        buckets: item
            .iter()
            .filter_map(|(name, value)| {
                let index = Window::index_of(name)?;
                match value {
                    AttributeValue::N(n) => Some((index, n.parse().ok()?)),
                    _ => None,
                }
            })
            .collect(),
    }
}

/// The lane a stored `queue` attribute names.
pub fn lane_of(name: &str) -> Option<Lane> {
    match name {
        "main" => Some(Lane::Main),
        "priority" => Some(Lane::Priority),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_say_what_an_item_is() {
        assert_eq!(
            count_key(Lane::Main, Some("111122223333")),
            "count#main#111122223333"
        );
        assert_eq!(count_key(Lane::Priority, None), "count#priority#all");
        assert_eq!(held_key("r-1"), "held#r-1");
        assert_eq!(approval_key("r-1"), "approval#r-1");
        assert_eq!(pause_key(Lane::Priority), "pause#priority");
        assert_eq!(
            body_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let item = HashMap::from([
            ("total".to_owned(), num(3)),
            ("oldest".to_owned(), num(10)),
            ("b10".to_owned(), num(1)),
            ("b12".to_owned(), num(2)),
            ("pk".to_owned(), text("count#main#all")),
        ]);
        let c = counted(&item);
        assert_eq!(c.total, 3);
        assert_eq!(c.oldest, Some(10));
        assert_eq!(c.buckets.len(), 2);
    }
}
