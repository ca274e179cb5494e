//! Logs through `tracing`: to stderr (EMR keeps a bootstrap action's output in the cluster's S3
//! logs) and to the log file, as text or JSON lines.

use crate::cli::{Global, LogFormat};
use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

pub struct LogGuard;

pub fn init(global: &Global, runs: bool) -> LogGuard {
    let default = if runs { "info" } else { "warn" };
    // The SDK's own debug logs can carry request details; they stay at warn unless asked for.
    let filter = || {
        EnvFilter::try_from_env("EMRBOOT_LOG").unwrap_or_else(|_| {
            EnvFilter::new(format!(
                "{default},aws_smithy_runtime=warn,aws_config=warn,hyper=warn"
            ))
        })
    };
    let json = global.log_format == LogFormat::Json;
    let stderr = if json {
        fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    };
    let mut file_error = None;
    let file = if runs {
        match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&global.log_file)
        {
            Ok(f) => {
                let f = Arc::new(f);
                Some(if json {
                    fmt::layer()
                        .json()
                        .with_ansi(false)
                        .with_writer(f)
                        .with_filter(filter())
                        .boxed()
                } else {
                    fmt::layer()
                        .with_ansi(false)
                        .with_writer(f)
                        .with_filter(filter())
                        .boxed()
                })
            }
            Err(e) => {
                file_error = Some(format!(
                    "cannot open log file {}: {e}",
                    global.log_file.display()
                ));
                None
            }
        }
    } else {
        None
    };
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
    if let Some(e) = file_error {
        tracing::warn!("{e}; logging to stderr only");
    }
    LogGuard
}
