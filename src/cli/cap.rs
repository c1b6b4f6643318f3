//! The breaker's limits seen from a batch (docs, "The breaker"): `enqueue` refuses a batch
//! that alone exceeds its queue's limits; `plan` says which accounts it would trip, with
//! what is counted already.

use std::collections::BTreeMap;

use crate::config::LaneLimits;
use crate::outcome::Lane;

/// What a batch's account is called when its jobs name none: the worker's own.
pub const OWN_ACCOUNT: &str = "(the worker's own account)";

/// Keys per account, in order.
pub type PerAccount = BTreeMap<String, u64>;

/// Adds `keys` in `account` (`None`: the worker's own).
pub fn add(per_account: &mut PerAccount, account: Option<&str>, keys: u64) {
    *per_account
        .entry(account.unwrap_or(OWN_ACCOUNT).to_owned())
        .or_default() += keys;
}

/// Each limit the batch's keys would exceed, given what is counted already
/// (`counted(None)`: in all accounts), one line each; empty when it fits.
pub fn over(
    per_account: &PerAccount,
    lane: Lane,
    limits: LaneLimits,
    counted: impl Fn(Option<&str>) -> u64,
) -> Vec<String> {
    let queue = lane.as_str();
    let mut lines = Vec::new();
    for (account, keys) in per_account {
        let already = counted(Some(account));
        let limit = u64::from(limits.max_keys_per_account);
        if already + keys > limit {
            lines.push(format!(
                "account {account}: {keys} key(s) in this batch{} exceed breaker.{queue}.max_keys_per_account = {limit}: about {} would be held for a person",
                counted_note(already),
                (already + keys - limit).min(*keys)
            ));
        }
    }
    let keys: u64 = per_account.values().sum();
    let already = counted(None);
    let limit = u64::from(limits.max_keys);
    if already + keys > limit {
        lines.push(format!(
            "all accounts: {keys} key(s) in this batch{} exceed breaker.{queue}.max_keys = {limit}: about {} would be held for a person",
            counted_note(already),
            (already + keys - limit).min(keys)
        ));
    }
    lines
}

fn counted_note(already: u64) -> String {
    if already == 0 {
        String::new()
    } else {
        format!(" and {already} changed in the current window")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LaneLimits = LaneLimits {
        max_keys_per_account: 3,
        max_keys: 5,
        fail_open: false,
    };

    #[test]
    fn a_batch_within_the_limits_trips_nothing() {
        let mut batch = PerAccount::new();
        add(&mut batch, Some("111122223333"), 3);
        add(&mut batch, None, 2);
        assert!(over(&batch, Lane::Main, LIMITS, |_| 0).is_empty());
    }

    #[test]
    fn each_limit_exceeded_is_named_with_what_is_counted() {
        let mut batch = PerAccount::new();
        add(&mut batch, Some("111122223333"), 2);
        add(&mut batch, Some("111122223333"), 2);
        add(&mut batch, Some("444455556666"), 1);
        let lines = over(&batch, Lane::Priority, LIMITS, |account| match account {
            Some("444455556666") => 3,
            Some(_) => 0,
            None => 3,
        });
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].contains("account 111122223333: 4 key(s)"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("breaker.priority.max_keys_per_account = 3"));
        assert!(lines[0].contains("about 1 would be held"));
        assert!(
            lines[1].contains("and 3 changed in the current window"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("all accounts: 5 key(s)"),
            "{}",
            lines[2]
        );
        assert!(lines[2].contains("about 3 would be held"), "{}", lines[2]);
    }
}
