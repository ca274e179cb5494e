//! The record of a run, kept in the state dir for `emrboot status`.

use emrboot_config::PhaseName;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Selected, not started yet.
    Pending,
    /// Started; a record left in this state means the run was killed during the phase.
    Running,
    /// Succeeded and changed something.
    Changed,
    /// Succeeded; the node had already converged.
    Unchanged,
    Skipped,
    Failed,
    /// Not run because an earlier required phase failed.
    NotRun,
    /// Stopped by SIGTERM or SIGINT: the phase the run was in, or about to start, when asked
    /// to stop. Its marker is not written, so the next run does its work.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Running => "running",
            Outcome::Changed => "changed",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::NotRun => "not-run",
            Outcome::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub phase: PhaseName,
    pub outcome: Outcome,
    pub required: bool,
    /// Why a phase was skipped or not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub pid: u32,
    pub instance_id: String,
    pub role: String,
    pub config: String,
    /// 0, 1 or 2 as the process exits; absent while running or when the run was killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub phases: Vec<PhaseRecord>,
    /// The first failure to publish this record (`[report]`); the run's outcome is unaffected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_error: Option<String>,
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
