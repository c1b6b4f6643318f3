//! The job message (docs, "The job message"): strict parsing and validation, SNS envelope
//! included. A body either becomes a [`Job`] that satisfies every rule, or an
//! [`InvalidJob`] that says which rule it broke.

use serde::{Deserialize, Serialize};

pub use crate::continuation::{Continuation, KnownOwner, LastUsed, Origin, OwnerSource, MAX_KEYS};
pub use crate::rules::{
    check_access_key_id, check_request_id, check_user_name, is_account_id, is_iam_name,
    is_iam_name_char, InvalidJob,
};
pub use crate::staging::DeleteAfter;

mod parse;
pub use parse::{body_json, parse, parse_json, salvage_request_id};

/// The fields of a job message (docs, "The job message"), and no others; a message of
/// the worker's own may also carry `continuation` (docs, "Continuations").
pub const FIELDS: &[&str] = &[
    "request_id",
    "access_key_id",
    "user_name",
    "all_keys",
    "action",
    "account_id",
    "reason",
    "requested_by",
    "batch_id",
    "revoke_sessions",
    "quarantine_user",
    "report_activity",
    "require_status",
    "delete_after",
    "role_name",
    "detected_at",
];

/// What to do with the key(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Delete the key (irreversible).
    #[default]
    Delete,
    /// Set the key `Inactive` (reversible).
    Deactivate,
}

impl Action {
    /// The outcome of a key this action was applied to: `deleted` or `deactivated`.
    pub fn outcome_name(self) -> &'static str {
        match self {
            Action::Delete => "deleted",
            Action::Deactivate => "deactivated",
        }
    }

    /// The contract's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Delete => "delete",
            Action::Deactivate => "deactivate",
        }
    }
}

/// Which key(s) a job is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One key; the owner is looked up when `user_name` is absent.
    Key {
        access_key_id: String,
        user_name: Option<String>,
    },
    /// Every key of one user (offboarding).
    AllKeys { user_name: String },
    /// Several keys named alone, each revoked from the owner IAM reports for it: a
    /// security event that names more than one key (docs, "Security events"). No job
    /// message has this form.
    Keys(Vec<String>),
    /// A role whose sessions issued before now are cut off (docs, "Role sessions"); no
    /// key changes. `session` narrows the cut-off to one role session, the
    /// `principalId` (`AROA…:<session name>`) a GuardDuty finding names; a job message
    /// names the role alone, which cuts off every session of it.
    Role {
        role_name: String,
        session: Option<String>,
        /// Every session of the role, also when the finding names one
        /// (`intake.role_session_scope = "role"`); its `session` is then verified only.
        every_session: bool,
    },
}

/// A validated job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub request_id: String,
    pub target: Target,
    pub action: Action,
    pub account_id: Option<String>,
    pub reason: Option<String>,
    pub requested_by: Option<String>,
    pub batch_id: Option<String>,
    /// Also cut off the temporary credentials issued before the revocation (docs,
    /// "Revoking sessions").
    pub revoke_sessions: bool,
    /// Also attach the quarantine policy to the user (docs, "Quarantine").
    pub quarantine_user: bool,
    /// Also report what the key did, from CloudTrail (docs, "Activity reports"). Not
    /// part of the digest: it changes nothing in IAM.
    pub report_activity: bool,
    /// Change the key only if IAM reports it `Inactive` (the scheduled delete of a staged
    /// revocation; docs, "Required status"); otherwise the job ends `cancelled`.
    pub require_inactive: bool,
    /// Deactivate now, delete then (docs, "Staged revocation"): a schedule per key.
    pub delete_after: Option<Box<DeleteAfter>>,
    /// When the exposure was detected (Unix milliseconds): a producer's `detected_at`, a
    /// Health event's `startTime`, a finding's `eventFirstSeen` (docs, "The clock from
    /// exposure"). Not part of the digest: it changes nothing in IAM.
    pub detected_at_ms: Option<u64>,
    /// Keys a person restored after this job was sent (docs, "Staged revocation"):
    /// left alone by this delivery. Never part of a message.
    pub spared: Vec<String>,
    /// The security event the job came from; `None` for a job message.
    pub origin: Option<Origin>,
    /// Owners named for keys the job names alone (a Health event's user; owners IAM
    /// named to an earlier delivery). Not part of what the job asks for: the digest
    /// leaves them out.
    pub owners: Vec<KnownOwner>,
    /// Set on a message of the worker's own that carries on a job (docs,
    /// "Continuations").
    pub continuation: Option<Continuation>,
    /// The further parts of a security event that names more keys than one job holds
    /// ([`MAX_KEYS`]): each goes on as a job of its own before this one is worked
    /// (docs, "Security events"). Never part of a message.
    pub parts: Vec<Vec<String>>,
}

