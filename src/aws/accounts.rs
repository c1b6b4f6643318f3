//! Which account a job acts in, and with what credentials.
//!
//! Jobs without `account_id` (or naming the worker's own account) use the worker's own
//! credentials. A job for another account is carried out with credentials from
//! `sts:AssumeRole` on `arn:<partition>:iam::<account_id>:role/<cross_account.role_name>`
//! (the partition, `aws`, `aws-cn` or `aws-us-gov`, is the worker's own, read from its
//! `GetCallerIdentity` ARN), built on
//! `aws-config`'s `AssumeRoleProvider`. Each account gets its own IAM client and its own
//! IAM request budget (IAM's quotas are per account), cached for the life of the worker;
//! the client's identity cache refreshes the credentials before they expire. Concurrent
//! jobs for a new account wait for one AssumeRole instead of making one each.
//!
//! A member account's role failing, when first assumed or when renewed, is that
//! account's failure and never the worker's own credentials' (`aws::member`): the
//! session is assumed again by the next job for the account.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_config::sts::AssumeRoleProvider;
use aws_config::SdkConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use tokio::sync::OnceCell;

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::clients::Clients;
use crate::aws::home::Home;
use crate::aws::iam::Iam;
use crate::aws::member::{MemberFailures, MemberSession};
use crate::aws::ratelimit::AdaptiveRate;
use crate::aws::retry::{call, BackoffPolicy, RetryCounter};
use crate::config::Settings;
use crate::guard::Protection;
use crate::metrics::RequestCounter;

/// Why a job cannot act in the account it names.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Another account, and no `cross_account.role_name` is configured.
    #[error("job names account {account}; no cross_account.role_name is configured, so this worker acts only in {own}")]
    Disabled { account: String, own: String },
    /// STS refused or failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// The worker's IAM access, per account.
#[derive(Debug)]
pub struct Accounts {
    own: Arc<Iam>,
    own_identity: OnceCell<Identity>,
    sts: aws_sdk_sts::Client,
    sdk: SdkConfig,
    role_name: Option<String>,
    external_id: Option<String>,
    session_name: String,
    max_requests_per_second: u32,
    initial_requests_per_second: u32,
    policy: BackoffPolicy,
    protection: Protection,
    others: Mutex<HashMap<String, Arc<OnceCell<Arc<Member>>>>>,
    /// The member accounts whose role fails now.
    failures: Arc<MemberFailures>,
}

/// A member account the worker acts in: IAM there, and the SDK configuration with the
/// assumed role's credentials, for the other services it calls there (Security Hub).
#[derive(Debug)]
struct Member {
    iam: Arc<Iam>,
    sdk: SdkConfig,
    session: Arc<MemberSession>,
}

impl Accounts {
    /// `own` acts in the worker's account; `sdk` carries the worker's own credentials,
    /// the source for assuming roles elsewhere.
    pub fn new(config: &Settings, own: Iam, sts: aws_sdk_sts::Client, sdk: SdkConfig) -> Self {
        Self {
            own: Arc::new(own),
            own_identity: OnceCell::new(),
            sts,
            sdk,
            role_name: config.cross_account.role_name.clone(),
            external_id: config.cross_account.external_id.clone(),
            session_name: session_name(),
            max_requests_per_second: config.iam.max_requests_per_second,
            initial_requests_per_second: config.iam.initial_requests_per_second,
            policy: config.backoff,
            protection: config.protection.clone(),
            others: Mutex::new(HashMap::new()),
            failures: Arc::default(),
        }
    }

    /// The member accounts whose role fails now (for `/readyz`).
    pub fn member_failures(&self) -> Arc<MemberFailures> {
        Arc::clone(&self.failures)
    }

    /// IAM in the worker's own account and, through its role, in others, as `config`
    /// sets it up: the one constructor of the worker and the command line.
    pub fn from_settings(config: &Settings, clients: &Clients) -> Self {
        let own = Iam::new(
            clients.iam.clone(),
            config.iam.max_requests_per_second,
            config.backoff,
            config.protection.clone(),
        )
        .starting_at(
            config.iam.max_requests_per_second,
            config.iam.initial_requests_per_second,
        );
        Self::new(config, own, clients.sts.clone(), clients.sdk.clone())
    }

