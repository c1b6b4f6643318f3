//! Building the AWS clients from configuration.
//!
//! The SDK's own retries are disabled on purpose: `retry::call` is the single retry layer,
//! so every retry is logged and bounded by `retry.max_elapsed_seconds`, and two layers
//! never multiply unseen. Timeouts are explicit so a hung endpoint becomes a transient
//! error instead of a stuck job; they also stand in for the SDK's stalled-stream
//! protection, which is off.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::ConnectorBuilder;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::config::Config;
use crate::metrics::RequestCounter;

/// Extra time a long poll may take beyond its `WaitTimeSeconds` before it counts as hung.
const LONG_POLL_SLACK: Duration = Duration::from_secs(10);

/// The clients the worker uses.
#[derive(Debug, Clone)]
pub struct Clients {
    pub sqs: aws_sdk_sqs::Client,
    pub iam: aws_sdk_iam::Client,
    pub sts: aws_sdk_sts::Client,
    /// The shared configuration, source of the clients built later (other accounts).
    pub sdk: SdkConfig,
}

/// Loads the shared SDK configuration: the usual credential chain, the configured region
/// and endpoint, no SDK retries, explicit timeouts.
pub async fn load_sdk_config(config: &Config) -> SdkConfig {
    sdk_loader(config).load().await
}

/// The loader behind [`load_sdk_config`], for callers that add to it (tests supply
/// fixed credentials).
pub fn sdk_loader(config: &Config) -> ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts(config, Duration::ZERO))
        // Every attempt has a timeout of its own (above), which covers a stalled body
        // too; the SDK's throughput monitor would only add a timer to every request.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
    if let Some(region) = &config.aws.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &config.aws.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader
}

/// One HTTPS client for the SQS, IAM and STS clients and the credential providers. Left
/// to itself the SDK gives each of them its own default client, and each loads the
/// system's CA certificates again (about 100 KB of trust anchors apiece) and keeps its
/// own connection pool and TLS session cache. This is that same default, built once:
/// rustls with aws-lc, `HTTPS_PROXY`/`NO_PROXY` honoured, the client's timeouts and
/// sleep. (`build_with_connector_fn` is how the SDK builds its default; the builder's
/// public `build_https` would drop the proxy settings.)
fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

fn timeouts(config: &Config, extra: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(config.aws.connect_timeout_seconds))
        .operation_attempt_timeout(Duration::from_secs(config.aws.request_timeout_seconds) + extra)
        .build()
}

impl Clients {
    /// A DynamoDB client for the breaker's table (docs, "The breaker"), built only where
    /// one is configured: a worker without a breaker never touches the SDK's DynamoDB
    /// code, and keeps it out of its resident memory.
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&self.sdk)
                .interceptor(RequestCounter)
                .build(),
        )
    }

    /// Builds every client from one SDK configuration, each counting its requests in the
    /// metrics. The SQS client allows long polls their wait time on top of the request
    /// timeout.
    pub fn new(sdk: &SdkConfig, config: &Config) -> Self {
        let long_poll =
            Duration::from_secs(u64::from(config.sqs.wait_time_seconds)) + LONG_POLL_SLACK;
        let sqs = aws_sdk_sqs::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts(config, long_poll))
            .interceptor(RequestCounter)
            .build();
        let iam = aws_sdk_iam::config::Builder::from(sdk)
            .interceptor(RequestCounter)
            .build();
        let sts = aws_sdk_sts::config::Builder::from(sdk)
            .interceptor(RequestCounter)
            .build();

        Self {
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            iam: aws_sdk_iam::Client::from_conf(iam),
            sts: aws_sdk_sts::Client::from_conf(sts),
            sdk: sdk.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_service_clients_share_the_loaders_https_client() {
        let config = Config::from_toml(
            r#"
            [aws]
            region = "us-east-1"
            endpoint_url = "http://127.0.0.1:9"
            [sqs]
            queue_url = "http://127.0.0.1:9/123456789012/jobs"
            "#,
        )
        .expect("valid");
        let sdk = sdk_loader(&config)
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .load()
            .await;
        assert!(sdk.http_client().is_some(), "set on the loader");
        // A service client without one in its config would build its own default
        // client (and load the CA certificates again) when it first sends.
        let clients = Clients::new(&sdk, &config);
        assert!(clients.sqs.config().http_client().is_some());
        assert!(clients.iam.config().http_client().is_some());
        assert!(clients.sts.config().http_client().is_some());
    }
}
