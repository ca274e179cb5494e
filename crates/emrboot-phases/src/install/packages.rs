//! OS packages: the missing ones, in one transaction of the node's package manager.

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

fn describe(mgr: Manager, missing: &[String]) -> String {
    format!("{} install: {}", mgr.name(), missing.join(", "))
}

pub(super) async fn plan(pkgs: &[String]) -> Result<Vec<String>, PhaseError> {
    Ok(missing(pkgs)
        .await?
        .map(|(mgr, m)| describe(mgr, &m))
        .into_iter()
        .collect())
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
    let action = describe(mgr, &missing);
    log_action(&action);
    Ok(vec![action])
}
