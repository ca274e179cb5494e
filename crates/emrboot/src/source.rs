//! The config named by `--config`: a local path, s3://bucket/key or https:// URL.

use crate::exit::Exit;
use emrboot_aws::{fetch_bytes, Aws};
use emrboot_config::{values, Config, Location};

/// Configs are a few KB; this bounds what a wrong URL can make us hold.
const MAX_CONFIG: u64 = 1 << 20;

pub struct Loaded {
    pub config: Config,
    pub text: String,
    pub source: String,
}

pub async fn load(aws: &Aws, src: &str) -> Result<Loaded, Exit> {
    let loc = if src.contains("://") {
        values::location(src, false, false)
    } else {
        absolute(src).map(|path| Location::Path { path })
    }
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

/// A local path (any characters: it is never given to a shell), made absolute.
fn absolute(src: &str) -> Result<std::path::PathBuf, String> {
    if src.is_empty() {
        return Err("empty path".into());
    }
    std::path::absolute(src).map_err(|e| format!("{src}: {e}"))
}
