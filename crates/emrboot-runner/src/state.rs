//! The state directory: the status of the last run, the config copy
//! used by `release-ip` and the boot unit, the lock that keeps two runs apart, and the markers
//! (markers.rs).
//!
//! Everything is written atomically and 0600: the config copy can name buckets and addresses.

use crate::status::RunRecord;
use emrboot_config::{Config, PhaseName};
use emrboot_os::atomic;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const CONFIG_COPY: &str = "config.toml";
pub const STATUS: &str = "status.json";
pub const LOCK: &str = "lock";
/// Left by a run that could not write its status, so that `status` never shows an older run.
pub const STATUS_UNRECORDED: &str = "status-unrecorded";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state dir {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Write(#[from] atomic::AtomicError),
    #[error("{}: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{who} ({holder}) holds {} (waited {secs} s); try again when it ends", .path.display())]
    Busy {
        who: &'static str,
        path: PathBuf,
        holder: String,
        secs: u64,
    },
}

#[derive(Debug, Clone)]
pub struct StateDir {
    pub path: PathBuf,
}

/// Held for the whole run; the kernel releases it when the process dies, so a killed run never
/// leaves a stale lock.
pub struct RunLock {
    _file: nix::fcntl::Flock<File>,
}

/// sha256 of the phase's table, shortened: enough to tell configs apart in a file name.
pub fn config_hash(config: &Config, phase: PhaseName) -> String {
    let digest = Sha256::digest(config.section_json(phase).as_bytes());
    hex::encode(&digest[..8])
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateDir { path: path.into() }
    }

    fn io(&self, path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    }

    /// Creates the dir, or tightens an existing one, to 0700.
    pub fn create(&self) -> Result<(), StateError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(self.io(&self.path))?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700))
            .map_err(self.io(&self.path))
    }

    /// Takes the run lock, waiting up to `wait` for another run to finish.
    pub fn lock(&self, wait: Duration) -> Result<RunLock, StateError> {
        Ok(RunLock {
            _file: self.flock(LOCK, wait, "another emrboot run")?,
        })
    }

    /// An exclusive flock on `name` in the state dir, waited for up to `wait` (or until a stop
    /// is requested). The holder writes its pid into the file, so a waiter can say whom it waits
    /// for (advisory: the flock decides).
    pub(crate) fn flock(
        &self,
        name: &str,
        wait: Duration,
        who: &'static str,
    ) -> Result<nix::fcntl::Flock<File>, StateError> {
        use nix::fcntl::{Flock, FlockArg};
        self.create()?;
        let path = self.path.join(name);
        let start = Instant::now();
        let mut said = false;
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(self.io(&path))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    let _ = lock.set_len(0);
                    let _ = (&*lock).write_all(format!("{}\n", std::process::id()).as_bytes());
                    return Ok(lock);
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK))
                    if start.elapsed() < wait && emrboot_os::stop::requested().is_none() =>
                {
                    if !said {
                        said = true;
                        tracing::warn!(
                            "{who} ({}) holds {}; waiting up to {} s for it",
                            Self::holder(&path),
                            path.display(),
                            wait.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(StateError::Busy {
                        who,
                        holder: Self::holder(&path),
                        path,
                        secs: start.elapsed().as_secs(),
                    })
                }
                Err((_, e)) => return Err(self.io(&path)(io::Error::from(e))),
            }
        }
    }

    /// The pid written into a lock file by its holder, while the lock is held.
    pub fn lock_holder(&self, name: &str) -> Option<u32> {
        let path = self.path.join(name);
        self.held(name)
            .then(|| std::fs::read_to_string(&path).ok()?.trim().parse().ok())
            .flatten()
    }

    /// "pid N" from the lock file, as the holder wrote it.
    fn holder(path: &Path) -> String {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .map_or_else(|| "pid unknown".into(), |p| format!("pid {p}"))
    }

    /// True while a run holds the lock (a dead run's lock is gone with its process).
    pub fn is_locked(&self) -> bool {
        self.held(LOCK)
    }

    fn held(&self, name: &str) -> bool {
        use nix::fcntl::{Flock, FlockArg};
        let Ok(file) = File::open(self.path.join(name)) else {
            return false;
        };
        matches!(
            Flock::lock(file, FlockArg::LockSharedNonblock),
            Err((_, nix::errno::Errno::EWOULDBLOCK))
        )
    }

    pub fn config_copy(&self) -> PathBuf {
        self.path.join(CONFIG_COPY)
    }

    pub fn save_config(&self, text: &str) -> Result<(), StateError> {
        Ok(atomic::write(&self.config_copy(), text.as_bytes(), 0o600)?)
    }

    pub fn save_status(&self, run: &RunRecord) -> Result<(), StateError> {
        let p = self.path.join(STATUS);
        let body = serde_json::to_vec_pretty(run).map_err(|e| StateError::Corrupt {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        atomic::write(&p, &body, 0o600)?;
        // A later record replaces what an earlier failed write said.
        match std::fs::remove_file(self.path.join(STATUS_UNRECORDED)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(self.io(&self.path.join(STATUS_UNRECORDED))(e))
            }
            _ => Ok(()),
        }
    }

    /// After a failed `save_status`: the older record goes, and a marker says why, so that
    /// `status` reports the last run as unrecorded instead of showing the run before it. Both
    /// steps need no free blocks (an unlink, an empty file), which is what a full disk leaves.
    pub fn mark_unrecorded(&self, reason: &str) -> Result<(), StateError> {
        let status = self.path.join(STATUS);
        match std::fs::remove_file(&status) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(self.io(&status)(e)),
            _ => {}
        }
        let marker = self.path.join(STATUS_UNRECORDED);
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&marker)
            .map_err(self.io(&marker))?;
        // The reason is best effort: on a full disk the file stays empty.
        let _ = writeln!(
            f,
            "pid {} at {}: {reason}",
            std::process::id(),
            crate::status::now_rfc3339()
        );
        Ok(())
    }

    /// Why the last run has no status record, when it could not write one.
    pub fn unrecorded(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.path.join(STATUS_UNRECORDED)).ok()?;
        Some(match text.trim() {
            "" => "the last run could not write its status file (is the state disk full?)".into(),
            t => format!("the last run could not write its status file: {t}"),
        })
    }

    /// The last run's status, `Ok(None)` when there has been none.
    pub fn load_status(&self) -> Result<Option<RunRecord>, StateError> {
        let p = self.path.join(STATUS);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&p)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: p,
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_second_lock_waits_then_gives_up() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path());
        let held = s.lock(Duration::ZERO).unwrap();
        let e = s.lock(Duration::from_millis(300)).err().unwrap();
        assert!(matches!(e, StateError::Busy { .. }), "{e}");
        assert!(s.is_locked());
        drop(held);
        assert!(!s.is_locked());
        assert!(s.lock(Duration::ZERO).is_ok());
    }

    #[test]
    fn config_copy_is_private() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path().join("state"));
        s.create().unwrap();
        s.save_config("[install]\n").unwrap();
        let mode = std::fs::metadata(s.config_copy())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&s.path).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }
}
