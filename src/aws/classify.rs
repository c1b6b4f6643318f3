//! The one place that decides what an AWS error means: transient (retry), a failure of
//! the worker's own credentials (pause, never a verdict on a job), not-found (the thing
//! asked about does not exist) or permanent (never retry).
//!
//! The codes and HTTP statuses are AWS's documented ones: the common errors of every
//! query/JSON API (IAM API Reference, "Common Error Types"; SQS API Reference, "Common
//! Errors"), where throttling is `Throttling`/`ThrottlingException`/`RequestThrottled`,
//! an expired session `ExpiredToken`/`ExpiredTokenException` (403), an unknown access key
//! `InvalidClientTokenId` (403), clock skew `RequestExpired`/`SignatureDoesNotMatch`.

use std::error::Error as StdError;
use std::fmt;

use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// What an AWS error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, 5xx, timeouts, broken connections: worth another attempt.
    Transient,
    /// The worker's own credentials failed (expired, unknown, missing, clock skew): not
    /// the job's fault. The worker pauses until its credentials work again.
    Credentials,
    /// The entity (user, key, queue) does not exist.
    NotFound,
    /// Anything else: retrying cannot help.
    Permanent,
}

/// The longest error message kept: AWS's messages are a sentence or two; anything longer
/// is a dump nobody reads in an audit line.
const MAX_MESSAGE_CHARS: usize = 400;

/// An AWS error reduced to what the worker acts on, and one readable line for people:
/// `DeleteAccessKey: AccessDenied: User: … is not authorized to perform: …`.
#[derive(Debug, Clone, thiserror::Error)]
pub struct AwsError {
    /// The API operation, e.g. `DeleteAccessKey`.
    pub operation: &'static str,
    /// What it means.
    pub class: ErrorClass,
    /// The service's error code, when it sent one.
    pub code: Option<String>,
    /// AWS's own message, or a short description of a failure on the way (one line,
    /// never credentials).
    pub message: String,
    /// No answer came from the endpoint: the connection, DNS or TLS failed, or the
    /// request timed out. Says nothing of the request itself.
    pub unanswered: bool,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{}: {code}: {}", self.operation, self.message),
            None => write!(f, "{}: {}", self.operation, self.message),
        }
    }
}

impl AwsError {
    /// Classifies an SDK error from `operation`.
    pub fn from_sdk<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        Self::of(operation, &err)
    }

    /// Classifies an SDK error from `operation` that the caller keeps (one wrapped in a
    /// credentials provider's error, for instance).
    pub fn of<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let (class, code) = classify(err);
        let message = match err {
            SdkError::ServiceError(service) => service
                .err()
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("HTTP {}", service.raw().status().as_u16())),
            SdkError::TimeoutError(_) => "request timed out".to_owned(),
            other => {
                find::<MemberRoleFailed>(other).map_or_else(|| causes(other), ToString::to_string)
            }
        };
        let unanswered = match err {
            SdkError::TimeoutError(_) => true,
            SdkError::DispatchFailure(failure) => !failure.is_user(),
            _ => false,
        };
        Self {
            operation,
            class,
            code,
            message: one_line(&message),
            unanswered: unanswered && class == ErrorClass::Transient,
        }
    }

    /// Whether this failure is the endpoint's or the credentials', not the request's: a
    /// command that sends many requests stops at the first one, since every other
    /// request would fail the same way.
    pub fn is_the_endpoints(&self) -> bool {
        self.unanswered || self.class == ErrorClass::Credentials
    }

    /// An error that is not the SDK's, as one readable line.
    pub fn other(
        operation: &'static str,
        class: ErrorClass,
        err: &(dyn StdError + 'static),
    ) -> Self {
        Self {
            operation,
            class,
            code: None,
            message: one_line(&causes(err)),
            unanswered: false,
        }
    }

    /// Whether the service asked us to slow down.
    pub fn is_throttling(&self) -> bool {
        self.code
            .as_deref()
            .map(strip_sqs_prefix)
            .is_some_and(|code| THROTTLING_CODES.contains(&code))
    }

    /// Whether the caller lacks permission (reason `access_denied`). A failure of the
    /// worker's own credentials is not this: see [`ErrorClass::Credentials`].
    pub fn is_access_denied(&self) -> bool {
        self.class == ErrorClass::Permanent
            && matches!(
                self.code.as_deref().map(strip_sqs_prefix),
                Some("AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation")
            )
    }
}

