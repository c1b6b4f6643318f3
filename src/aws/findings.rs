//! Closing the finding (docs, "Closing the finding"): a GuardDuty finding marked in
//! Security Hub with `BatchUpdateFindings`, in the finding's own account and Region. In
//! Security Hub a GuardDuty finding's `Id` is its GuardDuty ARN and its `ProductArn` is
//! `arn:PARTITION:securityhub:REGION::product/aws/guardduty` (Security Hub User Guide,
//! "AWS service integrations": GuardDuty). A member account may update its own findings
//! (Security Hub API Reference, "BatchUpdateFindings").

use aws_config::{Region, SdkConfig};
use aws_sdk_securityhub::types::{
    AwsSecurityFindingFilters, AwsSecurityFindingIdentifier, NoteUpdate, StringFilter,
    StringFilterComparison, WorkflowStatus, WorkflowUpdate,
};

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{
    http_client_fn, HttpClient, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::retry::{call, BackoffPolicy, RetryCounter};
use crate::metrics::RequestCounter;

/// Security Hub's longest note (`NoteUpdate.Text`: at most 512 characters).
const NOTE_MAX: usize = 512;
/// Who updated the finding, as the note says.
pub const UPDATED_BY: &str = "iam-key-revoker";

/// Where a finding lives, read from its GuardDuty ARN
/// (`arn:PARTITION:guardduty:REGION:ACCOUNT:detector/DETECTOR/finding/ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingRef {
    pub arn: String,
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl FindingRef {
    /// The finding `arn` names, if it is a GuardDuty finding ARN.
    pub fn parse(arn: &str) -> Option<Self> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        match parts.as_slice() {
            ["arn", partition, "guardduty", region, account, resource]
                if !partition.is_empty()
                    && !region.is_empty()
                    && crate::job::is_account_id(account)
                    && resource.starts_with("detector/")
                    && resource.contains("/finding/") =>
            {
                Some(Self {
                    arn: arn.to_owned(),
                    partition: (*partition).to_owned(),
                    region: (*region).to_owned(),
                    account: (*account).to_owned(),
                })
            }
            _ => None,
        }
    }

    /// GuardDuty's product in Security Hub, in the finding's Region.
    pub fn product_arn(&self) -> String {
        format!(
            "arn:{}:securityhub:{}::product/aws/guardduty",
            self.partition, self.region
        )
    }
}

/// What a finding becomes: `RESOLVED` when its key was revoked, `NOTIFIED` when the job
/// was rejected (someone has to act).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workflow {
    Resolved,
    Notified,
}

impl Workflow {
    pub fn as_str(self) -> &'static str {
        match self {
            Workflow::Resolved => "RESOLVED",
            Workflow::Notified => "NOTIFIED",
        }
    }
}

/// Security Hub refused to update the finding (`UnprocessedFindings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprocessed {
    pub code: String,
    pub message: String,
}

/// Security Hub with `sdk`'s credentials (the finding's account), in `region`.
pub fn client(sdk: &SdkConfig, region: &str) -> aws_sdk_securityhub::Client {
    aws_sdk_securityhub::Client::from_conf(
        aws_sdk_securityhub::config::Builder::from(sdk)
            .region(Region::new(region.to_owned()))
            .interceptor(RequestCounter)
            .build(),
    )
}

/// Whether Security Hub holds `finding` and it names access key `key` (`GetFindings` by
/// its `Id` and `ProductArn`, with `sdk`'s credentials, in the finding's Region): a finding
/// is marked only when it is about the key the job revoked, so that a forged event cannot
/// close another finding. A GuardDuty finding about a key lists it among its `Resources`
/// as type `AwsIamAccessKey`, whose `Id` ends with the key id
/// (`AWS::IAM::AccessKey:AKIA…`); `Details.AwsIamAccessKey.AccessKeyId` names it too where
/// present (Security Hub User Guide, "AwsIamAccessKey"). `None`: no such finding.
///
/// The answer is read as JSON where it arrives ([`ReadBack`]): the SDK's deserializer of
/// the finding format (hundreds of resource types) needs more than 8 MiB of stack in a
/// debug build, and the worker needs only these few fields.
pub async fn names_key(
    sdk: &SdkConfig,
    policy: &BackoffPolicy,
    finding: &FindingRef,
    key: &str,
    retries: &RetryCounter,
) -> Result<Option<bool>, AwsError> {
    let Some(http) = sdk.http_client() else {
        return Err(AwsError {
            operation: "GetFindings",
            class: ErrorClass::Permanent,
            code: None,
            message: "no HTTP client configured".to_owned(),
            unanswered: false,
        });
    };
    let want = Arc::new(Wanted {
        finding: finding.arn.clone(),
        key: key.to_owned(),
        seen: Mutex::new(None),
    });
    let read_back = {
        let want = Arc::clone(&want);
        http_client_fn(move |settings, components| {
            SharedHttpConnector::new(ReadBack {
                inner: http.http_connector(settings, components),
                want: Arc::clone(&want),
            })
        })
    };
    let client = aws_sdk_securityhub::Client::from_conf(
        aws_sdk_securityhub::config::Builder::from(sdk)
            .region(Region::new(finding.region.clone()))
            .http_client(read_back)
            .interceptor(RequestCounter)
            .build(),
    );
    let filter = |value: String| {
        StringFilter::builder()
            .comparison(StringFilterComparison::Equals)
            .value(value)
            .build()
    };
    let filters = AwsSecurityFindingFilters::builder()
        .id(filter(finding.arn.clone()))
        .product_arn(filter(finding.product_arn()))
        .build();
    let mut token: Option<String> = None;
    // The filters leave one finding; a few pages at most, whatever an endpoint answers.
    for _ in 0..5 {
        let out = call(policy, retries, "securityhub", "GetFindings", || async {
            client
                .get_findings()
                .filters(filters.clone())
                .set_next_token(token.clone())
                .max_results(100)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("GetFindings", e))
        })
        .await?;
        if let Some(named) = *want.seen.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(Some(named));
        }
        match out.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => break,
        }
    }
    Ok(None)
}

