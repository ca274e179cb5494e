//! The config named by `--config`: a local path, s3://bucket/key or https:// URL.

use crate::exit::Exit;
use emrboot_aws::{fetch_bytes, Aws};
use emrboot_config::{values, Config, Location};

pub struct Loaded {
    pub config: Config,
    pub text: String,
    pub source: String,
}

pub async fn load(aws: &Aws, src: &str) -> Result<Loaded, Exit> {
    // As logs and status show it: a URL without user info or query (presigned signatures).
    let shown_src = emrboot_aws::fetch::redacted(src);
    let src = src.trim();
    let loc = if src.contains("://") {
        values::location(src, false, false)
    } else {
        absolute(src).map(|path| Location::Path { path })
    }
    .map_err(|e| Exit::invalid(format!("--config: {e}")))?;
    let bytes = fetch_bytes(aws, &loc, emrboot_config::MAX_SIZE as u64)
        .await
        .map_err(|e| Exit::invalid(format!("--config {shown_src}: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Exit::invalid(format!("{shown_src}:1:1: not UTF-8 text")))?;
    let config = emrboot_config::parse(&shown_src, &text).map_err(Exit::invalid)?;
    Ok(Loaded {
        config,
        text,
        source: shown_src,
    })
}

/// A local path (any characters: it is never given to a shell), made absolute.
fn absolute(src: &str) -> Result<std::path::PathBuf, String> {
    if src.is_empty() {
        return Err("empty path".into());
    }
    std::path::absolute(src).map_err(|e| format!("{src}: {e}"))
}
