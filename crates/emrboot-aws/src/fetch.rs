//! Small files from wherever the config says: a node path, S3, or https (plain http only where
//! the config allows it). Redirects are followed only to https.

use crate::sdk::SdkError;
use crate::{Aws, AwsError};
use emrboot_config::Location;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: larger than {1} bytes")]
    TooLarge(String, u64),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Sdk(#[from] SdkError),
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
}

fn http_client(allow_http: bool) -> Result<reqwest::Client, reqwest::Error> {
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        let scheme_ok = attempt.url().scheme() == "https" || allow_http;
        if !scheme_ok {
            let msg = format!(
                "refusing a redirect to {}: not https",
                redacted(attempt.url().as_str())
            );
            attempt.error(msg)
        } else if attempt.previous().len() >= 5 {
            attempt.error("more than 5 redirects")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .redirect(policy)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .build()
}

/// Reads a whole (small) file. `max` bounds what is kept in memory.
pub async fn fetch_bytes(aws: &Aws, loc: &Location, max: u64) -> Result<Vec<u8>, FetchError> {
    match loc {
        Location::Path { path } => {
            let shown = path.display().to_string();
            // Regular files only, opened without blocking (a FIFO would wait for a writer).
            let bytes =
                emrboot_config::read_limited(path, max).map_err(|source| FetchError::File {
                    path: shown.clone(),
                    source,
                })?;
            if bytes.len() as u64 > max {
                return Err(FetchError::TooLarge(shown, max));
            }
            Ok(bytes)
        }
        Location::S3 { bucket, key } => Ok(aws.s3().await?.get_small(bucket, key, max).await?),
        Location::Https { url } => get_http(url, false, max).await,
        Location::Http { url } => get_http(url, true, max).await,
    }
}

/// Logs progress for transfers past this size.
const PROGRESS_STEP: u64 = 8 << 20;

/// Streams a file (path, S3 or http(s)) to `dest` and returns its sha256, hex: the caller
/// compares it before using anything in the file.
pub async fn download(aws: &Aws, loc: &Location, dest: &Path) -> Result<String, FetchError> {
    use tokio::io::AsyncWriteExt;
    let file_err = |source| FetchError::File {
        path: dest.display().to_string(),
        source,
    };
    let mut out = tokio::fs::File::create(dest).await.map_err(file_err)?;
    let mut hasher = Sha256::new();
    let mut done: u64 = 0;
    let mut next_log = PROGRESS_STEP;
    let shown = location_text(loc);
    let mut put = |chunk: &[u8], done: &mut u64| {
        hasher.update(chunk);
        *done += chunk.len() as u64;
        if *done >= next_log {
            tracing::info!(source = %shown, mib = *done >> 20, "downloading");
            next_log += PROGRESS_STEP;
        }
    };
    match loc {
        Location::Path { path } => {
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(|source| FetchError::File {
                    path: path.display().to_string(),
                    source,
                })?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf)
                    .await
                    .map_err(|source| FetchError::File {
                        path: path.display().to_string(),
                        source,
                    })?;
                if n == 0 {
                    break;
                }
                put(&buf[..n], &mut done);
                out.write_all(&buf[..n]).await.map_err(file_err)?;
            }
        }
        Location::S3 { bucket, key } => {
            let s3 = aws.s3().await?;
            let mut body = s3.get_stream(bucket, key).await?;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| FetchError::Http {
                    url: format!("s3://{bucket}/{key}"),
                    reason: crate::error_chain(&e),
                })?;
                put(&chunk, &mut done);
                out.write_all(&chunk).await.map_err(file_err)?;
            }
        }
        Location::Https { url } | Location::Http { url } => {
            let allow_http = matches!(loc, Location::Http { .. });
            let fail = |reason: String| FetchError::Http {
                url: redacted(url),
                reason,
            };
            let client = http_client(allow_http).map_err(|e| fail(crate::error_chain(&e)))?;
            let mut resp = client
                .get(url)
                .timeout(Duration::from_secs(3600))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| fail(crate::error_chain(&e.without_url())))?;
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| fail(crate::error_chain(&e.without_url())))?
            {
                put(&chunk, &mut done);
                out.write_all(&chunk).await.map_err(file_err)?;
            }
        }
    }
    out.sync_all().await.map_err(file_err)?;
    Ok(hex::encode(hasher.finalize()))
}

/// A location as logs show it.
pub fn location_text(loc: &Location) -> String {
    match loc {
        Location::Path { path } => path.display().to_string(),
        Location::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
        Location::Https { url } | Location::Http { url } => redacted(url),
    }
}

/// A URL without what may be a secret: the user and password, the query (a presigned URL's
/// signature) and the fragment. Every URL in a log line or an error goes through this.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    format!("{scheme}://{host}{path}")
}

async fn get_http(url: &str, allow_http: bool, max: u64) -> Result<Vec<u8>, FetchError> {
    let fail = |reason: String| FetchError::Http {
        url: redacted(url),
        reason,
    };
    let client = http_client(allow_http).map_err(|e| fail(crate::error_chain(&e.without_url())))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fail(crate::error_chain(&e.without_url())))?;
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| fail(crate::error_chain(&e.without_url())))?
    {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > max {
            return Err(FetchError::TooLarge(redacted(url), max));
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacted_urls_carry_no_secrets() {
        let s = super::redacted("https://user:pw@example.org/c.toml?X-Amz-Signature=SECRET#x");
        assert_eq!(s, "https://example.org/c.toml");
        assert_eq!(super::redacted("s3://b/k.toml"), "s3://b/k.toml");
        assert_eq!(super::redacted("/etc/emrboot.toml"), "/etc/emrboot.toml");
    }
}
