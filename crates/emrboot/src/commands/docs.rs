//! Shell completions and the man page, generated from the command line's own definition so
//! they never drift from it. packaging/build.sh puts them in the RPM.

use crate::cli::Cli;
use crate::exit::{CmdResult, Exit, OK};
use clap::CommandFactory;
use std::io::Write;

/// Generated into memory first: clap_complete panics on a failed write (a closed pipe).
pub fn completions(shell: clap_complete::Shell) -> CmdResult {
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "emrboot", &mut text);
    print(&text, "completions")
}

pub fn man() -> CmdResult {
    let mut text = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut text)
        .map_err(|e| Exit::failed(format!("rendering the man page: {e}")))?;
    print(&text, "the man page")
}

fn print(text: &[u8], what: &str) -> CmdResult {
    let mut out = std::io::stdout().lock();
    out.write_all(text)
        .and_then(|()| out.flush())
        .map_err(|e| Exit::failed(format!("writing {what}: {e}")))?;
    Ok(OK)
}
