//! Loads the SDK's configuration once, from its standard sources only: AWS_REGION (else IMDS
//! placement/region), AWS_ENDPOINT_URL[_<SERVICE>], the default credential chain.

use emrboot_node::{Imds, ImdsError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

use crate::retry_log::RetryLog;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// How hard to retry. Many nodes of a cluster share the account's API buckets (CreateTags
/// refills 10/s, AssignPrivateIpAddresses 5/s), so bootstrap retries long with jitter;
/// shutdown has EMR's 60 s for everything and must give up sooner.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Bootstrap,
    Shutdown,
}

impl Budget {
    fn retry(self) -> RetryConfig {
        match self {
            Budget::Bootstrap => RetryConfig::standard()
                .with_max_attempts(10)
                .with_initial_backoff(Duration::from_millis(500))
                .with_max_backoff(Duration::from_secs(20)),
            Budget::Shutdown => RetryConfig::standard()
                .with_max_attempts(5)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(4)),
        }
    }

    /// Per attempt and per operation (all attempts and backoff). EMRBOOT_AWS_TIMEOUT_SECS lowers
    /// or raises the bootstrap's per-operation bound (default 180 s); an attempt never gets more
    /// than 30 s of it. Shutdown's bounds are fixed: EMR allows 60 s for everything.
    fn timeouts(self) -> TimeoutConfig {
        let (attempt, total) = match self {
            Budget::Bootstrap => {
                let total = env_secs("EMRBOOT_AWS_TIMEOUT_SECS").unwrap_or(180);
                (total.min(30), total)
            }
            Budget::Shutdown => (8, 15),
        };
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(attempt))
            .operation_timeout(Duration::from_secs(total))
            .build()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("AWS region: AWS_REGION is not set and {0}")]
    Region(#[source] ImdsError),
}

/// Lazily built clients: a run that needs no AWS call (e.g. only the time zone) makes none.
pub struct Aws {
    imds: Arc<Imds>,
    budget: Budget,
    sdk: OnceCell<SdkConfig>,
}

impl Aws {
    pub fn new(imds: Arc<Imds>, budget: Budget) -> Self {
        Aws {
            imds,
            budget,
            sdk: OnceCell::new(),
        }
    }

    /// The region, without building any client: AWS_REGION, else IMDS placement/region.
    pub async fn region(&self) -> Result<String, SdkError> {
        match env_region() {
            Some(r) => Ok(r),
            None => self.imds.region().await.map_err(SdkError::Region),
        }
    }

    pub async fn config(&self) -> Result<&SdkConfig, SdkError> {
        self.sdk
            .get_or_try_init(|| async {
                let region = self.region().await?;
                let credentials = aws_config::default_provider::credentials::Builder::default()
                    .region(Region::new(region.clone()))
                    .imds_client(self.imds.sdk_client())
                    .build()
                    .await;
                Ok(aws_config::defaults(BehaviorVersion::latest())
                    .region(Region::new(region))
                    .credentials_provider(credentials)
                    .retry_config(self.budget.retry())
                    .timeout_config(self.budget.timeouts())
                    .load()
                    .await)
            })
            .await
    }

    pub async fn ec2(&self) -> Result<crate::SdkEc2, SdkError> {
        let conf = aws_sdk_ec2::config::Builder::from(self.config().await?)
            .interceptor(RetryLog)
            .build();
        Ok(crate::SdkEc2::new(aws_sdk_ec2::Client::from_conf(conf)))
    }

    pub async fn s3(&self) -> Result<crate::S3, SdkError> {
        let conf = aws_sdk_s3::config::Builder::from(self.config().await?)
            // A custom endpoint (moto, MinIO, a VPC endpoint by IP) seldom resolves
            // bucket-name subdomains; path-style works with all of them.
            .force_path_style(custom_endpoint("S3"))
            .interceptor(RetryLog)
            .build();
        Ok(crate::S3::new(aws_sdk_s3::Client::from_conf(conf)))
    }

    pub async fn efs(&self) -> Result<aws_sdk_efs::Client, SdkError> {
        let conf = aws_sdk_efs::config::Builder::from(self.config().await?)
            .interceptor(RetryLog)
            .build();
        Ok(aws_sdk_efs::Client::from_conf(conf))
    }
}

fn env_region() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

fn env_secs(key: &str) -> Option<u64> {
    std::env::var(key)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&n| n > 0)
}

fn custom_endpoint(service: &str) -> bool {
    std::env::var_os("AWS_ENDPOINT_URL").is_some()
        || std::env::var_os(format!("AWS_ENDPOINT_URL_{service}")).is_some()
}
