//! `protect-policy`: `protect.users` and `protect.roles` as an IAM policy that denies the
//! worker's writes on those users and roles (and on the worker's own roles, always), for
//! the worker's role and the member accounts' role. The worker refuses
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
    "iam:DeleteLoginProfile",
];

/// Every IAM action with which the worker changes a role (a role's session cut-off).
pub const ROLE_WRITE_ACTIONS: &[&str] = &["iam:PutRolePolicy", "iam:DeleteRolePolicy"];

/// The roles the shipped stacks name, the worker's own: never cut off.
pub const OWN_ROLES: &str = "iam-key-revoker*";

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
    protected_policy(users, &[], partition)
}

/// [`protected_users_policy`], and a Deny of [`ROLE_WRITE_ACTIONS`] on each protected
/// role and on the worker's own roles ([`OWN_ROLES`]), which is always there.
pub fn protected_policy(
    users: &[String],
    roles: &[String],
    partition: &str,
) -> Result<Value, Inexpressible> {
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
    let mut roles = roles.to_vec();
    roles.insert(0, OWN_ROLES.to_owned());
    statements.push(json!({
        "Sid": "NeverChangeProtectedRoles",
        "Effect": "Deny",
        "Action": ROLE_WRITE_ACTIONS,
        "Resource": protected_role_arns(&roles, partition)?,
    }));
    Ok(json!({"Version": "2012-10-17", "Statement": statements}))
}

/// The ARN patterns of the protected roles, with and without a path, in every account of
/// `partition`.
pub fn protected_role_arns(
    roles: &[String],
    partition: &str,
) -> Result<Vec<String>, Inexpressible> {
    arns("role", roles, partition)
}

/// The ARN patterns of the protected users: each with and without a path, in every
/// account of `partition`. IAM compares the name in an ARN case-sensitively ("IAM JSON
/// policy elements: Resource", IAM User Guide), `protect.users` does not: the Deny covers
/// a name as written.
pub fn protected_user_arns(
    users: &[String],
    partition: &str,
) -> Result<Vec<String>, Inexpressible> {
    arns("user", users, partition)
}

/// `arn:<partition>:iam::*:<kind>/<pattern>` and `…/*/<pattern>` for each pattern.
fn arns(kind: &str, patterns: &[String], partition: &str) -> Result<Vec<String>, Inexpressible> {
    let mut resources = Vec::new();
    for pattern in patterns {
        if pattern.contains(['[', ']', '{', '}', '\\', '/']) {
            return Err(Inexpressible(pattern.clone()));
        }
        resources.push(format!("arn:{partition}:iam::*:{kind}/{pattern}"));
        resources.push(format!("arn:{partition}:iam::*:{kind}/*/{pattern}"));
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
        assert_eq!(empty["Statement"][0]["Sid"], "NeverChangeProtectedRoles");
        assert_eq!(empty["Statement"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_workers_own_roles_and_each_protected_role_are_denied_role_writes() {
        let policy = protected_policy(&[], &["prod-*".into()], "aws").unwrap();
        let statement = &policy["Statement"][0];
        assert_eq!(statement["Effect"], "Deny");
        assert_eq!(statement["Action"], json!(ROLE_WRITE_ACTIONS));
        assert_eq!(
            statement["Resource"],
            json!([
                "arn:aws:iam::*:role/iam-key-revoker*",
                "arn:aws:iam::*:role/*/iam-key-revoker*",
                "arn:aws:iam::*:role/prod-*",
                "arn:aws:iam::*:role/*/prod-*",
            ])
        );
    }
}
