//! OS packages: the missing ones, in one transaction of the node's package manager. The actions
//! are the exact command lines, so `plan` shows what a run will execute.

use emrboot_os::pkg::Manager;
use emrboot_runner::{Actions, PhaseError};

async fn missing(pkgs: &[String]) -> Result<Option<(Manager, Vec<String>)>, PhaseError> {
    if pkgs.is_empty() {
        return Ok(None);
    }
    let mgr = Manager::detect()?;
    let missing = mgr.missing(pkgs).await?;
    Ok((!missing.is_empty()).then_some((mgr, missing)))
}

fn describe(mgr: Manager, missing: &[String]) -> Vec<String> {
    mgr.commands(missing).iter().map(|c| c.join(" ")).collect()
}

pub(super) async fn converge(pkgs: &[String], a: &mut Actions) -> Result<(), PhaseError> {
    let Some((mgr, missing)) = missing(pkgs).await? else {
        if !pkgs.is_empty() {
            tracing::info!("packages already installed: {}", pkgs.join(", "));
        }
        return Ok(());
    };
    if !a.dry_run() {
        mgr.install(&missing).await?;
    }
    a.did_all(describe(mgr, &missing));
    Ok(())
}
