//! What every phase can see: the config, the node's facts, and the doors to the outside
//! systems. Doors to AWS open lazily, once per run, so that a run needing none makes no AWS
//! call and a run needing one builds its client once: `ctx.ec2()`, `ctx.s3()`, `ctx.efs()`.

use crate::state::StateDir;
use emrboot_aws::{Aws, Ec2, Efs, S3};
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
    s3: OnceCell<Arc<S3>>,
    efs: OnceCell<Arc<dyn Efs>>,
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
            s3: OnceCell::new(),
            efs: OnceCell::new(),
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

    pub async fn s3(&self) -> anyhow::Result<Arc<S3>> {
        let s3 = self
            .s3
            .get_or_try_init(|| async { anyhow::Ok(Arc::new(self.aws.s3().await?)) })
            .await?;
        Ok(s3.clone())
    }

    pub async fn efs(&self) -> anyhow::Result<Arc<dyn Efs>> {
        let efs = self
            .efs
            .get_or_try_init(|| async {
                let c = self.aws.efs().await?;
                anyhow::Ok(Arc::new(c) as Arc<dyn Efs>)
            })
            .await?;
        Ok(efs.clone())
    }
}
