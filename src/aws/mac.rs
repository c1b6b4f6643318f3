//! Proof that a message is the worker's own (docs, "Continuations" and "Threat
//! model"): a MAC from a KMS HMAC key that only the worker's role may use.
//!
//! What is relied on, from the AWS KMS API Reference and Developer Guide:
//! - `GenerateMac` computes an HMAC of a message of at most 4,096 bytes with an HMAC KMS
//!   key (`KeySpec` `HMAC_256`, `KeyUsage` `GENERATE_VERIFY_MAC`); the key material never
//!   leaves KMS, so only a principal allowed `kms:GenerateMac` on the key can make one.
//! - `VerifyMac` recomputes it: a MAC that does not match is refused with
//!   `KMSInvalidMacException` (never a `MacValid: false` answer to act on).
//!
//! The worker MACs a SHA-256 digest of the message's canonical form (which may be longer
//! than KMS takes), prefixed by what the message is, so a MAC of one kind of message is
//! never taken for another's.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::MacAlgorithmSpec;
use sha2::{Digest, Sha256};

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::retry::{call, BackoffPolicy, RetryCounter};

/// The one algorithm the worker's key uses.
const ALGORITHM: MacAlgorithmSpec = MacAlgorithmSpec::HmacSha256;

/// What a message is, bound into its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A job carried on by a message of the worker's own (docs, "Continuations").
    Continuation,
    /// An activity report task (docs, "Activity reports").
    ReportTask,
    /// A console password follow-up (docs, "What the leaked key made").
    LoginProfile,
}

impl Purpose {
    fn domain(self) -> &'static [u8] {
        match self {
            Purpose::Continuation => b"iam-key-revoker continuation v1\n",
            Purpose::ReportTask => b"iam-key-revoker activity report task v1\n",
            Purpose::LoginProfile => b"iam-key-revoker login profile follow-up v1\n",
        }
    }
}

/// What checking a message's MAC came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// The worker's own, within its time.
    Yes,
    /// Not the worker's, or not any more: the text says why.
    No(String),
}

/// The worker's MAC key in KMS.
#[derive(Debug, Clone)]
pub struct Mac {
    client: aws_sdk_kms::Client,
    key_id: String,
    policy: BackoffPolicy,
}

impl Mac {
    pub fn new(client: aws_sdk_kms::Client, key_id: &str, policy: BackoffPolicy) -> Self {
        Self {
            client,
            key_id: key_id.to_owned(),
            policy,
        }
    }

    /// The key, as configured (an id, an ARN or an alias).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The MAC of `canonical` as `purpose`, in base64.
    pub async fn sign(
        &self,
        purpose: Purpose,
        canonical: &str,
        retries: &RetryCounter,
    ) -> Result<String, AwsError> {
        let message = Blob::new(digest(purpose, canonical));
        let out = call(&self.policy, retries, "kms", "GenerateMac", || async {
            self.client
                .generate_mac()
                .key_id(&self.key_id)
                .mac_algorithm(ALGORITHM)
                .message(message.clone())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("GenerateMac", e))
        })
        .await?;
        let mac = out.mac().map(|b| b.as_ref()).unwrap_or_default();
        Ok(aws_smithy_types::base64::encode(mac))
    }

    /// Whether a message of the worker's own verifies: it carries a MAC and an expiry, has
    /// not expired at `now_ms`, and its MAC is this key's of `canonical` as `purpose`.
    pub async fn verify_within(
        &self,
        purpose: Purpose,
        canonical: &str,
        (mac, expires_at_ms): (Option<&str>, Option<u64>),
        now_ms: u64,
        retries: &RetryCounter,
    ) -> Result<Verified, AwsError> {
        match (mac, expires_at_ms) {
            (None, _) | (_, None) => Ok(Verified::No("it carries no mac or expiry".to_owned())),
            (_, Some(expires)) if expires < now_ms => Ok(Verified::No("it has expired".to_owned())),
            (Some(signature), Some(_)) => {
                Box::pin(self.verify(purpose, canonical, signature, retries)).await
            }
        }
    }

    /// Whether `mac` is this key's MAC of `canonical` as `purpose`. `Err` only when KMS
    /// could not say (throttled, unreachable, denied): the caller decides what that
    /// costs; a MAC KMS refuses is [`Verified::No`].
    pub async fn verify(
        &self,
        purpose: Purpose,
        canonical: &str,
        mac: &str,
        retries: &RetryCounter,
    ) -> Result<Verified, AwsError> {
        let Ok(mac) = aws_smithy_types::base64::decode(mac) else {
            return Ok(Verified::No("its mac is not base64".to_owned()));
        };
        if mac.is_empty() || mac.len() > 64 {
            return Ok(Verified::No("its mac has the wrong length".to_owned()));
        }
        let message = Blob::new(digest(purpose, canonical));
        let mac = Blob::new(mac);
        let result = call(&self.policy, retries, "kms", "VerifyMac", || async {
            self.client
                .verify_mac()
                .key_id(&self.key_id)
                .mac_algorithm(ALGORITHM)
                .message(message.clone())
                .mac(mac.clone())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("VerifyMac", e))
        })
        .await;
        match result {
            Ok(out) if out.mac_valid() => Ok(Verified::Yes),
            Ok(_) => Ok(Verified::No("KMS says its mac is not valid".to_owned())),
            Err(e) if e.code.as_deref() == Some("KMSInvalidMacException") => {
                Ok(Verified::No("KMS says its mac is not valid".to_owned()))
            }
            // The key's own refusals (another key's MAC under a disabled key, a key of
            // another kind) say the MAC is not this key's, not that KMS failed.
            Err(e) if e.class == ErrorClass::Permanent && !e.is_access_denied() => {
                Ok(Verified::No(format!("KMS refused to verify its mac: {e}")))
            }
            Err(e) => Err(e),
        }
    }
}

