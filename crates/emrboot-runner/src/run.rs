//! Runs the phases in `PhaseName::ORDER`: selects them (config table, `--only`, roles), checks
//! all selected ones before any changes the node, then applies them one by one, recording each
//! outcome in the status file as it goes.

use crate::phase::{ErrorKind, Phase, Precheck};
use crate::status::{now_rfc3339, Outcome, PhaseRecord, RunRecord};
use crate::{exit_code, Ctx};
use emrboot_config::PhaseName;
use emrboot_os::stop;
use std::time::Instant;
use tracing::Instrument;

#[derive(Clone, Default)]
pub struct RunOptions {
    /// Where the record also goes as it changes (`[report]`), if anywhere.
    pub sink: Option<std::sync::Arc<dyn crate::sink::RecordSink>>,
    /// `--only`: run just these phases (still in the fixed order).
    pub only: Option<Vec<PhaseName>>,
    /// Where the config came from, for the status record.
    pub config_source: String,
    /// The config text, kept in the state dir once the checks pass (release-ip and the boot
    /// unit read it); a config that fails its checks does not replace the kept one.
    pub keep_config: Option<String>,
}

/// Why a phase is not selected for this node, if it is not.
fn skip_reason(ctx: &Ctx, phase: PhaseName, only: Option<&[PhaseName]>) -> Option<String> {
    let Some(common) = ctx.config.common(phase) else {
        return Some(format!("no [{}] table in the config", phase.table()));
    };
    if only.is_some_and(|o| !o.contains(&phase)) {
        return Some("not selected by --only".into());
    }
    if !common.roles.contains(&ctx.node.role) {
        let roles: Vec<_> = common.roles.iter().map(|r| r.as_str()).collect();
        return Some(format!(
            "runs on {} only; this node is {}",
            roles.join(", "),
            ctx.node.role
        ));
    }
    None
}

/// The phase for each name: `emrboot_phases::phase`, an exhaustive `match`, so every
/// `PhaseName` has one and the runner has no "not implemented" case.
pub type Phases = fn(PhaseName) -> Box<dyn Phase>;

/// A phase that passed its checks, by its index in the run record; `Err`: the failure of its
/// check, reported when its turn comes.
type Queued = (usize, Result<Box<dyn Phase>, String>);

/// The span a phase's check, plan and apply run in, so that every line logged meanwhile (the
/// phase's own, the SDK's retry lines, a child process's output) carries the phase. The
/// runner's own lines about a phase name it in their `phase` field.
fn span(name: PhaseName) -> tracing::Span {
    tracing::info_span!("phase", phase = %name)
}

/// What `plan` shows for one phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedPhase {
    Skip(String),
    Actions(Vec<String>),
    /// The phase would fail (or cannot be planned) for this reason.
    Error(String),
}

/// One phase of a plan.
#[derive(Debug, Clone)]
pub struct PlanEntry {
    pub phase: PhaseName,
    pub required: bool,
    pub planned: PlannedPhase,
}

#[derive(Debug, Clone)]
pub struct PlanReport {
    pub phases: Vec<PlanEntry>,
    /// Set when some phase's config does not fit this node: `plan` then exits 2.
    pub invalid: bool,
}

/// Every phase in order with the actions it would take or why it is skipped. Read-only.
pub async fn plan(ctx: &Ctx, phases: Phases, only: Option<&[PhaseName]>) -> PlanReport {
    let mut out = Vec::new();
    let mut invalid = false;
    let mut listed = std::collections::HashSet::new();
    for name in PhaseName::ORDER {
        let required = ctx.config.common(name).is_none_or(|c| c.required);
        let phase = phases(name);
        let span = span(name);
        let planned = match skip_reason(ctx, name, only) {
            Some(reason) => PlannedPhase::Skip(reason),
            None => match phase.check(ctx).instrument(span.clone()).await {
                Ok(Precheck::Skip(reason)) => PlannedPhase::Skip(reason),
                Ok(Precheck::Run) => match phase.plan(ctx).instrument(span).await {
                    // Phases share some steps (ip-takeover writes shutdown-hook's action before
                    // it moves the IP): a step an earlier phase takes is done when a later one
                    // looks, so it is listed once, where the run takes it.
                    Ok(actions) => PlannedPhase::Actions(
                        actions
                            .into_iter()
                            .filter(|a| listed.insert(a.clone()))
                            .collect(),
                    ),
                    Err(e) => PlannedPhase::Error(e.to_string()),
                },
                Err(e) => {
                    invalid |= e.kind == ErrorKind::Invalid;
                    PlannedPhase::Error(e.to_string())
                }
            },
        };
        out.push(PlanEntry {
            phase: name,
            required,
            planned,
        });
    }
    PlanReport {
        phases: out,
        invalid,
    }
}