/// The error's own text and its causes, joined with ": ", without the debug dump the
/// SDK's `DisplayErrorContext` appends, and without a cause repeated word for word.
pub fn causes(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// One line of at most [`MAX_MESSAGE_CHARS`] characters.
fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX_MESSAGE_CHARS {
        return flat;
    }
    let mut cut: String = flat.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Error codes that mean "slow down".
pub(crate) const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    // DynamoDB (API Reference, Common Errors and each operation's Errors).
    "ProvisionedThroughputExceededException",
];

/// Error codes that mean "try again" (docs, "On real AWS"), besides throttling.
const RETRYABLE_CODES: &[&str] = &[
    "ServiceFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServerException",
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
    "KmsThrottled",
    "TransactionConflictException",
    // A retry carrying the same ClientRequestToken while the first is still applied
    // (DynamoDB API Reference, TransactWriteItems).
    "TransactionInProgressException",
];

/// Error codes that mean the worker's own credentials failed: expired or unknown
/// credentials, an unsigned request, or a clock too far off (a signature older than
/// 15 minutes, or from the future).
const CREDENTIAL_CODES: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "MissingAuthenticationToken",
    "RequestExpired",
    "SignatureDoesNotMatch",
];

/// Error codes that mean "no such thing".
const NOT_FOUND_CODES: &[&str] = &[
    "NoSuchEntity",
    "NoSuchEntityException",
    "NonExistentQueue",
    "QueueDoesNotExist",
    "ResourceNotFoundException",
];

/// Error codes the worker acts on or reports besides the lists above.
const OTHER_KNOWN_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "LimitExceeded",
    "InconsistentOwner",
    "InvalidParameterValue",
    "ValidationError",
    "ValidationException",
    "ConflictException",
    "ServiceQuotaExceededException",
    "MalformedPolicyDocument",
    "EntityTemporarilyUnmodifiable",
];

