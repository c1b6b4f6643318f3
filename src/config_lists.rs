//! How configuration lists are read: a TOML list, or one comma-separated string as an
//! environment variable writes it.

use serde::{Deserialize, Deserializer};

/// Accepts a TOML list, or one string of comma-separated items (as environment
/// variables write lists). A string that names nothing is refused: an
/// empty environment variable (`IAM_KEY_REVOKER__PROTECT__USERS=""`) must not silently
/// replace the protected list from the file with none. An explicit `[]` in the file is
/// how to say "protect nothing".
pub(crate) fn list_or_comma_separated<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        Text(String),
        Number(i64),
    }
    match ListOrString::deserialize(d)? {
        ListOrString::List(items) => Ok(items),
        ListOrString::Number(n) => Ok(vec![n.to_string()]),
        ListOrString::Text(text) => {
            let items: Vec<String> = text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if items.is_empty() {
                Err(serde::de::Error::custom(
                    "is an empty list: a list is never cleared by an empty value (write [] in the file for none)",
                ))
            } else {
                Ok(items)
            }
        }
    }
}
