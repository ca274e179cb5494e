//! Phase `efs-mount`: the EFS file system over NFSv4.1, verified in /proc/self/mountinfo,
//! owned as configured, and kept across reboots by one managed fstab line.

use crate::per_boot;
use anyhow::{anyhow, Context};
use async_trait::async_trait;
use emrboot_config::{Efs, EfsTarget, PhaseName};
use emrboot_os::fstab;
use emrboot_os::mount::Mounts;
use emrboot_runner::{Actions, Ctx, Phase, PhaseError, Precheck};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::sync::OnceCell;

const NFS_PORT: u16 = 2049;
/// efs-utils retries a failed mount; so do we, with backoff and jitter.
const MOUNT_TRIES: u32 = 3;
const DNS_BOUND: Duration = Duration::from_secs(5);

/// Where the file system is mounted from.
#[derive(Debug, Clone)]
pub struct Target {
    /// The EFS DNS name (whether or not it resolves).
    pub name: String,
    /// The name, or the mount target's IP when the name does not resolve.
    pub host: String,
    pub fallback: bool,
}

impl Target {
    pub fn source(&self) -> String {
        format!("{}:/", self.host)
    }

    /// A mount from either the name or the fallback IP is this file system.
    fn is_ours(&self, source: &str) -> bool {
        source == self.source() || source == format!("{}:/", self.name)
    }
}

#[derive(Default)]
pub struct EfsMount {
    target: OnceCell<Target>,
}

fn config(ctx: &Ctx) -> Result<&Efs, PhaseError> {
    ctx.config
        .efs
        .as_ref()
        .ok_or_else(|| PhaseError::invalid(anyhow!("no [efs] table")))
}

/// `dns_name`, or `<file_system_id>.efs.<region>.amazonaws.com`; and the file system id, where
/// known (a custom dns_name may not carry one).
pub fn dns_name(target: &EfsTarget, region: &str) -> (String, Option<String>) {
    match target {
        EfsTarget::FileSystemId(id) => {
            (format!("{id}.efs.{region}.amazonaws.com"), Some(id.clone()))
        }
        EfsTarget::DnsName(n) => {
            let id = n
                .split('.')
                .next()
                .filter(|l| l.starts_with("fs-"))
                .map(str::to_string);
            (n.clone(), id)
        }
    }
}

async fn resolves(name: &str) -> bool {
    match tokio::time::timeout(DNS_BOUND, tokio::net::lookup_host((name, NFS_PORT))).await {
        Ok(Ok(mut addrs)) => addrs.next().is_some(),
        _ => false,
    }
}

async fn resolve(ctx: &Ctx, cfg: &Efs) -> Result<Target, PhaseError> {
    // Only the region: a dns_name that resolves needs no AWS client at all.
    let region = ctx.doors.aws.region().await.map_err(PhaseError::invalid)?;
    let (name, fs_id) = dns_name(&cfg.target, &region);
    if resolves(&name).await {
        return Ok(Target {
            host: name.clone(),
            name,
            fallback: false,
        });
    }
    let id = fs_id.ok_or_else(|| {
        PhaseError::invalid(anyhow!("efs.dns_name {name} does not resolve, and it names no file system id to look up a mount target for"))
    })?;
    let az = ctx
        .doors
        .imds
        .availability_zone()
        .await
        .map_err(PhaseError::invalid)?;
    let efs = ctx.doors.efs().await.map_err(PhaseError::invalid)?;
    let ip = efs
        .mount_target_ip(&id, &az)
        .await?
        .ok_or_else(|| {
            PhaseError::invalid(anyhow!(
                "{name} does not resolve and {id} has no mount target in {az} (efs:DescribeMountTargets)"
            ))
        })?;
    tracing::warn!(
        phase = "efs-mount",
        "{name} does not resolve; using the mount target in {az}: {ip}"
    );
    Ok(Target {
        name,
        host: ip.to_string(),
        fallback: true,
    })
}

/// uid and gid of `user[:group]`, names resolved on the node.
fn owner_ids(owner: &str) -> anyhow::Result<(u32, u32)> {
    use nix::unistd::{Group, User};
    let (u, g) = owner
        .split_once(':')
        .map_or((owner, None), |(u, g)| (u, Some(g)));
    let user =
        User::from_name(u)?.ok_or_else(|| anyhow!("efs.owner: no user {u:?} on this node"))?;
    let gid = match g {
        Some(g) => {
            Group::from_name(g)?
                .ok_or_else(|| anyhow!("efs.owner: no group {g:?} on this node"))?
                .gid
        }
        None => user.gid,
    };
    Ok((user.uid.as_raw(), gid.as_raw()))
}

