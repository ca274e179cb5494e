//! IMDSv2, through aws-config's IMDS client, configured for a node that is still booting: longer
//! timeouts and more attempts than the client's 1 s defaults, and an overall deadline per value.
//!
//! aws-config keeps its token until the TTL runs out and, on a 401, retries with that same
//! token (say, after IMDS restarted and forgot it). Here a 401 is not retried by the client:
//! this wrapper drops the client with its token and asks again with a new one.

use aws_config::imds::client::error::ImdsError as SdkImdsError;
use aws_config::imds::Client;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, SharedRetryClassifier,
};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_ATTEMPTS: u32 = 8;
const TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);
/// Per value: enough for a node whose IMDS is slow at boot, short enough to fail a hung IMDS.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ImdsError {
    #[error("IMDS is disabled (AWS_EC2_METADATA_DISABLED); cannot read {path}")]
    Disabled { path: String },
    #[error("IMDS {path}: no answer within {}s", .secs)]
    Deadline { path: String, secs: u64 },
    #[error("IMDS {path}: HTTP {status}")]
    Status { path: String, status: u16 },
    #[error("IMDS {path}: {reason}")]
    Failed { path: String, reason: String },
    #[error("IMDS {path}: not found")]
    Missing { path: String },
    #[error("IMDS {path}: {value:?} is not {what}")]
    Invalid {
        path: String,
        value: String,
        what: &'static str,
    },
}

/// What ip-takeover needs to know about the node's primary interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFacts {
    pub mac: String,
    pub interface_id: String,
    pub subnet: Ipv4Net,
    pub primary_ip: Ipv4Addr,
    pub local_ipv4s: Vec<Ipv4Addr>,
}

pub struct Imds {
    client: Mutex<Option<Client>>,
    deadline: Duration,
    disabled: bool,
}

/// Retries server errors and failed connections (IMDS restarting at boot); leaves a 401 to
/// the wrapper, which must fetch a new token rather than resend the old one.
#[derive(Debug)]
struct RetryClassifier;

impl ClassifyRetry for RetryClassifier {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.response().map(|r| r.status().as_u16()) {
            Some(s) if s >= 500 => RetryAction::server_error(),
            Some(_) => RetryAction::NoActionIndicated,
            None => RetryAction::transient_error(),
        }
    }

    fn name(&self) -> &'static str {
        "emrboot IMDS"
    }
}

fn build_client(deadline: Duration) -> Client {
    Client::builder()
        .retry_classifier(SharedRetryClassifier::new(RetryClassifier))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .max_attempts(MAX_ATTEMPTS)
        .token_ttl(TOKEN_TTL)
        .operation_timeout(deadline)
        .build()
}

impl Imds {
    /// The endpoint comes from AWS_EC2_METADATA_SERVICE_ENDPOINT, as the SDK reads it.
    pub fn from_env() -> Self {
        let disabled = std::env::var("AWS_EC2_METADATA_DISABLED")
            .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        let deadline = std::env::var("EMRBOOT_IMDS_DEADLINE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_DEADLINE);
        Imds {
            client: Mutex::new(None),
            deadline,
            disabled,
        }
    }

    /// An aws-config IMDS client with emrboot's timeouts, attempts and retry rules, for the
    /// SDK's credential chain (its own default has 1 s timeouts).
    pub fn sdk_client(&self) -> Client {
        build_client(self.deadline)
    }

    /// The same, with a shorter deadline per value (release-ip has EMR's 60 s for everything).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = self.deadline.min(deadline);
        self
    }

    async fn client(&self) -> Client {
        let mut guard = self.client.lock().await;
        guard
            .get_or_insert_with(|| build_client(self.deadline))
            .clone()
    }
}

