//! OS packages: the missing ones, in one transaction of the node's package manager. The actions
//! are the exact command lines, so `plan` shows what a run will execute.

use super::log_action;
use emrboot_os::pkg::Manager;
use emrboot_runner::PhaseError;

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

pub(super) async fn plan(pkgs: &[String]) -> Result<Vec<String>, PhaseError> {
    Ok(missing(pkgs)
        .await?
        .map(|(mgr, m)| describe(mgr, &m))
        .unwrap_or_default())
}

pub(super) async fn apply(pkgs: &[String]) -> Result<Vec<String>, PhaseError> {
    let Some((mgr, missing)) = missing(pkgs).await? else {
        if !pkgs.is_empty() {
            tracing::info!(
                phase = "install",
                outcome = "unchanged",
                "packages already installed: {}",
                pkgs.join(", ")
            );
        }
        return Ok(Vec::new());
    };
    mgr.install(&missing).await?;
    let actions = describe(mgr, &missing);
    actions.iter().for_each(|a| log_action(a));
    Ok(actions)
}