fn jitter_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos() % 1000))
}

impl EfsMount {
    async fn target(&self, ctx: &Ctx) -> Result<&Target, PhaseError> {
        self.target
            .get_or_try_init(|| async { resolve(ctx, config(ctx)?).await })
            .await
    }

    fn mount_point(ctx: &Ctx, cfg: &Efs) -> PathBuf {
        ctx.root.join(&cfg.mount_point)
    }

    /// Whether the mount point is already owned by OWNER (`user:group`).
    fn owned_by(mp: &std::path::Path, owner: &str) -> Result<bool, PhaseError> {
        use std::os::unix::fs::MetadataExt;
        let (uid, gid) = owner_ids(owner)?;
        let meta = std::fs::metadata(mp).with_context(|| format!("stat {}", mp.display()))?;
        Ok((meta.uid(), meta.gid()) == (uid, gid))
    }

    /// Whether our file system is mounted there; an error when something else is.
    async fn mounted(&self, ctx: &Ctx, cfg: &Efs, t: &Target) -> Result<bool, PhaseError> {
        let mounts = ctx.doors.mounts().await?;
        Self::mounted_on(&*mounts, ctx, cfg, t)
    }

    fn mounted_on(
        mounts: &dyn Mounts,
        ctx: &Ctx,
        cfg: &Efs,
        t: &Target,
    ) -> Result<bool, PhaseError> {
        let mp = Self::mount_point(ctx, cfg);
        match mounts
            .mounted_at(&mp)
            .context("read /proc/self/mountinfo")?
        {
            Some(m) if m.fstype.starts_with("nfs") && t.is_ours(&m.source) => Ok(true),
            Some(m) => Err(PhaseError::invalid(anyhow!(
                "{} is already mounted from {} ({}), not {}; leaving it as it is",
                mp.display(),
                m.source,
                m.fstype,
                t.source()
            ))),
            None => Ok(false),
        }
    }

    fn fstab_line(cfg: &Efs, t: &Target) -> String {
        fstab::nfs_line(&t.source(), &cfg.mount_point, &cfg.options)
    }

    fn fstab_changes(ctx: &Ctx, cfg: &Efs, t: &Target) -> bool {
        let text = std::fs::read_to_string(ctx.root.join(&cfg.fstab)).unwrap_or_default();
        fstab::edit(&text, &cfg.mount_point, &Self::fstab_line(cfg, t)).is_some()
    }

    async fn mount_with_retries(&self, ctx: &Ctx, cfg: &Efs, t: &Target) -> anyhow::Result<()> {
        let mp = Self::mount_point(ctx, cfg);
        let mounts = ctx.doors.mounts().await?;
        let mut last = None;
        for attempt in 1..=MOUNT_TRIES {
            let bound = Duration::from_secs(cfg.timeout_secs);
            match mounts
                .mount("nfs4", &cfg.options, &t.source(), &mp, bound)
                .await
            {
                Ok(()) if Self::mounted_on(&*mounts, ctx, cfg, t).map_err(|e| e.error)? => {
                    return Ok(())
                }
                Ok(()) => {
                    last = Some(anyhow!(
                        "mount exited 0 but /proc/self/mountinfo shows no nfs4 mount of {} on {}",
                        t.source(),
                        mp.display()
                    ))
                }
                Err(e) => last = Some(e.into()),
            }
            if attempt < MOUNT_TRIES {
                let wait = Duration::from_millis(1000 * u64::from(attempt) + jitter_ms());
                tracing::warn!(
                    phase = "efs-mount",
                    attempt,
                    "mount failed; retrying in {:?}",
                    wait
                );
                tokio::time::sleep(wait).await;
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow!("mount failed"))
            .context(format!(
                "mount {} on {} ({MOUNT_TRIES} tries)",
                t.source(),
                mp.display()
            )))
    }
}

#[async_trait]
impl Phase for EfsMount {
    fn name(&self) -> PhaseName {
        PhaseName::EfsMount
    }

    async fn check(&self, ctx: &Ctx) -> Result<Precheck, PhaseError> {
        let cfg = config(ctx)?;
        if let Some(o) = &cfg.owner {
            owner_ids(o).map_err(PhaseError::invalid)?;
        }
        let t = self.target(ctx).await?;
        self.mounted(ctx, cfg, t).await?;
        Ok(Precheck::Run)
    }

