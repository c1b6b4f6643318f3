//! The session cut-off's documents (docs, "Revoking sessions"), apart from IAM: what the
//! worker writes, how each cut-off records the revocation it serves, and how it tells a
//! cut-off of its own from an impostor.
//!
//! - **One policy per revocation.** Each revocation of a user puts an inline policy of
//!   its own, named for its time T and its revocation
//!   (`iam-key-revoker-revoke-older-sessions-<T>-R<digest of the request id>`), holding
//!   one `Deny` of everything to temporary credentials issued before T: `{"Sid":
//!   "R<digest>", "Effect": "Deny", "Action": "*", "Resource": "*", "Condition":
//!   {"DateLessThan": {"aws:TokenIssueTime": T}}}`. The latest T in force is the one that
//!   counts. Lifting one revocation's (`restore`; docs, "Staged revocation") deletes its
//!   policy and nothing else, so the latest cut-off another revocation needs stays in
//!   force, and a restorer needs no right to write policies. A Sid takes ASCII letters and
//!   digits only (IAM User Guide, "IAM JSON policy elements: Sid").
//! - **Folded.** A user's inline policies share 2,048 characters (IAM User Guide, "IAM and
//!   AWS STS quotas"; white space not counted), so at most [`RECORDED_MAX`] revocations
//!   keep a policy each; older ones are folded into one policy at their latest time
//!   (`…-<T>-Folded`), which no restore lifts without `--force`. Cut-offs of earlier
//!   versions (`…-<T>`, and the unnamed first one) count as folded.
//! - **Impostors.** A user whose key leaked can often write its own policies. A policy
//!   with the worker's name counts as a cut-off only when its document is exactly this
//!   shape, its name carries its T and Sid, and T is no later than IAM's clock plus the
//!   largest margin allowed ([`MAX_MARGIN_SECONDS`]) plus [`FUTURE_TOLERANCE_SECONDS`]
//!   (a margin lowered since, or a replica's larger one, never makes the worker's own
//!   cut-off an impostor): anything else is an impostor, which the worker replaces and
//!   reports.
//! - **A role's session.** On a role, a cut-off may be narrowed to one session: its
//!   condition also has `{"StringEquals": {"aws:userid": "<principalId>"}}` (the role's
//!   `AROA…` id, `:` and the session name; IAM User Guide, "AWS global condition context
//!   keys", `aws:userid`), so the role's other sessions keep working. Each narrowed
//!   cut-off serves its own revocation and is never folded with another; on a user, a
//!   narrowed cut-off is an impostor.

use aws_smithy_types::date_time::{DateTime, Format};
use sha2::{Digest, Sha256};

/// The name of the session policies: alone for the one the first versions put, followed
/// by `-` and T (`20261130T120001Z`), then `-` and the revocation's Sid or `Folded`.
pub const SESSION_POLICY_NAME: &str = "iam-key-revoker-revoke-older-sessions";

/// The largest `sessions.margin_seconds` (config check).
pub const MAX_MARGIN_SECONDS: u32 = 3600;

/// How much later than IAM's clock plus [`MAX_MARGIN_SECONDS`] a cut-off's time may be
/// and still be the worker's: replicas whose clocks differ a little.
pub const FUTURE_TOLERANCE_SECONDS: i64 = 300;

/// No temporary credentials live longer than this (GetSessionToken's 129,600 seconds; a
/// role's sessions last 12 hours at most: IAM User Guide, "Disabling permissions for
/// temporary security credentials"): a cut-off whose time is this far past denies
/// nothing any more.
pub const LONGEST_SESSION_SECONDS: i64 = 129_600;

/// The most revocations of one user that keep a cut-off policy each.
pub const RECORDED_MAX: usize = 5;

/// The Sid (and name suffix) of a cut-off that stands for older revocations folded
/// together.
pub const FOLDED_SID: &str = "Folded";

/// What the cut-off covers, for the audit line and the outcome event.
pub const SESSIONS_COVERED: &str = "denies temporary credentials the user obtained with GetSessionToken or GetFederationToken before the cut-off (IAM may take a few minutes to enforce it everywhere; the cut-off is set a margin after the revocation for that); sessions of roles assumed with the key, and keys, users or logins made with it, are not covered (see the activity report)";

/// A cut-off policy of the worker's, as IAM holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cutoff {
    pub name: String,
    /// The revocation it serves ([`revocation_sid`]); `None` for a folded one (or one of
    /// an earlier version), which records none.
    pub sid: Option<String>,
    /// Credentials issued before this are denied.
    pub before: DateTime,
    /// The one role session it is narrowed to (`aws:userid`); `None`: every session.
    pub scope: Option<String>,
}

/// The latest time of `cutoffs`, if any.
pub fn latest(cutoffs: &[Cutoff]) -> Option<&Cutoff> {
    cutoffs.iter().max_by_key(|c| c.before.secs())
}

