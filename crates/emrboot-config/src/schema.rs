//! The typed config, as the phases see it after validation.

use crate::names::{PhaseName, Role};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The settings every phase table may hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Common {
    /// Roles the phase runs on.
    pub roles: Vec<Role>,
    /// A failed required phase fails the run (exit 1); an optional one is logged and shown by `status`.
    pub required: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Config {
    pub install: Option<Install>,
    pub tags: Option<Tags>,
    pub efs: Option<Efs>,
    pub ip_takeover: Option<IpTakeover>,
    pub report: Option<Report>,
}

/// `[report]`: where each node publishes its run record for `emrboot cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub bucket: String,
    /// Empty, or ending in `/`: records go under `<prefix><cluster-id>/nodes/`.
    pub prefix: String,
}

/// Where a file comes from: a node-local path, S3, or a web server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Location {
    Path {
        path: PathBuf,
    },
    S3 {
        bucket: String,
        key: String,
    },
    Https {
        url: String,
    },
    /// Only with `install.allow_http = true`.
    Http {
        url: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Install {
    pub common: Common,
    pub packages: Vec<String>,
    pub timezone: Option<String>,
    pub allow_http: bool,
    pub pip: Option<Pip>,
    pub sources: Vec<SourceBuild>,
    pub cache: Option<BuildCache>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pip {
    pub requirements: Option<Location>,
    pub packages: Vec<String>,
    pub target: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceBuild {
    pub name: String,
    pub url: Location,
    pub sha256: String,
    pub build: Vec<String>,
    pub install: Vec<String>,
    pub post: Vec<String>,
    /// Bound on each build, install or post step.
    pub step_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildCache {
    pub bucket: String,
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum NameSuffix {
    /// `Name := <current Name>-<ROLE>`
    #[serde(rename = "role")]
    Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tags {
    pub common: Common,
    pub name_suffix: Option<NameSuffix>,
    pub set: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum EfsTarget {
    FileSystemId(String),
    DnsName(String),
}

pub const DEFAULT_NFS_OPTIONS: &str =
    "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Efs {
    pub common: Common,
    pub target: EfsTarget,
    pub mount_point: PathBuf,
    pub owner: Option<String>,
    pub options: String,
    /// The fstab to keep the managed line in; tests point it at a scratch file.
    pub fstab: PathBuf,
    /// Bound on the wait for TCP 2049 and on each mount try.
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpTakeover {
    pub common: Common,
    pub address: Ipv4Addr,
    pub reserved_eni: String,
}

impl Config {
    /// The common settings of the table that drives `phase`, if the config has that table.
    pub fn common(&self, phase: PhaseName) -> Option<&Common> {
        match phase {
            PhaseName::Install => self.install.as_ref().map(|t| &t.common),
            PhaseName::Tag => self.tags.as_ref().map(|t| &t.common),
            PhaseName::EfsMount => self.efs.as_ref().map(|t| &t.common),
            PhaseName::IpTakeover | PhaseName::ShutdownHook => {
                self.ip_takeover.as_ref().map(|t| &t.common)
            }
        }
    }

    /// Canonical JSON of the table behind `phase`: what a marker's config hash is computed from.
    pub fn section_json(&self, phase: PhaseName) -> String {
        let v = match phase {
            PhaseName::Install => serde_json::to_value(&self.install),
            PhaseName::Tag => serde_json::to_value(&self.tags),
            PhaseName::EfsMount => serde_json::to_value(&self.efs),
            PhaseName::IpTakeover | PhaseName::ShutdownHook => {
                serde_json::to_value(&self.ip_takeover)
            }
        };
        // Serializing plain data structs cannot fail; an empty object keeps the hash defined anyway.
        v.map(|v| v.to_string()).unwrap_or_default()
    }
}