impl Job {
    /// A job of `target` and `action` under `request_id`, asking for nothing more: the
    /// start of a job the worker writes itself.
    pub fn new(request_id: String, target: Target, action: Action) -> Self {
        Self {
            request_id,
            target,
            action,
            account_id: None,
            reason: None,
            requested_by: None,
            batch_id: None,
            revoke_sessions: false,
            quarantine_user: false,
            report_activity: false,
            require_inactive: false,
            delete_after: None,
            detected_at_ms: None,
            spared: Vec::new(),
            origin: None,
            owners: Vec::new(),
            continuation: None,
            parts: Vec::new(),
        }
    }

    /// A digest of what the job does to IAM: its target (key, user or all keys), account
    /// and action. Two deliveries with the same request id and the same digest are the
    /// same job; the same request id with another digest is a conflict. Reason, requester
    /// and batch are not part of it: they change nothing in IAM. User names are compared
    /// as IAM compares them, ignoring case.
    pub fn digest(&self) -> u64 {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        match &self.target {
            Target::Key {
                access_key_id,
                user_name,
            } => {
                "key".hash(&mut hasher);
                access_key_id.hash(&mut hasher);
                user_name
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .hash(&mut hasher);
            }
            Target::AllKeys { user_name } => {
                "all_keys".hash(&mut hasher);
                user_name.to_ascii_lowercase().hash(&mut hasher);
            }
            Target::Keys(keys) => {
                "keys".hash(&mut hasher);
                let mut keys = keys.clone();
                keys.sort();
                keys.hash(&mut hasher);
            }
            Target::Role {
                role_name,
                session,
                every_session,
            } => {
                "role".hash(&mut hasher);
                role_name.to_ascii_lowercase().hash(&mut hasher);
                session.hash(&mut hasher);
                every_session.hash(&mut hasher);
            }
        }
        self.account_id.hash(&mut hasher);
        self.action.as_str().hash(&mut hasher);
        self.revoke_sessions.hash(&mut hasher);
        self.quarantine_user.hash(&mut hasher);
        self.require_inactive.hash(&mut hasher);
        self.delete_after
            .as_deref()
            .map(DeleteAfter::text)
            .hash(&mut hasher);
        hasher.finish()
    }

    /// The user the job names, if it names one.
    pub fn user_name(&self) -> Option<&str> {
        match &self.target {
            Target::Key { user_name, .. } => user_name.as_deref(),
            Target::AllKeys { user_name } => Some(user_name),
            Target::Keys(_) | Target::Role { .. } => None,
        }
    }

    /// The role the job names, if it is a role job.
    pub fn role_name(&self) -> Option<&str> {
        match &self.target {
            Target::Role { role_name, .. } => Some(role_name),
            _ => None,
        }
    }

