//! The inline policies of whoever a session cut-off is put on (docs, "Revoking sessions",
//! "Role sessions"): a user's (`ListUserPolicies`, `GetUserPolicy`, `PutUserPolicy`,
//! `DeleteUserPolicy`) or a role's (the same for roles), and the role itself (`GetRole`).

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::iam::{next_marker, Iam};
use crate::aws::retry::RetryCounter;

/// Whose inline policies: a user's or a role's, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder<'a> {
    User(&'a str),
    Role(&'a str),
}

impl Holder<'_> {
    pub fn name(&self) -> &str {
        match self {
            Holder::User(name) | Holder::Role(name) => name,
        }
    }

    /// The key of the holder's turn: one policy change per holder at a time. A role's
    /// carries a `:`, which no IAM name has, so a user and a role of one name never
    /// share one.
    pub(super) fn turn(&self) -> String {
        match self {
            Holder::User(name) => (*name).to_owned(),
            Holder::Role(name) => format!("role:{}", name.to_ascii_lowercase()),
        }
    }
}

/// A role as `GetRole` answers (IAM API Reference, "Role").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleFacts {
    /// `AROA…`: the first part of its sessions' `aws:userid` (`principalId`).
    pub role_id: String,
    /// `/aws-service-role/…` for a service-linked role, `/aws-reserved/sso.amazonaws.com/…`
    /// for an IAM Identity Center one: IAM will not change either.
    pub path: String,
}

impl RoleFacts {
    /// Why IAM will not let anyone change the role's policies, if it will not: a
    /// service-linked role ("Using service-linked roles", IAM User Guide: only the
    /// service changes them) or an IAM Identity Center role ("IAM Identity Center
    /// roles", the same: "You can't modify them in IAM").
    pub fn unmodifiable(&self) -> Option<&'static str> {
        if self.path.starts_with("/aws-service-role/") {
            Some("a service-linked role, which only its service may change")
        } else if self.path.starts_with("/aws-reserved/sso.amazonaws.com/") {
            Some("an IAM Identity Center role, which only Identity Center may change (revoke the permission set's sessions there)")
        } else {
            None
        }
    }
}

impl Iam {
    /// The role `role`: its id and path; `None` when there is no such role.
    pub async fn role(
        &self,
        role: &str,
        retries: &RetryCounter,
    ) -> Result<Option<RoleFacts>, AwsError> {
        let got = self
            .request("GetRole", retries, || {
                self.client.get_role().role_name(role).send()
            })
            .await;
        match got {
            Ok(out) => Ok(out.role().map(|r| RoleFacts {
                role_id: r.role_id().to_owned(),
                path: r.path().to_owned(),
            })),
            Err(e) if e.class == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The names of `holder`'s inline policies; `None` when there is no such user or role.
    pub(super) async fn policy_names(
        &self,
        holder: Holder<'_>,
        retries: &RetryCounter,
    ) -> Result<Option<Vec<String>>, AwsError> {
        match holder {
            Holder::User(user) => {
                let pages = self
                    .pages(
                        "ListUserPolicies",
                        retries,
                        |marker| {
                            self.client
                                .list_user_policies()
                                .user_name(user)
                                .set_marker(marker)
                                .send()
                        },
                        |page| next_marker(page.is_truncated(), page.marker()),
                    )
                    .await?;
                Ok(pages.map(|pages| {
                    pages
                        .iter()
                        .flat_map(|page| page.policy_names().iter().cloned())
                        .collect()
                }))
            }
            Holder::Role(role) => {
                let pages = self
                    .pages(
                        "ListRolePolicies",
                        retries,
                        |marker| {
                            self.client
                                .list_role_policies()
                                .role_name(role)
                                .set_marker(marker)
                                .send()
                        },
                        |page| next_marker(page.is_truncated(), page.marker()),
                    )
                    .await?;
                Ok(pages.map(|pages| {
                    pages
                        .iter()
                        .flat_map(|page| page.policy_names().iter().cloned())
                        .collect()
                }))
            }
        }
    }

    /// The document of `holder`'s inline policy `name`, as IAM returns it (URL-encoded);
    /// `None` when it is gone.
    pub(super) async fn inline_policy(
        &self,
        holder: Holder<'_>,
        name: &str,
        retries: &RetryCounter,
    ) -> Result<Option<String>, AwsError> {
        let got = match holder {
            Holder::User(user) => self
                .request("GetUserPolicy", retries, || {
                    self.client
                        .get_user_policy()
                        .user_name(user)
                        .policy_name(name)
                        .send()
                })
                .await
                .map(|out| out.policy_document().to_owned()),
            Holder::Role(role) => self
                .request("GetRolePolicy", retries, || {
                    self.client
                        .get_role_policy()
                        .role_name(role)
                        .policy_name(name)
                        .send()
                })
                .await
                .map(|out| out.policy_document().to_owned()),
        };
        match got {
            Ok(document) => Ok(Some(document)),
            Err(e) if e.class == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn put_inline_policy(
        &self,
        holder: Holder<'_>,
        name: &str,
        document: &str,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        match holder {
            Holder::User(user) => self
                .request("PutUserPolicy", retries, || {
                    self.client
                        .put_user_policy()
                        .user_name(user)
                        .policy_name(name)
                        .policy_document(document)
                        .send()
                })
                .await
                .map(drop),
            Holder::Role(role) => self
                .request("PutRolePolicy", retries, || {
                    self.client
                        .put_role_policy()
                        .role_name(role)
                        .policy_name(name)
                        .policy_document(document)
                        .send()
                })
                .await
                .map(drop),
        }
    }

    /// Deletes `holder`'s inline policy `name`; one already gone is no error.
    pub(super) async fn delete_inline_policy(
        &self,
        holder: Holder<'_>,
        name: &str,
        retries: &RetryCounter,
    ) -> Result<(), AwsError> {
        let deleted = match holder {
            Holder::User(user) => self
                .request("DeleteUserPolicy", retries, || {
                    self.client
                        .delete_user_policy()
                        .user_name(user)
                        .policy_name(name)
                        .send()
                })
                .await
                .map(drop),
            Holder::Role(role) => self
                .request("DeleteRolePolicy", retries, || {
                    self.client
                        .delete_role_policy()
                        .role_name(role)
                        .policy_name(name)
                        .send()
                })
                .await
                .map(drop),
        };
        match deleted {
            Err(e) if e.class != ErrorClass::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