#[derive(Debug)]
pub struct RunReport {
    /// 0: every required phase succeeded; 1: a required phase failed; 2: config or environment
    /// error found before anything changed.
    pub exit_code: i32,
    pub record: RunRecord,
}

/// Saves the status; a state dir that cannot be written is logged, not fatal to the node's work.
/// Published first (best effort, bounded by the sink), so that the saved status shows a
/// failure to publish.
async fn save(ctx: &Ctx, opts: &RunOptions, record: &mut RunRecord) {
    if let Some(sink) = &opts.sink {
        if let Some(e) = sink.publish(record).await {
            record.report_error.get_or_insert(e);
        }
    }
    if let Err(e) = ctx.state.save_status(record) {
        tracing::error!(error = %e, "cannot write the status file; `status` will report this run as unrecorded");
        if let Err(e2) = ctx.state.mark_unrecorded(&e.to_string()) {
            tracing::error!(error = %e2, "cannot mark the status as unrecorded either");
        }
    }
}

pub async fn run(ctx: &Ctx, phases: Phases, opts: &RunOptions) -> RunReport {
    let mut record = RunRecord {
        started_at: now_rfc3339(),
        finished_at: None,
        pid: std::process::id(),
        instance_id: ctx.node.instance_id.clone(),
        role: ctx.node.role.to_string(),
        config: opts.config_source.clone(),
        exit_code: None,
        phases: Vec::new(),
        report_error: None,
    };
    let mut selected = Vec::new();
    for name in PhaseName::ORDER {
        let required = ctx.config.common(name).is_none_or(|c| c.required);
        let reason = skip_reason(ctx, name, opts.only.as_deref());
        let outcome = if reason.is_some() {
            Outcome::Skipped
        } else {
            Outcome::Pending
        };
        if let Some(r) = &reason {
            tracing::info!(phase = %name, outcome = "skipped", "{r}");
        }
        record.phases.push(PhaseRecord {
            phase: name,
            outcome,
            required,
            reason,
            actions: Vec::new(),
            started_at: None,
            duration_ms: None,
            error: None,
        });
        if outcome == Outcome::Pending {
            selected.push((record.phases.len() - 1, phases(name)));
        }
    }

    save(ctx, opts, &mut record).await;
    // Check every selected phase before any of them changes the node. A config or environment
    // error (Invalid) ends the run here, untouched; any other failure of a check (IMDS down)
    // fails that phase in its turn, after the phases before it have run.
    let mut invalid = false;
    let mut queue: Vec<Queued> = Vec::new();
    for (i, phase) in selected {
        let rec = &mut record.phases[i];
        match phase.check(ctx).instrument(span(rec.phase)).await {
            Ok(Precheck::Run) => queue.push((i, Ok(phase))),
            Ok(Precheck::Skip(reason)) => {
                tracing::info!(phase = %rec.phase, outcome = "skipped", "{reason}");
                rec.outcome = Outcome::Skipped;
                rec.reason = Some(reason);
            }
            Err(e) if e.kind == ErrorKind::Invalid && !rec.required => {
                // Optional: logged and shown by status; the rest of the run goes on.
                tracing::error!(phase = %rec.phase, outcome = "failed", required = false, "{e}");
                rec.outcome = Outcome::Failed;
                rec.error = Some(e.to_string());
            }
            Err(e) if e.kind == ErrorKind::Invalid => {
                tracing::error!(phase = %rec.phase, outcome = "invalid", "{e}");
                rec.outcome = Outcome::Failed;
                rec.error = Some(e.to_string());
                invalid = true;
            }
            Err(e) => queue.push((i, Err(e.to_string()))),
        }
    }
    if invalid {
        let unchecked = queue.iter().map(|(i, _)| *i);
        return finish(
            ctx,
            opts,
            record,
            exit_code::INVALID,
            unchecked,
            CHECKS_FAILED,
        )
        .await;
    }
    if let Some(text) = &opts.keep_config {
        if let Err(e) = ctx.state.save_config(text) {
            tracing::error!(error = %e, "cannot keep the config copy");
            let all = queue.iter().map(|(i, _)| *i);
            return finish(ctx, opts, record, exit_code::INVALID, all, CHECKS_FAILED).await;
        }
    }

    for (n, (i, phase)) in queue.iter().enumerate() {
        let i = *i;
        let name = record.phases[i].phase;
        let rest = queue[n + 1..].iter().map(|(i, _)| *i);
        // A safe point: the phases before have finished, this one has not begun.
        if let Some(why) = stop_reason(ctx) {
            let rec = &mut record.phases[i];
            rec.outcome = Outcome::Interrupted;
            rec.error = Some(format!("not started: {why}"));
            tracing::warn!(phase = %name, outcome = "interrupted", "stopping before this phase");
            return finish(ctx, opts, record, exit_code::FAILED, rest, STOPPED).await;
        }
        record.phases[i].outcome = Outcome::Running;
        record.phases[i].started_at = Some(now_rfc3339());
        save(ctx, opts, &mut record).await;
        let start = Instant::now();
        let result = match phase {
            Ok(phase) => phase
                .apply(ctx)
                .instrument(span(name))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        let rec = &mut record.phases[i];
        rec.duration_ms = Some(start.elapsed().as_millis() as u64);
        match result {
            Ok(actions) => {
                rec.outcome = if actions.is_empty() {
                    Outcome::Unchanged
                } else {
                    Outcome::Changed
                };
                tracing::info!(phase = %name, outcome = rec.outcome.as_str(), actions = actions.len(), "phase done");
                let marker = serde_json::json!({
                    "phase": name,
                    "finished_at": now_rfc3339(),
                    "actions": actions,
                });
                if let Err(e) =
                    ctx.state
                        .write_marker(&ctx.node.instance_id, name, &ctx.config, &marker)
                {
                    tracing::error!(phase = %name, error = %e, "cannot write the marker");
                }
                rec.actions = actions;
            }
            Err(e) if stop_reason(ctx).is_some() => {
                tracing::warn!(phase = %name, outcome = "interrupted", "{e}");
                rec.outcome = Outcome::Interrupted;
                rec.error = Some(e);
                return finish(ctx, opts, record, exit_code::FAILED, rest, STOPPED).await;
            }
            Err(e) => {
                tracing::error!(phase = %name, outcome = "failed", required = rec.required, "{e}");
                rec.outcome = Outcome::Failed;
                rec.error = Some(e);
                if rec.required {
                    return finish(ctx, opts, record, exit_code::FAILED, rest, FAILED_BEFORE).await;
                }
            }
        }
        // The phase's end, so that a run killed before the next one starts shows it finished.
        save(ctx, opts, &mut record).await;
    }
    finish(ctx, opts, record, exit_code::OK, std::iter::empty(), "").await
}

const CHECKS_FAILED: &str = "the checks found a config or environment error; nothing was changed";
const FAILED_BEFORE: &str = "an earlier required phase failed";
const STOPPED: &str = "the run was stopped (a signal, or release-ip)";

/// Why the run must stop at its next safe point, if it must: a signal, or release-ip giving
/// the fixed IP back (the node is going away; the run must not take the IP again).
pub fn stop_reason(ctx: &Ctx) -> Option<String> {
    if let Some(signal) = stop::requested() {
        return Some(format!("emrboot received {}", signal.as_str()));
    }
    ctx.state
        .release_requested()
        .then(|| "release-ip asked this run to stop (the fixed IP is being given back)".into())
}

async fn finish(
    ctx: &Ctx,
    opts: &RunOptions,
    mut record: RunRecord,
    exit_code: i32,
    not_run: impl Iterator<Item = usize>,
    why: &str,
) -> RunReport {
    for i in not_run {
        record.phases[i].outcome = Outcome::NotRun;
        record.phases[i].reason = Some(why.into());
    }
    record.finished_at = Some(now_rfc3339());
    record.exit_code = Some(exit_code);
    save(ctx, opts, &mut record).await;
    RunReport { exit_code, record }
}