    /// The message body for this job: a JSON object with exactly the contract's fields.
    /// A job of several keys (from a security event) has no such form: its body lists
    /// them under `access_key_ids`, which [`parse`] refuses.
    pub fn to_body(&self) -> String {
        let mut object = serde_json::Map::new();
        let mut put = |field: &str, value: serde_json::Value| {
            object.insert(field.to_owned(), value);
        };
        put("request_id", self.request_id.clone().into());
        match &self.target {
            Target::Key {
                access_key_id,
                user_name,
            } => {
                put("access_key_id", access_key_id.clone().into());
                if let Some(user) = user_name {
                    put("user_name", user.clone().into());
                }
            }
            Target::AllKeys { user_name } => {
                put("user_name", user_name.clone().into());
                put("all_keys", true.into());
            }
            // Several keys travel only in a continuation, which lists them all.
            Target::Keys(_) => {}
            // A finding's session is the finding's: a role job from an event is never
            // sent again, and a job message names the role alone.
            Target::Role { role_name, .. } => put("role_name", role_name.clone().into()),
        }
        if !matches!(self.target, Target::Role { .. }) {
            put("action", self.action.as_str().into());
        }
        if self.revoke_sessions {
            put("revoke_sessions", true.into());
        }
        if self.quarantine_user {
            put("quarantine_user", true.into());
        }
        if self.report_activity {
            put("report_activity", true.into());
        }
        if self.require_inactive {
            put("require_status", "Inactive".into());
        }
        if let Some(after) = &self.delete_after {
            put("delete_after", after.text().into());
        }
        if let Some(at) = self.detected_at_ms {
            put("detected_at", crate::detection::text(at).into());
        }
        for (field, value) in [
            ("account_id", &self.account_id),
            ("reason", &self.reason),
            ("requested_by", &self.requested_by),
            ("batch_id", &self.batch_id),
        ] {
            if let Some(value) = value {
                put(field, value.clone().into());
            }
        }
        let continued = match (&self.continuation, &self.target) {
            (Some(c), _) => Some(c.clone()),
            (None, Target::Keys(_)) => Some(Continuation::default()),
            (None, _) => None,
        };
        if let Some(continuation) = continued {
            put("continuation", self.continuation_json(&continuation));
        }
        serde_json::Value::Object(object).to_string()
    }

