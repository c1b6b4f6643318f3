//! AWS's documented error answers, replayed on the wire through `aws-smithy-mocks`: what
//! the emulator cannot (or does not) send. Each row is an error as the service sends it
//! (IAM and STS: the query protocol's XML `ErrorResponse` with its HTTP status; SQS: the
//! JSON protocol's `__type` body with the query-compatible code in `x-amzn-query-error`),
//! parsed by the real SDK and classified by the worker. docs, "On real AWS", lists the
//! same codes for operators.
//!
//! Sources: IAM API Reference and STS API Reference, "Common Error Types"; SQS API
//! Reference, "Common Errors" and each action's "Errors".

use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::RetryConfig;
use iam_key_revoker::aws::classify::{AwsError, ErrorClass};
use iam_key_revoker::aws::home::Home;
use iam_key_revoker::aws::iam::Iam;
use iam_key_revoker::aws::retry::{BackoffPolicy, RetryCounter};
use iam_key_revoker::aws::revoke::Effect;
use iam_key_revoker::guard::Protection;
use iam_key_revoker::job::{Action, Job, Target};
use iam_key_revoker::Reason;
use std::time::Duration;

const MESSAGE: &str = "as AWS documents it";

/// An IAM or STS query-protocol error.
fn query_error(status: u16, code: &str) -> HttpResponse {
    let body = format!(
        "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{MESSAGE}</Message></Error><RequestId>4a7e6c15-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
    );
    let mut response =
        HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
    response.headers_mut().insert("content-type", "text/xml");
    response
}

/// An SQS JSON-protocol error; `query_code` is what SQS puts in `x-amzn-query-error`.
fn sqs_error(status: u16, type_name: &str, query_code: Option<&str>) -> HttpResponse {
    let body = format!(r#"{{"__type":"{type_name}","message":"{MESSAGE}"}}"#);
    let mut response =
        HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
    response
        .headers_mut()
        .insert("content-type", "application/x-amz-json-1.0");
    if let Some(code) = query_code {
        response
            .headers_mut()
            .insert("x-amzn-query-error", format!("{code};Sender"));
    }
    response
}

async fn iam_answer(status: u16, code: &'static str) -> AwsError {
    let rule = mock!(aws_sdk_iam::Client::delete_access_key)
        .then_http_response(move || query_error(status, code));
    let client = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(RetryConfig::disabled()));
    let err = client
        .delete_access_key()
        .user_name("alice")
        .access_key_id("AKIAIOSFODNN7EXAMPLE")
        .send()
        .await
        .unwrap_err();
    AwsError::from_sdk("DeleteAccessKey", err)
}

async fn sts_answer(status: u16, code: &'static str) -> AwsError {
    let rule = mock!(aws_sdk_sts::Client::get_caller_identity)
        .then_http_response(move || query_error(status, code));
    let client = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(RetryConfig::disabled()));
    let err = client.get_caller_identity().send().await.unwrap_err();
    AwsError::from_sdk("GetCallerIdentity", err)
}

async fn sqs_answer(status: u16, type_name: &'static str, query: Option<&'static str>) -> AwsError {
    let rule = mock!(aws_sdk_sqs::Client::receive_message)
        .then_http_response(move || sqs_error(status, type_name, query));
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(RetryConfig::disabled()));
    let err = client
        .receive_message()
        .queue_url("https://sqs.us-east-1.amazonaws.com/111122223333/jobs")
        .send()
        .await
        .unwrap_err();
    AwsError::from_sdk("ReceiveMessage", err)
}

fn check(err: &AwsError, class: ErrorClass, code: &str, what: &str) {
    assert_eq!(err.class, class, "{what}: {err}");
    assert_eq!(err.code.as_deref(), Some(code), "{what}");
    let text = err.to_string();
    assert!(
        !text.contains('\n') && text.len() < 200,
        "{what}: one short line: {text}"
    );
    assert!(
        text.ends_with(&format!("{code}: {MESSAGE}")),
        "{what}: {text}"
    );
}

