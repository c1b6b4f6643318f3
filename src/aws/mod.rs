//! The AWS boundary: the clients, the one classification of AWS errors, the retry and
//! the IAM request rate every call goes through, and the narrow functions the worker and
//! the command-line tools call on IAM, SQS and STS.

pub mod accounts;
pub mod classify;
pub mod clients;
pub mod clock;
pub mod cloudtrail;
pub mod deleter;
pub mod findings;
pub mod holder;
pub mod home;
pub mod iam;
pub mod logins;
pub mod mac;
pub mod member;
pub mod notify;
pub mod placement;
pub mod quarantine;
pub mod ratelimit;
pub mod retry;
pub mod revoke;
pub mod schedule;
pub mod sessions;
pub mod sqs;
pub mod staged;
pub mod turns;
pub mod verdict;
pub mod visibility;