    /// The same, assuming `role_name` in other accounts instead of the worker's role:
    /// the operators' commands take a role of their own there (`plan` a planner's,
    /// `restore` a restorer's), never the one that may write every user's policies.
    pub fn with_role(mut self, role_name: &str) -> Self {
        self.role_name = Some(role_name.to_owned());
        self
    }

    /// The IAM request rate of the worker's own account.
    pub fn own_rate(&self) -> Arc<AdaptiveRate> {
        self.own.shared_rate()
    }

    /// IAM access for a job naming `account` (or none).
    pub async fn iam_for(
        &self,
        account: Option<&str>,
        retries: &RetryCounter,
    ) -> Result<Arc<Iam>, AccountError> {
        Ok(match self.member(account, retries).await? {
            Some(member) => Arc::clone(&member.iam),
            None => Arc::clone(&self.own),
        })
    }

    /// The account a job naming `account` (or none: the worker's own) acts in, with STS
    /// to ask which account a key IAM cannot find there belongs to (docs, "Which
    /// account").
    pub async fn home_for(
        &self,
        account: Option<&str>,
        retries: &RetryCounter,
    ) -> Result<Home, AwsError> {
        let account = match account {
            Some(account) => account.to_owned(),
            None => self.own_identity(retries).await?.account.clone(),
        };
        Ok(Home::new(&account, self.sts.clone(), self.policy))
    }

    /// The SDK configuration whose credentials act in `account` (or the worker's own).
    pub async fn sdk_for(
        &self,
        account: Option<&str>,
        retries: &RetryCounter,
    ) -> Result<SdkConfig, AccountError> {
        Ok(match self.member(account, retries).await? {
            Some(member) => member.sdk.clone(),
            None => self.sdk.clone(),
        })
    }

    /// The member account `account` names, its role assumed once; `None` for the
    /// worker's own account.
    async fn member(
        &self,
        account: Option<&str>,
        retries: &RetryCounter,
    ) -> Result<Option<Arc<Member>>, AccountError> {
        let Some(account) = account else {
            return Ok(None);
        };
        let own = self.own_identity(retries).await?;
        if own.account == account {
            return Ok(None);
        }
        let Some(role_name) = &self.role_name else {
            return Err(AccountError::Disabled {
                account: account.to_owned(),
                own: own.account.clone(),
            });
        };
        let role_arn = role_arn(&own.partition, account, role_name);
        let cell = {
            let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
            let cell = others.entry(account.to_owned()).or_default();
            if cell.get().is_some_and(|member| member.session.is_stale()) {
                // AWS refused the session or its renewal: this job assumes the role again.
                *cell = Arc::default();
            }
            Arc::clone(cell)
        };
        if let Some(member) = cell.get() {
            return Ok(Some(Arc::clone(member)));
        }
        // On the heap: STS's call is kilobytes of future, made once per account.
        let member = Box::pin(cell.get_or_try_init(|| async {
            self.assume(account, &role_arn, retries).await.map(Arc::new)
        }))
        .await
        .map_err(|mut e| {
            // Nothing kept for an account whose role was not assumed: a producer naming
            // made-up accounts leaves no entry behind.
            let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
            if others
                .get(account)
                .is_some_and(|kept| Arc::ptr_eq(kept, &cell) && kept.get().is_none())
            {
                others.remove(account);
            }
            drop(others);
            // The worker's own credentials failing (STS refused them for AssumeRole) is
            // the worker's; anything else is this account's.
            if e.class != ErrorClass::Credentials {
                e.message = format!("account {account}: {}", e.message);
                self.failures.failed(account, &e);
            }
            e
        })?;
        Ok(Some(Arc::clone(member)))
    }

