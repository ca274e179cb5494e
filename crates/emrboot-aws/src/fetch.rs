//! Small files from wherever the config says: a node path, S3, or https (plain http only where
//! the config allows it). Redirects are followed only to https.

use crate::sdk::SdkError;
use crate::{Aws, AwsError};
use emrboot_config::Location;
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
            let msg = format!("refusing a redirect to {}: not https", attempt.url());
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
            let meta = std::fs::metadata(path).map_err(|source| FetchError::File {
                path: shown.clone(),
                source,
            })?;
            if meta.len() > max {
                return Err(FetchError::TooLarge(shown, max));
            }
            std::fs::read(path).map_err(|source| FetchError::File {
                path: shown,
                source,
            })
        }
        Location::S3 { bucket, key } => Ok(aws.s3().await?.get_small(bucket, key, max).await?),
        Location::Https { url } => get_http(url, false, max).await,
        Location::Http { url } => get_http(url, true, max).await,
    }
}

async fn get_http(url: &str, allow_http: bool, max: u64) -> Result<Vec<u8>, FetchError> {
    let fail = |reason: String| FetchError::Http {
        url: url.to_string(),
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
            return Err(FetchError::TooLarge(url.to_string(), max));
        }
    }
    Ok(body)
}
