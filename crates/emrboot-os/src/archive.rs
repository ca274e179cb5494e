//! Archives: source tarballs unpacked with the system's tar (every compression it knows), and
//! the build cache's own tar.gz of a staged tree, written and read with the `tar` and `flate2`
//! crates so the format is ours.

use crate::command::{Cmd, CommandError};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("{}: {reason}", .path.display())]
    Layout { path: PathBuf, reason: String },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Unpacks a source tarball into `dir` and returns its build dir: the single top-level
/// directory, as release tarballs have, or `dir` itself.
pub async fn unpack_source(tarball: &Path, dir: &Path) -> Result<PathBuf, ArchiveError> {
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    Cmd::new(
        [
            "tar".into(),
            "-xf".into(),
            tarball.as_os_str().to_owned(),
            "-C".into(),
            dir.as_os_str().to_owned(),
            "--no-same-owner".into(),
        ],
        Duration::from_secs(600),
    )
    .run()
    .await?;
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err("list", dir))?
        .filter_map(Result::ok)
        .collect();
    match entries.as_slice() {
        [one] if one.path().is_dir() => Ok(one.path()),
        [] => Err(ArchiveError::Layout {
            path: tarball.to_path_buf(),
            reason: "the archive is empty".into(),
        }),
        _ => Ok(dir.to_path_buf()),
    }
}

/// sha256 of a file, hex, read in chunks.
pub fn sha256_file(path: &Path) -> Result<String, ArchiveError> {
    use sha2::{Digest, Sha256};
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(io_err("read", path))?;
    Ok(hex::encode(h.finalize()))
}

/// Writes `tree` (a staged install) to `out` as tar.gz, paths relative to `tree`.
pub fn pack(tree: &Path, out: &Path) -> Result<(), ArchiveError> {
    let file = File::create(out).map_err(io_err("create", out))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    // Symlinks stay symlinks (libfoo.so -> libfoo.so.2), as `make install` made them.
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", tree)
        .map_err(io_err("archive", tree))?;
    let gz = builder.into_inner().map_err(io_err("finish", out))?;
    let file = gz.finish().map_err(io_err("compress", out))?;
    file.sync_all().map_err(io_err("fsync", out))
}

/// The paths (relative, `./` dropped) of the entries of one of our tar.gz archives that are
/// not directories: what unpacking it would create or replace.
pub fn files(archive: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let file = File::open(archive).map_err(io_err("open", archive))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in ar.entries().map_err(io_err("read", archive))? {
        let entry = entry.map_err(io_err("read", archive))?;
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let path = entry.path().map_err(io_err("read", archive))?;
        let rel: PathBuf = path
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        out.push(rel);
    }
    Ok(out)
}

/// Unpacks one of our tar.gz archives into `root`, keeping modes; refuses entries that would
/// land outside it (the `tar` crate's unpack_in checks every path).
pub fn unpack(archive: &Path, root: &Path) -> Result<usize, ArchiveError> {
    let file = File::open(archive).map_err(io_err("open", archive))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    ar.set_preserve_permissions(true);
    ar.set_overwrite(true);
    let mut count = 0;
    for entry in ar.entries().map_err(io_err("read", archive))? {
        let mut entry = entry.map_err(io_err("read", archive))?;
        let inside = entry.unpack_in(root).map_err(io_err("unpack into", root))?;
        if !inside {
            let path = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(ArchiveError::Layout {
                path: archive.to_path_buf(),
                reason: format!("entry {path:?} would land outside {}", root.display()),
            });
        }
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn pack_then_unpack_keeps_files_modes_and_links() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("stage");
        std::fs::create_dir_all(tree.join("usr/local/bin")).unwrap();
        std::fs::create_dir_all(tree.join("usr/local/lib")).unwrap();
        std::fs::write(tree.join("usr/local/bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            tree.join("usr/local/bin/tool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(tree.join("usr/local/lib/libx.so.2"), b"lib").unwrap();
        std::os::unix::fs::symlink("libx.so.2", tree.join("usr/local/lib/libx.so")).unwrap();
        let ar = d.path().join("a.tar.gz");
        pack(&tree, &ar).unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        assert!(unpack(&ar, &root).unwrap() >= 5);
        let mut listed = files(&ar).unwrap();
        listed.sort();
        assert_eq!(
            listed,
            [
                "usr/local/bin/tool",
                "usr/local/lib/libx.so",
                "usr/local/lib/libx.so.2"
            ]
            .map(PathBuf::from)
        );
        let tool = root.join("usr/local/bin/tool");
        assert_eq!(std::fs::read(&tool).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            std::fs::metadata(&tool).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read_link(root.join("usr/local/lib/libx.so")).unwrap(),
            PathBuf::from("libx.so.2")
        );
    }

    #[tokio::test]
    async fn a_source_tarball_yields_its_top_dir() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("demo-1.0");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("Makefile"), b"all:\n").unwrap();
        let tgz = d.path().join("demo.tar.gz");
        let st = std::process::Command::new("tar")
            .args(["-czf"])
            .arg(&tgz)
            .arg("-C")
            .arg(d.path())
            .arg("demo-1.0")
            .status()
            .unwrap();
        assert!(st.success());
        let top = unpack_source(&tgz, &d.path().join("x")).await.unwrap();
        assert!(top.ends_with("demo-1.0") && top.join("Makefile").is_file());
    }
}