    /// The worker's own account and partition, asked of STS once.
    pub async fn own_identity(&self, retries: &RetryCounter) -> Result<&Identity, AwsError> {
        if let Some(identity) = self.own_identity.get() {
            return Ok(identity);
        }
        // On the heap: asked once, and every job's path awaits this.
        Box::pin(self.own_identity.get_or_try_init(|| async {
            let out = call(
                &self.policy,
                retries,
                "sts",
                "GetCallerIdentity",
                || async {
                    self.sts
                        .get_caller_identity()
                        .send()
                        .await
                        .map_err(|e| AwsError::from_sdk("GetCallerIdentity", e))
                },
            )
            .await?;
            Identity::from_caller(out.account(), out.arn()).ok_or_else(|| AwsError {
                operation: "GetCallerIdentity",
                class: ErrorClass::Transient,
                code: None,
                message: "STS returned no account or ARN".into(),
                unanswered: false,
            })
        }))
        .await
    }

    /// Whether the worker's own credentials work: one `GetCallerIdentity`, which needs no
    /// permission, not retried.
    pub async fn check_credentials(&self) -> Result<(), AwsError> {
        self.sts
            .get_caller_identity()
            .send()
            .await
            .map(drop)
            .map_err(|e| AwsError::from_sdk("GetCallerIdentity", e))
    }

    /// Assumes the role in `account` once, and builds that account's access on it.
    async fn assume(
        &self,
        account: &str,
        role_arn: &str,
        retries: &RetryCounter,
    ) -> Result<Member, AwsError> {
        let mut builder = AssumeRoleProvider::builder(role_arn)
            .session_name(&self.session_name)
            .configure(&self.sdk);
        if let Some(external_id) = &self.external_id {
            builder = builder.external_id(external_id);
        }
        let provider = builder.build().await;
        let first = call(&self.policy, retries, "sts", "AssumeRole", || async {
            let result = provider.provide_credentials().await;
            // AssumeRoleProvider runs its own STS client, outside the request counter.
            crate::metrics::aws_request("sts", "AssumeRole", result.is_ok());
            result.map_err(|e| assume_role_error(&e))
        })
        .await?;
        tracing::info!(account, role_arn, "Assumed the cross-account role");
        let session = Arc::new(MemberSession::new(account, Arc::clone(&self.failures)));
        session.renewed();
        let credentials = SharedCredentialsProvider::new(Prefetched {
            first: Mutex::new(Some(first)),
            inner: provider,
            session: Arc::clone(&session),
        });
        let sdk = self
            .sdk
            .to_builder()
            .credentials_provider(credentials)
            .build();
        let client = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::from(&sdk)
                .interceptor(RequestCounter)
                .build(),
        );
        let iam = Iam::new(
            client,
            self.max_requests_per_second,
            self.policy,
            self.protection.clone(),
        )
        .starting_at(
            self.max_requests_per_second,
            self.initial_requests_per_second,
        )
        .in_member(Arc::clone(&session));
        Ok(Member {
            iam: Arc::new(iam),
            sdk,
            session,
        })
    }
}

/// Who the worker is: its account, and the partition its ARN names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub account: String,
    /// `aws`, `aws-cn`, `aws-us-gov`, ...: every ARN the worker builds uses it.
    pub partition: String,
    /// The role the worker's credentials are a session of (`assumed-role/<role>/…`), if
    /// they are one: its sessions are never cut off.
    pub role: Option<String>,
}

impl Identity {
    /// From `GetCallerIdentity`'s `Account` and `Arn` (`arn:<partition>:sts::<account>:…`).
    pub fn from_caller(account: Option<&str>, arn: Option<&str>) -> Option<Self> {
        let partition = arn?.strip_prefix("arn:")?.split(':').next()?;
        let account = account?;
        let role = arn?
            .split_once(":assumed-role/")
            .and_then(|(_, rest)| rest.split('/').next())
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        (!partition.is_empty() && !account.is_empty()).then(|| Self {
            account: account.to_owned(),
            partition: partition.to_owned(),
            role,
        })
    }
}

/// The ARN of the role `role_name` in `account`, in `partition`.
pub fn role_arn(partition: &str, account: &str, role_name: &str) -> String {
    format!("arn:{partition}:iam::{account}:role/{role_name}")
}

/// A session name that says which worker acted: the pod or host name where there is one.
fn session_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| std::process::id().to_string());
    let host: String = host
        .chars()
        // Session names allow IAM's name characters but `_`.
        .filter(|c| crate::job::is_iam_name_char(*c) && *c != '_')
        .collect();
    let mut name = format!("iam-key-revoker-{host}");
    name.truncate(64);
    name
}

