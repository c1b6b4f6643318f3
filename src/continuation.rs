//! What a job knows beyond the fields of its message: the security event it came from,
//! the owners its source named, and what earlier deliveries did (docs,
//! "Continuations"), parsed from a `continuation` object.

use serde::{Deserialize, Serialize};

use crate::rules::{check_access_key_id, check_len, check_user_name, present, InvalidJob};

/// The security event a job came from (docs, "Security events").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The event's `source`: `aws.health` or `aws.guardduty`.
    pub source: &'static str,
    /// The Health event type code or the GuardDuty finding type.
    pub event_type: String,
    /// Where a Health event says the key was exposed (`eventMetadata.exposedUrl`).
    pub exposed_url: Option<String>,
    /// A GuardDuty finding's severity, as the finding gave it.
    pub severity: Option<String>,
    /// A GuardDuty finding's ARN: its identifier in Security Hub (docs, "Closing the
    /// finding").
    pub finding_arn: Option<String>,
}

impl Origin {
    /// An origin that says no more than where the job came from.
    pub fn new(source: &'static str, event_type: String) -> Self {
        Self {
            source,
            event_type,
            exposed_url: None,
            severity: None,
            finding_arn: None,
        }
    }
}

/// A key's owner as the job's source names it, for a job that names the key alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownOwner {
    pub access_key_id: String,
    pub user_name: String,
    pub source: OwnerSource,
}

/// Where a [`KnownOwner`] comes from, which decides how far it is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerSource {
    /// The security event named the user (AWS Health's `eventMetadata.userName`). Tried
    /// first; a user IAM does not know (renamed, stale) falls back to IAM's owner lookup.
    Event,
    /// IAM named the owner to an earlier delivery of this job, which then changed the
    /// key (docs, "Continuations"). The key is revoked from that user, as if the job
    /// named them: once the key is deleted IAM can no longer say whose it was.
    Learned,
}

/// What earlier deliveries of a job did: a job that changed something and could not
/// finish goes on in a message of the worker's own (docs, "Continuations").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Continuation {
    /// How many deliveries came before (the original message's receive count, added up).
    pub deliveries: u32,
    /// Keys an earlier delivery changed, and how (`deleted` or `deactivated`).
    pub changed: Vec<(String, String)>,
    /// When the job's first message was enqueued (`SentTimestamp`, Unix milliseconds):
    /// the revocation's latency counts from there.
    pub enqueued_at_ms: Option<u64>,
    /// The keys' last use, as IAM reported it to an earlier delivery.
    pub last_used: Vec<LastUsed>,
    /// Until when the worker vouches for this message (Unix milliseconds): its MAC
    /// covers it, so a captured message is not believed for ever.
    pub expires_at_ms: Option<u64>,
    /// A scheduled delete's due time (Unix seconds; docs, "Staged revocation"): past it
    /// by more than the late window, the delete is `cancelled`. Believed with or without a
    /// MAC: it can only make the worker do less.
    pub due_at: Option<i64>,
    /// The worker's MAC over the message (docs, "Continuations"), base64.
    pub mac: Option<String>,
}

impl Continuation {
    /// Whether it claims anything the worker would act on: owners learned, keys changed,
    /// the security event, or earlier deliveries.
    pub fn claims(&self) -> bool {
        !self.changed.is_empty()
            || !self.last_used.is_empty()
            || self.enqueued_at_ms.is_some()
            || self.deliveries > 0
    }
}

/// When and where a key was last used, as `GetAccessKeyLastUsed` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastUsed {
    pub access_key_id: String,
    /// ISO 8601; absent when the key was never used (or before IAM tracked it).
    pub date: Option<String>,
    pub service: Option<String>,
    pub region: Option<String>,
}

/// The most keys one job (one security event) may name.
pub const MAX_KEYS: usize = 100;

/// A continuation as the worker writes it (docs, "Continuations").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawContinuation {
    deliveries: u32,
    #[serde(default, deserialize_with = "present")]
    enqueued_at_ms: Option<u64>,
    #[serde(default)]
    last_used: Vec<LastUsed>,
    keys: Vec<RawContinuedKey>,
    #[serde(default, deserialize_with = "present")]
    event_source: Option<String>,
    #[serde(default, deserialize_with = "present")]
    event_type: Option<String>,
    #[serde(default, deserialize_with = "present")]
    exposed_url: Option<String>,
    #[serde(default, deserialize_with = "present")]
    severity: Option<String>,
    #[serde(default, deserialize_with = "present")]
    finding_arn: Option<String>,
    #[serde(default, deserialize_with = "present")]
    expires_at_ms: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    due_at: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    mac: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContinuedKey {
    access_key_id: String,
    #[serde(default, deserialize_with = "present")]
    user_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    event_user_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    result: Option<String>,
}

