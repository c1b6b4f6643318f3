//! `protect-policy`: `protect.users` as an IAM policy that denies the worker's writes on
//! those users, for the worker's role and the member accounts' role. The worker refuses
//! protected users itself; this makes IAM refuse too, should the worker (or whoever
//! holds its role) ever try. IAM cannot scope `iam:PutUserPolicy` by the policy's name
//! (its resource is the user) and a permissions boundary on the worker's role does not
//! limit what it writes onto other users: an explicit Deny on the users' ARNs is what IAM
//! enforces ("Policy evaluation logic", IAM User Guide: an explicit deny overrides any
//! allow). `protect.access_keys` has no IAM counterpart: an access key is not a resource
//! IAM policies name.

use serde_json::{json, Value};

/// Every IAM action with which the worker changes a user.
pub const WRITE_ACTIONS: &[&str] = &[
    "iam:DeleteAccessKey",
    "iam:UpdateAccessKey",
    "iam:PutUserPolicy",
    "iam:DeleteUserPolicy",
    "iam:AttachUserPolicy",
    "iam:DetachUserPolicy",
];

/// A protected pattern IAM's ARN matching cannot express.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "protect.users pattern {0:?} cannot be written as an IAM ARN: IAM matches only `*` and `?`"
)]
pub struct Inexpressible(pub String);

/// The policy document: one Deny of [`WRITE_ACTIONS`] on each protected user, in every
/// account of `partition`, with or without a path (a user's ARN carries its path:
/// `user/NAME` and `user/PATH/NAME`).
pub fn protected_users_policy(users: &[String], partition: &str) -> Result<Value, Inexpressible> {
    let resources = protected_user_arns(users, partition)?;
    let mut statements = Vec::new();
    if !resources.is_empty() {
        statements.push(json!({
            "Sid": "NeverChangeProtectedUsers",
            "Effect": "Deny",
            "Action": WRITE_ACTIONS,
            "Resource": resources,
        }));
    }
    Ok(json!({"Version": "2012-10-17", "Statement": statements}))
}

/// The ARN patterns of the protected users: each with and without a path, in every
/// account of `partition`. IAM compares the name in an ARN case-sensitively ("IAM JSON
/// policy elements: Resource", IAM User Guide), `protect.users` does not: the Deny covers
/// a name as written.
pub fn protected_user_arns(
    users: &[String],
    partition: &str,
) -> Result<Vec<String>, Inexpressible> {
    let mut resources = Vec::new();
    for pattern in users {
        if pattern.contains(['[', ']', '{', '}', '\\', '/']) {
            return Err(Inexpressible(pattern.clone()));
        }
        resources.push(format!("arn:{partition}:iam::*:user/{pattern}"));
        resources.push(format!("arn:{partition}:iam::*:user/*/{pattern}"));
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_is_denied_with_and_without_a_path() {
        let policy =
            protected_users_policy(&["break-glass-*".into(), "admin".into()], "aws").unwrap();
        let statement = &policy["Statement"][0];
        assert_eq!(statement["Effect"], "Deny");
        assert_eq!(statement["Action"], json!(WRITE_ACTIONS));
        assert_eq!(
            statement["Resource"],
            json!([
                "arn:aws:iam::*:user/break-glass-*",
                "arn:aws:iam::*:user/*/break-glass-*",
                "arn:aws:iam::*:user/admin",
                "arn:aws:iam::*:user/*/admin",
            ])
        );
        let cn = protected_users_policy(&["admin".into()], "aws-cn").unwrap();
        assert_eq!(
            cn["Statement"][0]["Resource"][0],
            "arn:aws-cn:iam::*:user/admin"
        );
    }

    #[test]
    fn globs_iam_cannot_match_are_refused_and_no_users_is_no_statement() {
        for pattern in ["ops-[ab]", "{a,b}", "a\\*"] {
            assert_eq!(
                protected_users_policy(&[pattern.into()], "aws"),
                Err(Inexpressible(pattern.into()))
            );
        }
        let empty = protected_users_policy(&[], "aws").unwrap();
        assert_eq!(empty["Statement"], json!([]));
    }
}
