//! The one /etc/fstab line emrboot manages per mount point: replaced in place, never
//! duplicated; every other byte of the file kept as it was.

use crate::atomic;
use std::path::Path;

/// The line for an NFS mount that must not block boot: `_netdev` waits for the network,
/// `nofail` lets the node boot when EFS is away.
pub fn nfs_line(source: &str, mount_point: &Path, options: &str) -> String {
    format!(
        "{source} {} nfs4 {options},_netdev,nofail 0 0",
        mount_point.display()
    )
}

fn mount_point_of(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.starts_with('#') {
        return None;
    }
    t.split_whitespace().nth(1)
}

/// The new file text, or `None` when `line` is already the file's line for `mount_point`.
/// The first line for that mount point is replaced; any later duplicates are dropped.
pub fn edit(text: &str, mount_point: &Path, line: &str) -> Option<String> {
    let mp = mount_point.display().to_string();
    let mut out = String::with_capacity(text.len() + line.len() + 1);
    let mut placed = false;
    let mut changed = false;
    for raw in text.split_inclusive('\n') {
        let body = raw.trim_end_matches(['\n', '\r']);
        if mount_point_of(body) == Some(mp.as_str()) {
            if placed {
                changed = true;
                continue;
            }
            placed = true;
            if body != line {
                changed = true;
                out.push_str(line);
                out.push_str(&raw[body.len()..]);
                continue;
            }
        }
        out.push_str(raw);
    }
    if !placed {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
        changed = true;
    }
    changed.then_some(out)
}

/// Applies `edit` to the file (a missing file is an empty one), atomically, keeping its mode.
/// Returns whether it changed anything.
pub fn ensure(path: &Path, mount_point: &Path, line: &str) -> Result<bool, atomic::AtomicError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |op, source| atomic::AtomicError {
        op,
        path: path.to_path_buf(),
        source,
    };
    let (text, mode) = match std::fs::read(path) {
        Ok(b) => {
            let mode = std::fs::metadata(path)
                .map_err(|e| io("stat", e))?
                .permissions()
                .mode()
                & 0o7777;
            (String::from_utf8_lossy(&b).into_owned(), mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o644),
        Err(e) => return Err(io("read", e)),
    };
    match edit(&text, mount_point, line) {
        Some(new) => atomic::write(path, new.as_bytes(), mode).map(|_| true),
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str =
        "fs-1.efs.r.amazonaws.com:/ /practice-efs nfs4 nfsvers=4.1,_netdev,nofail 0 0";

    #[test]
    fn a_new_line_is_appended_and_the_rest_kept() {
        let text = "# /etc/fstab\nUUID=abc  /   xfs   defaults  0 0\n";
        let new = edit(text, Path::new("/practice-efs"), LINE).unwrap();
        assert_eq!(new, format!("{text}{LINE}\n"));
        assert_eq!(edit(&new, Path::new("/practice-efs"), LINE), None);
    }

    #[test]
    fn an_existing_line_is_replaced_in_place_with_odd_spacing_kept_elsewhere() {
        let text = "UUID=abc\t/\txfs defaults 0 0\n  old:/   /practice-efs   nfs4  hard  0 0\n#/practice-efs comment\n/dev/x /data ext4 defaults 0 2";
        let new = edit(text, Path::new("/practice-efs"), LINE).unwrap();
        assert_eq!(
            new,
            format!("UUID=abc\t/\txfs defaults 0 0\n{LINE}\n#/practice-efs comment\n/dev/x /data ext4 defaults 0 2")
        );
    }

    #[test]
    fn duplicates_collapse_into_one() {
        let text = format!("{LINE}\nx:/ /practice-efs nfs4 hard 0 0\n");
        assert_eq!(
            edit(&text, Path::new("/practice-efs"), LINE).unwrap(),
            format!("{LINE}\n")
        );
    }

    #[test]
    fn ensure_keeps_the_mode_and_reports_change_once() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fstab");
        std::fs::write(&p, "# x\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
        assert!(ensure(&p, Path::new("/practice-efs"), LINE).unwrap());
        assert!(!ensure(&p, Path::new("/practice-efs"), LINE).unwrap());
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("# x\n{LINE}\n")
        );
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o444
        );
    }

    #[test]
    fn a_dir_that_cannot_be_written_is_an_error_naming_it() {
        let e = ensure(Path::new("/proc/emrboot-no/fstab"), Path::new("/x"), LINE).unwrap_err();
        assert!(e.to_string().contains("/proc/emrboot-no"), "{e}");
    }
}
