//! The command line of the interface contract (design.md). Every option with an environment
//! variable reads it when the flag is absent.

use clap::{Args, Parser, Subcommand, ValueEnum};
use emrboot_config::PhaseName;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "emrboot",
    version = env!("EMRBOOT_LONG_VERSION"),
    about = "Bootstraps an Amazon EMR node: install, tag, efs-mount, ip-takeover, shutdown-hook",
    after_help = "Example:\n  emrboot run --config s3://my-bucket/emr-config/emrboot.toml"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Where EMR's instance.json, extraInstanceData.json and job-flow.json are
    /// [default: /mnt/var/lib/info, else /emr/instance-controller/lib/info]
    #[arg(long, global = true, env = "EMRBOOT_INFO_DIR", value_name = "DIR")]
    pub info_dir: Option<PathBuf>,

    /// Markers, status of the last run, config copy
    #[arg(
        long,
        global = true,
        env = "EMRBOOT_STATE_DIR",
        value_name = "DIR",
        default_value = "/var/lib/emrboot"
    )]
    pub state_dir: PathBuf,

    /// Where EMR looks for shutdown actions
    #[arg(
        long,
        global = true,
        env = "EMRBOOT_SHUTDOWN_ACTIONS_DIR",
        value_name = "DIR",
        default_value = "/mnt/var/lib/instance-controller/public/shutdown-actions"
    )]
    pub shutdown_actions_dir: PathBuf,

    #[arg(long, global = true, env = "EMRBOOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The log file, besides stderr
    #[arg(
        long,
        global = true,
        env = "EMRBOOT_LOG_FILE",
        value_name = "FILE",
        default_value = "/var/log/emrboot.log"
    )]
    pub log_file: PathBuf,

    /// The root of the node's file system (/etc, /usr/share/zoneinfo); a scratch dir in tests
    #[arg(
        long,
        global = true,
        env = "EMRBOOT_ROOT",
        value_name = "DIR",
        default_value = "/"
    )]
    pub root: PathBuf,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the phases for this node's role (the bootstrap action)
    #[command(
        after_help = "Examples:\n  emrboot run --config s3://my-bucket/emr-config/emrboot.toml\n  emrboot run --config /etc/emrboot/emrboot.toml --only tag,ip-takeover\n  emrboot run --config https://example.org/emrboot.toml --dry-run"
    )]
    Run {
        #[command(flatten)]
        source: ConfigArg,
        #[command(flatten)]
        only: Only,
        /// Show what would be done, as `plan` does; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Show, for this node, the role and each phase's actions or why it is skipped; changes nothing
    #[command(
        after_help = "Examples:\n  emrboot plan --config s3://my-bucket/emr-config/emrboot.toml\n  emrboot plan --config emrboot.toml --json | jq '.phases[] | select(.result == \"act\")'"
    )]
    Plan {
        #[command(flatten)]
        source: ConfigArg,
        #[command(flatten)]
        only: Only,
        /// The plan as one JSON document (schema in the README)
        #[arg(long)]
        json: bool,
    },
    /// Check a config file; prints FILE:LINE:COL: message per error and exits 2 if any
    #[command(after_help = "Example:\n  emrboot validate emrboot.toml")]
    Validate { file: PathBuf },
    /// Print this node's role: MASTER, CORE or TASK
    #[command(after_help = "Example:\n  emrboot role --info-dir /mnt/var/lib/info")]
    Role,
    /// Show the last run: each phase's outcome, start, duration and error
    #[command(
        after_help = "Examples:\n  emrboot status\n  emrboot status --json | jq '.phases[] | select(.outcome == \"failed\")'"
    )]
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Give the fixed IP back to the reserved ENI (EMR's shutdown action runs this)
    #[command(
        after_help = "Example:\n  emrboot release-ip   # uses the config copy kept by `run`"
    )]
    ReleaseIp {
        /// Defaults to the config copy that `run` keeps in the state dir
        #[arg(long, value_name = "SRC")]
        config: Option<String>,
        /// Do nothing when systemd is rebooting the node (the boot unit re-applies the IP);
        /// for the poweroff unit, systemd/emrboot-release-ip.service
        #[arg(long)]
        not_on_reboot: bool,
    },
    /// Every node's last published record for one cluster ([report]): a table and a summary
    #[command(
        after_help = "Examples:\n  emrboot cluster                      # on a node: job-flow.json and the kept config\n  emrboot cluster --cluster-id j-2AO77MNLG17NW --report s3://my-bucket/emr-reports/ --json\n  emrboot cluster --wait --timeout 1800 --expect 20\n  emrboot cluster --html bootstrap.html"
    )]
    Cluster(ClusterArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(
        after_help = "Example:\n  emrboot completions bash > /etc/bash_completion.d/emrboot"
    )]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff)
    #[command(after_help = "Example:\n  emrboot man | gzip > /usr/share/man/man1/emrboot.1.gz")]
    Man,
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The cluster (j-…); on a node, job-flow.json's jobFlowId
    #[arg(long, value_name = "J")]
    pub cluster_id: Option<String>,
    /// Where the nodes publish (s3://bucket/prefix/); on a node, [report] of the kept config
    #[arg(long, value_name = "S3URL")]
    pub report: Option<String>,
    /// The table and summary as one JSON document (schema in the README)
    #[arg(long)]
    pub json: bool,
    /// Block until every reported node has finished: exit 0 all succeeded, 1 any failed, 2 timeout
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after S seconds
    #[arg(long, value_name = "S", default_value_t = 3600, requires = "wait")]
    pub timeout: u64,
    /// With --wait: also wait until at least N nodes have reported
    #[arg(long, value_name = "N", requires = "wait")]
    pub expect: Option<usize>,
    /// Also write a self-contained HTML page with the summary and a timeline
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// A running node with no update for this long is shown "lost"
    #[arg(long, value_name = "S", default_value_t = 900)]
    pub lost_after: u64,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// A local path, s3://bucket/key or https:// URL
    #[arg(long = "config", value_name = "SRC")]
    pub config: String,
}

#[derive(Args, Debug, Clone)]
pub struct Only {
    /// Run only these phases (comma-separated): install, tag, efs-mount, ip-takeover, shutdown-hook
    #[arg(long, value_name = "PHASE[,PHASE…]", value_delimiter = ',', value_parser = parse_phase)]
    pub only: Option<Vec<PhaseName>>,
}

fn parse_phase(s: &str) -> Result<PhaseName, String> {
    s.parse()
}

impl Command {
    /// Commands that change or plan a node log at info level to stderr and to the log file;
    /// the others print their answer and log only warnings.
    pub fn logs_runs(&self) -> bool {
        matches!(
            self,
            Command::Run { .. } | Command::Plan { .. } | Command::ReleaseIp { .. }
        )
    }
}
