use crate::cli::Global;
use crate::exit::{CmdResult, Exit};
use emrboot_runner::{Outcome, RunRecord, StateDir};

/// ok, failed, running, or interrupted (stopped by a signal, or died without finishing). A run holds
/// the state dir's lock while alive, so a reused PID after a reboot cannot fool this.
fn state(run: &RunRecord, dir: &StateDir) -> &'static str {
    if run.phases.iter().any(|p| p.outcome == Outcome::Interrupted) {
        return "interrupted";
    }
    match run.exit_code {
        Some(0) => "ok",
        Some(_) => "failed",
        None if dir.is_locked() => "running",
        None => "interrupted",
    }
}

/// Exit 0 when the last run succeeded; 1 when it failed, was interrupted, or there is none.
pub fn status(g: &Global, json: bool) -> CmdResult {
    let state_dir = StateDir::new(&g.state_dir);
    if let Some(why) = state_dir.unrecorded() {
        let running = state_dir.is_locked();
        let st = if running { "running" } else { "unknown" };
        if json {
            let v = serde_json::json!({ "state": st, "error": why, "phases": [] });
            println!("{v:#}");
        } else {
            println!("last run: {st}: {why}");
        }
        return Ok(1);
    }
    let Some(mut run) = state_dir.load_status().map_err(Exit::invalid)? else {
        println!("no run recorded in {}", g.state_dir.display());
        return Ok(1);
    };
    let st = state(&run, &state_dir);
    if st == "interrupted" {
        for p in run
            .phases
            .iter_mut()
            .filter(|p| p.outcome == Outcome::Running)
        {
            p.error
                .get_or_insert_with(|| "interrupted: the run ended during this phase".into());
        }
    }
    if json {
        let mut v = serde_json::to_value(&run).map_err(Exit::failed)?;
        v["state"] = st.into();
        println!("{v:#}");
    } else {
        println!(
            "last run: {st}  started {}  role {}  instance {}  config {}",
            run.started_at, run.role, run.instance_id, run.config
        );
        println!(
            "{:<14} {:<10} {:<21} {:>9}  detail",
            "PHASE", "OUTCOME", "START", "DURATION"
        );
        for p in &run.phases {
            let detail = p
                .error
                .clone()
                .or_else(|| p.reason.clone())
                .unwrap_or_else(|| p.actions.join("; "));
            let dur = p
                .duration_ms
                .map(|ms| format!("{:.2}s", ms as f64 / 1000.0))
                .unwrap_or_default();
            println!(
                "{:<14} {:<10} {:<21} {:>9}  {detail}",
                p.phase.as_str(),
                p.outcome.as_str(),
                p.started_at.as_deref().unwrap_or("-"),
                dur
            );
        }
        if let Some(e) = &run.report_error {
            println!("report: not published: {e}");
        }
    }
    Ok(if st == "ok" { 0 } else { 1 })
}
