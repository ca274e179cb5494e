//! `emrboot`: bootstraps every node of an Amazon EMR cluster. See README.md.

mod cli;
mod commands;
mod exit;
mod logging;
mod node;
mod report;
mod source;

use clap::Parser;

fn main() {
    let mut args = std::env::args_os();
    if args
        .nth(1)
        .is_some_and(|a| a == emrboot_os::command::SUPERVISE_ARG)
    {
        emrboot_os::command::supervise(args);
    }
    // Files get explicit modes; directories emrboot creates (state, markers, the shutdown
    // actions dir, systemd's) must not be writable by others whatever umask EMR started us with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let cli = cli::Cli::parse();
    let runs = cli.command.logs_runs();
    if runs && !nix::unistd::geteuid().is_root() {
        become_root();
    }
    let _log = logging::init(&cli.global, runs);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("emrboot: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            // Runs log to stderr and the log file; other commands answer on stderr alone.
            if runs {
                tracing::error!("{}", e.message);
            } else {
                eprintln!("emrboot: {}", e.message);
            }
            e.code
        }
    };
    // Dropping the runtime could wait on blocking tasks (a hung DNS lookup); the outcome is known.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}

/// EMR runs a bootstrap action as `hadoop`, which has passwordless sudo; the phases need root
/// (packages, /etc, netlink, iptables). Re-exec this same command line through `sudo -n`, as an
/// argument vector. Returns only if that is impossible, after saying so.
fn become_root() -> ! {
    use std::os::unix::process::CommandExt;
    let err = match std::env::current_exe() {
        Ok(exe) => std::process::Command::new("sudo")
            .args(["-n", "-E", "--"])
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .exec()
            .to_string(),
        Err(e) => e.to_string(),
    };
    eprintln!("emrboot: this command needs root and `sudo -n` failed ({err}); run it as root");
    std::process::exit(exit::INVALID);
}
