//! Which files the package manager owns: a system-wide unpack must not silently overwrite them.

use super::{Manager, PkgError, QUERY_BOUND};
use crate::command::Cmd;
use std::ffi::OsStr;
use std::path::PathBuf;

impl Manager {
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
}