/// Maps a failed AssumeRole to an [`AwsError`], classified like any other AWS error.
fn assume_role_error(e: &CredentialsError) -> AwsError {
    let sdk = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>());
    if let Some(sdk) = sdk {
        return AwsError::of("AssumeRole", sdk);
    }
    let class = match e {
        CredentialsError::InvalidConfiguration(_) => ErrorClass::Permanent,
        // The worker's own (source) credentials are missing: not the job's fault.
        CredentialsError::CredentialsNotLoaded(_) => ErrorClass::Credentials,
        _ => ErrorClass::Transient,
    };
    AwsError::other("AssumeRole", class, e)
}

/// Hands out the credentials fetched while warming up first, then asks the role again
/// (counting each later AssumeRole in the request metrics). A renewal that fails other
/// than for the worker's own credentials is the member account's failure
/// ([`MemberSession::renewal_failed`]).
#[derive(Debug)]
struct Prefetched {
    first: Mutex<Option<Credentials>>,
    inner: AssumeRoleProvider,
    session: Arc<MemberSession>,
}

impl ProvideCredentials for Prefetched {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        match first {
            Some(credentials) => future::ProvideCredentials::ready(Ok(credentials)),
            None => future::ProvideCredentials::new(async move {
                let result = self.inner.provide_credentials().await;
                crate::metrics::aws_request("sts", "AssumeRole", result.is_ok());
                match result {
                    Ok(credentials) => {
                        self.session.renewed();
                        Ok(credentials)
                    }
                    Err(e) => {
                        let error = assume_role_error(&e);
                        if error.class == ErrorClass::Credentials {
                            // The worker's own credentials: its failure, as it is.
                            return Err(e);
                        }
                        Err(CredentialsError::provider_error(
                            self.session.renewal_failed(error),
                        ))
                    }
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityOutput;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    #[test]
    fn role_arns_are_built_in_the_workers_partition() {
        for (arn, partition) in [
            ("arn:aws:sts::111122223333:assumed-role/w/s", "aws"),
            ("arn:aws-cn:iam::111122223333:user/w", "aws-cn"),
            (
                "arn:aws-us-gov:sts::111122223333:assumed-role/w/s",
                "aws-us-gov",
            ),
        ] {
            let identity = Identity::from_caller(Some("111122223333"), Some(arn)).unwrap();
            assert_eq!(identity.partition, partition);
            let role = arn.contains("assumed-role").then(|| "w".to_owned());
            assert_eq!(identity.role, role);
            assert_eq!(
                role_arn(&identity.partition, "444455556666", "iam-key-revoker"),
                format!("arn:{partition}:iam::444455556666:role/iam-key-revoker")
            );
        }
        assert_eq!(Identity::from_caller(Some("1"), Some("not-an-arn")), None);
        assert_eq!(Identity::from_caller(None, Some("arn:aws:sts::1:x")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_identity_comes_from_get_caller_identity() {
        let who = mock!(aws_sdk_sts::Client::get_caller_identity).then_output(|| {
            GetCallerIdentityOutput::builder()
                .account("111122223333")
                .arn("arn:aws-cn:sts::111122223333:assumed-role/iam-key-revoker-worker/pod")
                .build()
        });
        let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&who]);
        let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, []);
        let mut config = Config::default();
        config.sqs.queue_url = "https://sqs.us-east-1.amazonaws.com/111122223333/jobs".into();
        config.cross_account.role_name = Some("iam-key-revoker".into());
        let config = Settings::new(config).unwrap();
        let own = Iam::new(iam, 10, config.backoff, config.protection.clone());
        let sdk = SdkConfig::builder().build();
        let accounts = Accounts::new(&config, own, sts, sdk);
        let identity = accounts
            .own_identity(&RetryCounter::default())
            .await
            .unwrap()
            .clone();
        assert_eq!(
            identity,
            Identity {
                account: "111122223333".into(),
                partition: "aws-cn".into(),
                role: Some("iam-key-revoker-worker".into()),
            }
        );
        // Asked once, then remembered.
        accounts
            .own_identity(&RetryCounter::default())
            .await
            .unwrap();
        assert_eq!(who.num_calls(), 1);
    }
}
