//! The config named by `--config`: a local path, s3://bucket/key or https:// URL.

use crate::exit::Exit;
use emrboot_aws::{fetch_bytes, Aws};
use emrboot_config::{values, Config};

/// Configs are a few KB; this bounds what a wrong URL can make us hold.
const MAX_CONFIG: u64 = 1 << 20;

pub struct Loaded {
    pub config: Config,
    pub text: String,
    pub source: String,
}

pub async fn load(aws: &Aws, src: &str) -> Result<Loaded, Exit> {
    let loc = values::location(src, false, true)
        .or_else(|_| values::location(&absolute(src)?, false, true))
        .map_err(|e| Exit::invalid(format!("--config: {e}")))?;
    let bytes = fetch_bytes(aws, &loc, MAX_CONFIG)
        .await
        .map_err(|e| Exit::invalid(format!("--config {src}: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Exit::invalid(format!("{src}:1:1: not UTF-8 text")))?;
    let config = emrboot_config::parse(src, &text).map_err(Exit::invalid)?;
    Ok(Loaded {
        config,
        text,
        source: src.to_string(),
    })
}

/// A relative local path, made absolute against the working directory.
fn absolute(src: &str) -> Result<String, String> {
    if src.contains("://") {
        return Err(format!("{src:?} is not an https:// or s3:// URL or a path"));
    }
    std::path::absolute(src)
        .map(|p| p.display().to_string())
        .map_err(|e| format!("{src}: {e}"))
}
