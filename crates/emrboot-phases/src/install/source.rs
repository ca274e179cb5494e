//! Native libraries built from source, checked by sha256 before anything is unpacked, staged
//! with DESTDIR, and cached in S3 as the staged tree so that one node builds and the rest unpack.
//!
//! Either way the node gets the staged tree through the same archive: a miss builds, packs the
//! staging dir and unpacks that archive into the root; a hit downloads the archive instead.

use super::cache::Object;
use super::{mark_part_done, part_done, work_dir};
use anyhow::{anyhow, Context};
use emrboot_aws::{download, location_text};
use emrboot_config::{BuildCache, SourceBuild};
use emrboot_os::archive;
use emrboot_os::command::Cmd;
use emrboot_os::pkg::os_release;
use emrboot_runner::{Actions, Ctx, PhaseError};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, Instant};

/// What decides whether a cached build fits this node: the source, its steps, the OS and the
/// CPU. `post` is left out: it runs on every node, hit or miss.
pub fn cache_key(src: &SourceBuild, os_id: &str, os_version: &str, arch: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        src.name.as_str(),
        &location_text(&src.url),
        &src.sha256,
        &src.build.join("\u{1}"),
        &src.install.join("\u{1}"),
        os_id,
        os_version,
        arch,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..8])
}

struct Names {
    key: String,
    marker: String,
    /// The cached archive, with a cache.
    object: Option<Object>,
}

fn names(ctx: &Ctx, src: &SourceBuild, cache: Option<&BuildCache>) -> Names {
    let (id, version) = os_release(ctx.root.path());
    let key = cache_key(src, &id, &version, std::env::consts::ARCH);
    let object = cache.map(|c| Object::new(c, &src.name, &key));
    Names {
        marker: format!("source-{}-{key}", src.name),
        key,
        object,
    }
}

fn build_text(src: &SourceBuild) -> String {
    format!(
        "download {}, check sha256, build ({}), install to staging",
        location_text(&src.url),
        src.build.join("; ")
    )
}

fn hit_line(src: &SourceBuild, obj: &Object) -> String {
    format!(
        "source {}: cache hit {}: unpack and run post",
        src.name,
        obj.text()
    )
}

/// A build, and with a cache the upload of what it staged.
fn build_line(src: &SourceBuild, obj: Option<&Object>) -> String {
    match obj {
        Some(obj) => format!(
            "source {}: cache miss: {}, upload {}",
            src.name,
            build_text(src),
            obj.text()
        ),
        None => format!("source {}: {}", src.name, build_text(src)),
    }
}

/// Runs `sh -c STEP` (the config's own text, the one place a shell runs), bounded, logged
/// with its duration.
async fn step(
    kind: &str,
    text: &str,
    cwd: &Path,
    env: &[(&str, &Path)],
    bound: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut cmd = Cmd::new(["sh", "-c", text], bound).cwd(cwd).interruptible();
    for (k, v) in env {
        cmd = cmd.env(*k, *v);
    }
    cmd.run()
        .await
        .with_context(|| format!("{kind} step {text:?}"))?;
    tracing::info!(step = kind, secs = start.elapsed().as_secs_f64(), "{text}");
    Ok(())
}

/// Download, check, unpack, build, stage, pack into `archive_path`.
async fn build(
    ctx: &Ctx,
    src: &SourceBuild,
    work: &Path,
    archive_path: &Path,
) -> anyhow::Result<()> {
    let url = location_text(&src.url);
    let tarball = work.join("source");
    let got = download(&ctx.doors.aws, &src.url, &tarball).await?;
    if got != src.sha256 {
        return Err(anyhow!(
            "{url}: sha256 mismatch: the config says {}, the download is {got}; nothing was unpacked or run",
            src.sha256
        ));
    }
    let tree = archive::unpack_source(&tarball, &work.join("src")).await?;
    let staging = work.join("stage");
    std::fs::create_dir_all(&staging).with_context(|| format!("create {}", staging.display()))?;
    let bound = Duration::from_secs(src.step_timeout_secs);
    let root = ctx.root.path();
    for s in &src.build {
        step("build", s, &tree, &[("EMRBOOT_ROOT", root)], bound).await?;
    }
    for s in &src.install {
        step(
            "install",
            s,
            &tree,
            &[("DESTDIR", &staging), ("EMRBOOT_ROOT", root)],
            bound,
        )
        .await?;
    }
    archive::pack(&staging, archive_path)?;
    Ok(())
}