/// The finding `names_key` looks for, and what it saw.
#[derive(Debug)]
struct Wanted {
    finding: String,
    key: String,
    /// `Some(names the key)` once the finding was in an answer.
    seen: Mutex<Option<bool>>,
}

impl Wanted {
    /// Reads a `GetFindings` answer: notes whether it holds the finding and whether it
    /// names the key, and returns the answer without its findings (its `NextToken` kept).
    fn read(&self, body: &[u8]) -> Option<Vec<u8>> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let found = value["Findings"]
            .as_array()?
            .iter()
            .find(|f| f["Id"].as_str() == Some(self.finding.as_str()));
        if let Some(found) = found {
            let suffix = format!(":{}", self.key);
            let named = found["Resources"].as_array().is_some_and(|resources| {
                resources.iter().any(|r| {
                    r["Type"] == "AwsIamAccessKey"
                        && (r["Id"]
                            .as_str()
                            .is_some_and(|id| id == self.key || id.ends_with(&suffix))
                            || r["Details"]["AwsIamAccessKey"]["AccessKeyId"].as_str()
                                == Some(self.key.as_str()))
                })
            });
            *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(named);
        }
        let mut trimmed = serde_json::json!({ "Findings": [] });
        if let Some(token) = value.get("NextToken").filter(|t| t.is_string()) {
            trimmed["NextToken"] = token.clone();
        }
        Some(trimmed.to_string().into_bytes())
    }
}

/// The HTTP connector of `names_key`'s client: the shared one, with each successful
/// answer read by [`Wanted::read`] before the SDK sees it.
#[derive(Debug)]
struct ReadBack {
    inner: SharedHttpConnector,
    want: Arc<Wanted>,
}

impl HttpConnector for ReadBack {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let sent = self.inner.call(request);
        let want = Arc::clone(&self.want);
        HttpConnectorFuture::new(async move {
            let response = sent.await?;
            if !response.status().is_success() {
                return Ok(response);
            }
            let status = response.status();
            let headers: Vec<(String, String)> = response
                .headers()
                .iter()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("content-length"))
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect();
            let body = ByteStream::new(response.into_body())
                .collect()
                .await
                .map_err(|e| ConnectorError::io(e.into()))?
                .into_bytes();
            let body = want.read(&body).unwrap_or_else(|| body.to_vec());
            let mut trimmed = HttpResponse::new(status, SdkBody::from(body));
            for (name, value) in headers {
                trimmed.headers_mut().append(name, value);
            }
            Ok(trimmed)
        })
    }
}

