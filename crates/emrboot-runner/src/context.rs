//! What every phase can see: the config, the node's facts, and the doors to the outside
//! systems. Doors to AWS open lazily so that a run needing none makes no AWS call.

use crate::state::StateDir;
use emrboot_aws::{Aws, Ec2};
use emrboot_config::{Config, Role};
use emrboot_node::{Imds, NodeInfo};
use emrboot_os::Root;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::OnceCell;

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
    pub imds: Arc<Imds>,
    pub aws: Arc<Aws>,
    ec2: OnceCell<Arc<dyn Ec2>>,
}

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        node: Node,
        root: Root,
        state: StateDir,
        shutdown_actions_dir: PathBuf,
        self_exe: PathBuf,
        imds: Arc<Imds>,
        aws: Arc<Aws>,
    ) -> Self {
        Ctx {
            config,
            node,
            root,
            state,
            shutdown_actions_dir,
            self_exe,
            imds,
            aws,
            ec2: OnceCell::new(),
        }
    }

    pub async fn ec2(&self) -> anyhow::Result<Arc<dyn Ec2>> {
        let ec2 = self
            .ec2
            .get_or_try_init(|| async {
                let c = self.aws.ec2().await?;
                anyhow::Ok(Arc::new(c) as Arc<dyn Ec2>)
            })
            .await?;
        Ok(ec2.clone())
    }
}
