//! pip: `python3 -m pip install -r <requirements> [--target T] <packages>`, once per content.
//!
//! With `[install.cache]` and a `target`, pip's result is cached in S3 the way source builds
//! are: a miss installs into a staging dir (`--target STAGE`, which ignores what the node has
//! installed, so the tree is self-contained), packs it, unpacks that archive into the target
//! and uploads it; a hit downloads, verifies and unpacks it without running pip at all. Files
//! the OS package manager owns are never overwritten: the install is refused, naming them.
//! A system-wide install (no `target`) is not cached: what pip puts there depends on what the
//! OS already provides, and it would land among the OS's own files.

use super::cache::Object;
use super::pip_cache::{cached_object, Through};
use super::{install_dir, mark_part_done, part_done, work_dir};
use anyhow::Context;
use emrboot_aws::{fetch_bytes, location_text};
use emrboot_config::{BuildCache, Pip};
use emrboot_os::atomic;
use emrboot_os::command::Cmd;
use emrboot_runner::{Actions, Ctx, PhaseError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) const PIP_BOUND: Duration = Duration::from_secs(1800);
/// Requirements files are small; this bounds what a wrong URL can make us hold.
const MAX_REQUIREMENTS: u64 = 4 << 20;

pub(super) struct Work {
    pub(super) requirements: Option<Vec<u8>>,
    hash: String,
}

async fn work(ctx: &Ctx, cfg: &Pip) -> Result<Work, PhaseError> {
    let requirements = match &cfg.requirements {
        Some(loc) => Some(
            fetch_bytes(&ctx.doors.aws, loc, MAX_REQUIREMENTS)
                .await
                .with_context(|| format!("install.pip.requirements {}", location_text(loc)))?,
        ),
        None => None,
    };
    let mut h = Sha256::new();
    h.update(requirements.as_deref().unwrap_or_default());
    // Packages and target change what pip does as much as the requirements text does.
    h.update(format!("\n{:?}\n{:?}", cfg.packages, cfg.target).as_bytes());
    Ok(Work {
        requirements,
        hash: hex::encode(&h.finalize()[..8]),
    })
}

/// pip's command line; `into` is where it installs (the target, or a staging dir for the cache).
pub(super) fn argv(cfg: &Pip, req_file: Option<&Path>, into: Option<&Path>) -> Vec<String> {
    let mut a: Vec<String> = [
        "python3",
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
    ]
    .map(String::from)
    .to_vec();
    if let Some(f) = req_file {
        a.extend(["-r".into(), f.display().to_string()]);
    }
    if let Some(t) = into {
        // Without --upgrade, pip keeps what an earlier run put in the target.
        a.extend([
            "--target".into(),
            t.display().to_string(),
            "--upgrade".into(),
        ]);
    }
    a.extend(cfg.packages.iter().cloned());
    a
}

/// `python3 -m pip`, or the interpreter's own bundled pip (no get-pip.py from the network).
/// The probe is read-only, so `plan` lists ensurepip exactly when a run would take it.
pub(super) async fn ensure_pip(a: &mut Actions) -> anyhow::Result<()> {
    let probe = Cmd::new(
        ["python3", "-m", "pip", "--version"],
        Duration::from_secs(60),
    )
    .output()
    .await?;
    if !probe.success {
        if !a.dry_run() {
            Cmd::new(
                ["python3", "-m", "ensurepip", "--default-pip"],
                Duration::from_secs(300),
            )
            .run()
            .await?;
        }
        a.did("pip: python3 -m ensurepip");
    }
    Ok(())
}

/// pip's command line as `plan` and the action lines show it: the requirements by their
/// location, not the run's local copy.
fn shown(cfg: &Pip) -> String {
    let req = cfg.requirements.as_ref().map(location_text);
    argv(cfg, req.as_deref().map(Path::new), cfg.target.as_deref()).join(" ")
}

pub(super) async fn converge(
    ctx: &Ctx,
    cfg: &Pip,
    cache: Option<&BuildCache>,
    a: &mut Actions,
) -> Result<(), PhaseError> {
    let w = work(ctx, cfg).await?;
    let name = format!("pip-{}", w.hash);
    if part_done(ctx, &name) {
        tracing::info!("pip: same requirements as the last run");
        return Ok(());
    }
    match (cached_object(ctx, cfg, &w, cache).await?, &cfg.target) {
        (Some(obj), Some(target)) => {
            let whole = obj.whole(ctx).await?;
            if a.dry_run() {
                if whole.is_some() {
                    a.did(hit_line(&obj, target));
                } else {
                    ensure_pip(a).await?;
                    a.did(miss_line(cfg, &obj));
                }
                return Ok(());
            }
            let req_file = requirements_file(ctx, &w)?;
            // A run killed mid-install leaves its work dir (archive, staging); it is of no use.
            let prefix = "work-pip-";
            atomic::sweep_dead(&install_dir(ctx), prefix);
            let work = work_dir(ctx, prefix)?;
            let got = Through {
                cfg,
                req_file: req_file.as_deref(),
                target,
                obj: &obj,
                whole: whole.as_deref(),
                work: &work,
            }
            .install(ctx, a)
            .await;
            let _ = std::fs::remove_dir_all(&work);
            got?;
        }
        _ => {
            let line = if cache.is_some() {
                format!(
                    "pip: {} (not cached: a system-wide install is never cached; set target to cache it)",
                    shown(cfg)
                )
            } else {
                format!("pip: {}", shown(cfg))
            };
            ensure_pip(a).await?;
            if !a.dry_run() {
                let req_file = requirements_file(ctx, &w)?;
                let argv = argv(cfg, req_file.as_deref(), cfg.target.as_deref());
                Cmd::new(argv, PIP_BOUND).run().await?;
            }
            a.did(line);
        }
    }
    if !a.dry_run() {
        mark_part_done(ctx, &name)?;
    }
    Ok(())
}

/// The run's local copy of the requirements, for pip's `-r`.
fn requirements_file(ctx: &Ctx, w: &Work) -> anyhow::Result<Option<PathBuf>> {
    let Some(text) = &w.requirements else {
        return Ok(None);
    };
    let f = install_dir(ctx).join(format!("requirements-{}.txt", w.hash));
    atomic::write(&f, text, 0o600)?;
    Ok(Some(f))
}

pub(super) fn hit_line(obj: &Object, target: &Path) -> String {
    format!(
        "pip: cache hit {}: unpack into {}",
        obj.text(),
        target.display()
    )
}

pub(super) fn miss_line(cfg: &Pip, obj: &Object) -> String {
    format!(
        "pip: cache miss: {} (into a staging dir), upload {}",
        shown(cfg),
        obj.text()
    )
}
