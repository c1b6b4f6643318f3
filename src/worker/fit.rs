//! Cutting an event to the size a sink takes (docs, "Notifications"): an event is never
//! dropped for its size. While its JSON is longer than the limit, the list that takes
//! the most room anywhere in it loses the second half of its items; once no list has
//! any, the longest string is cut in half. The top-level `truncated` object names each
//! cut by its JSON pointer and gives the full length (items, or characters).

use serde_json::{Map, Value};

/// Strings shorter than this are left whole.
const SHORTEST_CUT: usize = 64;

/// `value` as JSON of at most `max` bytes where cutting can get it there.
pub fn fit(mut value: Value, max: usize) -> String {
    let mut text = value.to_string();
    let mut cuts = Map::new();
    while text.len() > max {
        let Some((_, pointer)) = largest(&value, "", &|v| match v {
            Value::Array(items) => !items.is_empty(),
            _ => false,
        })
        .or_else(|| {
            largest(
                &value,
                "",
                &|v| matches!(v, Value::String(s) if s.chars().count() >= SHORTEST_CUT),
            )
        }) else {
            break;
        };
        match value.pointer_mut(&pointer) {
            Some(Value::Array(items)) => {
                cuts.entry(pointer.clone()).or_insert(items.len().into());
                items.truncate(items.len() / 2);
            }
            Some(Value::String(s)) => {
                let chars = s.chars().count();
                cuts.entry(pointer.clone()).or_insert(chars.into());
                *s = s.chars().take(chars / 2).chain(['…']).collect();
            }
            _ => break,
        }
        if let Value::Object(object) = &mut value {
            object.insert("truncated".into(), Value::Object(cuts.clone()));
        }
        text = value.to_string();
    }
    text
}

/// The JSON pointer of the value below `value` (at `at`), among those `wanted` accepts,
/// whose JSON is longest, and that length.
fn largest(value: &Value, at: &str, wanted: &dyn Fn(&Value) -> bool) -> Option<(usize, String)> {
    let mut best: Option<(usize, String)> = None;
    let mut take = |candidate: Option<(usize, String)>| {
        if let Some(candidate) = candidate {
            if best.as_ref().is_none_or(|(size, _)| candidate.0 > *size) {
                best = Some(candidate);
            }
        }
    };
    if !at.is_empty() && wanted(value) {
        take(Some((value.to_string().len(), at.to_owned())));
    }
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                if at.is_empty() && key == "truncated" {
                    continue;
                }
                let escaped = key.replace('~', "~0").replace('/', "~1");
                take(largest(child, &format!("{at}/{escaped}"), wanted));
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                take(largest(child, &format!("{at}/{i}"), wanted));
            }
        }
        _ => {}
    }
    best
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_event_that_fits_is_left_whole() {
        let value = json!({"outcome": "deleted", "keys": [1, 2, 3]});
        assert_eq!(fit(value.clone(), 1000), value.to_string());
    }

    #[test]
    fn the_list_taking_most_room_is_halved_until_it_fits_and_the_cut_is_named() {
        let keys: Vec<Value> = (0..1000)
            .map(|i| json!({"access_key_id": format!("AKIA{i:016}")}))
            .collect();
        let value = json!({"summary": "Deleted 1000 keys", "keys": keys, "last_used": [1, 2]});
        let text = fit(value, 10_000);
        assert!(text.len() <= 10_000, "{}", text.len());
        let back: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(back["truncated"], json!({"/keys": 1000}));
        assert_eq!(
            back["last_used"],
            json!([1, 2]),
            "the smaller list is left alone"
        );
        assert!(back["keys"]
            .as_array()
            .is_some_and(|k| !k.is_empty() && k.len() < 1000));
        assert_eq!(back["summary"], "Deleted 1000 keys");
    }

    #[test]
    fn a_nested_list_is_found_and_named_by_its_pointer() {
        let events: Vec<Value> = (0..500)
            .map(|i| json!({"eventName": format!("Call{i}")}))
            .collect();
        let value = json!({"report": {"non_read_only": events}});
        let text = fit(value, 2_000);
        let back: Value = serde_json::from_str(&text).expect("JSON");
        assert!(text.len() <= 2_000);
        assert_eq!(back["truncated"], json!({"/report/non_read_only": 500}));
    }

    #[test]
    fn with_no_list_left_the_longest_string_is_cut() {
        let value = json!({"detail": "x".repeat(5_000), "summary": "short"});
        let text = fit(value, 1_000);
        let back: Value = serde_json::from_str(&text).expect("JSON");
        assert!(text.len() <= 1_000, "{}", text.len());
        assert_eq!(back["truncated"], json!({"/detail": 5_000}));
        assert!(back["detail"].as_str().is_some_and(|d| d.ends_with('…')));
        assert_eq!(back["summary"], "short");
    }
}
