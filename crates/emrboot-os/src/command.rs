//! Child processes: argument vectors only (no shell), exit status checked, output streamed to the
//! log line by line, and a time bound after which the child is killed.

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct Cmd {
    pub argv: Vec<OsString>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(OsString, OsString)>,
    pub timeout: Duration,
    /// Stopped when emrboot is asked to stop, and killed if emrboot dies (see `interruptible`).
    pub interruptible: bool,
}

/// How long an interrupted child's process group has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The first argument that makes emrboot a build step's supervisor (`supervise`).
pub const SUPERVISE_ARG: &str = "__emrboot-supervise-step";

/// emrboot's own path, set by main: interruptible commands run under `emrboot
/// __emrboot-supervise-step`. Unset (unit tests), they get PR_SET_PDEATHSIG alone.
static SUPERVISOR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

pub fn set_supervisor(exe: PathBuf) {
    let _ = SUPERVISOR.set(exe);
}

/// Runs ARGV as a child in this process's group (the group emrboot made for the step) and
/// exits with its status. If emrboot dies, even by SIGKILL, the kernel signals this process
/// (PR_SET_PDEATHSIG), which kills the whole group: the step's shell and everything it started
/// (make, cc, a sleep), which PR_SET_PDEATHSIG on the shell alone would leave running.
pub fn supervise(mut args: impl Iterator<Item = OsString>) -> ! {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    extern "C" fn kill_group(_: nix::libc::c_int) {
        // SAFETY: kill(2) is async-signal-safe; pid 0 is this process's group.
        unsafe {
            nix::libc::kill(0, nix::libc::SIGKILL);
        }
    }
    let parent = args.next().and_then(|p| p.to_str()?.parse::<i32>().ok());
    let argv: Vec<OsString> = args.collect();
    let (Some(parent), Some((program, rest))) = (parent, argv.split_first()) else {
        eprintln!("emrboot: {SUPERVISE_ARG} PARENT-PID PROGRAM [ARGS...]");
        std::process::exit(125);
    };
    let on_death = SigAction::new(
        SigHandler::Handler(kill_group),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only calls kill(2).
    let armed = unsafe { sigaction(Signal::SIGUSR1, &on_death) }.is_ok()
        && nix::sys::prctl::set_pdeathsig(Signal::SIGUSR1).is_ok();
    if !armed || nix::unistd::getppid().as_raw() != parent {
        // emrboot already gone (or the guard cannot be set): run nothing.
        kill_group(0);
    }
    let mut child = match std::process::Command::new(program).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("emrboot: cannot start {}: {e}", program.to_string_lossy());
            std::process::exit(127);
        }
    };
    // emrboot's stop sends SIGTERM to the group: the step gets it; this process stays to
    // report how the step ended. (Ignored only now: an ignored signal stays ignored across exec.)
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: SIG_IGN installs no code.
        let _ = unsafe { sigaction(sig, &ignore) };
    }
    let code = match child.wait() {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
        }
        Err(_) => 125,
    };
    std::process::exit(code)
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("`{cmd}` could not start: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` exited with {status}")]
    Failed { cmd: String, status: String },
    #[error("`{cmd}` did not finish within {secs} s and was killed")]
    TimedOut { cmd: String, secs: u64 },
    #[error("`{cmd}` was stopped: emrboot received {signal}")]
    Interrupted { cmd: String, signal: &'static str },
}

/// What a finished command printed, for callers that parse it (e.g. `rpm -q`).
#[derive(Debug, Default)]
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    /// Kept too (bounded): package managers say which names they could not find on stderr.
    pub stderr: String,
}

impl Output {
    /// How it exited, as error messages say it: `status N` or `a signal`.
    pub fn status(&self) -> String {
        self.code
            .map_or("a signal".to_string(), |c| format!("status {c}"))
    }

