//! One module per command; `dispatch` maps the parsed command line onto them.

mod cluster;
mod docs;
mod plan;
mod release_ip;
mod role;
mod run;
mod status;
mod validate;

use crate::cli::{Cli, Command, Global};
use crate::exit::{CmdResult, Exit};
use emrboot_aws::sdk::Budget;
use emrboot_aws::Aws;
use emrboot_node::Imds;
use emrboot_os::Root;
use emrboot_runner::{Ctx, Doors, StateDir};
use std::sync::Arc;

pub async fn dispatch(cli: Cli) -> CmdResult {
    let g = cli.global;
    match cli.command {
        Command::Run {
            source,
            only,
            dry_run: true,
        } => plan::plan(&g, &source.config, only.only, false).await,
        Command::Plan { source, only, json } => {
            plan::plan(&g, &source.config, only.only, json).await
        }
        Command::Run { source, only, .. } => run::run(&g, &source.config, only.only).await,
        Command::Validate { file } => validate::validate(&file),
        Command::Role => role::role(&g).await,
        Command::Status { json } => status::status(&g, json),
        Command::ReleaseIp {
            config,
            not_on_reboot,
        } => release_ip::release_ip(&g, config, not_on_reboot).await,
        Command::Cluster(args) => cluster::cluster(&g, args).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man => docs::man(),
    }
}

/// What `context` gives a run or a plan.
pub(crate) struct Loaded {
    pub ctx: Ctx,
    /// The config's text as fetched, for the kept copy and the config hash.
    pub text: String,
    /// Where it came from (a path, s3:// or https://), for the status and the log.
    pub source: String,
}

/// Everything a run or a plan needs: config, node facts, the doors to IMDS and AWS.
pub(crate) async fn context(g: &Global, src: &str, budget: Budget) -> Result<Loaded, Exit> {
    let imds = Arc::new(Imds::from_env());
    let aws = Arc::new(Aws::new(imds.clone(), budget));
    // Node facts first: a missing info file is the likelier error and needs no network.
    let info = crate::node::load_info(g.info_dir.clone())?;
    let loaded = crate::source::load(&aws, src).await?;
    let node = crate::node::resolve(info, imds.as_ref(), &aws).await?;
    let self_exe = std::env::current_exe()
        .map_err(|e| Exit::invalid(format!("cannot find emrboot's own path: {e}")))?;
    // Both paths go into the boot unit, which is line-based: refuse before anything changes.
    for (what, p) in [
        ("--state-dir", &g.state_dir),
        ("emrboot's own path", &self_exe),
    ] {
        if p.to_string_lossy().chars().any(char::is_control) {
            return Err(Exit::invalid(format!(
                "{what} {:?} holds a control character, which a systemd unit cannot carry",
                p.display().to_string()
            )));
        }
    }
    let ctx = Ctx::new(
        loaded.config,
        node,
        Root::new(&g.root),
        StateDir::new(&g.state_dir),
        g.shutdown_actions_dir.clone(),
        self_exe,
        Doors::new(imds, aws),
    );
    Ok(Loaded {
        ctx,
        text: loaded.text,
        source: loaded.source,
    })
}
