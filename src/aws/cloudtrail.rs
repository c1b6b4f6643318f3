//! Reading a key's CloudTrail event history (docs, "Activity reports"):
//! `LookupEvents` by `AccessKeyId`, page by page (`NextToken`, 50 events a page), in one
//! Region, within CloudTrail's quota of 2 requests per second per account and Region
//! (CloudTrail API Reference, "LookupEvents": "The rate of lookup requests is limited to
//! two per second, per account, per Region"), kept with an [`AdaptiveRate`] of its own
//! per account and Region; and the Regions enabled in an account (`account:ListRegions`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aws_config::{Region, SdkConfig};
use aws_sdk_account::types::RegionOptStatus;
use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
use aws_smithy_types::DateTime;

use crate::activity::TrailEvent;
use crate::aws::classify::AwsError;
use crate::aws::ratelimit::AdaptiveRate;
use crate::aws::retry::{call, BackoffPolicy, RetryCounter};
use crate::metrics::RequestCounter;

/// CloudTrail's quota of lookups per second, per account and Region.
const LOOKUPS_PER_SECOND: u32 = 2;
/// `LookupEvents`' largest page.
const PAGE: i32 = 50;

/// The most (account, Region) pairs remembered as refusing lookups: a thousand accounts
/// of thirty Regions.
const REFUSED_MAX: usize = 30_000;

/// The lookup rate of each (account, Region), and the pairs where CloudTrail refused
/// lookups (a service control policy denying the Region, typically): those are not read
/// again for the life of the process, and said once.
#[derive(Debug, Default)]
pub struct LookupRates {
    rates: Mutex<HashMap<(String, String), Arc<AdaptiveRate>>>,
    refused: Mutex<HashSet<(String, String)>>,
}

impl LookupRates {
    /// Remembers that `account` refuses lookups in `region`; true the first time.
    pub fn refuse(&self, account: &str, region: &str) -> bool {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.len() < REFUSED_MAX && refused.insert((account.to_owned(), region.to_owned()))
    }

    /// Whether `account` refused lookups in `region` before.
    pub fn refused(&self, account: &str, region: &str) -> bool {
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.contains(&(account.to_owned(), region.to_owned()))
    }

    /// The rate of `account` in `region`.
    pub fn of(&self, account: &str, region: &str) -> Arc<AdaptiveRate> {
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            rates
                .entry((account.to_owned(), region.to_owned()))
                .or_insert_with(|| Arc::new(AdaptiveRate::new(LOOKUPS_PER_SECOND))),
        )
    }
}

/// CloudTrail with `sdk`'s credentials in `region`.
pub fn client(sdk: &SdkConfig, region: &str) -> aws_sdk_cloudtrail::Client {
    aws_sdk_cloudtrail::Client::from_conf(
        aws_sdk_cloudtrail::config::Builder::from(sdk)
            .region(Region::new(region.to_owned()))
            .interceptor(RequestCounter)
            .build(),
    )
}

/// The events of `key` between `start` and `end` (Unix milliseconds), at most `max`;
/// also whether reading stopped at `max` with more to read.
#[allow(clippy::too_many_arguments)]
pub async fn lookup(
    client: &aws_sdk_cloudtrail::Client,
    policy: &BackoffPolicy,
    rate: &AdaptiveRate,
    key: &str,
    start_ms: u64,
    end_ms: u64,
    max: usize,
    retries: &RetryCounter,
) -> Result<(Vec<TrailEvent>, bool), AwsError> {
    let attribute = LookupAttribute::builder()
        .attribute_key(LookupAttributeKey::AccessKeyId)
        .attribute_value(key)
        .build()
        // Cannot fail: both required fields are set just above.
        .expect("key and value are set");
    let mut events = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = call(policy, retries, "cloudtrail", "LookupEvents", || async {
            let sent = rate.acquire().await;
            let answer = client
                .lookup_events()
                .lookup_attributes(attribute.clone())
                .start_time(DateTime::from_millis(start_ms as i64))
                .end_time(DateTime::from_millis(end_ms as i64))
                .max_results(PAGE)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("LookupEvents", e));
            match &answer {
                Err(e) if e.is_throttling() => {
                    rate.throttled(sent);
                    crate::metrics::activity_lookup_throttled();
                }
                Ok(_) => rate.succeeded(),
                Err(_) => {}
            }
            answer
        })
        .await?;
        for event in page.events() {
            let resources = event
                .resources()
                .iter()
                .map(|r| {
                    format!(
                        "{} {}",
                        r.resource_type().unwrap_or_default(),
                        r.resource_name().unwrap_or_default()
                    )
                    .trim()
                    .to_owned()
                })
                .collect();
            if let Some(parsed) = event
                .cloud_trail_event()
                .and_then(|record| TrailEvent::parse(record, resources))
            {
                events.push(parsed);
            }
            if events.len() >= max {
                crate::metrics::activity_events_read(events.len());
                return Ok((events, true));
            }
        }
        match page.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => {
                crate::metrics::activity_events_read(events.len());
                return Ok((events, false));
            }
        }
    }
}

/// The Regions enabled in the account of `sdk`'s credentials (enabled by default, or
/// opted in): `account:ListRegions` (AWS Account Management API Reference).
pub async fn enabled_regions(
    sdk: &SdkConfig,
    policy: &BackoffPolicy,
    retries: &RetryCounter,
) -> Result<Vec<String>, AwsError> {
    let client = aws_sdk_account::Client::from_conf(
        aws_sdk_account::config::Builder::from(sdk)
            .interceptor(RequestCounter)
            .build(),
    );
    list_enabled_regions(&client, policy, retries).await
}

