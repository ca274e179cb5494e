//! The record a node publishes: who it is, and its last run as `status --json` shows it.

use emrboot_runner::RunRecord;
use serde::{Deserialize, Serialize};

pub const SCHEMA: u32 = 1;

/// Who the node is: fixed for the life of the process, read from EMR's info files and IMDS.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeFacts {
    pub cluster_id: String,
    pub instance_id: String,
    pub role: String,
    #[serde(default)]
    pub instance_group_id: Option<String>,
    #[serde(default)]
    pub instance_fleet_id: Option<String>,
    #[serde(default)]
    pub instance_type: Option<String>,
    #[serde(default)]
    pub availability_zone: Option<String>,
    pub emrboot_version: String,
    /// sha256 of the config text, so a mixed-config cluster shows up.
    pub config_hash: String,
}

/// What release-ip did, published over the run's record (which it keeps).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Release {
    pub at: String,
    pub exit_code: i32,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub schema: u32,
    #[serde(flatten)]
    pub facts: NodeFacts,
    /// When this object was written: a running record not updated for long is "lost".
    pub updated_at: String,
    #[serde(default)]
    pub run: Option<RunRecord>,
    #[serde(default)]
    pub release: Option<Release>,
    /// The last log lines when the run failed (the log file, which the redaction filters wrote).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
}
