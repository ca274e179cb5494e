//! Phase `shutdown-hook` (with ip-takeover, primary master only): registers the EMR shutdown
//! action that runs `emrboot release-ip`, so the fixed IP goes back to the reserved ENI when
//! the cluster ends.
//!
//! The action execs the copy of emrboot kept in the state dir (see per_boot.rs).

use crate::{ip_takeover, per_boot};
use async_trait::async_trait;
use emrboot_config::PhaseName;
use emrboot_os::atomic;
use emrboot_runner::{Actions, Ctx, Phase, PhaseError, Precheck};
use std::path::Path;

pub const ACTION_FILE: &str = "emrboot-release-ip.sh";

pub struct ShutdownHook;

/// `'text'` for sh, with embedded single quotes closed, escaped and reopened.
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// The action script: nothing but an exec of emrboot with the state dir it must read.
pub fn action_script(exe: &Path, state_dir: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         # Written by emrboot (shutdown-hook phase). EMR runs this when the cluster ends:\n\
         # it gives the fixed IP back to the reserved ENI. Do not edit; re-run emrboot instead.\n\
         exec {} --state-dir {} release-ip\n",
        sh_quote(exe),
        sh_quote(state_dir)
    )
}

/// Writes the action unless it is already there, exact and executable. ip-takeover calls it
/// too, before the IP moves.
pub(crate) fn ensure_action(ctx: &Ctx, dry_run: bool) -> anyhow::Result<Option<String>> {
    let path = ctx.shutdown_actions_dir.join(ACTION_FILE);
    let script = action_script(&per_boot::kept_binary(ctx), &ctx.state.path);
    let current = std::fs::read_to_string(&path).ok();
    if current.as_deref() == Some(script.as_str()) && is_executable(&path) {
        return Ok(None);
    }
    if !dry_run {
        atomic::write(&path, script.as_bytes(), 0o755)?;
    }
    Ok(Some(format!(
        "write {} (0755): exec emrboot release-ip",
        path.display()
    )))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o755)
}

fn converge(ctx: &Ctx, dry_run: bool) -> anyhow::Result<Vec<String>> {
    let mut actions = Vec::new();
    actions.extend(per_boot::ensure_kept_binary(ctx, dry_run)?);
    actions.extend(ensure_action(ctx, dry_run)?);
    Ok(actions)
}

#[async_trait]
impl Phase for ShutdownHook {
    fn name(&self) -> PhaseName {
        PhaseName::ShutdownHook
    }

    async fn check(&self, ctx: &Ctx) -> Result<Precheck, PhaseError> {
        ip_takeover::config(ctx)?;
        Ok(match ip_takeover::non_primary_reason(ctx) {
            Some(why) => Precheck::Skip(why),
            None => Precheck::Run,
        })
    }

    async fn plan(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError> {
        Ok(converge(ctx, true)?)
    }

    async fn apply(&self, ctx: &Ctx) -> Result<Vec<String>, PhaseError> {
        let mut done = Actions::new(PhaseName::ShutdownHook, false);
        done.did_all(converge(ctx, false)?);
        if done.is_empty() {
            tracing::info!("shutdown action in place");
        }
        Ok(done.into_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_only_execs_emrboot_with_quoted_paths() {
        let s = action_script(
            Path::new("/var/lib/emr boot/bin/emrboot"),
            Path::new("/x/it's"),
        );
        let lines: Vec<_> = s.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            vec![r"exec '/var/lib/emr boot/bin/emrboot' --state-dir '/x/it'\''s' release-ip"]
        );
        assert!(s.starts_with("#!/bin/sh\n"));
    }
}
