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
use super::{install_dir, log_action, marker, work_dir, write_marker};
use anyhow::{anyhow, Context};
use emrboot_aws::{fetch_bytes, location_text};
use emrboot_config::{BuildCache, Pip};
use emrboot_os::archive;
use emrboot_os::atomic;
use emrboot_os::command::Cmd;
use emrboot_os::pkg::{os_release, Manager};
use emrboot_runner::{Ctx, PhaseError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

const PIP_BOUND: Duration = Duration::from_secs(1800);
/// Requirements files are small; this bounds what a wrong URL can make us hold.
const MAX_REQUIREMENTS: u64 = 4 << 20;
/// What the interpreter says about itself: all that decides which wheels pip picks and what
/// the installed scripts' `#!` line says.
const INTERPRETER_PROBE: &str = "import sys, sysconfig; print(sys.implementation.name, \
    '.'.join(map(str, sys.version_info[:3])), sys.abiflags, sysconfig.get_platform(), sys.executable)";

struct Work {
    requirements: Option<Vec<u8>>,
    hash: String,
}

async fn work(ctx: &Ctx, cfg: &Pip) -> Result<Work, PhaseError> {
    let requirements = match &cfg.requirements {
        Some(loc) => Some(
            fetch_bytes(&ctx.aws, loc, MAX_REQUIREMENTS)
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

/// What decides whether a cached pip install fits this node.
pub fn cache_key(
    requirements: &[u8],
    packages: &[String],
    target: &Path,
    interpreter: &str,
    (os_id, os_version): (&str, &str),
    arch: &str,
) -> String {
    let mut h = Sha256::new();
    let packages = packages.join("\u{1}");
    let target = target.as_os_str().as_encoded_bytes();
    for part in [
        requirements,
        packages.as_bytes(),
        target,
        interpreter.as_bytes(),
        os_id.as_bytes(),
        os_version.as_bytes(),
        arch.as_bytes(),
    ] {
        // Length-prefixed: the requirements text may hold any byte.
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(&h.finalize()[..8])
}

async fn interpreter() -> anyhow::Result<String> {
    let out = Cmd::new(
        ["python3", "-c", INTERPRETER_PROBE],
        Duration::from_secs(60),
    )
    .output()
    .await?;
    let text = out.stdout.trim();
    if !out.success || text.is_empty() {
        return Err(anyhow!(
            "python3 -c (the interpreter's version, for the pip cache key): exit {:?}",
            out.code
        ));
    }
    Ok(text.to_string())
}

/// With a cache and a target: the cached archive for this node, else `None`.
async fn cached_object(
    ctx: &Ctx,
    cfg: &Pip,
    w: &Work,
    cache: Option<&BuildCache>,
) -> anyhow::Result<Option<Object>> {
    let (Some(cache), Some(target)) = (cache, &cfg.target) else {
        return Ok(None);
    };
    let python = interpreter().await?;
    let (id, version) = os_release(ctx.root.path());
    let key = cache_key(
        w.requirements.as_deref().unwrap_or_default(),
        &cfg.packages,
        target,
        &python,
        (&id, &version),
        std::env::consts::ARCH,
    );
    tracing::info!(phase = "install", key = %key, interpreter = %python, os = %format!("{id} {version}"), "pip cache key");
    Ok(Some(Object::new(cache, "pip", &key)))
}

/// pip's command line; `into` is where it installs (the target, or a staging dir for the cache).
fn argv(cfg: &Pip, req_file: Option<&Path>, into: Option<&Path>) -> Vec<String> {
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
async fn ensure_pip() -> anyhow::Result<()> {
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

/// Hit: the cached archive. Miss: pip into `work/stage`, packed. Either way that archive is
/// unpacked into the target, unless it would overwrite files the OS package manager owns.
async fn through_cache(
    ctx: &Ctx,
    cfg: &Pip,
    req_file: Option<&Path>,
    target: &Path,
    obj: &Object,
    work: &Path,
) -> anyhow::Result<Vec<String>> {
    let archive_path = work.join("staged.tar.gz");
    let mut actions = Vec::new();
    let hit = obj.fetch(ctx, &archive_path).await?;
    if hit {
        actions.push(format!("pip: cache hit {}", obj.text()));
    } else {
        ensure_pip().await?;
        let stage = work.join("stage");
        let a = argv(cfg, req_file, Some(&stage));
        Cmd::new(a.clone(), PIP_BOUND).run().await?;
        archive::pack(&stage, &archive_path)?;
        actions.push(format!("pip: cache miss: {}", a.join(" ")));
    }
    refuse_os_owned(&archive_path, target).await?;
    std::fs::create_dir_all(target).with_context(|| format!("create {}", target.display()))?;
    let n = archive::unpack(&archive_path, target)?;
    actions.push(format!(
        "pip: {n} staged entries copied into {}",
        target.display()
    ));
    if !hit {
        if let Some(up) = obj
            .upload(ctx, "the staged pip install", &archive_path)
            .await?
        {
            actions.push(format!("pip: {up}"));
        }
    }
    for a in &actions {
        log_action(a);
    }
    Ok(actions)
}

/// Fails, naming them, when unpacking `archive_path` into `target` would replace files that
/// an rpm or deb owns (a target such as /usr/lib/python3.9/site-packages). Nothing is written.
async fn refuse_os_owned(archive_path: &Path, target: &Path) -> anyhow::Result<()> {
    // No package manager on the node: no file can be owned by one.
    let Ok(manager) = Manager::detect() else {
        return Ok(());
    };
    let existing: Vec<PathBuf> = archive::files(archive_path)?
        .into_iter()
        .map(|rel| target.join(rel))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    let owned = manager.owners(&existing).await?;
    if owned.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = owned
        .iter()
        .take(5)
        .map(|(p, pkg)| format!("{} (package {pkg})", p.display()))
        .collect();
    Err(anyhow!(
        "pip: refusing to overwrite {} file(s) that the OS package manager ({}) owns: {}{}; nothing was installed into {}",
        owned.len(),
        manager.name(),
        shown.join(", "),
        if owned.len() > 5 { ", …" } else { "" },
        target.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_covers_requirements_packages_target_interpreter_os_and_arch() {
        let key =
            |req: &[u8], pkgs: &[&str], target: &str, py: &str, os: (&str, &str), arch: &str| {
                let pkgs: Vec<String> = pkgs.iter().map(|p| p.to_string()).collect();
                cache_key(req, &pkgs, Path::new(target), py, os, arch)
            };
        let py = "cpython 3.9.16  linux-x86_64 /usr/bin/python3";
        let base = key(
            b"pandas==2.2.3\n",
            &["redis"],
            "/opt/py",
            py,
            ("amzn", "2023"),
            "x86_64",
        );
        assert_eq!(
            base,
            key(
                b"pandas==2.2.3\n",
                &["redis"],
                "/opt/py",
                py,
                ("amzn", "2023"),
                "x86_64"
            )
        );
        for other in [
            key(
                b"pandas==2.2.2\n",
                &["redis"],
                "/opt/py",
                py,
                ("amzn", "2023"),
                "x86_64",
            ),
            key(
                b"pandas==2.2.3\n",
                &["redis==5"],
                "/opt/py",
                py,
                ("amzn", "2023"),
                "x86_64",
            ),
            key(
                b"pandas==2.2.3\n",
                &[],
                "/opt/py",
                py,
                ("amzn", "2023"),
                "x86_64",
            ),
            key(
                b"pandas==2.2.3\n",
                &["redis"],
                "/opt/py2",
                py,
                ("amzn", "2023"),
                "x86_64",
            ),
            key(
                b"pandas==2.2.3\n",
                &["redis"],
                "/opt/py",
                "cpython 3.11.2  linux-x86_64 /usr/bin/python3",
                ("amzn", "2023"),
                "x86_64",
            ),
            key(
                b"pandas==2.2.3\n",
                &["redis"],
                "/opt/py",
                py,
                ("amzn", "2"),
                "x86_64",
            ),
            key(
                b"pandas==2.2.3\n",
                &["redis"],
                "/opt/py",
                py,
                ("debian", "2023"),
                "x86_64",
            ),
            key(
                b"pandas==2.2.3\n",
                &["redis"],
                "/opt/py",
                py,
                ("amzn", "2023"),
                "aarch64",
            ),
            // Parts do not run into each other.
            key(
                b"pandas==2.2.3\nredis",
                &[],
                "/opt/py",
                py,
                ("amzn", "2023"),
                "x86_64",
            ),
        ] {
            assert_ne!(base, other);
        }
    }
}
