//! The node's time zone: /etc/localtime as a symlink into /usr/share/zoneinfo.

use crate::{atomic, Root};
use std::path::{Path, PathBuf};

pub const ZONEINFO: &str = "/usr/share/zoneinfo";
pub const LOCALTIME: &str = "/etc/localtime";

#[derive(Debug, thiserror::Error)]
pub enum TimezoneError {
    #[error("time zone {zone:?} does not exist: no {path}")]
    UnknownZone { zone: String, path: PathBuf },
    #[error(transparent)]
    Write(#[from] atomic::AtomicError),
}

/// The target /etc/localtime must point at for `zone`, as the node sees it.
pub fn zone_path(zone: &str) -> PathBuf {
    Path::new(ZONEINFO).join(zone)
}

/// Checks that the zone exists on the node; the config only checked its spelling.
pub fn check(root: &Root, zone: &str) -> Result<PathBuf, TimezoneError> {
    let target = zone_path(zone);
    let on_host = root.join(&target);
    if on_host.is_file() {
        Ok(target)
    } else {
        Err(TimezoneError::UnknownZone {
            zone: zone.to_string(),
            path: on_host,
        })
    }
}

/// True when /etc/localtime already is the symlink we would make.
pub fn is_set(root: &Root, zone: &str) -> bool {
    std::fs::read_link(root.join(LOCALTIME)).is_ok_and(|t| t == zone_path(zone))
}

/// Makes /etc/localtime point at the zone. Returns false when it already did.
pub fn set(root: &Root, zone: &str) -> Result<bool, TimezoneError> {
    let target = check(root, zone)?;
    if is_set(root, zone) {
        return Ok(false);
    }
    atomic::symlink(&target, &root.join(LOCALTIME))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        let zi = d.path().join("usr/share/zoneinfo/Asia");
        std::fs::create_dir_all(&zi).unwrap();
        std::fs::write(zi.join("Seoul"), b"TZif").unwrap();
        let root = Root::new(d.path());
        (d, root)
    }

    #[test]
    fn sets_once_then_reports_unchanged() {
        let (_d, root) = scratch();
        assert!(set(&root, "Asia/Seoul").unwrap());
        assert!(is_set(&root, "Asia/Seoul"));
        assert!(!set(&root, "Asia/Seoul").unwrap());
    }

    #[test]
    fn an_unknown_zone_changes_nothing() {
        let (_d, root) = scratch();
        let e = set(&root, "Asia/Atlantis").unwrap_err();
        assert!(e.to_string().contains("Asia/Atlantis"));
        assert!(std::fs::symlink_metadata(root.join(LOCALTIME)).is_err());
    }
}
