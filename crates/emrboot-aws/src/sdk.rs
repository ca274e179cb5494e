//! Loads the SDK's configuration once, from its standard sources only: AWS_REGION (else IMDS
//! placement/region), AWS_ENDPOINT_URL[_<SERVICE>], the default credential chain.

use emrboot_node::{Imds, ImdsError, Metadata};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

use crate::retry_log::RetryLog;

use aws_config::retry::{RetryConfig, RetryMode};
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::retry::{RetryPartition, TokenBucket};
use std::sync::OnceLock;

/// How hard to retry. Many nodes of a cluster share the account's API buckets (CreateTags
/// refills 10/s, AssignPrivateIpAddresses 5/s), so a retryable failure (throttling, a 5xx, a
/// dropped connection) is retried until a time bound per operation, never given up after a count
/// while that time allows; other errors (a 4xx that is not throttling) fail at once, as the SDK's
/// classifiers decide. Retries are paced by jittered exponential backoff ("full jitter": each
/// wait drawn from 0 to min(initial * 2^n, cap)), so that hundreds of nodes throttled together
/// spread out instead of coming back in step and taking the account's tokens from everyone else.
/// Bootstrap: per operation EMRBOOT_AWS_TIMEOUT_SECS (default 180 s), backoff 1 s doubling to
/// 20 s. Shutdown has EMR's 60 s for everything: 15 s per operation, backoff 0.5 s to 4 s.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Bootstrap,
    Shutdown,
}

/// Attempts are bounded by the operation timeout, not by a count: this is only a backstop far
/// beyond what any bound allows (180 s of waits of at least a few ms each).
const UNBOUNDED_ATTEMPTS: u32 = 10_000;

/// EMRBOOT_AWS_RETRY_MODE: `adaptive` (the default) or `standard`. Both retry with the same
/// jittered backoff; adaptive adds the SDK's client-side rate limiter, which, once a call of this
/// process was throttled, holds the process's next attempts to the rate it measures succeeding.
/// Measured with benchmarks/herd.py (500 nodes at EC2's rates with 5 tokens/s of other load, see
/// the README): no node lost in either mode, about the same times to tagged, and adaptive sent
/// 3.1 EC2 requests a node against 7.3 for standard: fewer of the account's tokens taken.
fn retry_mode() -> RetryMode {
    parse_retry_mode(&std::env::var("EMRBOOT_AWS_RETRY_MODE").unwrap_or_default())
}

fn parse_retry_mode(text: &str) -> RetryMode {
    match text.trim().to_ascii_lowercase().as_str() {
        "standard" => RetryMode::Standard,
        _ => RetryMode::Adaptive,
    }
}

impl Budget {
    fn retry(self) -> RetryConfig {
        let (initial, max) = match self {
            Budget::Bootstrap => (Duration::from_secs(1), Duration::from_secs(20)),
            Budget::Shutdown => (Duration::from_millis(500), Duration::from_secs(4)),
        };
        RetryConfig::standard()
            .with_retry_mode(retry_mode())
            .with_max_attempts(UNBOUNDED_ATTEMPTS)
            .with_initial_backoff(initial)
            .with_max_backoff(max)
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

/// The SDK's retry quota (standard mode's token bucket: 500 tokens a process, 5 a retry, 10 a
/// timeout) would end retries after about 100 of them whatever the time bound says; the account's
/// real buckets are on EC2's side, and the backoff and rate limiter already pace this process. An
/// unlimited bucket leaves the time bound alone in charge. One partition (and so one adaptive
/// rate limiter) per service: EC2 throttling does not slow S3 calls down.
fn unlimited_partition(
    cell: &'static OnceLock<RetryPartition>,
    name: &'static str,
) -> RetryPartition {
    cell.get_or_init(|| {
        RetryPartition::custom(name)
            .token_bucket(TokenBucket::unlimited())
            .build()
    })
    .clone()
}

static EC2_PARTITION: OnceLock<RetryPartition> = OnceLock::new();
static S3_PARTITION: OnceLock<RetryPartition> = OnceLock::new();
static EFS_PARTITION: OnceLock<RetryPartition> = OnceLock::new();

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
    /// One S3 client per process, whoever asks (`Doors`, downloads, the report): one
    /// connection pool and one retry partition.
    s3: OnceCell<crate::S3>,
}

impl Aws {
    pub fn new(imds: Arc<Imds>, budget: Budget) -> Self {
        Aws {
            imds,
            budget,
            sdk: OnceCell::new(),
            s3: OnceCell::new(),
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
            .retry_partition(unlimited_partition(&EC2_PARTITION, "emrboot-ec2"))
            .interceptor(RetryLog)
            .build();
        Ok(crate::SdkEc2::new(aws_sdk_ec2::Client::from_conf(conf)))
    }

    pub async fn s3(&self) -> Result<crate::S3, SdkError> {
        let s3 = self
            .s3
            .get_or_try_init(|| async {
                let conf = aws_sdk_s3::config::Builder::from(self.config().await?)
                    // A custom endpoint (moto, MinIO, a VPC endpoint by IP) seldom resolves
                    // bucket-name subdomains; path-style works with all of them.
                    .force_path_style(custom_endpoint("S3"))
                    .retry_partition(unlimited_partition(&S3_PARTITION, "emrboot-s3"))
                    .interceptor(RetryLog)
                    .build();
                Ok::<_, SdkError>(crate::S3::new(aws_sdk_s3::Client::from_conf(conf)))
            })
            .await?;
        Ok(s3.clone())
    }

    pub async fn efs(&self) -> Result<crate::efs::SdkEfs, SdkError> {
        let conf = aws_sdk_efs::config::Builder::from(self.config().await?)
            .retry_partition(unlimited_partition(&EFS_PARTITION, "emrboot-efs"))
            .interceptor(RetryLog)
            .build();
        Ok(crate::efs::SdkEfs::new(aws_sdk_efs::Client::from_conf(
            conf,
        )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_time_not_by_a_count() {
        for budget in [Budget::Bootstrap, Budget::Shutdown] {
            let r = budget.retry();
            assert!(r.max_attempts() >= 10_000, "{budget:?}: {r:?}");
            assert!(r.has_retry());
            assert!(
                !r.use_static_exponential_base(),
                "{budget:?}: backoff must be jittered"
            );
            assert!(budget.timeouts().operation_timeout().is_some());
        }
        let b = Budget::Bootstrap.retry();
        assert_eq!(
            (b.initial_backoff(), b.max_backoff()),
            (Duration::from_secs(1), Duration::from_secs(20))
        );
    }

    #[test]
    fn shutdown_stays_within_emrs_minute() {
        let t = Budget::Shutdown.timeouts();
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(15)));
        assert_eq!(t.operation_attempt_timeout(), Some(Duration::from_secs(8)));
        assert!(Budget::Shutdown.retry().max_backoff() <= Duration::from_secs(4));
    }

    #[test]
    fn retry_mode_is_adaptive_unless_standard_is_asked_for() {
        assert_eq!(parse_retry_mode(""), RetryMode::Adaptive);
        assert_eq!(parse_retry_mode("adaptive"), RetryMode::Adaptive);
        assert_eq!(parse_retry_mode(" Standard\n"), RetryMode::Standard);
        assert_eq!(parse_retry_mode("legacy"), RetryMode::Adaptive);
    }
}
