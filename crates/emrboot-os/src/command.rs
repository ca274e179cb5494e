//! Child processes: argument vectors only (no shell), exit status checked, output streamed to the
//! log line by line, and a time bound after which the child is killed.

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
}

/// What a finished command printed, for callers that parse it (e.g. `rpm -q`).
#[derive(Debug, Default)]
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
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
        }
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
                status: out
                    .code
                    .map_or("a signal".to_string(), |c| format!("status {c}")),
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
        let mut c = Command::new(program);
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
        tracing::debug!(command = %cmd, "running");
        let mut child = c.spawn().map_err(|source| CommandError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
        let pgid = child.id();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let work = async {
            let (captured, _, status) = tokio::join!(
                stream(stdout, &cmd, "stdout", true),
                stream(stderr, &cmd, "stderr", false),
                child.wait()
            );
            (captured, status)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok((stdout, Ok(status))) => Ok(Output {
                success: status.success(),
                code: status.code(),
                stdout,
            }),
            Ok((_, Err(source))) => Err(CommandError::Spawn { cmd, source }),
            Err(_) => {
                if let Some(pg) = pgid.and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pg),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                Err(CommandError::TimedOut {
                    cmd,
                    secs: self.timeout.as_secs(),
                })
            }
        }
    }
}

/// Logs each line as it arrives; keeps stdout (bounded) for callers that parse it.
async fn stream(
    pipe: Option<impl AsyncRead + Unpin>,
    cmd: &str,
    which: &'static str,
    keep: bool,
) -> String {
    const KEEP_MAX: usize = 1 << 20;
    let mut kept = String::new();
    let Some(pipe) = pipe else { return kept };
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(command = %cmd, stream = which, "{line}");
        if keep && kept.len() < KEEP_MAX {
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
