//! What every phase can see: the config, the node's facts, and the doors to the outside
//! systems (`ctx.doors`: IMDS, EC2, S3, EFS, netlink, NAT; see doors.rs).

use crate::doors::Doors;
use crate::state::StateDir;
use emrboot_config::{Config, Role};
use emrboot_node::NodeInfo;
use emrboot_os::Root;
use std::path::PathBuf;

/// The node being bootstrapped.
#[derive(Debug, Clone)]
pub struct Node {
    pub role: Role,
    /// Where the role came from, for `plan` and the log.
    pub role_source: String,
    pub instance_id: String,
    pub info: NodeInfo,
}

pub struct Ctx {
    pub config: Config,
    pub node: Node,
    pub root: Root,
    pub state: StateDir,
    pub shutdown_actions_dir: PathBuf,
    /// emrboot's own path, for the shutdown action and the boot unit to exec.
    pub self_exe: PathBuf,
    /// IMDS, AWS, netlink and NAT, each opened on first use.
    pub doors: Doors,
}

impl Ctx {
    pub fn new(
        config: Config,
        node: Node,
        root: Root,
        state: StateDir,
        shutdown_actions_dir: PathBuf,
        self_exe: PathBuf,
        doors: Doors,
    ) -> Self {
        Ctx {
            config,
            node,
            root,
            state,
            shutdown_actions_dir,
            self_exe,
            doors,
        }
    }
}