async fn list_enabled_regions(
    client: &aws_sdk_account::Client,
    policy: &BackoffPolicy,
    retries: &RetryCounter,
) -> Result<Vec<String>, AwsError> {
    let mut regions = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = call(policy, retries, "account", "ListRegions", || async {
            client
                .list_regions()
                .region_opt_status_contains(RegionOptStatus::Enabled)
                .region_opt_status_contains(RegionOptStatus::EnabledByDefault)
                .max_results(50)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ListRegions", e))
        })
        .await?;
        regions.extend(
            page.regions()
                .iter()
                .filter_map(|r| r.region_name().map(str::to_owned)),
        );
        match page.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => break,
        }
    }
    regions.sort();
    Ok(regions)
}

#[cfg(test)]
mod tests {
    use aws_sdk_cloudtrail::operation::lookup_events::LookupEventsOutput;
    use aws_sdk_cloudtrail::types::{Event, Resource};
    use aws_sdk_cloudtrail::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    use super::*;

    fn event(n: usize) -> Event {
        let record = serde_json::json!({
            "eventTime": format!("2026-11-30T11:{n:02}:00Z"), "eventSource": "iam.amazonaws.com",
            "eventName": "ListUsers", "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.7",
            "userAgent": "boto3", "readOnly": true
        });
        Event::builder()
            .event_id(format!("e-{n}"))
            .event_name("ListUsers")
            .read_only("true")
            .access_key_id("AKIAIOSFODNN7EXAMPLE")
            .resources(
                Resource::builder()
                    .resource_type("AWS::IAM::User")
                    .resource_name("alice")
                    .build(),
            )
            .cloud_trail_event(record.to_string())
            .build()
    }

    /// LookupEvents answers a page with a NextToken, throttles once, then the last page.
    #[tokio::test(start_paused = true)]
    async fn pages_are_followed_and_throttling_is_retried() {
        let lookup = mock!(Client::lookup_events)
            .sequence()
            .output(|| {
                LookupEventsOutput::builder()
                    .events(event(1))
                    .events(event(2))
                    .next_token("page-2")
                    .build()
            })
            .http_status(
                400,
                Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_owned()),
            )
            .output(|| LookupEventsOutput::builder().events(event(3)).build())
            .build();
        let client = mock_client!(aws_sdk_cloudtrail, RuleMode::Sequential, [&lookup], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let rate = AdaptiveRate::new(LOOKUPS_PER_SECOND);
        let retries = RetryCounter::default();
        let (events, capped) = super::lookup(
            &client,
            &crate::aws::retry::quick_policy(),
            &rate,
            "AKIAIOSFODNN7EXAMPLE",
            0,
            1,
            100,
            &retries,
        )
        .await
        .expect("read");
        assert_eq!(events.len(), 3);
        assert!(!capped);
        assert_eq!(lookup.num_calls(), 3);
        assert_eq!(retries.get(), 1);
        assert_eq!(events[0].resources, vec!["AWS::IAM::User alice"]);
        assert!(rate.current() < 2.0, "the throttle slowed the lookups");
    }

    /// ListRegions pages; the worker asks for the enabled Regions only.
    #[tokio::test]
    async fn enabled_regions_are_read_page_by_page() {
        use aws_sdk_account::operation::list_regions::ListRegionsOutput;
        use aws_sdk_account::types::Region as AccountRegion;
        let list = mock!(aws_sdk_account::Client::list_regions)
            .match_requests(|input| {
                input.region_opt_status_contains()
                    == [RegionOptStatus::Enabled, RegionOptStatus::EnabledByDefault]
            })
            .sequence()
            .output(|| {
                ListRegionsOutput::builder()
                    .regions(
                        AccountRegion::builder()
                            .region_name("us-east-1")
                            .region_opt_status(RegionOptStatus::EnabledByDefault)
                            .build(),
                    )
                    .next_token("more")
                    .build()
            })
            .output(|| {
                ListRegionsOutput::builder()
                    .regions(
                        AccountRegion::builder()
                            .region_name("af-south-1")
                            .region_opt_status(RegionOptStatus::Enabled)
                            .build(),
                    )
                    .build()
            })
            .build();
        let client = mock_client!(aws_sdk_account, RuleMode::Sequential, [&list], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let regions = super::list_enabled_regions(
            &client,
            &crate::aws::retry::quick_policy(),
            &RetryCounter::default(),
        )
        .await
        .expect("listed");
        assert_eq!(regions, ["af-south-1", "us-east-1"]);
        assert_eq!(list.num_calls(), 2);
    }

    #[tokio::test]
    async fn reading_stops_at_the_cap() {
        let lookup = mock!(Client::lookup_events).then_output(|| {
            LookupEventsOutput::builder()
                .events(event(1))
                .events(event(2))
                .events(event(3))
                .next_token("more")
                .build()
        });
        let client = mock_client!(aws_sdk_cloudtrail, RuleMode::MatchAny, [&lookup], |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        let (events, capped) = super::lookup(
            &client,
            &crate::aws::retry::quick_policy(),
            &AdaptiveRate::new(LOOKUPS_PER_SECOND),
            "AKIAIOSFODNN7EXAMPLE",
            0,
            1,
            2,
            &RetryCounter::default(),
        )
        .await
        .expect("read");
        assert_eq!(events.len(), 2);
        assert!(capped);
        assert_eq!(lookup.num_calls(), 1);
    }
}