    /// The `continuation` object (docs, "Continuations"): every key the job names,
    /// with the owner learned and what an earlier delivery did to it, and the security
    /// event the job came from.
    fn continuation_json(&self, continuation: &Continuation) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .access_key_ids()
            .into_iter()
            .map(|key| {
                let mut entry = serde_json::Map::new();
                match self.known_owner(&key) {
                    Some(owner) if owner.source == OwnerSource::Learned => {
                        entry.insert("user_name".into(), owner.user_name.clone().into());
                    }
                    Some(owner) => {
                        entry.insert("event_user_name".into(), owner.user_name.clone().into());
                    }
                    None => {}
                }
                if let Some((_, result)) = continuation.changed.iter().find(|(k, _)| *k == key) {
                    entry.insert("result".into(), result.clone().into());
                }
                entry.insert("access_key_id".into(), key.into());
                serde_json::Value::Object(entry)
            })
            .collect();
        let mut object = serde_json::Map::new();
        object.insert("deliveries".into(), continuation.deliveries.into());
        if let Some(at) = continuation.enqueued_at_ms {
            object.insert("enqueued_at_ms".into(), at.into());
        }
        if !continuation.last_used.is_empty() {
            object.insert(
                "last_used".into(),
                serde_json::to_value(&continuation.last_used).unwrap_or_default(),
            );
        }
        object.insert("keys".into(), keys.into());
        if let Some(at) = continuation.expires_at_ms {
            object.insert("expires_at_ms".into(), at.into());
        }
        if let Some(at) = continuation.due_at {
            object.insert("due_at".into(), at.into());
        }
        if let Some(mac) = &continuation.mac {
            object.insert("mac".into(), mac.clone().into());
        }
        if let Some(origin) = &self.origin {
            object.insert("event_source".into(), origin.source.into());
            object.insert("event_type".into(), origin.event_type.clone().into());
            for (field, value) in [
                ("exposed_url", &origin.exposed_url),
                ("severity", &origin.severity),
                ("finding_arn", &origin.finding_arn),
            ] {
                if let Some(value) = value {
                    object.insert(field.into(), value.clone().into());
                }
            }
        }
        serde_json::Value::Object(object)
    }

    /// The text the worker's MAC covers: the body as [`Job::to_body`] writes it, without
    /// the MAC itself.
    pub fn canonical(&self) -> String {
        let mut unsigned = self.clone();
        if let Some(continuation) = unsigned.continuation.as_mut() {
            continuation.mac = None;
        }
        unsigned.to_body()
    }

    /// Part `n` (from 2) of a security event naming more keys than one job holds: those
    /// `keys`, as a job of its own whose request id says which part (docs, "Security
    /// events").
    pub fn part(&self, n: usize, keys: &[String]) -> Job {
        let suffix = format!(":part{n}");
        let request_id = if self.request_id.len() + suffix.len() <= 128 {
            format!("{}{suffix}", self.request_id)
        } else {
            format!(
                "part-{}{suffix}",
                crate::sessions::request_digest(&self.request_id)
            )
        };
        let target = match keys {
            [key] => Target::Key {
                access_key_id: key.clone(),
                user_name: None,
            },
            keys => Target::Keys(keys.to_vec()),
        };
        Job {
            request_id,
            target,
            owners: self
                .owners
                .iter()
                .filter(|o| keys.contains(&o.access_key_id))
                .cloned()
                .collect(),
            continuation: Some(Continuation::default()),
            parts: Vec::new(),
            ..self.clone()
        }
    }

    /// This job with none of its continuation's claims: what a continuation that does
    /// not verify leaves (docs, "Continuations"). The keys it names stay the job's
    /// target, worked as if a producer had named them alone; a scheduled delete's due
    /// time stays, since it can only make the worker do less.
    pub fn without_claims(&self) -> Job {
        let mut job = self.clone();
        job.owners.clear();
        job.origin = None;
        job.continuation = self.continuation.as_ref().and_then(|c| {
            c.due_at.map(|due_at| Continuation {
                due_at: Some(due_at),
                ..Continuation::default()
            })
        });
        job
    }

    /// This job carried on by a message of the worker's own (docs, "Continuations"):
    /// `learned` are keys with the owner IAM named and, where this delivery changed the
    /// key, how. Owners, changes and deliveries counted before stay.
    pub fn continued(&self, learned: &[(String, String, Option<String>)]) -> Job {
        let mut next = self.clone();
        let mut continuation = self.continuation.clone().unwrap_or_default();
        // Signed again when it is sent, for its own time.
        continuation.mac = None;
        continuation.expires_at_ms = None;
        for (key, user, how) in learned {
            next.owners.retain(|o| o.access_key_id != *key);
            next.owners.push(KnownOwner {
                access_key_id: key.clone(),
                user_name: user.clone(),
                source: OwnerSource::Learned,
            });
            if let Some(how) = how {
                if !continuation.changed.iter().any(|(k, _)| k == key) {
                    continuation.changed.push((key.clone(), how.clone()));
                }
            }
        }
        next.continuation = Some(continuation);
        next
    }

    /// Whether the job names its keys without their user: IAM's owner lookup finds it,
    /// and can no longer once a key is deleted.
    pub fn names_keys_alone(&self) -> bool {
        matches!(
            self.target,
            Target::Key {
                user_name: None,
                ..
            } | Target::Keys(_)
        )
    }

    /// The owner named for `key`, if the job's source named one.
    pub fn known_owner(&self, key: &str) -> Option<&KnownOwner> {
        self.owners.iter().find(|o| o.access_key_id == key)
    }

    /// The key the job names, if it names one.
    pub fn access_key_id(&self) -> Option<&str> {
        match &self.target {
            Target::Key { access_key_id, .. } => Some(access_key_id),
            Target::AllKeys { .. } | Target::Keys(_) | Target::Role { .. } => None,
        }
    }

    /// Every key the job names.
    pub fn access_key_ids(&self) -> Vec<String> {
        match &self.target {
            Target::Key { access_key_id, .. } => vec![access_key_id.clone()],
            Target::AllKeys { .. } | Target::Role { .. } => Vec::new(),
            Target::Keys(keys) => keys.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

    #[test]
    fn the_digest_covers_what_changes_iam_and_nothing_else() {
        let base = parse(&format!(
            r#"{{"request_id":"r","access_key_id":"{KEY}","user_name":"alice"}}"#
        ))
        .unwrap();
        let same = [
            format!(
                r#"{{"request_id":"r","access_key_id":"{KEY}","user_name":"Alice","reason":"x","batch_id":"b","requested_by":"y"}}"#
            ),
            format!(
                r#"{{"request_id":"r","access_key_id":"{KEY}","user_name":"alice","action":"delete"}}"#
            ),
        ];
        for body in same {
            assert_eq!(parse(&body).unwrap().digest(), base.digest(), "{body}");
        }
        let different = [
            r#"{"request_id":"r","access_key_id":"AKIAOTHERKEY00000001","user_name":"alice"}"#
                .to_owned(),
            format!(r#"{{"request_id":"r","access_key_id":"{KEY}","user_name":"bob"}}"#),
            format!(r#"{{"request_id":"r","access_key_id":"{KEY}"}}"#),
            format!(
                r#"{{"request_id":"r","access_key_id":"{KEY}","user_name":"alice","action":"deactivate"}}"#
            ),
            format!(
                r#"{{"request_id":"r","access_key_id":"{KEY}","user_name":"alice","account_id":"123456789012"}}"#
            ),
            r#"{"request_id":"r","user_name":"alice","all_keys":true}"#.to_owned(),
        ];
        for body in different {
            assert_ne!(parse(&body).unwrap().digest(), base.digest(), "{body}");
        }
    }

    #[test]
    fn valid_jobs() {
        let job = parse(&format!(
            r#"{{"request_id":"r-1","access_key_id":"{KEY}","user_name":"alice"}}"#
        ))
        .unwrap();
        assert_eq!(job.request_id, "r-1");
        assert_eq!(job.action, Action::Delete);
        assert_eq!(
            job.target,
            Target::Key {
                access_key_id: KEY.into(),
                user_name: Some("alice".into())
            }
        );

        let job = parse(&format!(
            r#"{{"request_id":"a.b:c/d-e_","access_key_id":"{KEY}"}}"#
        ))
        .unwrap();
        assert_eq!(job.user_name(), None);
        assert_eq!(job.access_key_id(), Some(KEY));

        let job = parse(
            r#"{"request_id":"r","user_name":"bob+x=y,z.w@q_-","all_keys":true,"action":"deactivate",
                "account_id":"222222222222","reason":"offboarding","requested_by":"hr","batch_id":"b1"}"#,
        )
        .unwrap();
        assert_eq!(
            job.target,
            Target::AllKeys {
                user_name: "bob+x=y,z.w@q_-".into()
            }
        );
        assert_eq!(job.action, Action::Deactivate);
        assert_eq!(job.account_id.as_deref(), Some("222222222222"));
        assert_eq!(job.batch_id.as_deref(), Some("b1"));

        let job = parse(&format!(
            r#"{{"request_id":"r","access_key_id":"{KEY}","all_keys":false}}"#
        ))
        .unwrap();
        assert_eq!(job.access_key_id(), Some(KEY));
    }

    #[test]
    fn a_job_round_trips_through_its_body() {
        for body in [
            format!(r#"{{"request_id":"r","access_key_id":"{KEY}","user_name":"u","reason":"why"}}"#),
            format!(r#"{{"request_id":"r","access_key_id":"{KEY}","action":"deactivate","account_id":"123456789012"}}"#),
            r#"{"request_id":"r","user_name":"u","all_keys":true,"batch_id":"b","requested_by":"hr"}"#.to_owned(),
        ] {
            let job = parse(&body).unwrap();
            assert_eq!(parse(&job.to_body()).unwrap(), job, "{body}");
        }
    }

    #[test]
    fn sns_envelope_is_unwrapped() {
        let inner = format!(r#"{{"request_id":"sns-1","access_key_id":"{KEY}"}}"#);
        let envelope = serde_json::json!({
            "Type": "Notification",
            "MessageId": "m",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:leaks",
            "Message": inner,
            "Timestamp": "2026-01-01T00:00:00.000Z",
        });
        let job = parse(&envelope.to_string()).unwrap();
        assert_eq!(job.request_id, "sns-1");
    }

    /// Every rule of the job message (docs, "The job message"), each broken once.
    #[test]
    fn every_rule_is_enforced() {
        let long = |n: usize, c: char| std::iter::repeat_n(c, n).collect::<String>();
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "empty body"),
            ("not json".into(), "not JSON"),
            ("[]".into(), "array"),
            ("\"text\"".into(), "string"),
            ("{}".into(), "empty object"),
            (
                format!(r#"{{"access_key_id":"{KEY}"}}"#),
                "missing request_id",
            ),
            (
                format!(r#"{{"request_id":"","access_key_id":"{KEY}"}}"#),
                "empty request_id",
            ),
            (
                format!(
                    r#"{{"request_id":"{}","access_key_id":"{KEY}"}}"#,
                    long(129, 'r')
                ),
                "long request_id",
            ),
            (
                format!(r#"{{"request_id":"a b","access_key_id":"{KEY}"}}"#),
                "space in request_id",
            ),
            (
                format!(r#"{{"request_id":"é","access_key_id":"{KEY}"}}"#),
                "non-ascii request_id",
            ),
            (
                format!(r#"{{"request_id":7,"access_key_id":"{KEY}"}}"#),
                "numeric request_id",
            ),
            (
                r#"{"request_id":"r","access_key_id":"AKIASHORT"}"#.into(),
                "short key",
            ),
            (
                format!(
                    r#"{{"request_id":"r","access_key_id":"{}"}}"#,
                    long(129, 'A')
                ),
                "long key",
            ),
            (
                r#"{"request_id":"r","access_key_id":"akiaiosfodnn7example"}"#.into(),
                "lowercase key",
            ),
            (
                r#"{"request_id":"r","access_key_id":"AKIAIOSFODNN7EXAMP-E"}"#.into(),
                "dash in key",
            ),
            (
                format!(r#"{{"request_id":"r","access_key_id":"{KEY}","user_name":""}}"#),
                "empty user",
            ),
            (
                format!(
                    r#"{{"request_id":"r","access_key_id":"{KEY}","user_name":"{}"}}"#,
                    long(65, 'u')
                ),
                "long user",
            ),
            (
                format!(r#"{{"request_id":"r","access_key_id":"{KEY}","user_name":"a/b"}}"#),
                "slash in user",
            ),
            (
                format!(r#"{{"request_id":"r","access_key_id":"{KEY}","user_name":null}}"#),
                "null user",
            ),
            (
                format!(
                    r#"{{"request_id":"r","access_key_id":"{KEY}","all_keys":true,"user_name":"u"}}"#
                ),
                "key and all_keys",
            ),
            (
                r#"{"request_id":"r","all_keys":true}"#.into(),
                "all_keys without user",
            ),
            (
                r#"{"request_id":"r","user_name":"u"}"#.into(),
                "neither key nor all_keys",
            ),
            (
                r#"{"request_id":"r","user_name":"u","all_keys":"true"}"#.into(),
                "all_keys as string",
            ),
            (
                format!(r#"{{"request_id":"r","access_key_id":"{KEY}","action":"destroy"}}"#),
                "unknown action",
            ),
            (
                format!(r#"{{"request_id":"r","access_key_id":"{KEY}","action":"Delete"}}"#),
                "action case",
            ),
            (
                format!(
                    r#"{{"request_id":"r","access_key_id":"{KEY}","account_id":"12345678901"}}"#
                ),
                "short account",
            ),
            (
                format!(
                    r#"{{"request_id":"r","access_key_id":"{KEY}","account_id":"12345678901a"}}"#
                ),
                "letter in account",
            ),
            (
                format!(
                    r#"{{"request_id":"r","access_key_id":"{KEY}","account_id":123456789012}}"#
                ),
                "numeric account",
            ),
            (
                format!(
                    r#"{{"request_id":"r","access_key_id":"{KEY}","reason":"{}"}}"#,
                    long(1025, 'x')
                ),
                "long reason",
            ),
            (
                format!(
                    r#"{{"request_id":"r","access_key_id":"{KEY}","requested_by":"{}"}}"#,
                    long(257, 'x')
                ),
                "long requested_by",
            ),
            (
                format!(
                    r#"{{"request_id":"r","access_key_id":"{KEY}","batch_id":"{}"}}"#,
                    long(129, 'x')
                ),
                "long batch_id",
            ),
            (
                format!(r#"{{"request_id":"r","access_key_id":"{KEY}","colour":"red"}}"#),
                "unknown field",
            ),
            (
                format!(r#"{{"request_id":"r","request_id":"s","access_key_id":"{KEY}"}}"#),
                "duplicate field",
            ),
            (
                format!(r#"{{"request_id":"r","access_key_id":"{KEY}"}} trailing"#),
                "trailing garbage",
            ),
            (
                r#"{"Type":"SubscriptionConfirmation","Message":"{}"}"#.into(),
                "SNS non-notification",
            ),
            (
                r#"{"Type":"Notification","Message":{"request_id":"r"}}"#.into(),
                "SNS message not a string",
            ),
            (
                r#"{"Type":"Notification","Message":"{\"request_id\":\"r\"}"}"#.into(),
                "SNS inner invalid",
            ),
        ];
        for (body, name) in &cases {
            assert!(parse(body).is_err(), "{name}: {body} should be invalid");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let long = |n: usize, c: char| std::iter::repeat_n(c, n).collect::<String>();
        let body = format!(
            r#"{{"request_id":"{}","access_key_id":"{}","user_name":"{}","reason":"{}","requested_by":"{}","batch_id":"{}"}}"#,
            long(128, 'r'),
            long(128, 'A'),
            long(64, 'u'),
            long(1024, 'é'),
            long(256, 'x'),
            long(128, 'b'),
        );
        assert!(parse(&body).is_ok());
        assert!(parse(&format!(
            r#"{{"request_id":"r","access_key_id":"{}"}}"#,
            long(16, '1')
        ))
        .is_ok());
    }

    #[test]
    fn salvaged_request_ids() {
        assert_eq!(
            salvage_request_id(r#"{"request_id":"abc","x":1}"#).as_deref(),
            Some("abc")
        );
        assert_eq!(
            salvage_request_id(r#"{"request_id":"has space"}"#).as_deref(),
            Some("has space")
        );
        assert_eq!(salvage_request_id(r#"{"request_id":""}"#), None);
        assert_eq!(salvage_request_id(r#"{"request_id":5}"#), None);
        assert_eq!(salvage_request_id("garbage"), None);
        assert_eq!(
            salvage_request_id(r#"{"Type":"Notification","Message":"{\"request_id\":\"in\"}"}"#)
                .as_deref(),
            Some("in")
        );
    }

    #[test]
    fn a_continuation_names_its_keys_owners_and_what_was_done() {
        let body = r#"{"request_id":"aws.health:c-1:123456789012:ab","action":"delete","revoke_sessions":true,"continuation":{"deliveries":1,"keys":[{"access_key_id":"AKIAIOSFODNN7EXAMPLE","user_name":"alice","result":"deleted"},{"access_key_id":"AKIAI44QH8DHBEXAMPLE"}],"event_source":"aws.health","event_type":"AWS_RISK_CREDENTIALS_EXPOSED"}}"#;
        let job = parse(body).unwrap();
        assert_eq!(
            job.target,
            Target::Keys(vec![
                "AKIAIOSFODNN7EXAMPLE".into(),
                "AKIAI44QH8DHBEXAMPLE".into()
            ])
        );
        assert_eq!(
            job.known_owner("AKIAIOSFODNN7EXAMPLE").unwrap().user_name,
            "alice"
        );
        assert!(job.known_owner("AKIAI44QH8DHBEXAMPLE").is_none());
        assert_eq!(job.origin.as_ref().unwrap().source, "aws.health");
        assert_eq!(parse(&job.to_body()).unwrap(), job);
        // The same job as the original asked for: no conflict with it.
        let original = Job {
            owners: Vec::new(),
            continuation: None,
            ..job.clone()
        };
        assert_eq!(original.digest(), job.digest());
    }

    #[test]
    fn a_continuation_that_does_not_fit_its_job_is_invalid() {
        for body in [
            // Another key than the job's.
            format!(
                r#"{{"request_id":"r","access_key_id":"{KEY}","continuation":{{"deliveries":1,"keys":[{{"access_key_id":"AKIAI44QH8DHBEXAMPLE"}}]}}}}"#
            ),
            // No key.
            r#"{"request_id":"r","continuation":{"deliveries":1,"keys":[]}}"#.to_owned(),
            // One key without access_key_id.
            format!(
                r#"{{"request_id":"r","continuation":{{"deliveries":1,"keys":[{{"access_key_id":"{KEY}"}}]}}}}"#
            ),
            // A result nobody writes.
            format!(
                r#"{{"request_id":"r","access_key_id":"{KEY}","continuation":{{"deliveries":1,"keys":[{{"access_key_id":"{KEY}","result":"restored"}}]}}}}"#
            ),
            // Another event source.
            format!(
                r#"{{"request_id":"r","access_key_id":"{KEY}","continuation":{{"deliveries":1,"keys":[{{"access_key_id":"{KEY}"}}],"event_source":"aws.ec2","event_type":"x"}}}}"#
            ),
            // With all_keys.
            format!(
                r#"{{"request_id":"r","user_name":"u","all_keys":true,"continuation":{{"deliveries":1,"keys":[{{"access_key_id":"{KEY}"}}]}}}}"#
            ),
            // Unknown fields.
            format!(
                r#"{{"request_id":"r","access_key_id":"{KEY}","continuation":{{"deliveries":1,"keys":[{{"access_key_id":"{KEY}"}}],"colour":"red"}}}}"#
            ),
        ] {
            assert!(parse(&body).is_err(), "{body}");
        }
    }
}
