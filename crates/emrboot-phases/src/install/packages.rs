//! OS packages: the missing ones, in one transaction of the node's package manager
//! (`ctx.doors.packages()`). The actions are the exact command lines, so `plan` shows what a
//! run will execute.

use emrboot_runner::{Actions, Ctx, PhaseError};

pub(super) async fn converge(
    ctx: &Ctx,
    pkgs: &[String],
    a: &mut Actions,
) -> Result<(), PhaseError> {
    if pkgs.is_empty() {
        return Ok(());
    }
    let mgr = ctx.doors.packages().await?;
    let missing = mgr.missing(pkgs).await?;
    if missing.is_empty() {
        tracing::info!("packages already installed: {}", pkgs.join(", "));
        return Ok(());
    }
    if !a.dry_run() {
        mgr.install(&missing).await?;
    }
    a.did_all(mgr.commands(&missing).iter().map(|c| c.join(" ")));
    Ok(())
}
