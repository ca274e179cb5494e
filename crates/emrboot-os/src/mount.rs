//! Mounts: what /proc/self/mountinfo says is mounted (an exit code alone proves nothing), the
//! `mount` command, and waiting for a TCP port before trying.

use crate::command::{Cmd, CommandError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text (see proc(5)): `id parent maj:min root mountpoint opts [optional…] - fstype source superopts`.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next()?;
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                fstype: fstype.to_string(),
                source: unescape(source),
            })
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error("{host}:{port} did not accept a TCP connection within {secs}s ({last})")]
pub struct TcpWaitError {
    pub host: String,
    pub port: u16,
    pub secs: u64,
    pub last: String,
}

/// The node's mounts as efs-mount uses them: [`Kernel`] on a node, a fake in the phases' unit
/// tests. Reached through `Doors::mounts`.
#[async_trait::async_trait]
pub trait Mounts: Send + Sync {
    /// The mount visible on `mount_point`, as the kernel reports it.
    fn mounted_at(&self, mount_point: &Path) -> std::io::Result<Option<MountEntry>>;
    /// `mount -t FSTYPE -o OPTIONS SOURCE DIR`, bounded.
    async fn mount(
        &self,
        fstype: &str,
        options: &str,
        source: &str,
        dir: &Path,
        bound: Duration,
    ) -> Result<(), CommandError>;
    /// Waits until `host:port` accepts a TCP connection, up to `bound`.
    async fn wait_tcp(&self, host: &str, port: u16, bound: Duration) -> Result<(), TcpWaitError>;
}

/// This process's mount namespace: /proc/self/mountinfo, the `mount` command, real sockets.
pub struct Kernel;

#[async_trait::async_trait]
impl Mounts for Kernel {
    /// The last mount on `mount_point` (the one visible there), from /proc/self/mountinfo.
    fn mounted_at(&self, mount_point: &Path) -> std::io::Result<Option<MountEntry>> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")?;
        Ok(parse_mountinfo(&text)
            .into_iter()
            .rfind(|m| m.mount_point == mount_point))
    }

    async fn mount(
        &self,
        fstype: &str,
        options: &str,
        source: &str,
        dir: &Path,
        bound: Duration,
    ) -> Result<(), CommandError> {
        let argv: [std::ffi::OsString; 7] = [
            "mount".into(),
            "-t".into(),
            fstype.into(),
            "-o".into(),
            options.into(),
            source.into(),
            dir.as_os_str().to_owned(),
        ];
        Cmd::new(argv, bound).run().await.map(|_| ())
    }

    /// Tries every second up to `bound`, each connect at most 5 s.
    async fn wait_tcp(&self, host: &str, port: u16, bound: Duration) -> Result<(), TcpWaitError> {
        let start = Instant::now();
        loop {
            let left = bound.saturating_sub(start.elapsed());
            let attempt = tokio::time::timeout(
                left.min(Duration::from_secs(5)),
                tokio::net::TcpStream::connect((host, port)),
            )
            .await;
            let last = match attempt {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "connect timed out".to_string(),
            };
            if start.elapsed() + Duration::from_secs(1) > bound {
                return Err(TcpWaitError {
                    host: host.to_string(),
                    port,
                    secs: bound.as_secs(),
                    last,
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let text = "36 35 98:0 / /mnt/my\\040efs rw,noatime master:1 - nfs4 fs-1.efs.x.amazonaws.com:/ rw,vers=4.1\n\
                    22 1 0:21 / /proc rw - proc proc rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/my efs"));
        assert_eq!(m[0].fstype, "nfs4");
        assert_eq!(m[0].source, "fs-1.efs.x.amazonaws.com:/");
    }

    #[tokio::test]
    async fn tcp_wait_sees_a_listener_and_gives_up_on_nothing() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        Kernel
            .wait_tcp("127.0.0.1", port, Duration::from_secs(5))
            .await
            .unwrap();
        drop(l);
        let e = Kernel
            .wait_tcp("127.0.0.1", port, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }
}
