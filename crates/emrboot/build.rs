//! Puts the git commit and the target triple into `emrboot --version`, so a binary found on a
//! node says exactly what it is. EMRBOOT_GIT_COMMIT (set by packaging/build.sh) wins over
//! asking git, which a source tarball does not have.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env_path("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn env_path(key: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(key).unwrap_or_default())
}

fn main() {
    println!("cargo:rerun-if-env-changed=EMRBOOT_GIT_COMMIT");
    let commit = match std::env::var("EMRBOOT_GIT_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        _ => {
            if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                let dir = PathBuf::from(dir);
                for f in ["HEAD", "packed-refs"] {
                    println!("cargo:rerun-if-changed={}", dir.join(f).display());
                }
                if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    println!("cargo:rerun-if-changed={}", dir.join(r).display());
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!(
        "cargo:rustc-env=EMRBOOT_LONG_VERSION={} (commit {commit}, {target})",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
}