#[async_trait::async_trait]
impl Metadata for Imds {
    async fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
        let full = format!("/latest/{}", path.trim_start_matches('/'));
        if self.disabled {
            return Err(ImdsError::Disabled { path: full });
        }
        let start = Instant::now();
        let deadline_err = || ImdsError::Deadline {
            path: full.clone(),
            secs: self.deadline.as_secs(),
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let left = self
                .deadline
                .checked_sub(start.elapsed())
                .ok_or_else(deadline_err)?;
            let client = self.client().await;
            let answer = tokio::time::timeout(left, client.get(full.clone()))
                .await
                .map_err(|_| deadline_err())?;
            match answer {
                Ok(v) => return Ok(Some(v.as_ref().to_string())),
                Err(SdkImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => {
                    return Ok(None)
                }
                // A 401 on a GET (the token is stale) or a refused token PUT: start afresh.
                Err(e @ (SdkImdsError::ErrorResponse(_) | SdkImdsError::FailedToLoadToken(_)))
                    if is_auth_failure(&e) =>
                {
                    tracing::warn!(path = %full, "IMDS refused the session token; fetching a new one");
                    *self.client.lock().await = None;
                    tokio::time::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(SdkImdsError::ErrorResponse(r)) => {
                    let status = r.response().status().as_u16();
                    return Err(ImdsError::Status { path: full, status });
                }
                // The top-level message only: the sources can hold raw responses.
                Err(e) => {
                    return Err(ImdsError::Failed {
                        path: full,
                        reason: e.to_string(),
                    })
                }
            }
        }
    }
}

/// What IMDS answers, by path: [`Imds`] on a node, a fake in the phases' unit tests. Every
/// value is read through `get`, so a fake answers paths and the helpers parse them alike.
#[async_trait::async_trait]
pub trait Metadata: Send + Sync {
    /// A metadata value, `Ok(None)` when IMDS says 404.
    async fn get(&self, path: &str) -> Result<Option<String>, ImdsError>;

    async fn require(&self, path: &str) -> Result<String, ImdsError> {
        match self.get(path).await? {
            Some(v) => Ok(v.trim().to_string()),
            None => Err(ImdsError::Missing {
                path: format!("/latest/{}", path.trim_start_matches('/')),
            }),
        }
    }

    async fn instance_id(&self) -> Result<String, ImdsError> {
        self.require("meta-data/instance-id").await
    }

    async fn region(&self) -> Result<String, ImdsError> {
        self.require("meta-data/placement/region").await
    }

    async fn availability_zone(&self) -> Result<String, ImdsError> {
        self.require("meta-data/placement/availability-zone").await
    }

    /// The addresses IMDS lists on the interface with this MAC, primary first.
    async fn local_ipv4s(&self, mac: &str) -> Result<Vec<Ipv4Addr>, ImdsError> {
        let path = format!("meta-data/network/interfaces/macs/{mac}/local-ipv4s");
        let text = self.require(&path).await?;
        text.split_whitespace()
            .map(|s| parse(&path, s, "an IPv4 address"))
            .collect()
    }

    /// The primary interface: MAC, ENI id, subnet, addresses. Only IMDS, no EC2 call.
    async fn network(&self) -> Result<NetworkFacts, ImdsError> {
        let mac = self.require("meta-data/mac").await?;
        let base = format!("meta-data/network/interfaces/macs/{mac}");
        let interface_id = self.require(&format!("{base}/interface-id")).await?;
        let cidr_path = format!("{base}/subnet-ipv4-cidr-block");
        let subnet: Ipv4Net = parse(&cidr_path, &self.require(&cidr_path).await?, "a CIDR block")?;
        let primary_ip = parse(
            "meta-data/local-ipv4",
            &self.require("meta-data/local-ipv4").await?,
            "an IPv4 address",
        )?;
        let local_ipv4s = self.local_ipv4s(&mac).await?;
        Ok(NetworkFacts {
            mac,
            interface_id,
            subnet,
            primary_ip,
            local_ipv4s,
        })
    }
}

/// 401 on a GET, or a token PUT that IMDS answered with an error status.
fn is_auth_failure(e: &SdkImdsError) -> bool {
    match e {
        SdkImdsError::ErrorResponse(r) => r.response().status().as_u16() == 401,
        SdkImdsError::FailedToLoadToken(t) => !t.is_dispatch_failure(),
        _ => false,
    }
}

fn parse<T: std::str::FromStr>(
    path: &str,
    value: &str,
    what: &'static str,
) -> Result<T, ImdsError> {
    value.trim().parse().map_err(|_| ImdsError::Invalid {
        path: path.to_string(),
        value: value.to_string(),
        what,
    })
}
