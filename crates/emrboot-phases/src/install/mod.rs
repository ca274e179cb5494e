//! Phase `install`, in this order: OS packages, pip, native libraries built from source (with
//! the S3 build cache), time zone. `plan` and `apply` are one `converge`: each part decides
//! its action once, records it, and (not in a dry run) takes it, so a run's actions are its
//! plan's. Each part converges on its own: installed packages and the time zone are read off
//! the node; pip and each source build leave a part marker keyed by the hash of what they did
//! (`STATE/markers/<instance>/install/`), because only they cannot tell from the node whether
//! they are done. `install_dir` holds scratch space only.

mod cache;
mod packages;
mod pip;
mod pip_cache;
mod source;

use anyhow::{anyhow, Context};
use async_trait::async_trait;
use emrboot_config::PhaseName;
use emrboot_os::timezone;
use emrboot_runner::{Actions, Ctx, Phase, PhaseError, Precheck};
use std::path::PathBuf;

pub struct Install;

fn table(ctx: &Ctx) -> Result<&emrboot_config::Install, PhaseError> {
    ctx.config
        .install
        .as_ref()
        .ok_or_else(|| PhaseError::invalid(anyhow!("no [install] table")))
}

/// Where install keeps its scratch space (work dirs, the requirements copy), in the state dir.
pub(crate) fn install_dir(ctx: &Ctx) -> PathBuf {
    ctx.state.path.join("install")
}

/// Whether a part (a pip run, a source build) finished on this node: its part marker
/// (emrboot_runner::markers), the one thing that skips it, since the node cannot show it.
pub(crate) fn part_done(ctx: &Ctx, part: &str) -> bool {
    ctx.state
        .part_done(&ctx.node.instance_id, PhaseName::Install, part)
}

/// Written only after the part succeeded.
pub(crate) fn mark_part_done(ctx: &Ctx, part: &str) -> anyhow::Result<()> {
    ctx.state
        .write_part_marker(&ctx.node.instance_id, PhaseName::Install, part)?;
    Ok(())
}

/// A fresh scratch dir `install/<prefix><pid>` for one run's work (a dead run's is swept by
/// the caller with `atomic::sweep_dead` on the same prefix). The caller removes it when done.
pub(crate) fn work_dir(ctx: &Ctx, prefix: &str) -> anyhow::Result<PathBuf> {
    let work = install_dir(ctx).join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    Ok(work)
}

#[async_trait]
impl Phase for Install {
    fn name(&self) -> PhaseName {
        PhaseName::Install
    }

    async fn check(&self, ctx: &Ctx) -> Result<Precheck, PhaseError> {
        let cfg = table(ctx)?;
        if !cfg.packages.is_empty() {
            ctx.doors
                .packages()
                .await
                .map_err(|e| PhaseError::invalid(anyhow!("install.packages: {e}")))?;
        }
        if let Some(zone) = &cfg.timezone {
            timezone::check(&ctx.root, zone)
                .map_err(|e| PhaseError::invalid(anyhow!("install.timezone: {e}")))?;
        }
        Ok(Precheck::Run)
    }

    async fn plan(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError> {
        converge(ctx, true).await
    }

    async fn apply(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError> {
        converge(ctx, false).await
    }
}

async fn converge(ctx: &Ctx, dry_run: bool) -> Result<Vec<String>, PhaseError> {
    let cfg = table(ctx)?;
    let mut a = Actions::new(PhaseName::Install, dry_run);
    packages::converge(ctx, &cfg.packages, &mut a).await?;
    if let Some(p) = &cfg.pip {
        pip::converge(ctx, p, cfg.cache.as_ref(), &mut a).await?;
    }
    for s in &cfg.sources {
        source::converge(ctx, s, cfg.cache.as_ref(), &mut a).await?;
    }
    if let Some(zone) = &cfg.timezone {
        if timezone::is_set(&ctx.root, zone) {
            tracing::info!("time zone is already {zone}");
        } else {
            if !a.dry_run() {
                timezone::set(&ctx.root, zone)?;
            }
            a.did(link_action(zone));
        }
    }
    Ok(a.into_vec())
}

fn link_action(zone: &str) -> String {
    format!(
        "link {} -> {}",
        timezone::LOCALTIME,
        timezone::zone_path(zone).display()
    )
}

#[cfg(test)]
mod tests;