/// The Sid that records the revocation of request `request_id`: `R` and the first 16
/// bytes of its SHA-256 in hex (the digest a staged delete's long request id carries, so
/// that `restore` finds it from the schedule).
pub fn revocation_sid(request_id: &str) -> String {
    format!("R{}", request_digest(request_id))
}

/// 32 hex digits of SHA-256 over `request_id`.
pub fn request_digest(request_id: &str) -> String {
    Sha256::digest(request_id.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_record(sid: &str) -> bool {
    sid.len() == 33
        && sid.starts_with('R')
        && sid[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The name of the cut-off at `at` for the revocation `sid` (or [`FOLDED_SID`]).
pub fn policy_name(at: DateTime, sid: &str) -> String {
    format!("{SESSION_POLICY_NAME}-{}-{sid}", compact(at))
}

/// The name earlier versions gave the cut-off at `at`.
pub fn legacy_policy_name(at: DateTime) -> String {
    format!("{SESSION_POLICY_NAME}-{}", compact(at))
}

fn compact(at: DateTime) -> String {
    fmt(at).chars().filter(|c| *c != '-' && *c != ':').collect()
}

/// What a policy name claims.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    /// The unnamed policy of the first versions: its time is in its document.
    Unnamed,
    /// An earlier version's cut-off at this time (no Sid).
    Legacy(DateTime),
    /// A cut-off at this time, with this Sid (a revocation's, or `Folded`).
    Named(DateTime, String),
}

/// What a policy name with the worker's prefix claims; `None` for a name that is not
/// the worker's.
fn claim(name: &str) -> Option<Claim> {
    if name == SESSION_POLICY_NAME {
        return Some(Claim::Unnamed);
    }
    let rest = name.strip_prefix(SESSION_POLICY_NAME)?.strip_prefix('-')?;
    let (time, sid) = match rest.split_once('-') {
        Some((time, sid)) => (time, Some(sid)),
        None => (rest, None),
    };
    // 20261130T120001Z → 2026-11-30T12:00:01Z
    let b = time.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &time[0..4],
        &time[4..6],
        &time[6..8],
        &time[9..11],
        &time[11..13],
        &time[13..15]
    );
    let at = DateTime::from_str(&iso, Format::DateTime).ok()?;
    match sid {
        None => Some(Claim::Legacy(at)),
        Some(sid) if sid == FOLDED_SID || is_record(sid) => Some(Claim::Named(at, sid.to_owned())),
        Some(_) => None,
    }
}

/// Whether `name` is one the worker gives its cut-offs (checked further when read).
pub fn is_cutoff_name(name: &str) -> bool {
    name.starts_with(SESSION_POLICY_NAME)
}

/// The document of the cut-off at `before` for the revocation `sid` (or [`FOLDED_SID`]),
/// narrowed to the role session `scope` when there is one.
pub fn cutoff_policy(sid: &str, before: DateTime, scope: Option<&str>) -> String {
    let mut condition =
        serde_json::json!({ "DateLessThan": { "aws:TokenIssueTime": fmt(before) } });
    if let Some(scope) = scope {
        condition["StringEquals"] = serde_json::json!({ "aws:userid": scope });
    }
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": sid,
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": condition
        }]
    })
    .to_string()
}

/// What the cut-off on a role covers, for the audit line and the outcome event.
pub const ROLE_SESSIONS_COVERED: &str = "denies the role's temporary credentials issued before the cut-off (AssumeRole, an instance profile's, a Lambda function's); sessions issued after it, such as the fresh credentials an instance's metadata service hands out, keep working (IAM may take a few minutes to enforce it everywhere)";

/// The one-statement document earlier versions put (no Sid): still the worker's, read as
/// folded (it records no revocation). Requests signed with long-term keys carry no
/// `aws:TokenIssueTime`, so the condition never matches them (IAM User Guide, the
/// `aws:TokenIssueTime` condition key).
pub fn session_policy(before: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": { "DateLessThan": { "aws:TokenIssueTime": before } }
        }]
    })
    .to_string()
}

