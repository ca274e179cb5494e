//! Who holds the package database right now: rpm's transaction lock (a POSIX record lock on
//! `%{_dbpath}/.rpm.lock`), dnf's and yum's own locks (a pid file whose process is alive). rpm
//! waits for its lock only when stdin is a terminal, and emrboot gives package managers
//! /dev/null, so emrboot waits itself, bounded, and says for whom.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// A lock that is held, and by which process where the system can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub lock: PathBuf,
    pub pid: Option<i32>,
    pub command: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.lock.display())?;
        match (self.pid, &self.command) {
            (Some(pid), Some(cmd)) => write!(f, " (held by pid {pid}, {cmd})"),
            (Some(pid), None) => write!(f, " (held by pid {pid})"),
            _ => write!(f, " (held)"),
        }
    }
}

/// The locks an rpm-based manager takes, in the order it takes them.
#[derive(Debug, Clone)]
pub struct RpmLocks {
    /// POSIX record locks: rpm's transaction lock.
    pub record: Vec<PathBuf>,
    /// Pid files: dnf's rpmdb and metadata locks, yum's lock.
    pub pid_files: Vec<PathBuf>,
}

impl RpmLocks {
    /// rpm's lock under `dbpath` (what `rpm --eval %{_dbpath}` says) and the pid files of
    /// dnf 4 (/var/lib/dnf, /var/cache/dnf) and yum 3 (/var/run/yum.pid).
    pub fn new(dbpath: &Path) -> Self {
        RpmLocks {
            record: vec![dbpath.join(".rpm.lock")],
            pid_files: [
                "/var/lib/dnf/rpmdb_lock.pid",
                "/var/cache/dnf/metadata_lock.pid",
                "/var/run/yum.pid",
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        }
    }

    /// The first lock that is held now, or None when all are free.
    pub fn held(&self) -> Option<Holder> {
        self.record
            .iter()
            .find_map(|p| record_lock_holder(p))
            .or_else(|| self.pid_files.iter().find_map(|p| pid_file_holder(p)))
    }
}

/// Who holds a write-conflicting POSIX record lock on `path` (F_GETLK), if anyone. A lock file
/// that does not exist or cannot be opened is not held by anyone we could wait for.
pub fn record_lock_holder(path: &Path) -> Option<Holder> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: flock is plain old data; all-zero is a valid value that the fields below fill.
    let mut probe: nix::libc::flock = unsafe { std::mem::zeroed() };
    probe.l_type = nix::libc::F_WRLCK as _;
    probe.l_whence = nix::libc::SEEK_SET as _;
    nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_GETLK(&mut probe)).ok()?;
    if probe.l_type == nix::libc::F_UNLCK as _ {
        return None;
    }
    // An open-file-description lock reports pid -1: held, by a process the kernel does not name.
    let pid = (probe.l_pid > 0).then_some(probe.l_pid);
    Some(Holder {
        lock: path.to_path_buf(),
        pid,
        command: pid.and_then(command_of),
    })
}

/// dnf and yum write their pid into the lock file and treat it as held while that process
/// lives (a stale file from a dead process is free).
pub fn pid_file_holder(path: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(path).ok()?;
    let pid: i32 = text.trim().parse().ok().filter(|&p| p > 0)?;
    if pid == std::process::id() as i32 || !Path::new(&format!("/proc/{pid}")).exists() {
        return None;
    }
    Some(Holder {
        lock: path.to_path_buf(),
        pid: Some(pid),
        command: command_of(pid),
    })
}

/// The process's command line, space-joined and shortened, for the log.
fn command_of(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let joined = text.join(" ");
    let short: String = joined.chars().take(120).collect();
    (!short.is_empty()).then_some(short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_free_or_absent_record_lock_has_no_holder() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(record_lock_holder(&d.path().join("absent")), None);
        let p = d.path().join(".rpm.lock");
        std::fs::write(&p, b"").unwrap();
        assert_eq!(record_lock_holder(&p), None);
    }

    #[test]
    fn a_record_lock_held_by_another_process_names_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".rpm.lock");
        std::fs::write(&p, b"").unwrap();
        // python3's lockf is fcntl(F_SETLK), the lock rpm takes.
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl,sys; f=open(sys.argv[1],'w'); fcntl.lockf(f, fcntl.LOCK_EX); \
                 print('held', flush=True); sys.stdin.read()",
            ])
            .arg(&p)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let held = record_lock_holder(&p);
        child.stdin.take().unwrap().write_all(b"").unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let held = held.expect("the lock is held");
        assert_eq!(held.pid, Some(child.id() as i32));
        assert!(held.to_string().contains("python3"), "{held}");
    }

    #[test]
    fn a_pid_file_counts_only_while_its_process_lives() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("rpmdb_lock.pid");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&p, child.id().to_string()).unwrap();
        let held = pid_file_holder(&p);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(held.and_then(|h| h.pid), Some(child.id() as i32));
        assert_eq!(pid_file_holder(&p), None, "a dead holder's file is free");
        std::fs::write(&p, std::process::id().to_string()).unwrap();
        assert_eq!(pid_file_holder(&p), None, "our own pid is not a holder");
    }
}
