//! A user's console password (`GetLoginProfile`, `DeleteLoginProfile`; IAM API
//! Reference): what a follow-up of the leaked key's `CreateLoginProfile` or
//! `UpdateLoginProfile` removes (docs, "What the leaked key made").

use aws_smithy_types::DateTime;

use crate::aws::classify::{AwsError, ErrorClass};
use crate::aws::iam::Iam;
use crate::aws::retry::RetryCounter;

impl Iam {
    /// When `user`'s console password was created; `None` when the user has none (or
    /// there is no such user).
    pub async fn login_profile_created(
        &self,
        user: &str,
        retries: &RetryCounter,
    ) -> Result<Option<DateTime>, AwsError> {
        let got = self
            .request("GetLoginProfile", retries, || {
                self.client.get_login_profile().user_name(user).send()
            })
            .await;
        match got {
            Ok(out) => Ok(out.login_profile().map(|p| *p.create_date())),
            Err(e) if e.class == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes `user`'s console password; `false` when there was none.
    pub async fn delete_login_profile(
        &self,
        user: &str,
        retries: &RetryCounter,
    ) -> Result<bool, AwsError> {
        let deleted = self
            .request("DeleteLoginProfile", retries, || {
                self.client.delete_login_profile().user_name(user).send()
            })
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(e) if e.class == ErrorClass::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// IAM's documented answers (IAM API Reference, `GetLoginProfile`, `DeleteLoginProfile`,
/// `GetRole`), replayed: the emulator's are not the proof.
#[cfg(test)]
mod tests {
    use aws_sdk_iam::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use crate::aws::iam::Iam;
    use crate::aws::retry::RetryCounter;

    fn answer(status: u16, operation: &str, result: &str) -> HttpResponse {
        let body = if status == 200 {
            format!("<{operation}Response xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><{operation}Result>{result}</{operation}Result><ResponseMetadata><RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ResponseMetadata></{operation}Response>")
        } else {
            format!("<ErrorResponse><Error><Type>Sender</Type><Code>{result}</Code><Message>m</Message></Error><RequestId>1</RequestId></ErrorResponse>")
        };
        HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body))
    }

    fn iam(rules: &[&aws_smithy_mocks::Rule]) -> Iam {
        let client = mock_client!(aws_sdk_iam, RuleMode::MatchAny, rules, |c| c
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled()));
        Iam::for_tests(client)
    }

    #[tokio::test]
    async fn a_console_password_is_read_and_deleted_as_iam_answers() {
        let get = mock!(Client::get_login_profile).then_http_response(|| {
            answer(200, "GetLoginProfile", "<LoginProfile><UserName>Bob</UserName><CreateDate>2011-09-19T23:00:56Z</CreateDate></LoginProfile>")
        });
        let delete = mock!(Client::delete_login_profile)
            .then_http_response(|| answer(200, "DeleteLoginProfile", ""));
        let iam = iam(&[&get, &delete]);
        let retries = RetryCounter::default();
        let created = iam.login_profile_created("Bob", &retries).await.unwrap();
        assert_eq!(created.map(|c| c.secs()), Some(1_316_473_256));
        assert!(iam.delete_login_profile("Bob", &retries).await.unwrap());

        // No password (or no user): IAM answers 404 NoSuchEntity to both.
        let none = mock!(Client::get_login_profile)
            .then_http_response(|| answer(404, "GetLoginProfile", "NoSuchEntity"));
        let gone = mock!(Client::delete_login_profile)
            .then_http_response(|| answer(404, "DeleteLoginProfile", "NoSuchEntity"));
        let iam = super::tests::iam(&[&none, &gone]);
        assert_eq!(
            iam.login_profile_created("Bob", &retries).await.unwrap(),
            None
        );
        assert!(!iam.delete_login_profile("Bob", &retries).await.unwrap());
    }

    #[tokio::test]
    async fn a_role_is_read_as_iam_answers_and_a_service_linked_one_is_unmodifiable() {
        let get = mock!(Client::get_role).then_http_response(|| {
            answer(200, "GetRole", "<Role><Path>/aws-service-role/elasticbeanstalk.amazonaws.com/</Path><AssumeRolePolicyDocument>%7B%7D</AssumeRolePolicyDocument><RoleId>AROADBQP57FF2AEXAMPLE</RoleId><RoleName>AWSServiceRoleForElasticBeanstalk</RoleName><Arn>arn:aws:iam::123456789012:role/aws-service-role/elasticbeanstalk.amazonaws.com/AWSServiceRoleForElasticBeanstalk</Arn><CreateDate>2019-04-17T19:37:27Z</CreateDate></Role>")
        });
        let iam = iam(&[&get]);
        let role = iam
            .role(
                "AWSServiceRoleForElasticBeanstalk",
                &RetryCounter::default(),
            )
            .await
            .unwrap()
            .expect("the role");
        assert_eq!(role.role_id, "AROADBQP57FF2AEXAMPLE");
        assert!(role.unmodifiable().is_some());

        let none =
            mock!(Client::get_role).then_http_response(|| answer(404, "GetRole", "NoSuchEntity"));
        let iam = super::tests::iam(&[&none]);
        assert_eq!(
            iam.role("gone", &RetryCounter::default()).await.unwrap(),
            None
        );
    }
}