/// Reads a policy with the worker's name: the cut-off it is when it is the worker's, why
/// not otherwise. `GetUserPolicy` returns the document URL-encoded (RFC 3986; IAM API
/// Reference, `GetUserPolicy`). `latest_allowed` is the latest time a cut-off of the
/// worker's can have now.
pub fn read_cutoff(name: &str, document: &str, latest_allowed: DateTime) -> Result<Cutoff, String> {
    let claim = claim(name).ok_or("its name is not one the worker gives")?;
    let decoded = percent_encoding::percent_decode_str(document)
        .decode_utf8()
        .map_err(|_| "its document is not UTF-8")?;
    let value: serde_json::Value =
        serde_json::from_str(&decoded).map_err(|_| "its document is not JSON")?;
    let (sid, before, scope) = deny_of(&value).ok_or("its document is not the worker's Deny")?;
    let (claimed_at, recorded) = match (&claim, sid) {
        (Claim::Unnamed, None) => (None, None),
        (Claim::Legacy(at), None) => (Some(*at), None),
        (Claim::Named(at, named), Some(sid)) if *named == sid => {
            (Some(*at), (sid != FOLDED_SID).then_some(sid))
        }
        _ => return Err("its name and its document name different revocations".to_owned()),
    };
    if claimed_at.is_some_and(|at| at.secs() != before.secs()) {
        return Err(format!(
            "its name and its document name different times (the document: {})",
            fmt(before)
        ));
    }
    if before.secs() > latest_allowed.secs() {
        return Err(format!(
            "its time {} is later than IAM's clock allows a cut-off of the worker's ({})",
            fmt(before),
            fmt(latest_allowed)
        ));
    }
    Ok(Cutoff {
        name: name.to_owned(),
        sid: recorded,
        before,
        scope,
    })
}

/// The Sid (if any), time and session (if narrowed to one) of a document of exactly the
/// worker's shape.
#[allow(clippy::type_complexity)]
fn deny_of(value: &serde_json::Value) -> Option<(Option<String>, DateTime, Option<String>)> {
    let object = value.as_object()?;
    if object.len() != 2 || object.get("Version")? != "2012-10-17" {
        return None;
    }
    let [statement] = object.get("Statement")?.as_array()?.as_slice() else {
        return None;
    };
    let statement = statement.as_object()?;
    let sid = match statement.get("Sid") {
        None => None,
        Some(sid) => Some(
            sid.as_str()
                .filter(|s| *s == FOLDED_SID || is_record(s))?
                .to_owned(),
        ),
    };
    if statement.len() != 4 + usize::from(sid.is_some())
        || statement.get("Effect")? != "Deny"
        || statement.get("Action")? != "*"
        || statement.get("Resource")? != "*"
    {
        return None;
    }
    let condition = statement.get("Condition")?.as_object()?;
    let less = condition.get("DateLessThan")?.as_object()?;
    let scope = match condition.get("StringEquals") {
        None => None,
        Some(equals) => {
            let equals = equals.as_object()?;
            let scope = equals.get("aws:userid")?.as_str()?;
            if equals.len() != 1 || !is_role_session(scope) {
                return None;
            }
            Some(scope.to_owned())
        }
    };
    if condition.len() != 1 + usize::from(scope.is_some()) || less.len() != 1 {
        return None;
    }
    let text = less.get("aws:TokenIssueTime")?.as_str()?;
    let before = DateTime::from_str(text, Format::DateTime).ok()?;
    // Exactly as the worker writes it: to the second, in UTC.
    (fmt(before) == text).then_some((sid, before, scope))
}

/// Whether `principal` is a role session's `aws:userid` as GuardDuty's `principalId` gives
/// it: the role's unique id (`AROA` and upper-case letters and digits; IAM User Guide,
/// "Unique identifier prefixes") and a session name of 2-64 of `[\w+=,.@-]` (STS API
/// Reference, `AssumeRole` `RoleSessionName`; an instance's is its id).
pub fn is_role_session(principal: &str) -> bool {
    let Some((id, session)) = principal.split_once(':') else {
        return false;
    };
    id.len() > 4
        && id.len() <= 128
        && id.starts_with("AROA")
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && (2..=64).contains(&session.len())
        && session
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

/// The cut-offs to fold so that at most [`RECORDED_MAX`] revocations keep a policy each
/// (the newest, `keep` always among them): the older recorded ones and every folded one,
/// when there are more than that.
pub fn to_fold<'a>(cutoffs: &'a [Cutoff], keep: &str) -> Vec<&'a Cutoff> {
    let mut recorded: Vec<&Cutoff> = cutoffs
        .iter()
        .filter(|c| c.sid.as_deref().is_some_and(|s| s != keep))
        .collect();
    let folded = cutoffs.iter().filter(|c| c.sid.is_none());
    if recorded.len() < RECORDED_MAX && folded.clone().count() <= 1 {
        return Vec::new();
    }
    recorded.sort_by_key(|c| std::cmp::Reverse(c.before.secs()));
    let older = recorded.split_off(recorded.len().min(RECORDED_MAX - 1));
    older.into_iter().chain(folded).collect()
}

