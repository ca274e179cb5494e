//! OS packages through the node's own package manager: dnf, else yum, else apt-get. Names go
//! as argument-vector entries (and were checked by the config), never through a shell.
//!
//! A transaction is judged by the package database afterwards, not by its exit code alone (yum 3
//! skips names no repo has and exits 0), and it starts only once no other process holds the
//! package database (rpm does not wait for its lock without a terminal), within one bound.

pub mod lock;
pub mod outcome;
mod owners;

use crate::command::{Cmd, CommandError, Output};
use lock::{Holder, RpmLocks};
use outcome::Incomplete;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long one install transaction may take once it has its locks.
const INSTALL_BOUND: Duration = Duration::from_secs(1800);
/// How long emrboot waits for another process's package transaction (cloud-init, EMR's own
/// agents, unattended-upgrades may hold the lock at boot): rpm's and dnf's or yum's locks, or
/// dpkg's. EMRBOOT_PKG_LOCK_WAIT_SECS changes it.
const LOCK_WAIT_SECS: u64 = 600;
pub const LOCK_WAIT_ENV: &str = "EMRBOOT_PKG_LOCK_WAIT_SECS";
const QUERY_BOUND: Duration = Duration::from_secs(120);
const LOCK_POLL: Duration = Duration::from_millis(500);
/// How often a long wait for a lock says again that it is still waiting.
const LOCK_REMIND: Duration = Duration::from_secs(30);

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
    #[error("{0}")]
    Incomplete(Incomplete),
    #[error("gave up after {secs} s waiting for the package lock {holder}; nothing was installed")]
    LockTimeout { secs: u64, holder: Holder },
    #[error("stopped while waiting for the package lock {holder}: emrboot received {signal}; nothing was installed")]
    Interrupted {
        holder: Holder,
        signal: &'static str,
    },
}

/// The node's package manager as the install phase uses it: [`Manager`] on a node, a fake in
/// the phases' unit tests. Reached through `Doors::packages`, detected once per run.
#[async_trait::async_trait]
pub trait Packages: Send + Sync {
    /// `dnf`, `yum` or `apt-get`.
    fn name(&self) -> &'static str;
    /// The packages of `wanted` that are not installed yet, whatever form their names take.
    async fn missing(&self, wanted: &[String]) -> Result<Vec<String>, PkgError>;
    /// Every command line `install` runs for `pkgs`, in order: what `plan` shows.
    fn commands(&self, pkgs: &[String]) -> Vec<Vec<String>>;
    /// Installs `pkgs` in one transaction, then checks each one is installed.
    async fn install(&self, pkgs: &[String]) -> Result<(), PkgError>;
    /// Which of `paths` a package owns, with the owning package(s).
    async fn owners(&self, paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, PkgError>;
}

#[async_trait::async_trait]
impl Packages for Manager {
    fn name(&self) -> &'static str {
        Manager::name(*self)
    }
    async fn missing(&self, wanted: &[String]) -> Result<Vec<String>, PkgError> {
        Manager::missing(*self, wanted).await
    }
    fn commands(&self, pkgs: &[String]) -> Vec<Vec<String>> {
        Manager::commands(*self, pkgs)
    }
    async fn install(&self, pkgs: &[String]) -> Result<(), PkgError> {
        Manager::install(*self, pkgs).await
    }
    async fn owners(&self, paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, PkgError> {
        Manager::owners(*self, paths).await
    }
}

fn on_path(exe: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(exe).is_file()))
}

