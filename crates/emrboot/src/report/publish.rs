//! Publishing this node's record: best effort, bounded, never the run's outcome.

use super::record::{NodeFacts, NodeRecord, Release, SCHEMA};
use emrboot_config::Report;
use emrboot_runner::sink::{Publishing, RecordSink};
use emrboot_runner::{Ctx, RunRecord};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// All publishing of one command together may add this much time, whatever S3 does.
pub const BUDGET: Duration = Duration::from_secs(5);
/// One PutObject (with the SDK's retries) gets at most this much of the budget.
const PER_PUT: Duration = Duration::from_secs(2);
/// Log lines kept in a failed run's record.
const LOG_TAIL: usize = 20;

pub struct Publisher {
    s3: Result<emrboot_aws::S3, String>,
    bucket: String,
    key: String,
    facts: NodeFacts,
    log_file: PathBuf,
    left: Mutex<Duration>,
    warned: AtomicBool,
}

impl Publisher {
    /// None without `[report]`: then nothing is published and no AWS call is made for it.
    pub async fn for_node(ctx: &Ctx, config_text: &str, log_file: PathBuf) -> Option<Self> {
        let report = ctx.config.report.as_ref()?;
        let who = Who {
            info: &ctx.node.info,
            instance_id: &ctx.node.instance_id,
            role: &ctx.node.role.to_string(),
        };
        let facts = facts(&who, ctx.doors.imds.as_ref(), config_text).await;
        Some(Self::new(report, facts, &ctx.doors.aws, log_file).await)
    }

    pub async fn new(
        report: &Report,
        facts: NodeFacts,
        aws: &emrboot_aws::Aws,
        log_file: PathBuf,
    ) -> Self {
        let s3 = if facts.cluster_id.is_empty() {
            Err("no cluster id (job-flow.json has no jobFlowId): the record has no place".into())
        } else {
            aws.s3().await.map_err(|e| format!("S3 client: {e}"))
        };
        let key = format!(
            "{}{}.json",
            super::nodes_prefix(&report.prefix, &facts.cluster_id),
            facts.instance_id
        );
        Publisher {
            s3,
            bucket: report.bucket.clone(),
            key,
            facts,
            log_file,
            left: Mutex::new(BUDGET),
            warned: AtomicBool::new(false),
        }
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// Writes REC; answers the error, logged once as a warning per command.
    async fn put(&self, rec: &NodeRecord) -> Option<String> {
        let err = match self.try_put(rec).await {
            Ok(()) => return None,
            Err(e) => format!("report {}: {e}", self.location()),
        };
        if !self.warned.swap(true, Ordering::SeqCst) {
            tracing::warn!("cannot publish this node's record (the run goes on): {err}");
        }
        Some(err)
    }

    async fn try_put(&self, rec: &NodeRecord) -> Result<(), String> {
        let s3 = self.s3.as_ref().map_err(String::clone)?;
        let bound = {
            let left = self
                .left
                .lock()
                .map_err(|_| "budget lock poisoned".to_string())?;
            (*left).min(PER_PUT)
        };
        if bound.is_zero() {
            return Err(format!(
                "not published: the {}s publishing budget is spent",
                BUDGET.as_secs()
            ));
        }
        let body = serde_json::to_vec_pretty(rec).map_err(|e| e.to_string())?;
        let start = std::time::Instant::now();
        let put = s3
            .client()
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(body.into())
            .send();
        let res = tokio::time::timeout(bound, put).await;
        if let Ok(mut left) = self.left.lock() {
            *left = left.saturating_sub(start.elapsed());
        }
        match res {
            Err(_) => Err(format!("s3:PutObject did not answer within {bound:?}")),
            Ok(Err(e)) => Err(emrboot_aws::AwsError::new("s3:PutObject", e).to_string()),
            Ok(Ok(_)) => Ok(()),
        }
    }

    fn record(&self, run: Option<RunRecord>, release: Option<Release>) -> NodeRecord {
        let failed = run
            .as_ref()
            .is_some_and(|r| r.exit_code.is_some_and(|c| c != 0))
            || release.as_ref().is_some_and(|r| r.exit_code != 0);
        NodeRecord {
            schema: SCHEMA,
            facts: self.facts.clone(),
            updated_at: emrboot_runner::status::now_rfc3339(),
            run,
            release,
            log_tail: if failed {
                log_tail(&self.log_file)
            } else {
                Vec::new()
            },
        }
    }

    /// release-ip's record: the last run as the state dir has it, plus what release-ip did.
    pub async fn publish_release(
        &self,
        last_run: Option<RunRecord>,
        exit_code: i32,
        error: Option<String>,
    ) {
        let release = Release {
            at: emrboot_runner::status::now_rfc3339(),
            exit_code,
            error,
        };
        let _ = self.put(&self.record(last_run, Some(release))).await;
    }
}

impl RecordSink for Publisher {
    fn publish<'a>(&'a self, rec: &'a RunRecord) -> Publishing<'a> {
        Box::pin(async move { self.put(&self.record(Some(rec.clone()), None)).await })
    }
}

/// Who this node is, as the caller knows it (run: its Ctx; release-ip: the last status).
pub struct Who<'a> {
    pub info: &'a emrboot_node::NodeInfo,
    pub instance_id: &'a str,
    pub role: &'a str,
}

/// IMDS is asked only for the AZ, and only briefly: the record is worth less than the run's time.
const AZ_WAIT: Duration = Duration::from_secs(2);

pub async fn facts(
    who: &Who<'_>,
    imds: &dyn emrboot_node::Metadata,
    config_text: &str,
) -> NodeFacts {
    let info = who.info;
    let job_flow = info.job_flow.as_ref();
    let group = info.instance.str("instanceGroupId").map(str::to_string);
    let extra = info.extra.as_ref();
    let fleet = extra
        .and_then(|e| e.str("instanceFleetId"))
        .or_else(|| info.instance.str("instanceFleetId"))
        .map(str::to_string);
    // The group's type from job-flow.json's instanceGroups; fleets name it in extraInstanceData.
    let from_groups = || {
        let groups = job_flow?.json.get("instanceGroups")?.as_array()?;
        groups
            .iter()
            .find(|g| g.get("instanceGroupId").and_then(|v| v.as_str()) == group.as_deref())?
            .get("instanceType")?
            .as_str()
            .map(str::to_string)
    };
    let instance_type = extra
        .and_then(|e| e.str("instanceType"))
        .map(str::to_string)
        .or_else(from_groups);
    let availability_zone = tokio::time::timeout(AZ_WAIT, imds.availability_zone())
        .await
        .ok()
        .and_then(Result::ok);
    NodeFacts {
        cluster_id: job_flow
            .and_then(|j| j.str("jobFlowId"))
            .unwrap_or_default()
            .to_string(),
        instance_id: who.instance_id.to_string(),
        role: who.role.to_string(),
        instance_group_id: group,
        instance_fleet_id: fleet,
        instance_type,
        availability_zone,
        emrboot_version: env!("CARGO_PKG_VERSION").to_string(),
        config_hash: hex::encode(Sha256::digest(config_text.as_bytes())),
    }
}

/// The last lines of this node's log file (what the logging filters let through), if readable.
fn log_tail(path: &std::path::Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}