/// What a continuation carries, checked: its keys, the owners learned, what was done,
/// and the security event.
pub(crate) type Continued = (Vec<String>, Vec<KnownOwner>, Continuation, Option<Origin>);

pub(crate) fn continuation(raw: RawContinuation) -> Result<Continued, InvalidJob> {
    if raw.keys.is_empty() || raw.keys.len() > MAX_KEYS {
        return Err(InvalidJob(format!(
            "continuation.keys must name 1 to {MAX_KEYS} keys, not {}",
            raw.keys.len()
        )));
    }
    let mut keys = Vec::with_capacity(raw.keys.len());
    let mut owners = Vec::new();
    let mut changed = Vec::new();
    for entry in raw.keys {
        check_access_key_id(&entry.access_key_id)?;
        if keys.contains(&entry.access_key_id) {
            return Err(InvalidJob(format!(
                "continuation.keys names {} twice",
                entry.access_key_id
            )));
        }
        let owner = match (entry.user_name, entry.event_user_name) {
            (Some(user), None) => Some((user, OwnerSource::Learned)),
            (None, Some(user)) => Some((user, OwnerSource::Event)),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(InvalidJob(
                    "continuation.keys[] names user_name or event_user_name, not both".to_owned(),
                ))
            }
        };
        if let Some((user, source)) = owner {
            check_user_name(&user)?;
            owners.push(KnownOwner {
                access_key_id: entry.access_key_id.clone(),
                user_name: user,
                source,
            });
        }
        match entry.result.as_deref() {
            None => {}
            Some(result @ ("deleted" | "deactivated")) => {
                changed.push((entry.access_key_id.clone(), result.to_owned()));
            }
            Some(other) => {
                return Err(InvalidJob(format!(
                "continuation.keys[].result must be \"deleted\" or \"deactivated\", not {other:?}"
            )))
            }
        }
        keys.push(entry.access_key_id);
    }
    let origin = match (raw.event_source.as_deref(), raw.event_type) {
        (None, None) => None,
        (Some(source), Some(event_type)) => {
            let source = match source {
                "aws.health" => "aws.health",
                "aws.guardduty" => "aws.guardduty",
                other => {
                    return Err(InvalidJob(format!(
                    "continuation.event_source must be aws.health or aws.guardduty, not {other:?}"
                )))
                }
            };
            check_len("continuation.event_type", Some(&event_type), 256)?;
            check_len("continuation.exposed_url", raw.exposed_url.as_deref(), 2048)?;
            check_len("continuation.severity", raw.severity.as_deref(), 16)?;
            check_len("continuation.finding_arn", raw.finding_arn.as_deref(), 512)?;
            Some(Origin {
                exposed_url: raw.exposed_url,
                severity: raw.severity,
                finding_arn: raw.finding_arn,
                ..Origin::new(source, event_type)
            })
        }
        _ => {
            return Err(InvalidJob(
                "continuation.event_source and event_type go together".to_owned(),
            ))
        }
    };
    for used in &raw.last_used {
        if !keys.contains(&used.access_key_id) {
            return Err(InvalidJob(format!(
                "continuation.last_used names {}, which is not one of its keys",
                used.access_key_id
            )));
        }
        for (field, value) in [
            ("date", &used.date),
            ("service", &used.service),
            ("region", &used.region),
        ] {
            check_len(
                &format!("continuation.last_used[].{field}"),
                value.as_deref(),
                64,
            )?;
        }
    }
    check_len("continuation.mac", raw.mac.as_deref(), 128)?;
    let continuation = Continuation {
        deliveries: raw.deliveries,
        changed,
        enqueued_at_ms: raw.enqueued_at_ms,
        last_used: raw.last_used,
        expires_at_ms: raw.expires_at_ms,
        due_at: raw.due_at,
        mac: raw.mac,
    };
    Ok((keys, owners, continuation, origin))
}
