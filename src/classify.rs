//! The one place that decides what an AWS error means: transient (retry), permanent
//! (never retry), or not-found (the thing asked about does not exist).

use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// What an AWS error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, 5xx, timeouts, broken connections: worth another attempt.
    Transient,
    /// The entity (user, key, queue) does not exist.
    NotFound,
    /// Anything else: retrying cannot help.
    Permanent,
}

/// An AWS error reduced to what the worker acts on, with the SDK's full text kept for logs.
#[derive(Debug, Clone, thiserror::Error)]
pub struct AwsError {
    /// The API operation, e.g. `DeleteAccessKey`.
    pub operation: &'static str,
    /// What it means.
    pub class: ErrorClass,
    /// The service's error code, when it sent one.
    pub code: Option<String>,
    /// Human-readable description (never contains credentials).
    pub message: String,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.operation, self.message)
    }
}

impl AwsError {
    /// Classifies an SDK error from `operation`.
    pub fn from_sdk<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (class, code) = classify(&err);
        Self {
            operation,
            class,
            code,
            message: DisplayErrorContext(&err).to_string(),
        }
    }

    /// Whether the service asked us to slow down.
    pub fn is_throttling(&self) -> bool {
        self.code
            .as_deref()
            .map(strip_sqs_prefix)
            .is_some_and(|code| THROTTLING_CODES.contains(&code))
    }

    /// Whether the caller lacks permission (reason `access_denied`).
    pub fn is_access_denied(&self) -> bool {
        matches!(
            self.code.as_deref().map(strip_sqs_prefix),
            Some(
                "AccessDenied"
                    | "AccessDeniedException"
                    | "UnauthorizedOperation"
                    | "UnrecognizedClientException"
                    | "InvalidClientTokenId"
                    | "ExpiredToken"
                    | "ExpiredTokenException"
            )
        )
    }
}

/// Error codes that mean "slow down".
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
];

/// Error codes that mean "try again" (contract section 3), besides throttling.
const RETRYABLE_CODES: &[&str] = &[
    "ServiceFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
    "KmsThrottled",
];

/// Error codes that mean "no such thing".
const NOT_FOUND_CODES: &[&str] = &[
    "NoSuchEntity",
    "NoSuchEntityException",
    "NonExistentQueue",
    "QueueDoesNotExist",
];

/// SQS's query-compatible codes carry a prefix: `AWS.SimpleQueueService.NonExistentQueue`.
fn strip_sqs_prefix(code: &str) -> &str {
    code.strip_prefix("AWS.SimpleQueueService.").unwrap_or(code)
}

/// Classifies an SDK error and returns the service's error code, if any.
pub fn classify<E>(err: &SdkError<E, HttpResponse>) -> (ErrorClass, Option<String>)
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::TimeoutError(_) => (ErrorClass::Transient, None),
        SdkError::DispatchFailure(failure) => {
            // A request the SDK could not even build or sign (a user error) will fail the
            // same way again; I/O, timeouts and anything else on the wire may not.
            let class = if failure.is_user() {
                ErrorClass::Permanent
            } else {
                ErrorClass::Transient
            };
            (class, None)
        }
        // The service answered, but the answer was cut off or unreadable: the request may
        // or may not have taken effect; every operation we call is safe to repeat.
        SdkError::ResponseError(_) => (ErrorClass::Transient, None),
        SdkError::ConstructionFailure(_) => (ErrorClass::Permanent, None),
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().map(str::to_owned);
            (classify_service(code.as_deref(), status), code)
        }
        // SdkError is non-exhaustive: an unknown kind is not assumed to be safe to repeat.
        _ => (ErrorClass::Permanent, None),
    }
}

fn classify_service(code: Option<&str>, status: u16) -> ErrorClass {
    if let Some(code) = code.map(strip_sqs_prefix) {
        if THROTTLING_CODES.contains(&code) || RETRYABLE_CODES.contains(&code) {
            return ErrorClass::Transient;
        }
        if NOT_FOUND_CODES.contains(&code) {
            return ErrorClass::NotFound;
        }
    }
    if status >= 500 || status == 429 {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_iam::operation::delete_access_key::DeleteAccessKeyError;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty())
    }

    fn service(code: &str, status: u16) -> SdkError<DeleteAccessKeyError, HttpResponse> {
        let meta = ErrorMetadata::builder().code(code).message("boom").build();
        SdkError::service_error(DeleteAccessKeyError::generic(meta), response(status))
    }

    #[test]
    fn service_errors_by_code_and_status() {
        let table: &[(&str, u16, ErrorClass)] = &[
            ("Throttling", 400, ErrorClass::Transient),
            ("ThrottlingException", 400, ErrorClass::Transient),
            ("RequestLimitExceeded", 400, ErrorClass::Transient),
            ("TooManyRequestsException", 400, ErrorClass::Transient),
            ("ServiceFailure", 500, ErrorClass::Transient),
            ("ServiceUnavailable", 503, ErrorClass::Transient),
            ("InternalError", 500, ErrorClass::Transient),
            (
                "AWS.SimpleQueueService.RequestThrottled",
                400,
                ErrorClass::Transient,
            ),
            ("SomethingNew", 502, ErrorClass::Transient),
            ("SomethingNew", 429, ErrorClass::Transient),
            ("NoSuchEntity", 404, ErrorClass::NotFound),
            (
                "AWS.SimpleQueueService.NonExistentQueue",
                400,
                ErrorClass::NotFound,
            ),
            ("QueueDoesNotExist", 400, ErrorClass::NotFound),
            ("AccessDenied", 403, ErrorClass::Permanent),
            ("ValidationError", 400, ErrorClass::Permanent),
            ("LimitExceeded", 409, ErrorClass::Permanent),
            ("ReceiptHandleIsInvalid", 400, ErrorClass::Permanent),
        ];
        for (code, status, expected) in table {
            let (class, got_code) = classify(&service(code, *status));
            assert_eq!(class, *expected, "{code} {status}");
            assert_eq!(got_code.as_deref(), Some(*code));
        }
    }

    #[test]
    fn transport_errors() {
        let timeout: SdkError<DeleteAccessKeyError, HttpResponse> =
            SdkError::timeout_error("attempt timed out");
        assert_eq!(classify(&timeout).0, ErrorClass::Transient);

        let io: SdkError<DeleteAccessKeyError, HttpResponse> = SdkError::dispatch_failure(
            ConnectorError::io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()),
        );
        assert_eq!(classify(&io).0, ErrorClass::Transient);

        let connect_timeout: SdkError<DeleteAccessKeyError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::timeout("connect timed out".into()));
        assert_eq!(classify(&connect_timeout).0, ErrorClass::Transient);

        let user: SdkError<DeleteAccessKeyError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::user("bad request".into()));
        assert_eq!(classify(&user).0, ErrorClass::Permanent);

        let cut_off: SdkError<DeleteAccessKeyError, HttpResponse> =
            SdkError::response_error("truncated body", response(200));
        assert_eq!(classify(&cut_off).0, ErrorClass::Transient);

        let construction: SdkError<DeleteAccessKeyError, HttpResponse> =
            SdkError::construction_failure("missing field");
        assert_eq!(classify(&construction).0, ErrorClass::Permanent);
    }

    #[test]
    fn access_denied_is_recognised() {
        let err = AwsError::from_sdk("DeleteAccessKey", service("AccessDenied", 403));
        assert!(err.is_access_denied());
        assert_eq!(err.class, ErrorClass::Permanent);
        let err = AwsError::from_sdk("DeleteAccessKey", service("Throttling", 400));
        assert!(!err.is_access_denied());
    }
}
