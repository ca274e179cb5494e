use crate::cli::Global;
use crate::exit::{CmdResult, INVALID};
use emrboot_aws::sdk::Budget;
use emrboot_config::PhaseName;
use emrboot_runner::run::PlannedPhase;

/// For this node: the role, then each phase in order with its actions or why it is skipped.
pub async fn plan(g: &Global, src: &str, only: Option<Vec<PhaseName>>) -> CmdResult {
    let (ctx, _, _) = super::context(g, src, Budget::Bootstrap).await?;
    let phases = emrboot_phases::all();
    let report = emrboot_runner::plan(&ctx, &phases, only.as_deref()).await;
    println!("role: {} ({})", ctx.node.role, ctx.node.role_source);
    println!("instance: {}", ctx.node.instance_id);
    for (i, (name, required, planned)) in report.phases.iter().enumerate() {
        let opt = if *required { "" } else { " (optional)" };
        match planned {
            PlannedPhase::Skip(why) => println!("{}. {name}: skip: {why}", i + 1),
            PlannedPhase::Actions(a) if a.is_empty() => {
                println!("{}. {name}{opt}: nothing to do (converged)", i + 1)
            }
            PlannedPhase::Actions(a) => {
                println!("{}. {name}{opt}:", i + 1);
                for action in a {
                    println!("     - {action}");
                }
            }
            PlannedPhase::Error(e) => println!("{}. {name}{opt}: would fail: {e}", i + 1),
        }
    }
    Ok(if report.invalid { INVALID } else { 0 })
}
