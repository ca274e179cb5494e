//! Who may act on the fixed IP: `run` (ip-takeover) and `release-ip` never at once, and a
//! release-ip that starts while a run is in progress wins.
//!
//! Two files in the state dir carry this:
//! - `ip.lock` (flock): held by whoever is deciding about or changing the IP, in EC2 or on the
//!   node: ip-takeover from its fresh holder check to its last NAT rule, release-ip from its EC2
//!   check to its last local cleanup. The kernel drops it with its process.
//! - `release-requested`: left by release-ip. A run in progress when it appeared stops at its
//!   next safe point and never takes the IP; a run that starts after it removes it (the later
//!   command wins: an operator re-running emrboot after a release wants the IP back).

use crate::state::{StateDir, StateError};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::Duration;

pub const IP_LOCK: &str = "ip.lock";
pub const RELEASE_FLAG: &str = "release-requested";

/// Held while acting on the fixed IP.
pub struct IpLock {
    _file: nix::fcntl::Flock<File>,
}

/// The release flag as a run saw it when its process started: which file, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagSeen(Option<(u64, u64, i64, i64)>);

impl StateDir {
    fn flag_id(&self) -> FlagSeen {
        FlagSeen(
            std::fs::metadata(self.path.join(RELEASE_FLAG))
                .ok()
                .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec())),
        )
    }

    /// Taken by a run as its process starts, before it may wait for anything.
    pub fn release_flag_seen(&self) -> FlagSeen {
        self.flag_id()
    }

    /// Whether release-ip has asked the run in progress to stop.
    pub fn release_requested(&self) -> bool {
        self.path.join(RELEASE_FLAG).exists()
    }

    /// For a run holding the run lock: `true` if a release-ip came after this run's process
    /// started (the run must stop); otherwise an older flag is removed and this run may take
    /// the IP again.
    pub fn release_since(&self, seen: &FlagSeen) -> Result<bool, StateError> {
        let now = self.flag_id();
        if now.0.is_none() {
            return Ok(false);
        }
        if &now != seen {
            return Ok(true);
        }
        let p = self.path.join(RELEASE_FLAG);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(StateError::Io { path: p, source: e })
            }
            _ => Ok(false),
        }
    }

    /// Leaves the release flag; `true` if this call made it (then this caller tells the run).
    /// An empty file: it needs no free blocks on a full disk.
    pub fn request_release(&self) -> Result<bool, StateError> {
        let p = self.path.join(RELEASE_FLAG);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
        {
            Ok(mut f) => {
                let _ = writeln!(f, "pid {}", std::process::id());
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(StateError::Io { path: p, source: e }),
        }
    }

    /// Takes `ip.lock`, waiting up to `wait`.
    pub fn ip_lock(&self, wait: Duration) -> Result<IpLock, StateError> {
        Ok(IpLock {
            _file: self.flock(IP_LOCK, wait, "another emrboot acting on the fixed IP")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_after_the_run_started_stops_it_and_an_older_one_is_cleared() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path());
        s.create().unwrap();
        // An old release, before this run started: cleared, the run goes on.
        assert!(s.request_release().unwrap());
        let seen = s.release_flag_seen();
        assert!(!s.release_since(&seen).unwrap());
        assert!(!s.release_requested());
        // A release while the run is in progress: the run must stop.
        let seen = s.release_flag_seen();
        assert!(s.request_release().unwrap());
        assert!(
            !s.request_release().unwrap(),
            "only the first caller made it"
        );
        assert!(s.release_requested());
        assert!(s.release_since(&seen).unwrap());
        assert!(
            s.release_requested(),
            "the flag stays for the run's safe points"
        );
    }

    #[test]
    fn the_ip_lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path());
        let held = s.ip_lock(Duration::ZERO).unwrap();
        assert_eq!(s.lock_holder(IP_LOCK), Some(std::process::id()));
        assert!(s.ip_lock(Duration::from_millis(200)).is_err());
        drop(held);
        assert!(s.ip_lock(Duration::ZERO).is_ok());
    }
}