/// Marks `finding` with `workflow` and `note` through `client` (in the finding's account
/// and Region). `Ok(None)`: updated.
pub async fn update(
    client: &aws_sdk_securityhub::Client,
    policy: &BackoffPolicy,
    finding: &FindingRef,
    workflow: Workflow,
    note: &str,
    retries: &RetryCounter,
) -> Result<Option<Unprocessed>, AwsError> {
    let identifier = AwsSecurityFindingIdentifier::builder()
        .id(&finding.arn)
        .product_arn(finding.product_arn())
        .build();
    let text: String = note.chars().take(NOTE_MAX).collect();
    let note = NoteUpdate::builder()
        .text(text)
        .updated_by(UPDATED_BY)
        .build();
    let status = match workflow {
        Workflow::Resolved => WorkflowStatus::Resolved,
        Workflow::Notified => WorkflowStatus::Notified,
    };
    let out = call(
        policy,
        retries,
        "securityhub",
        "BatchUpdateFindings",
        || async {
            client
                .batch_update_findings()
                .finding_identifiers(identifier.clone())
                .note(note.clone())
                .workflow(WorkflowUpdate::builder().status(status.clone()).build())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("BatchUpdateFindings", e))
        },
    )
    .await?;
    Ok(out.unprocessed_findings().first().map(|u| Unprocessed {
        code: u.error_code().unwrap_or("none").to_owned(),
        message: u.error_message().unwrap_or_default().to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use aws_sdk_securityhub::operation::batch_update_findings::BatchUpdateFindingsOutput;
    use aws_sdk_securityhub::types::BatchUpdateFindingsUnprocessedFinding;
    use aws_sdk_securityhub::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    use super::*;

    const ARN: &str = "arn:aws:guardduty:us-east-1:111122223333:detector/d1/finding/f1";

    /// Security Hub's REST-JSON error, as its API reference documents them.
    fn error_json(code: &str) -> String {
        format!(r#"{{"__type": "{code}", "Message": "Rate exceeded", "Code": "{code}"}}"#)
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_retried_then_the_finding_is_resolved_with_the_note() {
        let update = mock!(Client::batch_update_findings)
            .match_requests(|input| {
                let id = &input.finding_identifiers()[0];
                id.id() == Some(ARN)
                    && id.product_arn()
                        == Some("arn:aws:securityhub:us-east-1::product/aws/guardduty")
                    && input.workflow().and_then(|w| w.status()) == Some(&WorkflowStatus::Resolved)
                    && input.note().and_then(|n| n.updated_by()) == Some(UPDATED_BY)
                    && input
                        .note()
                        .and_then(|n| n.text())
                        .is_some_and(|t| t.chars().count() == NOTE_MAX)
            })
            .sequence()
            .http_status(429, Some(error_json("TooManyRequestsException")))
            .output(|| {
                BatchUpdateFindingsOutput::builder()
                    .set_processed_findings(Some(vec![]))
                    .set_unprocessed_findings(Some(vec![]))
                    .build()
            })
            .build();
        let client = mock_client!(aws_sdk_securityhub, RuleMode::Sequential, [&update], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let retries = RetryCounter::default();
        let finding = FindingRef::parse(ARN).unwrap();
        let long_note = "n".repeat(2 * NOTE_MAX);
        let result = super::update(
            &client,
            &crate::aws::retry::quick_policy(),
            &finding,
            Workflow::Resolved,
            &long_note,
            &retries,
        )
        .await;
        assert_eq!(result.expect("updated"), None);
        assert_eq!(update.num_calls(), 2);
        assert_eq!(retries.get(), 1, "the throttled call was retried");
    }

    #[tokio::test]
    async fn an_unprocessed_finding_is_reported() {
        let update = mock!(Client::batch_update_findings).then_output(|| {
            BatchUpdateFindingsOutput::builder()
                .set_processed_findings(Some(vec![]))
                .unprocessed_findings(
                    BatchUpdateFindingsUnprocessedFinding::builder()
                        .finding_identifier(
                            AwsSecurityFindingIdentifier::builder()
                                .id(ARN)
                                .product_arn("arn:aws:securityhub:us-east-1::product/aws/guardduty")
                                .build(),
                        )
                        .error_code("FindingNotFound")
                        .error_message("Finding not found")
                        .build(),
                )
                .build()
        });
        let client = mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, [&update], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let finding = FindingRef::parse(ARN).unwrap();
        let result = super::update(
            &client,
            &crate::aws::retry::quick_policy(),
            &finding,
            Workflow::Notified,
            "rejected",
            &RetryCounter::default(),
        )
        .await;
        assert_eq!(
            result.expect("answered"),
            Some(Unprocessed {
                code: "FindingNotFound".into(),
                message: "Finding not found".into()
            })
        );
    }

    #[test]
    fn a_guardduty_arn_names_partition_region_and_account() {
        let finding = FindingRef::parse(
            "arn:aws-us-gov:guardduty:us-gov-west-1:111122223333:detector/d1/finding/f1",
        )
        .expect("a finding ARN");
        assert_eq!(finding.account, "111122223333");
        assert_eq!(
            finding.product_arn(),
            "arn:aws-us-gov:securityhub:us-gov-west-1::product/aws/guardduty"
        );
        for not in [
            "arn:aws:guardduty:us-east-1:111122223333:detector/d1",
            "arn:aws:iam::111122223333:user/alice",
            "f1",
        ] {
            assert_eq!(FindingRef::parse(not), None, "{not}");
        }
    }
}
