//! pip through the S3 build cache: the key, and a hit or a miss installed through one archive.

use super::cache::Object;
use super::pip::{argv, ensure_pip, hit_line, miss_line, Work, PIP_BOUND};
use anyhow::{anyhow, Context};
use emrboot_config::{BuildCache, Pip};
use emrboot_os::archive;
use emrboot_os::command::Cmd;
use emrboot_os::pkg::os_release;
use emrboot_runner::{Actions, Ctx};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the interpreter says about itself: all that decides which wheels pip picks and what
/// the installed scripts' `#!` line says.
const INTERPRETER_PROBE: &str = "import sys, sysconfig; print(sys.implementation.name, \
    '.'.join(map(str, sys.version_info[:3])), sys.abiflags, sysconfig.get_platform(), sys.executable)";

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
pub(super) async fn cached_object(
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
    tracing::info!(key = %key, interpreter = %python, os = %format!("{id} {version}"), "pip cache key");
    Ok(Some(Object::new(cache, "pip", &key)))
}

/// One run of pip through the cache, once `Object::whole` has decided hit or miss.
pub(super) struct Through<'a> {
    pub(super) cfg: &'a Pip,
    pub(super) req_file: Option<&'a Path>,
    pub(super) target: &'a Path,
    pub(super) obj: &'a Object,
    /// The cached archive's checksum: a hit, unless its body turns out corrupt.
    pub(super) whole: Option<&'a str>,
    /// The run's scratch dir, which the caller removes.
    pub(super) work: &'a Path,
}

impl Through<'_> {
    /// Hit: the cached archive. Miss: pip into `work/stage`, packed. Either way that archive
    /// is unpacked into the target, unless it would overwrite files the OS package manager
    /// owns. Records the same line `plan` showed for the hit or miss it turned out to be.
    pub(super) async fn install(&self, ctx: &Ctx, a: &mut Actions) -> anyhow::Result<()> {
        let archive_path = self.work.join("staged.tar.gz");
        let hit = match self.whole {
            Some(sha) => self.obj.fetch(ctx, sha, &archive_path).await?,
            None => false,
        };
        if !hit {
            ensure_pip(a).await?;
            let stage = self.work.join("stage");
            let argv = argv(self.cfg, self.req_file, Some(&stage));
            Cmd::new(argv, PIP_BOUND).run().await?;
            archive::pack(&stage, &archive_path)?;
        }
        refuse_os_owned(ctx, &archive_path, self.target).await?;
        std::fs::create_dir_all(self.target)
            .with_context(|| format!("create {}", self.target.display()))?;
        let n = archive::unpack(&archive_path, self.target)?;
        tracing::info!(
            "pip: {n} staged entries copied into {}",
            self.target.display()
        );
        let line = if hit {
            hit_line(self.obj, self.target)
        } else {
            let miss = miss_line(self.cfg, self.obj);
            self.obj
                .upload(ctx, "the staged pip install", &archive_path, miss)
                .await?
        };
        a.did(line);
        Ok(())
    }
}

/// Fails, naming them, when unpacking `archive_path` into `target` would replace files that
/// an rpm or deb owns (a target such as /usr/lib/python3.9/site-packages). Nothing is written.
async fn refuse_os_owned(ctx: &Ctx, archive_path: &Path, target: &Path) -> anyhow::Result<()> {
    // No package manager on the node, or nothing in the target yet: no file can be replaced,
    // so the archive need not be read twice.
    let Ok(manager) = ctx.doors.packages().await else {
        return Ok(());
    };
    let empty = std::fs::read_dir(target).map_or(true, |mut d| d.next().is_none());
    if empty {
        return Ok(());
    }
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

    /// One key's inputs, so that each case below changes one of them.
    #[derive(Clone)]
    struct Inputs {
        req: &'static [u8],
        pkgs: Vec<String>,
        target: &'static str,
        py: &'static str,
        os: (&'static str, &'static str),
        arch: &'static str,
    }

    impl Inputs {
        fn key(&self) -> String {
            cache_key(
                self.req,
                &self.pkgs,
                Path::new(self.target),
                self.py,
                self.os,
                self.arch,
            )
        }
    }

    #[test]
    fn the_key_covers_requirements_packages_target_interpreter_os_and_arch() {
        let base = Inputs {
            req: b"pandas==2.2.3\n",
            pkgs: vec!["redis".into()],
            target: "/opt/py",
            py: "cpython 3.9.16  linux-x86_64 /usr/bin/python3",
            os: ("amzn", "2023"),
            arch: "x86_64",
        };
        assert_eq!(base.key(), base.clone().key());
        let changed: Vec<Inputs> = vec![
            Inputs {
                req: b"pandas==2.2.2\n",
                ..base.clone()
            },
            Inputs {
                pkgs: vec!["redis==5".into()],
                ..base.clone()
            },
            Inputs {
                pkgs: vec![],
                ..base.clone()
            },
            Inputs {
                target: "/opt/py2",
                ..base.clone()
            },
            Inputs {
                py: "cpython 3.11.2  linux-x86_64 /usr/bin/python3",
                ..base.clone()
            },
            Inputs {
                os: ("amzn", "2"),
                ..base.clone()
            },
            Inputs {
                os: ("debian", "2023"),
                ..base.clone()
            },
            Inputs {
                arch: "aarch64",
                ..base.clone()
            },
            // Parts do not run into each other.
            Inputs {
                req: b"pandas==2.2.3\nredis",
                pkgs: vec![],
                ..base.clone()
            },
        ];
        for other in changed {
            assert_ne!(base.key(), other.key());
        }
    }
}