/// The error code as a metric label: one of the codes this module knows, `none` where
/// there is none, `other` for any other, so that a misbehaving endpoint cannot grow a
/// label set without bound (`none_label` names the absent code).
pub fn code_label(code: Option<&str>, none_label: &'static str) -> &'static str {
    let Some(code) = code else {
        return none_label;
    };
    let code = strip_sqs_prefix(code);
    [
        THROTTLING_CODES,
        RETRYABLE_CODES,
        CREDENTIAL_CODES,
        NOT_FOUND_CODES,
        OTHER_KNOWN_CODES,
    ]
    .into_iter()
    .flatten()
    .find(|known| **known == code)
    .copied()
    .unwrap_or("other")
}

/// SQS's query-compatible codes carry a prefix: `AWS.SimpleQueueService.NonExistentQueue`.
fn strip_sqs_prefix(code: &str) -> &str {
    code.strip_prefix("AWS.SimpleQueueService.").unwrap_or(code)
}

/// A member account's role could not be assumed again when its credentials were due
/// for renewal: that account's failure, classified as STS answered AssumeRole, never as
/// the worker's own credentials failing (CONTRACT §3). The member account's credentials
/// provider returns it inside its [`CredentialsError`].
#[derive(Debug, thiserror::Error)]
#[error("account {account}: the worker's role there could not be assumed again: {error}")]
pub struct MemberRoleFailed {
    pub account: String,
    pub error: AwsError,
}

/// The first error of type `T` in `err`'s chain of sources, `err` included.
fn find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// Classifies an SDK error and returns the service's error code, if any.
pub fn classify<E>(err: &SdkError<E, HttpResponse>) -> (ErrorClass, Option<String>)
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    // A credentials provider failed below the request (none found, it timed out or
    // failed): the request was never sent. A member account's role is its own.
    if !matches!(err, SdkError::ServiceError(_) | SdkError::TimeoutError(_)) {
        if let Some(member) = find::<MemberRoleFailed>(err) {
            // AssumeRole's answer: whether to retry or give up; never "not found".
            let class = match member.error.class {
                ErrorClass::Transient => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            };
            return (class, member.error.code.clone());
        }
        if find::<CredentialsError>(err).is_some() {
            return (ErrorClass::Credentials, None);
        }
    }
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
        if CREDENTIAL_CODES.contains(&code) {
            return ErrorClass::Credentials;
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
    fn metric_labels_are_known_codes_or_other() {
        assert_eq!(code_label(Some("Throttling"), "none"), "Throttling");
        assert_eq!(
            code_label(Some("AWS.SimpleQueueService.NonExistentQueue"), "none"),
            "NonExistentQueue"
        );
        assert_eq!(code_label(Some("ExpiredToken"), "none"), "ExpiredToken");
        // Well-formed but unknown codes are folded too: each would be a new series.
        assert_eq!(code_label(Some("SomethingNew"), "none"), "other");
        assert_eq!(code_label(Some("Throttling2"), "none"), "other");
        assert_eq!(code_label(Some("a b"), "none"), "other");
        assert_eq!(code_label(None, "no_credentials"), "no_credentials");
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
            ("ExpiredToken", 403, ErrorClass::Credentials),
            ("ExpiredTokenException", 403, ErrorClass::Credentials),
            ("InvalidClientTokenId", 403, ErrorClass::Credentials),
            ("RequestExpired", 400, ErrorClass::Credentials),
            ("SignatureDoesNotMatch", 403, ErrorClass::Credentials),
            ("UnrecognizedClientException", 400, ErrorClass::Credentials),
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
    fn only_a_request_without_an_answer_or_refused_credentials_is_the_endpoints() {
        let of = |e: SdkError<DeleteAccessKeyError, HttpResponse>| {
            AwsError::from_sdk("DeleteAccessKey", e).is_the_endpoints()
        };
        assert!(of(SdkError::dispatch_failure(ConnectorError::io(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()
        ))));
        assert!(of(SdkError::dispatch_failure(ConnectorError::timeout(
            "connect timed out".into()
        ))));
        assert!(of(SdkError::timeout_error("attempt timed out")));
        assert!(of(service("InvalidClientTokenId", 403)));
        assert!(
            !of(service("Throttling", 400)),
            "answered: the line may retry"
        );
        assert!(!of(service("AccessDenied", 403)), "the line's own");
        assert!(!of(service("NoSuchEntity", 404)));
        assert!(!of(SdkError::dispatch_failure(ConnectorError::user(
            "bad request".into()
        ))));
        assert!(!of(SdkError::response_error(
            "truncated body",
            response(200)
        )));
    }

    #[test]
    fn access_denied_is_recognised_and_credential_failures_are_not_it() {
        let err = AwsError::from_sdk("DeleteAccessKey", service("AccessDenied", 403));
        assert!(err.is_access_denied());
        assert_eq!(err.class, ErrorClass::Permanent);
        for code in ["Throttling", "ExpiredToken", "InvalidClientTokenId"] {
            let err = AwsError::from_sdk("DeleteAccessKey", service(code, 403));
            assert!(!err.is_access_denied(), "{code}");
        }
    }

    /// A credentials provider that finds nothing, as the default chain does on a machine
    /// with no credentials.
    #[derive(Debug)]
    struct NoCredentials;

    impl aws_credential_types::provider::ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                CredentialsError::not_loaded("no providers in chain provided credentials"),
            ))
        }
    }

    #[tokio::test]
    async fn missing_credentials_are_a_credential_failure_in_one_line() {
        let config = aws_sdk_iam::Config::builder()
            .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
            .region(aws_sdk_iam::config::Region::new("us-east-1"))
            // Never reached: the request fails before it is signed.
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(NoCredentials)
            .build();
        let err = aws_sdk_iam::Client::from_conf(config)
            .delete_access_key()
            .user_name("alice")
            .access_key_id("AKIAIOSFODNN7EXAMPLE")
            .send()
            .await
            .unwrap_err();
        let err = AwsError::from_sdk("DeleteAccessKey", err);
        assert_eq!(err.class, ErrorClass::Credentials, "{err}");
        assert!(!err.is_access_denied());
        assert!(err.message.contains("no providers in chain"), "{err}");
        assert!(
            !err.message.contains("DispatchFailure"),
            "no debug dump: {err}"
        );
    }

    #[test]
    fn the_text_is_one_readable_line() {
        let err = AwsError::from_sdk("DeleteAccessKey", service("AccessDenied", 403));
        assert_eq!(err.to_string(), "DeleteAccessKey: AccessDenied: boom");
        let long = ErrorMetadata::builder()
            .code("X")
            .message(format!("line one\nline two {}", "x".repeat(1_000)))
            .build();
        let err = AwsError::from_sdk(
            "DeleteAccessKey",
            SdkError::<_, HttpResponse>::service_error(
                DeleteAccessKeyError::generic(long),
                response(400),
            ),
        );
        assert!(!err.to_string().contains('\n'));
        assert!(err.message.starts_with("line one line two"));
        assert_eq!(err.message.chars().count(), MAX_MESSAGE_CHARS);
        let timeout: SdkError<DeleteAccessKeyError, HttpResponse> =
            SdkError::timeout_error("attempt timed out");
        assert_eq!(
            AwsError::from_sdk("ListAccessKeys", timeout).to_string(),
            "ListAccessKeys: request timed out"
        );
    }
}
