//! The doors to the outside systems, shared by a run's phases (through `Ctx`) and by
//! release-ip (which has no role or info files, so no `Ctx`): IMDS, EC2, S3, EFS, netlink,
//! NAT, the package manager and mounts. Each opens lazily, once: a run needing no AWS makes no
//! AWS call, and one needing EC2 builds its client once. All but S3 are traits, so the phases
//! are unit-tested against fakes that model EC2 and the node (`with_*`); S3 is only ever
//! faulted as a whole, against moto and the bench's proxies.

use emrboot_aws::{Aws, Ec2, Efs, S3};
use emrboot_node::{Imds, Metadata};
use emrboot_os::mount::{Kernel, Mounts};
use emrboot_os::nat::{Nat, NatRules};
use emrboot_os::netlink::{Addresses, Netlink};
use emrboot_os::pkg::{Manager, Packages};
use std::sync::Arc;
use tokio::sync::OnceCell;

pub struct Doors {
    pub imds: Arc<dyn Metadata>,
    pub aws: Arc<Aws>,
    ec2: OnceCell<Arc<dyn Ec2>>,
    s3: OnceCell<Arc<S3>>,
    efs: OnceCell<Arc<dyn Efs>>,
    netlink: OnceCell<Arc<dyn Addresses>>,
    nat: OnceCell<Arc<dyn NatRules>>,
    packages: OnceCell<Arc<dyn Packages>>,
    mounts: OnceCell<Arc<dyn Mounts>>,
}

impl Doors {
    pub fn new(imds: Arc<Imds>, aws: Arc<Aws>) -> Self {
        Doors {
            imds,
            aws,
            ec2: OnceCell::new(),
            s3: OnceCell::new(),
            efs: OnceCell::new(),
            netlink: OnceCell::new(),
            nat: OnceCell::new(),
            packages: OnceCell::new(),
            mounts: OnceCell::new(),
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
    pub async fn netlink(&self) -> anyhow::Result<Arc<dyn Addresses>> {
        once(&self.netlink, || async {
            anyhow::Ok(Arc::new(Netlink::connect()?) as Arc<dyn Addresses>)
        })
        .await
    }

    /// The iptables binary, probed once (which one, and what it supports).
    pub async fn nat(&self) -> anyhow::Result<Arc<dyn NatRules>> {
        once(&self.nat, || async {
            anyhow::Ok(Arc::new(Nat::new().await?) as Arc<dyn NatRules>)
        })
        .await
    }

    /// The node's package manager: dnf, else yum, else apt-get, found on PATH once.
    pub async fn packages(&self) -> anyhow::Result<Arc<dyn Packages>> {
        once(&self.packages, || async {
            anyhow::Ok(Arc::new(Manager::detect()?) as Arc<dyn Packages>)
        })
        .await
    }

    /// This process's mounts (mountinfo, `mount`, the TCP wait before it).
    pub async fn mounts(&self) -> anyhow::Result<Arc<dyn Mounts>> {
        once(&self.mounts, || async {
            anyhow::Ok(Arc::new(Kernel) as Arc<dyn Mounts>)
        })
        .await
    }

    /// A fake IMDS in place of the node's (unit tests).
    pub fn with_imds(mut self, imds: Arc<dyn Metadata>) -> Self {
        self.imds = imds;
        self
    }

    /// A fake EC2: the real client is then never built (unit tests).
    pub fn with_ec2(self, ec2: Arc<dyn Ec2>) -> Self {
        let _ = self.ec2.set(ec2);
        self
    }

    /// Fake interfaces and addresses: no netlink socket is opened (unit tests).
    pub fn with_netlink(self, netlink: Arc<dyn Addresses>) -> Self {
        let _ = self.netlink.set(netlink);
        self
    }

    /// Fake DNAT rules: iptables is never run (unit tests).
    pub fn with_nat(self, nat: Arc<dyn NatRules>) -> Self {
        let _ = self.nat.set(nat);
        self
    }

    /// A fake package manager: no dnf, yum or apt-get is run (unit tests).
    pub fn with_packages(self, packages: Arc<dyn Packages>) -> Self {
        let _ = self.packages.set(packages);
        self
    }

    /// Fake mounts: nothing is mounted, no socket opened (unit tests).
    pub fn with_mounts(self, mounts: Arc<dyn Mounts>) -> Self {
        let _ = self.mounts.set(mounts);
        self
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