    /// Everything the command printed, stdout then stderr: for callers that look for a message
    /// without caring which stream it came on.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Cmd {
    pub fn new<I, S>(argv: I, timeout: Duration) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Cmd {
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: None,
            env: Vec::new(),
            timeout,
            interruptible: false,
        }
    }

    /// For work that is safe to abandon (a build in a staging dir): on a stop request its
    /// process group gets SIGTERM, then SIGKILL; if emrboot itself is killed, so is the whole
    /// group (see `supervise`). Package managers are not interruptible: dpkg or rpm stopped halfway
    /// leaves the node worse off than a finished transaction, so a stop waits for them.
    pub fn interruptible(mut self) -> Self {
        self.interruptible = true;
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The command as a log shows it.
    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the command; a non-zero exit is an error.
    pub async fn run(&self) -> Result<Output, CommandError> {
        let out = self.output().await?;
        if out.success {
            Ok(out)
        } else {
            Err(CommandError::Failed {
                cmd: self.display(),
                status: out.status(),
            })
        }
    }

    /// Runs the command and returns how it ended, success or not. Still bounded and streamed.
    pub async fn output(&self) -> Result<Output, CommandError> {
        let cmd = self.display();
        let (program, args) = self.argv.split_first().ok_or_else(|| CommandError::Spawn {
            cmd: cmd.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
        })?;
        let supervisor = SUPERVISOR.get().filter(|_| self.interruptible);
        let mut c = match supervisor {
            Some(exe) => {
                let mut c = Command::new(exe);
                c.arg(SUPERVISE_ARG)
                    .arg(std::process::id().to_string())
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        c.args(args)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a timeout kills what it started too (`sh -c`
            // build steps leave make, cc, sleep... behind otherwise).
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.cwd {
            c.current_dir(dir);
        }
        if self.interruptible && supervisor.is_none() {
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                c.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
                });
            }
        }
        tracing::debug!(command = %cmd, "running");
        let mut child = c.spawn().map_err(|source| CommandError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
        let pgid = child.id();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let work = async {
            let (out, err, status) = tokio::join!(
                stream(stdout, &cmd, "stdout"),
                stream(stderr, &cmd, "stderr"),
                child.wait()
            );
            (out, err, status)
        };
        let kill = |sig: Signal| {
            if let Some(pg) = pgid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(Pid::from_raw(pg), sig);
            }
        };
        let finished = |(stdout, stderr, status): (
            String,
            String,
            std::io::Result<std::process::ExitStatus>,
        )| {
            status
                .map(|status| Output {
                    success: status.success(),
                    code: status.code(),
                    stdout,
                    stderr,
                })
                .map_err(|source| CommandError::Spawn {
                    cmd: cmd.clone(),
                    source,
                })
        };
        let stop = async {
            if self.interruptible {
                crate::stop::wait().await
            } else {
                std::future::pending().await
            }
        };
        tokio::pin!(work);
        tokio::select! {
            done = &mut work => finished(done),
            _ = tokio::time::sleep(self.timeout) => {
                kill(Signal::SIGKILL);
                Err(CommandError::TimedOut {
                    cmd: cmd.clone(),
                    secs: self.timeout.as_secs(),
                })
            }
            signal = stop => {
                kill(Signal::SIGTERM);
                if tokio::time::timeout(STOP_GRACE, &mut work).await.is_err() {
                    kill(Signal::SIGKILL);
                }
                Err(CommandError::Interrupted {
                    cmd: cmd.clone(),
                    signal: signal.as_str(),
                })
            }
        }
    }
}

/// Logs each line as it arrives; keeps it too (bounded) for callers that parse it.
async fn stream(pipe: Option<impl AsyncRead + Unpin>, cmd: &str, which: &'static str) -> String {
    const KEEP_MAX: usize = 1 << 20;
    let mut kept = String::new();
    let Some(pipe) = pipe else { return kept };
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(command = %cmd, stream = which, "{line}");
        if kept.len() < KEEP_MAX {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test]
    async fn arguments_never_reach_a_shell() {
        let out = Cmd::new(["echo", "a; echo pwned", "$(id)"], secs(5))
            .run()
            .await
            .unwrap();
        assert_eq!(out.stdout, "a; echo pwned $(id)\n");
    }

    #[tokio::test]
    async fn a_failing_command_is_an_error_naming_it() {
        let e = Cmd::new(["false"], secs(5)).run().await.unwrap_err();
        assert_eq!(e.to_string(), "`false` exited with status 1");
    }

    #[tokio::test]
    async fn a_slow_command_is_killed_at_its_bound() {
        let e = Cmd::new(["sleep", "30"], Duration::from_millis(200))
            .run()
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::TimedOut { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let e = Cmd::new(["sh", "-c", &script], Duration::from_millis(500))
            .run()
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::TimedOut { .. }));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let alive =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(!alive, "the step's child {pid} survived the timeout");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let e = Cmd::new(["/nonexistent/prog"], secs(5))
            .run()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/prog"));
    }
}
