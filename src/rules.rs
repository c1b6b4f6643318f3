//! The field rules of the job message (docs, "The job message"): IAM's own limits on
//! names and key ids, and the error that says which rule a body broke.

use serde::{Deserialize, Deserializer};

/// Why a body is not a valid job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidJob(pub String);

/// A character IAM allows in user and role names: `[A-Za-z0-9+=,.@_-]`.
pub fn is_iam_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

/// Whether `name` is an IAM user or role name of at most `max` characters.
pub fn is_iam_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len()) && name.chars().all(is_iam_name_char)
}

/// The rule for request ids: 1-128 of `[A-Za-z0-9._:/-]`.
pub fn check_request_id(id: &str) -> Result<(), InvalidJob> {
    check_chars("request_id", id, 1, 128, |c| {
        c.is_ascii_alphanumeric() || "._:/-".contains(c)
    })
}

/// IAM's rule for access key ids: 16-128 of `[A-Z0-9]`.
pub fn check_access_key_id(key: &str) -> Result<(), InvalidJob> {
    check_chars("access_key_id", key, 16, 128, |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit()
    })
}

/// Whether `account` is an AWS account id: exactly 12 digits.
pub fn is_account_id(account: &str) -> bool {
    account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
}

/// IAM's rule for user names: 1-64 of `[A-Za-z0-9+=,.@_-]`.
pub fn check_user_name(user: &str) -> Result<(), InvalidJob> {
    check_chars("user_name", user, 1, 64, is_iam_name_char)
}

pub fn check_chars(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), InvalidJob> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(InvalidJob(format!(
            "{field} must be {min} to {max} characters long, not {len}"
        )));
    }
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(InvalidJob(format!(
            "{field} contains a character that is not allowed: {bad:?}"
        )));
    }
    Ok(())
}

pub fn check_len(field: &str, value: Option<&str>, max: usize) -> Result<(), InvalidJob> {
    match value.map(|v| v.chars().count()) {
        Some(len) if len > max => Err(InvalidJob(format!(
            "{field} must be at most {max} characters, not {len}"
        ))),
        _ => Ok(()),
    }
}

/// An optional field that, when present, must have its type (`null` is refused).
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}
