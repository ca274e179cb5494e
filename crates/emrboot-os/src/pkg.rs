//! OS packages through the node's own package manager: dnf, else yum, else apt-get. Names go
//! as argument-vector entries (and were checked by the config), never through a shell.

use crate::command::{Cmd, CommandError};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one install transaction may take, lock wait included.
const INSTALL_BOUND: Duration = Duration::from_secs(1800);
/// How long apt waits for dpkg's lock (cloud-init or unattended-upgrades may hold it at boot).
const APT_LOCK_WAIT_SECS: u32 = 600;
const QUERY_BOUND: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Dnf,
    Yum,
    Apt,
}

#[derive(Debug, thiserror::Error)]
pub enum PkgError {
    #[error("no package manager found (looked for dnf, yum, apt-get on PATH)")]
    None,
    #[error(transparent)]
    Command(#[from] CommandError),
}

fn on_path(exe: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(exe).is_file()))
}

impl Manager {
    pub fn detect() -> Result<Manager, PkgError> {
        [
            ("dnf", Manager::Dnf),
            ("yum", Manager::Yum),
            ("apt-get", Manager::Apt),
        ]
        .into_iter()
        .find(|(exe, _)| on_path(exe))
        .map(|(_, m)| m)
        .ok_or(PkgError::None)
    }

    pub fn name(self) -> &'static str {
        match self {
            Manager::Dnf => "dnf",
            Manager::Yum => "yum",
            Manager::Apt => "apt-get",
        }
    }

    /// The package name without a version pin (`jq=1.6-2` for apt, `jq-1.6` stays as rpm has it).
    fn query_name(self, pkg: &str) -> String {
        match self {
            Manager::Apt => pkg.split('=').next().unwrap_or(pkg).to_string(),
            _ => pkg.to_string(),
        }
    }

    /// Whether `pkg` is installed: `dpkg-query` or `rpm -q`.
    pub async fn is_installed(self, pkg: &str) -> Result<bool, PkgError> {
        let name = self.query_name(pkg);
        let out = match self {
            Manager::Apt => {
                Cmd::new(
                    ["dpkg-query", "-W", "-f", "${Status}", name.as_str()],
                    QUERY_BOUND,
                )
                .output()
                .await?
            }
            _ => {
                Cmd::new(["rpm", "-q", "--whatprovides", name.as_str()], QUERY_BOUND)
                    .output()
                    .await?
            }
        };
        Ok(match self {
            Manager::Apt => out.success && out.stdout.trim().ends_with("install ok installed"),
            _ => out.success,
        })
    }

    /// The packages of `wanted` that are not installed yet.
    pub async fn missing(self, wanted: &[String]) -> Result<Vec<String>, PkgError> {
        let mut missing = Vec::new();
        for p in wanted {
            if !self.is_installed(p).await? {
                missing.push(p.clone());
            }
        }
        Ok(missing)
    }

    /// Which of `paths` (files the package manager may have installed) a package owns, with
    /// the owning package(s): `dpkg-query -S` or `rpm -qf`, a batch of paths per call.
    pub async fn owners(self, paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, PkgError> {
        let mut found = Vec::new();
        for batch in paths.chunks(200) {
            let out = self.query_owners(batch).await?;
            match self {
                // `pkg1, pkg2: /path` per owned path (and `diversion by …` lines, not ownership);
                // exit 1 when some path is owned by nothing, which is the usual case.
                Manager::Apt => {
                    for line in out.stdout.lines() {
                        if line.starts_with("diversion ") {
                            continue;
                        }
                        if let Some((pkgs, p)) = line.rsplit_once(": ") {
                            if let Some(path) = batch.iter().find(|b| b.as_os_str() == p) {
                                found.push((path.clone(), pkgs.to_string()));
                            }
                        }
                    }
                }
                // One line per owner, `file … is not owned by any package` otherwise: a file
                // with two owners shifts the lines, so an owned batch is asked again per path.
                _ => {
                    let owned = out.stdout.lines().any(|l| {
                        !l.trim().is_empty() && !l.ends_with("is not owned by any package")
                    });
                    if !owned {
                        continue;
                    }
                    for path in batch {
                        let one = self.query_owners(std::slice::from_ref(path)).await?;
                        if one.success {
                            let pkgs: Vec<&str> = one
                                .stdout
                                .lines()
                                .map(str::trim)
                                .filter(|l| !l.is_empty())
                                .collect();
                            found.push((path.clone(), pkgs.join(", ")));
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    async fn query_owners(self, paths: &[PathBuf]) -> Result<crate::command::Output, PkgError> {
        let mut argv: Vec<&OsStr> = match self {
            Manager::Apt => vec![OsStr::new("dpkg-query"), OsStr::new("-S")],
            _ => vec![
                OsStr::new("rpm"),
                OsStr::new("-qf"),
                OsStr::new("--queryformat"),
                OsStr::new("%{NAME}\\n"),
            ],
        };
        argv.extend(paths.iter().map(|p| p.as_os_str()));
        Ok(Cmd::new(argv, QUERY_BOUND).output().await?)
    }

    /// The command line `install` runs, for `plan` and the log.
    pub fn install_argv(self, pkgs: &[String]) -> Vec<String> {
        let mut argv: Vec<String> = match self {
            Manager::Dnf | Manager::Yum => vec![self.name().into(), "install".into(), "-y".into()],
            Manager::Apt => vec![
                "apt-get".into(),
                "install".into(),
                "-y".into(),
                "-q".into(),
                "--no-install-recommends".into(),
                "-o".into(),
                format!("DPkg::Lock::Timeout={APT_LOCK_WAIT_SECS}"),
            ],
        };
        argv.extend(pkgs.iter().cloned());
        argv
    }

    /// Installs `pkgs` in one transaction; apt's lists are refreshed first.
    pub async fn install(self, pkgs: &[String]) -> Result<(), PkgError> {
        if self == Manager::Apt {
            let lock = format!("DPkg::Lock::Timeout={APT_LOCK_WAIT_SECS}");
            Cmd::new(
                ["apt-get", "update", "-q", "-o", lock.as_str()],
                INSTALL_BOUND,
            )
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
            .await?;
        }
        Cmd::new(self.install_argv(pkgs), INSTALL_BOUND)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
            .await?;
        Ok(())
    }
}

/// `ID` and `VERSION_ID` of /etc/os-release under `root` (the host's if the root has none).
pub fn os_release(root: &Path) -> (String, String) {
    let text = std::fs::read_to_string(root.join("etc/os-release"))
        .or_else(|_| std::fs::read_to_string("/etc/os-release"))
        .unwrap_or_default();
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    (get("ID"), get("VERSION_ID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_pins_are_queried_by_name() {
        assert_eq!(Manager::Apt.query_name("jq=1.6-2"), "jq");
        assert_eq!(Manager::Dnf.query_name("jq"), "jq");
        let argv = Manager::Apt.install_argv(&["hello".into()]);
        assert_eq!(argv.first().map(String::as_str), Some("apt-get"));
        assert_eq!(argv.last().map(String::as_str), Some("hello"));
    }

    #[test]
    fn os_release_reads_id_and_version() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/os-release"),
            "NAME=\"Amazon Linux\"\nVERSION_ID=\"2023\"\nID=\"amzn\"\n",
        )
        .unwrap();
        assert_eq!(os_release(d.path()), ("amzn".into(), "2023".into()));
    }
}