/// The lock bound: EMRBOOT_PKG_LOCK_WAIT_SECS when it is a positive number, else 600 s.
pub fn lock_wait_secs() -> u64 {
    std::env::var(LOCK_WAIT_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n: &u64| n > 0)
        .unwrap_or(LOCK_WAIT_SECS)
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

    /// Whether `pkg` is installed. rpm: `rpm -q` first, which takes `name`, `name-version`,
    /// `name-version-release`, `name.arch` and their combinations; then `rpm -q --whatprovides`,
    /// for a capability (`python3dist(requests)`) or a file path (`/usr/bin/jq`). apt: dpkg-query.
    pub async fn is_installed(self, pkg: &str) -> Result<bool, PkgError> {
        let name = self.query_name(pkg);
        if self == Manager::Apt {
            let out = Cmd::new(
                ["dpkg-query", "-W", "-f", "${Status}", name.as_str()],
                QUERY_BOUND,
            )
            .output()
            .await?;
            return Ok(out.success && out.stdout.trim().ends_with("install ok installed"));
        }
        for query in [&["-q"][..], &["-q", "--whatprovides"][..]] {
            let argv = std::iter::once("rpm")
                .chain(query.iter().copied())
                .chain([name.as_str()]);
            if Cmd::new(argv, QUERY_BOUND).output().await?.success {
                return Ok(true);
            }
        }
        Ok(false)
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

    /// Every command line `install` runs, in order, for `plan` and the log. dnf and yum exit at
    /// once on their own lock (`exit_on_lock`) because emrboot does the bounded waiting; yum is
    /// told not to skip names no repo has.
    pub fn commands(self, pkgs: &[String]) -> Vec<Vec<String>> {
        let apt_lock = format!("DPkg::Lock::Timeout={}", lock_wait_secs());
        let mut install: Vec<String> = match self {
            Manager::Dnf => vec![
                "dnf".into(),
                "install".into(),
                "-y".into(),
                "--setopt=exit_on_lock=True".into(),
            ],
            Manager::Yum => vec![
                "yum".into(),
                "install".into(),
                "-y".into(),
                "--setopt=exit_on_lock=True".into(),
                "--setopt=skip_missing_names_on_install=False".into(),
            ],
            Manager::Apt => vec![
                "apt-get".into(),
                "install".into(),
                "-y".into(),
                "-q".into(),
                "--no-install-recommends".into(),
                "-o".into(),
                apt_lock.clone(),
            ],
        };
        install.extend(pkgs.iter().cloned());
        match self {
            Manager::Apt => vec![
                vec![
                    "apt-get".into(),
                    "update".into(),
                    "-q".into(),
                    "-o".into(),
                    apt_lock,
                ],
                install,
            ],
            _ => vec![install],
        }
    }

    /// Installs `pkgs` (all missing) in one transaction, then checks each is installed.
    pub async fn install(self, pkgs: &[String]) -> Result<(), PkgError> {
        let mut commands = self.commands(pkgs);
        let Some(install) = commands.pop() else {
            return Ok(());
        };
        for argv in commands {
            frontend(Cmd::new(argv, INSTALL_BOUND)).run().await?;
        }
        let out = match self {
            Manager::Apt => frontend(Cmd::new(&install, INSTALL_BOUND)).output().await?,
            _ => self.transaction(&install).await?,
        };
        let not_installed = self.missing(pkgs).await?;
        let cmd = install.join(" ");
        let status = out.status();
        if not_installed.is_empty() {
            return if out.success {
                Ok(())
            } else {
                Err(CommandError::Failed { cmd, status }.into())
            };
        }
        Err(PkgError::Incomplete(Incomplete {
            cmd,
            status,
            unavailable: outcome::unavailable(&out.text(), pkgs),
            installed: pkgs
                .iter()
                .filter(|p| !not_installed.contains(p))
                .cloned()
                .collect(),
            not_installed,
        }))
    }

    /// An rpm transaction, started once no one holds the package database. Another process can
    /// take the lock between our look and the transaction's start; then the manager fails at once
    /// (rpm without a terminal, dnf/yum with exit_on_lock) and it is tried again, within the bound.
    async fn transaction(self, argv: &[String]) -> Result<Output, PkgError> {
        let secs = lock_wait_secs();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let locks = RpmLocks::new(&rpm_dbpath().await);
        loop {
            wait_for_locks(&locks, deadline, secs).await?;
            let out = Cmd::new(argv, INSTALL_BOUND).output().await?;
            if out.success || !outcome::lock_failure(out.code, &out.text()) {
                return Ok(out);
            }
            if Instant::now() >= deadline {
                let holder = locks.held().unwrap_or_else(|| Holder {
                    lock: locks.record.first().cloned().unwrap_or_default(),
                    pid: None,
                    command: None,
                });
                return Err(PkgError::LockTimeout { secs, holder });
            }
            tracing::info!(
                "{} found the package database locked when it started; trying again",
                self.name()
            );
            tokio::time::sleep(LOCK_POLL).await;
        }
    }
}

fn frontend(cmd: Cmd) -> Cmd {
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
}

/// rpm's database directory, as rpm itself is configured (`%{_dbpath}`); /var/lib/rpm (AL2,
/// AL2023) when rpm cannot say.
async fn rpm_dbpath() -> PathBuf {
    let fallback = PathBuf::from("/var/lib/rpm");
    match Cmd::new(["rpm", "--eval", "%{_dbpath}"], QUERY_BOUND)
        .output()
        .await
    {
        Ok(out) if out.success && out.stdout.trim().starts_with('/') => {
            PathBuf::from(out.stdout.trim())
        }
        _ => fallback,
    }
}

/// Waits until no lock in `locks` is held, saying for whom; fails at `deadline`, or when emrboot
/// is asked to stop (waiting is safe to abandon; a running transaction is not).
async fn wait_for_locks(locks: &RpmLocks, deadline: Instant, secs: u64) -> Result<(), PkgError> {
    let mut told: Option<(Holder, Instant)> = None;
    loop {
        let Some(holder) = locks.held() else {
            if let Some((h, since)) = told {
                tracing::info!(
                    "the package lock {} is free after {:.0} s",
                    h.lock.display(),
                    since.elapsed().as_secs_f64()
                );
            }
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(PkgError::LockTimeout { secs, holder });
        }
        let remind = match &told {
            Some((h, since)) => h != &holder || since.elapsed() >= LOCK_REMIND,
            None => true,
        };
        if remind {
            tracing::info!("waiting for the package lock {holder} (at most {secs} s in all)");
            told = Some((holder.clone(), Instant::now()));
        }
        tokio::select! {
            _ = tokio::time::sleep(LOCK_POLL) => {}
            signal = crate::stop::wait() => {
                return Err(PkgError::Interrupted { holder, signal: signal.as_str() });
            }
        }
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
        let cmds = Manager::Apt.commands(&["hello".into()]);
        assert_eq!(cmds.len(), 2, "update, then install");
        assert_eq!(cmds[1].first().map(String::as_str), Some("apt-get"));
        assert_eq!(cmds[1].last().map(String::as_str), Some("hello"));
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
