//! pip: `python3 -m pip install -r <requirements> [--target T] <packages>`, once per content.
//!
//! With `[install.cache]` and a `target`, pip's result is cached in S3 the way source builds
//! are: a miss installs into a staging dir (`--target STAGE`, which ignores what the node has
//! installed, so the tree is self-contained), packs it, unpacks that archive into the target
//! and uploads it; a hit downloads, verifies and unpacks it without running pip at all. Files
//! the OS package manager owns are never overwritten: the install is refused, naming them.
//! A system-wide install (no `target`) is not cached: what pip puts there depends on what the
//! OS already provides, and it would land among the OS's own files.

use super::pip_cache::{cached_object, through_cache};
use super::{install_dir, log_action, marker, work_dir, write_marker};
use anyhow::Context;
use emrboot_aws::{fetch_bytes, location_text};
use emrboot_config::{BuildCache, Pip};
use emrboot_os::atomic;
use emrboot_os::command::Cmd;
use emrboot_runner::{Ctx, PhaseError};
use sha2::{Digest, Sha256};
use std::path::Path;
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

pub(super) async fn plan(
    ctx: &Ctx,
    cfg: &Pip,
    cache: Option<&BuildCache>,
) -> Result<Vec<String>, PhaseError> {
    let w = work(ctx, cfg).await?;
    if marker(ctx, &format!("pip-{}", w.hash)).is_file() {
        return Ok(Vec::new());
    }
    let req = cfg.requirements.as_ref().map(location_text);
    let shown = argv(cfg, req.as_deref().map(Path::new), cfg.target.as_deref()).join(" ");
    let line = match (cached_object(ctx, cfg, &w, cache).await?, &cfg.target) {
        (Some(obj), Some(target)) if obj.present(ctx).await? => format!(
            "pip: cache hit {}: unpack into {}",
            obj.text(),
            target.display()
        ),
        (Some(obj), _) => format!(
            "pip: cache miss: {shown} (into a staging dir), upload {}",
            obj.text()
        ),
        (None, None) if cache.is_some() => format!(
            "pip: {shown} (not cached: a system-wide install is never cached; set target to cache it)"
        ),
        (None, _) => format!("pip: {shown}"),
    };
    Ok(vec![line])
}

/// `python3 -m pip`, or the interpreter's own bundled pip (no get-pip.py from the network).
pub(super) async fn ensure_pip() -> anyhow::Result<()> {
    let probe = Cmd::new(
        ["python3", "-m", "pip", "--version"],
        Duration::from_secs(60),
    )
    .output()
    .await?;
    if !probe.success {
        Cmd::new(
            ["python3", "-m", "ensurepip", "--default-pip"],
            Duration::from_secs(300),
        )
        .run()
        .await?;
        log_action("pip: python3 -m ensurepip");
    }
    Ok(())
}

pub(super) async fn apply(
    ctx: &Ctx,
    cfg: &Pip,
    cache: Option<&BuildCache>,
) -> Result<Vec<String>, PhaseError> {
    let w = work(ctx, cfg).await?;
    let name = format!("pip-{}", w.hash);
    if marker(ctx, &name).is_file() {
        tracing::info!(
            phase = "install",
            outcome = "unchanged",
            "pip: same requirements as the last run"
        );
        return Ok(Vec::new());
    }
    let req_file = match &w.requirements {
        Some(text) => {
            let f = install_dir(ctx).join(format!("requirements-{}.txt", w.hash));
            atomic::write(&f, text, 0o600)?;
            Some(f)
        }
        None => None,
    };
    let actions = match (cached_object(ctx, cfg, &w, cache).await?, &cfg.target) {
        (Some(obj), Some(target)) => {
            // A run killed mid-install leaves its work dir (archive, staging); it is of no use.
            let prefix = "work-pip-";
            atomic::sweep_dead(&install_dir(ctx), prefix);
            let work = work_dir(ctx, prefix)?;
            let result = through_cache(ctx, cfg, req_file.as_deref(), target, &obj, &work).await;
            let _ = std::fs::remove_dir_all(&work);
            result?
        }
        _ => {
            if cache.is_some() {
                tracing::info!(
                    phase = "install",
                    "pip: not cached: a system-wide install (no target) is never cached"
                );
            }
            ensure_pip().await?;
            let a = argv(cfg, req_file.as_deref(), cfg.target.as_deref());
            Cmd::new(a.clone(), PIP_BOUND).run().await?;
            let action = format!("pip: {}", a.join(" "));
            log_action(&action);
            vec![action]
        }
    };
    write_marker(ctx, &name)?;
    Ok(actions)
}
