use crate::cli::Global;
use crate::exit::{CmdResult, Exit};
use emrboot_aws::sdk::Budget;
use emrboot_config::PhaseName;
use emrboot_runner::RunOptions;
use std::time::Duration;

/// How long a run waits for another run on the same node to finish.
const LOCK_WAIT: Duration = Duration::from_secs(600);

pub async fn run(g: &Global, src: &str, only: Option<Vec<PhaseName>>) -> CmdResult {
    // Before anything else: a release-ip that comes after this moment stops this run, one that
    // came before it is history (see emrboot_runner::ip_owner).
    let release_seen = emrboot_runner::StateDir::new(&g.state_dir).release_flag_seen();
    // Before anything changes the node: from here a SIGTERM (systemd stopping the boot unit)
    // ends the run at a safe point instead of mid-step.
    emrboot_os::stop::install_handlers()
        .map_err(|e| Exit::failed(format!("cannot handle SIGTERM: {e}")))?;
    let super::Loaded { ctx, text, source } = super::context(g, src, Budget::Bootstrap).await?;
    // Build steps run under this binary as their supervisor (emrboot_os::command::supervise).
    emrboot_os::command::set_supervisor(ctx.self_exe.clone());
    let _lock = ctx.state.lock(LOCK_WAIT).map_err(Exit::invalid)?;
    ctx.state.create().map_err(Exit::invalid)?;
    if ctx
        .state
        .release_since(&release_seen)
        .map_err(Exit::invalid)?
    {
        tracing::warn!("release-ip ran while this run waited to start: it stops before any phase");
    }
    let sink = crate::report::Publisher::for_node(&ctx, &text, g.log_file.clone())
        .await
        .map(|p| std::sync::Arc::new(p) as std::sync::Arc<dyn emrboot_runner::sink::RecordSink>);
    let opts = RunOptions {
        sink,
        only,
        config_source: source,
        // Kept for release-ip and the boot unit, which must work without S3.
        keep_config: Some(text),
    };
    let report = emrboot_runner::run(&ctx, emrboot_phases::phase, &opts).await;
    tracing::info!(exit_code = report.exit_code, "run finished");
    Ok(report.exit_code)
}
