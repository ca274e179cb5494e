use crate::cli::Global;
use crate::exit::{CmdResult, INVALID};
use emrboot_aws::sdk::Budget;
use emrboot_config::PhaseName;
use emrboot_runner::run::PlannedPhase;
use emrboot_runner::{Ctx, PlanReport};

/// For this node: the role, then each phase in order with its actions or why it is skipped.
pub async fn plan(g: &Global, src: &str, only: Option<Vec<PhaseName>>, json: bool) -> CmdResult {
    let ctx = super::context(g, src, Budget::Bootstrap).await?.ctx;
    let report = emrboot_runner::plan(&ctx, emrboot_phases::phase, only.as_deref()).await;
    if json {
        println!("{:#}", as_json(&ctx, &report));
    } else {
        print_text(&ctx, &report);
    }
    Ok(if report.invalid { INVALID } else { 0 })
}

fn print_text(ctx: &Ctx, report: &PlanReport) {
    println!("role: {} ({})", ctx.node.role, ctx.node.role_source);
    println!("instance: {}", ctx.node.instance_id);
    for (i, e) in report.phases.iter().enumerate() {
        let (n, name) = (i + 1, e.phase);
        let opt = if e.required { "" } else { " (optional)" };
        match &e.planned {
            PlannedPhase::Skip(why) => println!("{n}. {name}: skip: {why}"),
            PlannedPhase::Actions(a) if a.is_empty() => {
                println!("{n}. {name}{opt}: nothing to do (converged)")
            }
            PlannedPhase::Actions(a) => {
                println!("{n}. {name}{opt}:");
                for action in a {
                    println!("     - {action}");
                }
            }
            PlannedPhase::Error(e) => println!("{n}. {name}{opt}: would fail: {e}"),
        }
    }
}

/// The schema is in the README ("plan --json"): every phase always has every key, so a reader
/// needs no per-result cases to find its actions.
fn as_json(ctx: &Ctx, report: &PlanReport) -> serde_json::Value {
    let phases: Vec<_> = report
        .phases
        .iter()
        .map(|e| {
            let (result, actions, reason, error) = match &e.planned {
                PlannedPhase::Skip(why) => ("skip", &[][..], Some(why), None),
                PlannedPhase::Actions(a) if a.is_empty() => ("converged", &[][..], None, None),
                PlannedPhase::Actions(a) => ("act", &a[..], None, None),
                PlannedPhase::Error(err) => ("would-fail", &[][..], None, Some(err)),
            };
            serde_json::json!({
                "phase": e.phase,
                "required": e.required,
                "result": result,
                "actions": actions,
                "skip_reason": reason,
                "error": error,
            })
        })
        .collect();
    serde_json::json!({
        "role": ctx.node.role.to_string(),
        "role_source": ctx.node.role_source.to_string(),
        "instance_id": ctx.node.instance_id,
        "invalid": report.invalid,
        "phases": phases,
    })
}