/// `at` as the document writes it: ISO 8601, UTC, to the second.
pub fn fmt(at: DateTime) -> String {
    at.fmt(Format::DateTime).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(document: &str) -> String {
        percent_encoding::utf8_percent_encode(document, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
    }

    fn cutoff(request_id: &str, secs: i64) -> Cutoff {
        let sid = revocation_sid(request_id);
        Cutoff {
            scope: None,
            name: policy_name(DateTime::from_secs(secs), &sid),
            sid: Some(sid),
            before: DateTime::from_secs(secs),
        }
    }

    #[test]
    fn a_cutoff_is_named_for_its_time_and_revocation() {
        let at = DateTime::from_secs(1_800_000_000);
        let sid = revocation_sid("r-1");
        let name = policy_name(at, &sid);
        assert_eq!(
            name,
            format!("iam-key-revoker-revoke-older-sessions-20270115T080000Z-{sid}")
        );
        assert!(name.len() <= 128, "IAM's longest policy name");
        assert_eq!(claim(&name), Some(Claim::Named(at, sid)));
        assert_eq!(claim(&legacy_policy_name(at)), Some(Claim::Legacy(at)));
        assert_eq!(claim(SESSION_POLICY_NAME), Some(Claim::Unnamed));
        for other in [
            "AdminAccess",
            "iam-key-revoker-revoke-older-sessions-2027",
            "iam-key-revoker-revoke-older-sessions-20271315T080000Z",
            "iam-key-revoker-revoke-older-sessions-20270115T080000Z-Rnothex",
        ] {
            assert_eq!(claim(other), None, "{other}");
        }
    }

    #[test]
    fn only_the_workers_exact_deny_is_a_cutoff() {
        let at = DateTime::from_secs(1_800_000_000);
        let allowed = DateTime::from_secs(1_800_000_600);
        let sid = revocation_sid("r-1");
        let name = policy_name(at, &sid);
        let ours = cutoff_policy(&sid, at, None);
        assert_eq!(
            read_cutoff(&name, &encoded(&ours), allowed),
            Ok(cutoff("r-1", 1_800_000_000))
        );
        // An earlier version's, without Sid: the worker's, recording no revocation.
        let legacy = session_policy("2027-01-15T08:00:00Z");
        let read = read_cutoff(&legacy_policy_name(at), &encoded(&legacy), allowed).unwrap();
        assert_eq!((read.sid, read.before), (None, at));
        let harmless = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:GetCallerIdentity","Resource":"*"}]}"#;
        let narrowed = ours.replace("\"Action\":\"*\"", "\"Action\":\"s3:ListBucket\"");
        let extra = ours.replace(
            "\"Effect\":\"Deny\"",
            "\"Effect\":\"Deny\",\"NotResource\":\"x\"",
        );
        let allow = ours.replace("Deny", "Allow");
        let other_key = ours.replace("aws:TokenIssueTime", "aws:CurrentTime");
        let two = ours.replace(
            "}]}",
            "},{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}]}",
        );
        let other_sid = cutoff_policy(&revocation_sid("r-2"), at, None);
        for impostor in [
            harmless, &narrowed, &extra, &allow, &other_key, &two, &other_sid, "not json",
        ] {
            assert!(
                read_cutoff(&name, &encoded(impostor), allowed).is_err(),
                "{impostor}"
            );
        }
        // A name that claims another time than its document denies.
        let later = policy_name(DateTime::from_secs(1_800_000_100), &sid);
        assert!(read_cutoff(&later, &encoded(&ours), allowed).is_err());
        // A time later than IAM's clock allows: planted to look like a cut-off to come.
        let far = DateTime::from_secs(4_070_908_800);
        let planted = policy_name(far, &sid);
        let why =
            read_cutoff(&planted, &encoded(&cutoff_policy(&sid, far, None)), allowed).unwrap_err();
        assert!(why.contains("later than IAM's clock"), "{why}");
    }

    #[test]
    fn past_the_recorded_most_the_oldest_fold_and_the_own_never() {
        let few: Vec<Cutoff> = (0..4)
            .map(|i| cutoff(&format!("r{i}"), 1_000 + i))
            .collect();
        assert!(to_fold(&few, &revocation_sid("new")).is_empty());
        let many: Vec<Cutoff> = (0..8)
            .map(|i| cutoff(&format!("r{i}"), 1_000 + i))
            .collect();
        let own = revocation_sid("r0");
        let folded = to_fold(&many, &own);
        // Kept: the own (the oldest here) and the RECORDED_MAX - 1 newest others.
        assert_eq!(folded.len(), 8 - RECORDED_MAX);
        assert!(folded
            .iter()
            .all(|c| c.sid.as_deref() != Some(own.as_str())));
        assert!(folded.iter().all(|c| c.before.secs() < 1_004));
        let document = cutoff_policy(FOLDED_SID, DateTime::from_secs(1_007), None);
        let one = document.chars().filter(|c| !c.is_whitespace()).count()
            + policy_name(DateTime::from_secs(0), FOLDED_SID).len();
        assert!(
            (RECORDED_MAX + 1) * one < 2_048,
            "{} cut-offs fit IAM's 2,048 characters with room to spare",
            RECORDED_MAX + 1
        );
    }
}