#[tokio::test]
async fn iam_errors() {
    use ErrorClass::*;
    let rows: &[(u16, &'static str, ErrorClass)] = &[
        // Throttling and server faults: retried with backoff.
        (400, "Throttling", Transient),
        (500, "ServiceFailure", Transient),
        (503, "ServiceUnavailable", Transient),
        (500, "InternalFailure", Transient),
        // The worker's own credentials: never a verdict on a job.
        (403, "ExpiredToken", Credentials),
        (403, "InvalidClientTokenId", Credentials),
        (403, "SignatureDoesNotMatch", Credentials),
        (400, "RequestExpired", Credentials),
        (403, "MissingAuthenticationToken", Credentials),
        // Verdicts on the job.
        (403, "AccessDenied", Permanent),
        (404, "NoSuchEntity", NotFound),
        (409, "LimitExceeded", Permanent),
        (400, "ValidationError", Permanent),
    ];
    for &(status, code, class) in rows {
        let err = iam_answer(status, code).await;
        check(&err, class, code, &format!("IAM {status} {code}"));
        assert_eq!(err.is_access_denied(), code == "AccessDenied", "{code}");
    }
}

#[tokio::test]
async fn sts_errors() {
    use ErrorClass::*;
    let rows: &[(u16, &'static str, ErrorClass)] = &[
        (403, "ExpiredToken", Credentials),
        (403, "InvalidClientTokenId", Credentials),
        (403, "SignatureDoesNotMatch", Credentials),
        (400, "Throttling", Transient),
        (403, "AccessDenied", Permanent),
        (403, "RegionDisabledException", Permanent),
    ];
    for &(status, code, class) in rows {
        let err = sts_answer(status, code).await;
        check(&err, class, code, &format!("STS {status} {code}"));
    }
}

#[tokio::test]
async fn sqs_errors() {
    use ErrorClass::*;
    let rows: &[(u16, &'static str, Option<&'static str>, &str, ErrorClass)] = &[
        (
            400,
            "com.amazonaws.sqs#QueueDoesNotExist",
            Some("AWS.SimpleQueueService.NonExistentQueue"),
            "AWS.SimpleQueueService.NonExistentQueue",
            NotFound,
        ),
        (
            400,
            "com.amazonaws.sqs#RequestThrottled",
            Some("RequestThrottled"),
            "RequestThrottled",
            Transient,
        ),
        (
            400,
            "com.amazon.coral.availability#ThrottlingException",
            None,
            "ThrottlingException",
            Transient,
        ),
        (
            500,
            "com.amazon.coral.service#InternalFailure",
            None,
            "InternalFailure",
            Transient,
        ),
        (
            403,
            "com.amazon.coral.service#ExpiredTokenException",
            None,
            "ExpiredTokenException",
            Credentials,
        ),
        (
            400,
            "com.amazon.coral.service#UnrecognizedClientException",
            None,
            "UnrecognizedClientException",
            Credentials,
        ),
        (
            403,
            "com.amazon.coral.service#InvalidClientTokenId",
            Some("InvalidClientTokenId"),
            "InvalidClientTokenId",
            Credentials,
        ),
        (
            400,
            "com.amazon.coral.service#AccessDeniedException",
            Some("AccessDenied"),
            "AccessDenied",
            Permanent,
        ),
        (
            400,
            "com.amazonaws.sqs#KmsAccessDenied",
            Some("KMS.AccessDeniedException"),
            "KMS.AccessDeniedException",
            Permanent,
        ),
    ];
    for &(status, type_name, query, code, class) in rows {
        let err = sqs_answer(status, type_name, query).await;
        check(&err, class, code, &format!("SQS {status} {type_name}"));
    }
}

fn policy() -> BackoffPolicy {
    BackoffPolicy::new(
        Duration::from_millis(10),
        Duration::from_millis(50),
        2.0,
        false,
        Duration::from_secs(1),
    )
    .unwrap()
}

fn iam(client: aws_sdk_iam::Client) -> Iam {
    Iam::new(client, 1_000, policy(), Protection::none())
}

fn delete_job() -> Job {
    let target = Target::Key {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        user_name: Some("alice".into()),
    };
    Job::new("r".into(), target, Action::Delete)
}

/// The job's account; STS is never asked here (IAM answers before it would be).
fn home() -> Home {
    let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, []);
    Home::new("111122223333", sts, policy())
}

/// What the IAM step makes of each answer to `DeleteAccessKey`: credential failures and
/// throttling are never a rejection; credential failures are not retried in-process
/// (the worker pauses instead); access denied is the job's `access_denied`.
#[tokio::test(start_paused = true)]
async fn the_iam_step_never_turns_a_credential_failure_into_a_rejection() {
    for (status, code) in [
        (403, "ExpiredToken"),
        (403, "InvalidClientTokenId"),
        (400, "RequestExpired"),
        (403, "SignatureDoesNotMatch"),
    ] {
        let rule = mock!(aws_sdk_iam::Client::delete_access_key)
            .sequence()
            .http_response(move || query_error(status, code))
            .repeatedly()
            .build();
        let client = mock_client!(aws_sdk_iam, RuleMode::Sequential, [&rule], |c| c
            .retry_config(RetryConfig::disabled()));
        let retries = RetryCounter::default();
        let result = iam(client).revoke(&delete_job(), &home(), &retries).await;
        let Effect::Failed(err) = &result.effect else {
            panic!("{code}: {:?}", result.effect)
        };
        assert_eq!(err.class, ErrorClass::Credentials, "{code}");
        assert_eq!(rule.num_calls(), 1, "{code}: not retried in-process");
        assert_eq!(retries.get(), 0);
    }

    let rule = mock!(aws_sdk_iam::Client::delete_access_key)
        .then_http_response(|| query_error(403, "AccessDenied"));
    let client = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(RetryConfig::disabled()));
    let result = iam(client)
        .revoke(&delete_job(), &home(), &RetryCounter::default())
        .await;
    let Effect::Rejected(Reason::AccessDenied, detail) = &result.effect else {
        panic!("{:?}", result.effect)
    };
    assert_eq!(detail, &format!("DeleteAccessKey: AccessDenied: {MESSAGE}"));
}
