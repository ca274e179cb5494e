//! The vocabulary shared by the config, the runner and the CLI: node roles and phase names.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An EMR node's role. EMR spells it `Master`, `MASTER` or `master` depending on the file or tool,
/// so parsing ignores case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    Master,
    Core,
    Task,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Master, Role::Core, Role::Task];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "MASTER",
            Role::Core => "CORE",
            Role::Task => "TASK",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown role {s:?} (expected MASTER, CORE or TASK)"))
    }
}

/// The phases, in the one order in which they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseName {
    Install,
    Tag,
    EfsMount,
    IpTakeover,
    ShutdownHook,
}

impl PhaseName {
    /// The order of the phases. Everything that iterates phases goes through this list.
    pub const ORDER: [PhaseName; 5] = [
        PhaseName::Install,
        PhaseName::Tag,
        PhaseName::EfsMount,
        PhaseName::IpTakeover,
        PhaseName::ShutdownHook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Install => "install",
            PhaseName::Tag => "tag",
            PhaseName::EfsMount => "efs-mount",
            PhaseName::IpTakeover => "ip-takeover",
            PhaseName::ShutdownHook => "shutdown-hook",
        }
    }

    /// The config table that drives the phase. shutdown-hook has none of its own: it exists to
    /// undo ip-takeover, so it follows `[ip_takeover]`.
    pub fn table(self) -> &'static str {
        match self {
            PhaseName::Install => "install",
            PhaseName::Tag => "tags",
            PhaseName::EfsMount => "efs",
            PhaseName::IpTakeover | PhaseName::ShutdownHook => "ip_takeover",
        }
    }
}

impl fmt::Display for PhaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PhaseName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PhaseName::ORDER
            .into_iter()
            .find(|p| p.as_str() == s.trim())
            .ok_or_else(|| {
                let names: Vec<_> = PhaseName::ORDER.iter().map(|p| p.as_str()).collect();
                format!("unknown phase {s:?} (expected one of {})", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_without_case() {
        assert_eq!("Master".parse::<Role>(), Ok(Role::Master));
        assert_eq!("core".parse::<Role>(), Ok(Role::Core));
        assert_eq!("TASK".parse::<Role>(), Ok(Role::Task));
        assert!("leader".parse::<Role>().is_err());
    }

    #[test]
    fn phase_names_round_trip_in_order() {
        for p in PhaseName::ORDER {
            assert_eq!(p.as_str().parse::<PhaseName>(), Ok(p));
        }
        assert!("ip_takeover".parse::<PhaseName>().is_err());
    }
}