    async fn plan(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError> {
        self.converge(ctx, true).await
    }

    async fn apply(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError> {
        self.converge(ctx, false).await
    }
}

impl EfsMount {
    /// plan (DRY_RUN: list) and apply (do) in one path: each action is decided here once, from
    /// the node's state, so apply takes the actions plan listed and plan on a converged node is
    /// empty. One difference is in the nature of things: before the mount, who owns the file
    /// system's root is unknown, so plan lists the chown as conditional.
    async fn converge(&self, ctx: &Ctx, dry_run: bool) -> Result<Vec<String>, PhaseError> {
        let cfg = config(ctx)?;
        let t = self.target(ctx).await?;
        let mp = Self::mount_point(ctx, cfg);
        let mut a = Actions::new(PhaseName::EfsMount, dry_run);
        let mounted = self.mounted(ctx, cfg, t).await?;
        if !mounted {
            let via = if t.fallback {
                format!(" (mount target IP: {} does not resolve)", t.name)
            } else {
                String::new()
            };
            if !dry_run {
                let bound = Duration::from_secs(cfg.timeout_secs);
                let mounts = ctx.doors.mounts().await?;
                mounts.wait_tcp(&t.host, NFS_PORT, bound).await?;
            }
            a.did(format!("wait for TCP {}:{NFS_PORT}{via}", t.host));
            if !dry_run {
                std::fs::create_dir_all(&mp).with_context(|| format!("create {}", mp.display()))?;
                self.mount_with_retries(ctx, cfg, t).await?;
            }
            let mount = format!(
                "mount -t nfs4 -o {} {} {}",
                cfg.options,
                t.source(),
                mp.display()
            );
            a.did(mount);
        } else if !dry_run {
            tracing::info!("{} already mounted on {}", t.source(), mp.display());
        }
        if let Some(o) = &cfg.owner {
            if dry_run && !mounted {
                a.did(format!(
                    "chown {o} {} (if the mounted root differs)",
                    mp.display()
                ));
            } else if !Self::owned_by(&mp, o)? {
                if !dry_run {
                    let (uid, gid) = owner_ids(o)?;
                    std::os::unix::fs::chown(&mp, Some(uid), Some(gid))
                        .with_context(|| format!("chown {o} {}", mp.display()))?;
                }
                a.did(format!("chown {o} {}", mp.display()));
            }
        }
        let line = Self::fstab_line(cfg, t);
        let fstab_changed = if dry_run {
            Self::fstab_changes(ctx, cfg, t)
        } else {
            fstab::ensure(&ctx.root.join(&cfg.fstab), &cfg.mount_point, &line)?
        };
        if fstab_changed {
            a.did(format!("fstab {}: {line}", cfg.fstab.display()));
        }
        a.did_all(per_boot::ensure_boot_unit(ctx, dry_run)?);
        Ok(a.into_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_built_from_the_id_and_region() {
        let (n, id) = dns_name(
            &EfsTarget::FileSystemId("fs-12345678".into()),
            "ap-northeast-2",
        );
        assert_eq!(n, "fs-12345678.efs.ap-northeast-2.amazonaws.com");
        assert_eq!(id.as_deref(), Some("fs-12345678"));
        let (n, id) = dns_name(
            &EfsTarget::DnsName("fs-1a2b3c4d.efs.us-east-1.amazonaws.com".into()),
            "x",
        );
        assert_eq!(n, "fs-1a2b3c4d.efs.us-east-1.amazonaws.com");
        assert_eq!(id.as_deref(), Some("fs-1a2b3c4d"));
        assert_eq!(
            dns_name(&EfsTarget::DnsName("efs.corp.example".into()), "x").1,
            None
        );
    }

    #[test]
    fn a_mount_from_the_name_or_the_fallback_ip_is_ours() {
        let t = Target {
            name: "fs-1.efs.r.amazonaws.com".into(),
            host: "10.0.0.5".into(),
            fallback: true,
        };
        assert!(t.is_ours("10.0.0.5:/"));
        assert!(t.is_ours("fs-1.efs.r.amazonaws.com:/"));
        assert!(!t.is_ours("fs-2.efs.r.amazonaws.com:/"));
    }

    #[test]
    fn unknown_owners_are_errors_naming_them() {
        assert!(owner_ids("root:root").is_ok());
        let e = owner_ids("no-such-user-xyz:root").unwrap_err().to_string();
        assert!(e.contains("no-such-user-xyz"), "{e}");
    }
}
