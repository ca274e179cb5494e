use crate::cli::Global;
use crate::exit::{CmdResult, Exit};
use emrboot_aws::sdk::Budget;
use emrboot_aws::Aws;
use emrboot_node::Imds;
use std::sync::Arc;
use std::time::Duration;

/// EMR gives each shutdown action 60 s; finish (or fail) well before it kills us.
const BOUND: Duration = Duration::from_secs(50);

/// Gives the fixed IP back to the reserved ENI, from the config copy `run` kept unless told.
pub async fn release_ip(g: &Global, src: Option<String>, not_on_reboot: bool) -> CmdResult {
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
                return Ok(0);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot tell whether the node is rebooting ({e}); releasing"),
        }
    }
    let imds = Arc::new(Imds::from_env().with_deadline(Duration::from_secs(10)));
    let aws = Aws::new(imds.clone(), Budget::Shutdown);
    let src = src.unwrap_or_else(|| {
        emrboot_runner::StateDir::new(&g.state_dir)
            .config_copy()
            .display()
            .to_string()
    });
    let work = async {
        let loaded = crate::source::load(&aws, &src).await?;
        let Some(cfg) = loaded.config.ip_takeover else {
            println!(
                "{} has no [ip_takeover] table: nothing to release",
                loaded.source
            );
            return Ok(None);
        };
        let ec2 = aws.ec2().await.map_err(Exit::failed)?;
        emrboot_phases::ip_takeover::release(&cfg, &imds, &ec2)
            .await
            .map(|actions| Some((cfg, actions)))
            .map_err(|e| Exit::failed(format!("{e:#}")))
    };
    let Some((cfg, actions)) = tokio::time::timeout(BOUND, work)
        .await
        .map_err(|_| Exit::failed(format!("release-ip: not done within {}s", BOUND.as_secs())))??
    else {
        return Ok(0);
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
    Ok(0)
}
