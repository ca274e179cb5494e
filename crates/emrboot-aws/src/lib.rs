//! emrboot's door to AWS. Every EC2, S3 and EFS call goes through the small interfaces here, so
//! a reader sees in one place which calls emrboot makes, and tests can count or fake them.

pub mod ec2;
pub mod efs;
pub mod fetch;
mod retry_log;
pub mod s3;
pub mod sdk;

pub use ec2::{Ec2, Eni, SdkEc2};
pub use efs::{Efs, SdkEfs};
pub use fetch::{download, fetch_bytes, location_text, FetchError};
pub use s3::S3;
pub use sdk::Aws;

/// An AWS call that failed, with the call's name and the service's own error code and message.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {message}")]
pub struct AwsError {
    pub call: &'static str,
    /// The service's error code (`InvalidNetworkInterfaceID.NotFound`, `NoSuchKey`), if any.
    pub code: Option<String>,
    pub message: String,
}

impl AwsError {
    pub fn new<E>(call: &'static str, err: aws_sdk_ec2::error::SdkError<E>) -> Self
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        use aws_sdk_ec2::error::ProvideErrorMetadata;
        let code = err.code().map(str::to_string);
        let message = match (err.code(), err.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_string(),
            // No service error: a dispatch, timeout or response failure. The chain says which.
            _ => error_chain(&err),
        };
        AwsError {
            call,
            code,
            message,
        }
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
