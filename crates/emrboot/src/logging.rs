//! Logs through `tracing`: to stderr (EMR keeps a bootstrap action's output in the cluster's S3
//! logs) and to the log file, as text or JSON lines.

use crate::cli::{Global, LogFormat};
use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Crates whose DEBUG and TRACE output carries secrets: HTTP headers (the IMDS token among
/// them), the resolved identity (the access key id, in the orchestrator's endpoint line).
/// Whatever EMRBOOT_LOG asks for, their events below INFO are never logged; emrboot's own
/// `aws call retried` lines say what an operator needs about the SDK's calls.
/// (`aws_` covers every SDK crate: aws_sigv4 logs the request it signs, key id included.)
const SECRET_CARRIERS: [&str; 6] = ["aws_", "hyper", "h2", "reqwest", "rustls", "tower"];

fn sdk_below_info_never(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() <= tracing::Level::INFO
        || !SECRET_CARRIERS.iter().any(|c| meta.target().starts_with(c))
}

pub struct LogGuard;

/// EMRBOOT_LOG (EnvFilter syntax) or the default level; the SDK's own logs, which can carry
/// request details, stay at warn unless asked for, and their DEBUG and TRACE never pass.
fn make_filter<S>(default: &str) -> impl tracing_subscriber::layer::Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    EnvFilter::try_from_env("EMRBOOT_LOG")
        .unwrap_or_else(|_| {
            EnvFilter::new(format!(
                "{default},aws_smithy_runtime=warn,aws_config=warn,aws_runtime=error,hyper=warn"
            ))
        })
        .and(filter_fn(sdk_below_info_never))
}

pub fn init(global: &Global, runs: bool) -> LogGuard {
    let default = if runs { "info" } else { "warn" };
    let filter = || make_filter(default);
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
    let layers: Vec<_> = std::iter::once(stderr).chain(file).collect();
    let _ = tracing_subscriber::registry().with(layers).try_init();
    if let Some(e) = file_error {
        tracing::warn!("{e}; logging to stderr only");
    }
    LogGuard
}
