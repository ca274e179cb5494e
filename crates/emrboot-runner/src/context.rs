//! What every phase can see: the config, the node's facts, and the doors to the outside
//! systems. Doors to AWS open lazily, once per run, so that a run needing none makes no AWS
//! call and a run needing one builds its client once: `ctx.ec2()`, `ctx.s3()`, `ctx.efs()`;
//! the node's own netlink socket and iptables the same way: `ctx.netlink()`, `ctx.nat()`.

use crate::state::StateDir;
use emrboot_aws::{Aws, Ec2, Efs, S3};
use emrboot_config::{Config, Role};
use emrboot_node::{Imds, NodeInfo};
use emrboot_os::nat::Nat;
use emrboot_os::netlink::Netlink;
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
    netlink: OnceCell<Arc<Netlink>>,
    nat: OnceCell<Arc<Nat>>,
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
            netlink: OnceCell::new(),
            nat: OnceCell::new(),
        }
    }

    pub async fn ec2(&self) -> anyhow::Result<Arc<dyn Ec2>> {
        once(&self.ec2, || async {
            anyhow::Ok(Arc::new(self.aws.ec2().await?) as Arc<dyn Ec2>)
        })
        .await
    }

    pub async fn s3(&self) -> anyhow::Result<Arc<S3>> {
        once(&self.s3, || async {
            anyhow::Ok(Arc::new(self.aws.s3().await?))
        })
        .await
    }

    pub async fn efs(&self) -> anyhow::Result<Arc<dyn Efs>> {
        once(&self.efs, || async {
            anyhow::Ok(Arc::new(self.aws.efs().await?) as Arc<dyn Efs>)
        })
        .await
    }

    /// A netlink socket in this process's network namespace (interfaces, addresses).
    pub async fn netlink(&self) -> anyhow::Result<Arc<Netlink>> {
        once(&self.netlink, || async {
            anyhow::Ok(Arc::new(Netlink::connect()?))
        })
        .await
    }

    /// The iptables binary, probed once (which one, and what it supports).
    pub async fn nat(&self) -> anyhow::Result<Arc<Nat>> {
        once(&self.nat, || async {
            anyhow::Ok(Arc::new(Nat::new().await?))
        })
        .await
    }
}

/// The handle in `cell`, built by `build` on first use; a failed build is tried again next time.
async fn once<T: ?Sized, F, Fut>(cell: &OnceCell<Arc<T>>, build: F) -> anyhow::Result<Arc<T>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Arc<T>>>,
{
    Ok(cell.get_or_try_init(build).await?.clone())
}
