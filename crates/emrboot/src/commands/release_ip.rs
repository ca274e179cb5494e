use crate::cli::Global;
use crate::exit::{CmdResult, Exit, OK};
use emrboot_aws::sdk::Budget;
use emrboot_aws::Aws;
use emrboot_node::{Imds, Metadata};
use emrboot_phases::ip_takeover;
use emrboot_runner::{Doors, StateDir};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// EMR gives each shutdown action 60 s; finish (or fail) well before it kills us.
const BOUND: Duration = Duration::from_secs(50);
/// How long to wait for a run's ip-takeover (or another release-ip) to let go of the IP. A
/// run notices the request between any two of its steps; only an EC2 call in flight keeps it.
const OWNER_WAIT: Duration = Duration::from_secs(20);
/// Kept for the local cleanup once EC2 has had its share of the bound.
const CLEANUP_RESERVE: Duration = Duration::from_secs(6);

/// Gives the fixed IP back to the reserved ENI, from the config copy `run` kept unless told.
pub async fn release_ip(g: &Global, src: Option<String>, not_on_reboot: bool) -> CmdResult {
    let start = Instant::now();
    if not_on_reboot {
        // If systemd cannot be asked, releasing is the safe side: after a reboot the boot unit
        // takes the IP back; after a poweroff, an IP left on a dead ENI blocks the next master.
        match emrboot_os::systemd::reboot_queued().await {
            Ok(true) => {
                tracing::info!(
                    phase = "release-ip",
                    outcome = "skipped",
                    "the node is rebooting: the fixed IP stays (the boot unit re-applies it)"
                );
                return Ok(OK);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot tell whether the node is rebooting ({e}); releasing"),
        }
    }
    let state = StateDir::new(&g.state_dir);
    // First of all, so that a run in progress never takes the IP after we gave it back.
    stop_the_run(&state);
    let imds = Arc::new(Imds::from_env().with_deadline(Duration::from_secs(10)));
    let aws = Arc::new(Aws::new(imds.clone(), Budget::Shutdown));
    let doors = Doors::new(imds.clone(), aws.clone());
    let src = src.unwrap_or_else(|| state.config_copy().display().to_string());
    let mut report = None;
    let work = async {
        let loaded = crate::source::load(&aws, &src).await?;
        report = loaded
            .config
            .report
            .clone()
            .map(|r| (r, loaded.text.clone()));
        let Some(cfg) = loaded.config.ip_takeover else {
            println!(
                "{} has no [ip_takeover] table: nothing to release",
                loaded.source
            );
            return Ok(None);
        };
        // One owner at a time: a run's ip-takeover or a second release-ip (EMR's shutdown
        // action and the poweroff unit both run at termination) finishes its step first.
        let owner = state.ip_lock(OWNER_WAIT);
        // The run holding it gives the IP back itself when its call returns (it saw our
        // request); the local cleanup still happens now.
        let may_call_ec2 = match &owner {
            Ok(_) => Ok(()),
            Err(e) => Err(anyhow::anyhow!(
                "{e}; its run gives the IP back when its EC2 call returns"
            )),
        };
        let ec2_bound = BOUND
            .saturating_sub(start.elapsed())
            .saturating_sub(CLEANUP_RESERVE)
            .min(ip_takeover::RELEASE_EC2_BOUND);
        let done = ip_takeover::release(&cfg, &doors, may_call_ec2, ec2_bound).await;
        drop(owner);
        done.map(|actions| Some((cfg, actions)))
            .map_err(|e| Exit::failed(format!("{e:#}")))
    };
    let done = tokio::time::timeout(BOUND.saturating_sub(start.elapsed()), work)
        .await
        .map_err(|_| Exit::failed(format!("release-ip: not done within {}s", BOUND.as_secs())))
        .and_then(|r| r);
    if let Some((r, text)) = &report {
        if start.elapsed() + crate::report::publish::BUDGET + CLEANUP_RESERVE > BOUND {
            tracing::warn!("no time left to publish this node's record");
        } else {
            let outcome = match &done {
                Ok(_) => (0, None),
                Err(e) => (e.code, Some(e.message.clone())),
            };
            publish(g, &state, &imds, &aws, r, text, outcome).await;
        }
    }
    let Some((cfg, actions)) = done? else {
        return Ok(OK);
    };
    if actions.is_empty() {
        tracing::info!(
            phase = "release-ip",
            outcome = "unchanged",
            "{} already released",
            cfg.address
        );
    }
    for a in &actions {
        tracing::info!(phase = "release-ip", outcome = "changed", "{a}");
    }
    Ok(OK)
}

/// What release-ip did, onto this node's published record (best effort, inside the 50 s).
async fn publish(
    g: &Global,
    state: &StateDir,
    imds: &Imds,
    aws: &Aws,
    report: &emrboot_config::Report,
    text: &str,
    (code, error): (i32, Option<String>),
) {
    let last = state.load_status().ok().flatten();
    let Ok(info) = crate::node::load_info(g.info_dir.clone()) else {
        return;
    };
    let instance_id = match &last {
        Some(r) => r.instance_id.clone(),
        None => match imds.instance_id().await {
            Ok(id) => id,
            Err(_) => return,
        },
    };
    let role = last.as_ref().map(|r| r.role.clone()).unwrap_or_default();
    let who = crate::report::publish::Who {
        info: &info,
        instance_id: &instance_id,
        role: &role,
    };
    let facts = crate::report::publish::facts(&who, imds, text).await;
    let p = crate::report::Publisher::new(report, facts, aws, g.log_file.clone()).await;
    p.publish_release(last, code, error).await;
}

/// Leaves the release request and, if this call made it, asks the run in progress (if any) to
/// stop now: SIGTERM ends a build step at once; a package transaction is left to finish.
fn stop_the_run(state: &StateDir) {
    if !state.path.is_dir() {
        return; // no run ever started here
    }
    match state.request_release() {
        Ok(true) => {}
        Ok(false) => return, // another release-ip made it, and told the run
        Err(e) => {
            tracing::warn!(
                "cannot leave the release request ({e}); a run in progress is still signalled"
            );
        }
    }
    let Some(pid) = state.lock_holder(emrboot_runner::state::LOCK) else {
        return;
    };
    // The lock file names its holder; the name check guards against a stale pid.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !comm.trim().starts_with("emrboot") || pid == std::process::id() {
        tracing::warn!(
            "the run lock names pid {pid} ({}), not an emrboot run: not signalled",
            comm.trim()
        );
        return;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(raw),
        nix::sys::signal::Signal::SIGTERM,
    ) {
        Ok(()) => tracing::warn!(
            phase = "release-ip",
            "asked the run in progress (pid {pid}) to stop"
        ),
        Err(e) => tracing::warn!("cannot signal the run in progress (pid {pid}): {e}"),
    }
}