/// What is MACed: SHA-256 of the purpose's prefix and the canonical text. KMS takes at
/// most 4,096 bytes; a continuation naming a hundred keys is longer.
fn digest(purpose: Purpose, canonical: &str) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(purpose.domain());
    hasher.update(canonical.as_bytes());
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kms::operation::generate_mac::GenerateMacOutput;
    use aws_sdk_kms::operation::verify_mac::VerifyMacOutput;
    use aws_sdk_kms::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    /// KMS's JSON error, as its API reference documents them.
    fn kms_error(code: &str) -> String {
        format!(r#"{{"__type": "{code}", "message": "as KMS says it"}}"#)
    }

    fn mac(rules: &[&aws_smithy_mocks::Rule]) -> Mac {
        let client = mock_client!(aws_sdk_kms, RuleMode::MatchAny, rules, |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        Mac::new(client, "alias/k", crate::aws::retry::quick_policy())
    }

    /// A MAC KMS refuses is `KMSInvalidMacException` (KMS API Reference, `VerifyMac`): the
    /// message is not the worker's. Throttling is retried; a failure KMS could not answer
    /// is an error for the caller, never a verdict.
    #[tokio::test(start_paused = true)]
    async fn verify_tells_a_foreign_mac_from_a_kms_that_cannot_say() {
        let sign = mock!(Client::generate_mac)
            .match_requests(|r| {
                r.key_id() == Some("alias/k")
                    && r.mac_algorithm() == Some(&MacAlgorithmSpec::HmacSha256)
                    && r.message().map(|m| m.as_ref().len()) == Some(32)
            })
            .then_output(|| {
                GenerateMacOutput::builder()
                    .mac(Blob::new(vec![7u8; 32]))
                    .build()
            });
        let signature = mac(&[&sign])
            .sign(Purpose::Continuation, "{}", &RetryCounter::default())
            .await
            .unwrap();
        assert_eq!(signature, aws_smithy_types::base64::encode([7u8; 32]));

        let valid = mock!(Client::verify_mac)
            .then_output(|| VerifyMacOutput::builder().mac_valid(true).build());
        let answer = mac(&[&valid])
            .verify(
                Purpose::Continuation,
                "{}",
                &signature,
                &RetryCounter::default(),
            )
            .await;
        assert!(matches!(answer, Ok(Verified::Yes)), "{answer:?}");

        let invalid = mock!(Client::verify_mac).then_http_response(|| {
            aws_smithy_runtime_api::client::orchestrator::HttpResponse::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                aws_smithy_types::body::SdkBody::from(kms_error("KMSInvalidMacException")),
            )
        });
        let answer = mac(&[&invalid])
            .verify(
                Purpose::Continuation,
                "{}",
                &signature,
                &RetryCounter::default(),
            )
            .await;
        assert!(matches!(answer, Ok(Verified::No(_))), "{answer:?}");
        // Not even base64: no call.
        let none = mock!(Client::verify_mac).then_output(|| VerifyMacOutput::builder().build());
        let answer = mac(&[&none])
            .verify(
                Purpose::Continuation,
                "{}",
                "not base64!",
                &RetryCounter::default(),
            )
            .await;
        assert!(matches!(answer, Ok(Verified::No(_))));
        assert_eq!(none.num_calls(), 0);

        let throttled = mock!(Client::verify_mac)
            .sequence()
            .http_status(400, Some(kms_error("ThrottlingException")))
            .repeatedly()
            .build();
        let retries = RetryCounter::default();
        let answer = mac(&[&throttled])
            .verify(Purpose::Continuation, "{}", &signature, &retries)
            .await;
        let Err(e) = answer else { panic!("{answer:?}") };
        assert_eq!(e.class, ErrorClass::Transient);
        assert!(retries.get() > 0, "retried first");
    }

    #[test]
    fn the_digest_binds_the_purpose_and_every_byte() {
        let a = digest(Purpose::Continuation, "{\"request_id\":\"r\"}");
        assert_eq!(a.len(), 32, "well under KMS's 4,096 bytes");
        assert_ne!(a, digest(Purpose::ReportTask, "{\"request_id\":\"r\"}"));
        assert_ne!(a, digest(Purpose::Continuation, "{\"request_id\":\"s\"}"));
        assert_eq!(a, digest(Purpose::Continuation, "{\"request_id\":\"r\"}"));
    }
}
