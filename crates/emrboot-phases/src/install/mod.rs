//! Phase `install`, in this order: OS packages, pip, native libraries built from source (with
//! the S3 build cache), time zone. `plan` and `apply` are one `converge`: each part decides
//! its action once, records it, and (not in a dry run) takes it, so a run's actions are its
//! plan's. Each part converges on its own: installed packages and the time zone are read off
//! the node; pip and each source build leave a marker keyed by the hash of what they did
//! (`install/*.done`), because only they cannot tell from the node whether they are done.

mod cache;
mod packages;
mod pip;
mod pip_cache;
mod source;

use anyhow::{anyhow, Context};
use async_trait::async_trait;
use emrboot_config::PhaseName;
use emrboot_os::{atomic, timezone};
use emrboot_runner::{Actions, Ctx, Phase, PhaseError, Precheck};
use std::path::PathBuf;

pub struct Install;

fn table(ctx: &Ctx) -> Result<&emrboot_config::Install, PhaseError> {
    ctx.config
        .install
        .as_ref()
        .ok_or_else(|| PhaseError::invalid(anyhow!("no [install] table")))
}

/// Where install keeps its markers and scratch space, in the state dir.
pub(crate) fn install_dir(ctx: &Ctx) -> PathBuf {
    ctx.state.path.join("install")
}

/// A marker of a finished part (pip run, source build); written only after it succeeded.
pub(crate) fn marker(ctx: &Ctx, name: &str) -> PathBuf {
    install_dir(ctx).join(format!("{name}.done"))
}

pub(crate) fn write_marker(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let stamp = emrboot_runner::status::now_rfc3339();
    atomic::write(&marker(ctx, name), stamp.as_bytes(), 0o600)?;
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
            emrboot_os::pkg::Manager::detect()
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
    packages::converge(&cfg.packages, &mut a).await?;
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
