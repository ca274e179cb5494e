//! Files replaced whole or not at all: write a temporary file beside the target, fsync it,
//! rename it over the target, fsync the directory. A crash leaves the old file or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct AtomicError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn ctx<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AtomicError + 'a {
    move |source| AtomicError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically with permission bits `mode`; creates the parent directory.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AtomicError> {
    replace(path, mode, "write", |f| f.write_all(bytes))
}

/// Copies `src` to `dst` atomically with permission bits `mode`, streaming (no whole-file buffer).
pub fn copy(src: &Path, dst: &Path, mode: u32) -> Result<(), AtomicError> {
    let mut from = File::open(src).map_err(ctx("open", src))?;
    replace(dst, mode, "copy into", |f| {
        io::copy(&mut from, f).map(|_| ())
    })
}

/// Fills a temporary file beside `path` with `fill`, fsyncs it and renames it over `path`.
/// Creates `path`'s directory and returns it with a temporary name beside `path` (same
/// directory, so the final rename is atomic).
fn beside(path: &Path, tag: &str) -> Result<(PathBuf, PathBuf), AtomicError> {
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    fs::create_dir_all(&dir).map_err(ctx("create directory", &dir))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let prefix = format!(".{name}.{tag}.");
    sweep_dead(&dir, &prefix);
    let tmp = dir.join(format!("{prefix}{}", std::process::id()));
    Ok((dir, tmp))
}

/// Removes what a killed emrboot left in `dir`: files or directories named `<prefix><pid>`
/// whose pid is no longer running (temporary files beside a target, build work dirs). A live
/// pid's entry may be another emrboot's work in progress and is kept.
pub fn sweep_dead(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if gone {
            let p = entry.path();
            let _ = if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}

fn replace(
    path: &Path,
    mode: u32,
    what: &'static str,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), AtomicError> {
    let (dir, tmp) = beside(path, "tmp")?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(ctx("create", &tmp))?;
        // The mode given to open() is filtered by the umask; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(ctx("chmod", &tmp))?;
        fill(&mut f).map_err(ctx(what, &tmp))?;
        f.sync_all().map_err(ctx("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(ctx("rename onto", path))?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Puts `src`'s bytes at `dst` atomically: a hard link when both are on one file system (no
/// copy, nothing to fsync but the directory), else a streamed copy. `dst` gets `mode` only when
/// copied; a link shares `src`'s inode, mode included.
pub fn link_or_copy(src: &Path, dst: &Path, mode: u32) -> Result<(), AtomicError> {
    let (dir, tmp) = beside(dst, "link")?;
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(src, &tmp).is_ok() {
        let renamed = fs::rename(&tmp, dst);
        // rename() of two links to one inode does nothing and leaves the temporary link.
        let _ = fs::remove_file(&tmp);
        renamed.map_err(ctx("rename onto", dst))?;
        return sync_dir(&dir);
    }
    copy(src, dst, mode)
}

/// True when both files exist and hold the same bytes: the same inode, or compared in chunks,
/// sizes first.
pub fn same_contents(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let (Ok(ma), Ok(mb)) = (fs::metadata(a), fs::metadata(b)) else {
        return false;
    };
    if (ma.dev(), ma.ino()) == (mb.dev(), mb.ino()) {
        return true;
    }
    if ma.len() != mb.len() {
        return false;
    }
    let (Ok(mut fa), Ok(mut fb)) = (File::open(a), File::open(b)) else {
        return false;
    };
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = match fa.read(&mut ba) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 {
            return true;
        }
        if fb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), AtomicError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ctx("fsync directory", dir))
}

/// Points `link` at `target` atomically: a new symlink beside it, renamed over it.
pub fn symlink(target: &Path, link: &Path) -> Result<(), AtomicError> {
    let (dir, tmp) = beside(link, "tmp")?;
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(ctx("symlink", &tmp))?;
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(ctx("rename onto", link)(e));
    }
    sync_dir(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_whole_and_sets_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/state.json");
        write(&p, b"one", 0o600).unwrap();
        write(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // no temporary file is left behind
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_dead_writers_temporary_file_is_swept_and_a_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("fstab");
        // pid 2^22 + 1 is above the kernel's pid_max limit: never a live process
        let dead = d.path().join(".fstab.tmp.4194305");
        let live = d.path().join(format!(
            ".fstab.tmp.{}",
            std::os::unix::process::parent_id()
        ));
        let other = d.path().join(".fstab.tmp.notapid");
        for f in [&dead, &live, &other] {
            std::fs::write(f, "partial").unwrap();
        }
        write(&target, b"whole\n", 0o644).unwrap();
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(other.exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"whole\n");
    }

    #[test]
    fn copy_then_compare() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("bin/b"));
        fs::write(&a, vec![7u8; 200_000]).unwrap();
        assert!(!same_contents(&a, &b));
        copy(&a, &b, 0o755).unwrap();
        assert!(same_contents(&a, &b));
        assert_eq!(
            fs::metadata(&b).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let mut changed = vec![7u8; 200_000];
        changed[150_000] = 8;
        fs::write(&a, changed).unwrap();
        assert!(!same_contents(&a, &b));
    }

    #[test]
    fn link_or_copy_gives_the_same_bytes() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("bin/b"));
        fs::write(&a, b"binary").unwrap();
        link_or_copy(&a, &b, 0o755).unwrap();
        assert!(same_contents(&a, &b));
        assert_eq!(fs::read(&b).unwrap(), b"binary");
        link_or_copy(&a, &b, 0o755).unwrap();
        assert_eq!(fs::read_dir(d.path().join("bin")).unwrap().count(), 1);
    }

    #[test]
    fn symlink_replaces_an_existing_file() {
        let d = tempfile::tempdir().unwrap();
        let l = d.path().join("localtime");
        fs::write(&l, b"old").unwrap();
        symlink(Path::new("/usr/share/zoneinfo/UTC"), &l).unwrap();
        assert_eq!(
            fs::read_link(&l).unwrap(),
            PathBuf::from("/usr/share/zoneinfo/UTC")
        );
    }

    #[test]
    fn errors_name_the_path() {
        let d = tempfile::tempdir().unwrap();
        let blocker = d.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let e = write(&blocker.join("x"), b"y", 0o600).unwrap_err();
        assert!(
            e.to_string().contains(&*blocker.display().to_string()),
            "{e}"
        );
    }
}