pub(super) async fn converge(
    ctx: &Ctx,
    src: &SourceBuild,
    cache: Option<&BuildCache>,
    a: &mut Actions,
) -> Result<(), PhaseError> {
    let n = names(ctx, src, cache);
    let prefix = format!("work-{}-", src.name);
    if !a.dry_run() {
        // A run killed mid-build leaves its work dir (tarball, tree, staging); it is of no use.
        emrboot_os::atomic::sweep_dead(&super::install_dir(ctx), &prefix);
    }
    if part_done(ctx, &n.marker) {
        tracing::info!("source {} already installed (key {})", src.name, n.key);
        return Ok(());
    }
    let whole = match &n.object {
        Some(obj) => obj.whole(ctx).await?,
        None => None,
    };
    if a.dry_run() {
        a.did(match (&n.object, &whole) {
            (Some(obj), Some(_)) => hit_line(src, obj),
            (obj, _) => build_line(src, obj.as_ref()),
        });
        return Ok(());
    }
    let work = work_dir(ctx, &prefix)?;
    let result = build_or_fetch(ctx, src, &n, whole.as_deref(), &work).await;
    let _ = std::fs::remove_dir_all(&work);
    a.did(result?);
    mark_part_done(ctx, &n.marker)?;
    Ok(())
}

/// Fetches the cached build (`whole`: its checksum) or builds it, unpacks it into the root
/// and runs `post`; returns the line `plan` showed for the hit or build it turned out to be.
async fn build_or_fetch(
    ctx: &Ctx,
    src: &SourceBuild,
    n: &Names,
    whole: Option<&str>,
    work: &Path,
) -> anyhow::Result<String> {
    let archive_path = work.join("staged.tar.gz");
    let hit = match (&n.object, whole) {
        (Some(obj), Some(sha)) => obj.fetch(ctx, sha, &archive_path).await?,
        _ => false,
    };
    if !hit {
        build(ctx, src, work, &archive_path).await?;
    }
    let root = ctx.root.path();
    let files = archive::unpack(&archive_path, root)?;
    tracing::info!(
        "source {}: {files} staged entries copied into {}",
        src.name,
        root.display()
    );
    for s in &src.post {
        step(
            "post",
            s,
            root,
            &[("EMRBOOT_ROOT", root)],
            Duration::from_secs(src.step_timeout_secs),
        )
        .await?;
    }
    Ok(match &n.object {
        Some(obj) if hit => hit_line(src, obj),
        // After post: nothing is uploaded that has not proved it installs.
        Some(obj) => {
            let line = build_line(src, Some(obj));
            obj.upload(ctx, "the staged build", &archive_path, line)
                .await?
        }
        None => build_line(src, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use emrboot_config::Location;

    fn src() -> SourceBuild {
        SourceBuild {
            name: "mecab".into(),
            url: Location::Https {
                url: "https://example.org/m.tgz".into(),
            },
            sha256: "ab".repeat(32),
            build: vec!["./configure".into(), "make".into()],
            install: vec!["make install".into()],
            post: vec!["ldconfig".into()],
            step_timeout_secs: 60,
        }
    }

    #[test]
    fn the_key_covers_source_steps_os_and_arch_but_not_post() {
        let base = cache_key(&src(), "amzn", "2023", "x86_64");
        assert_eq!(base, cache_key(&src(), "amzn", "2023", "x86_64"));
        let mut s = src();
        s.post = vec![];
        assert_eq!(base, cache_key(&s, "amzn", "2023", "x86_64"));
        for other in [
            cache_key(&src(), "amzn", "2", "x86_64"),
            cache_key(&src(), "debian", "2023", "x86_64"),
            cache_key(&src(), "amzn", "2023", "aarch64"),
            cache_key(
                &SourceBuild {
                    build: vec!["make -j4".into()],
                    ..src()
                },
                "amzn",
                "2023",
                "x86_64",
            ),
            cache_key(
                &SourceBuild {
                    sha256: "cd".repeat(32),
                    ..src()
                },
                "amzn",
                "2023",
                "x86_64",
            ),
        ] {
            assert_ne!(base, other);
        }
    }
}
