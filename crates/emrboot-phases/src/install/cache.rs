//! The S3 build cache that source builds and pip share: one tar.gz object per key, its sha256
//! kept as user metadata so a reader can tell a whole object from a corrupt or partial one.
//!
//! A miss builds into a staging tree, packs it, installs that archive and uploads it; a hit
//! downloads, verifies and installs the same archive. Either way the node gets the same files.

use anyhow::Context;
use emrboot_aws::download;
use emrboot_config::BuildCache;
use emrboot_os::archive;
use emrboot_runner::{Ctx, PhaseError};
use std::path::Path;
use std::time::Instant;

/// One cached archive: `s3://bucket/<prefix><name>-<key>.tar.gz`.
pub(super) struct Object {
    bucket: String,
    key: String,
}

impl Object {
    pub(super) fn new(cache: &BuildCache, name: &str, key: &str) -> Object {
        Object {
            bucket: cache.bucket.clone(),
            key: format!("{}{name}-{key}.tar.gz", cache.prefix),
        }
    }

    pub(super) fn text(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The checksum of the whole object the cache holds, or `None` for a miss. One HEAD, so
    /// `plan` and `apply` decide hit or miss alike; an object without its checksum (a partial
    /// upload by an older writer) counts as a miss and is replaced.
    pub(super) async fn whole(&self, ctx: &Ctx) -> Result<Option<String>, PhaseError> {
        let s3 = ctx.doors.s3().await.map_err(PhaseError::failed)?;
        match s3.head_sha256(&self.bucket, &self.key).await? {
            Some(Some(sha)) => Ok(Some(sha)),
            Some(None) => {
                tracing::warn!(object = %self.text(), "cached archive has no sha256; building it again and replacing it");
                Ok(None)
            }
            None => {
                tracing::info!(object = %self.text(), "build cache miss");
                Ok(None)
            }
        }
    }

    /// Downloads the cached archive to `dest`; true when its body has the checksum `whole`
    /// found. A corrupt or truncated body is a miss: the caller builds and replaces it.
    pub(super) async fn fetch(&self, ctx: &Ctx, sha: &str, dest: &Path) -> anyhow::Result<bool> {
        let loc = emrboot_config::Location::S3 {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
        };
        let got = download(&ctx.doors.aws, &loc, dest).await?;
        if got == sha {
            return Ok(true);
        }
        tracing::warn!(
            object = %self.text(),
            expected = sha,
            got = %got,
            "cached archive is corrupt or partial; building it again and replacing it"
        );
        Ok(false)
    }

    /// Uploads `archive_path` with its sha256 and answers the action line to record: `line`,
    /// which names the upload, or, when it failed, `line` saying so. A failed upload is logged,
    /// not an error: the node itself is fine. Another node racing us uploads the same content
    /// under the same key: either wins whole.
    pub(super) async fn upload(
        &self,
        ctx: &Ctx,
        what: &str,
        archive_path: &Path,
        line: String,
    ) -> anyhow::Result<String> {
        let sha = archive::sha256_file(archive_path)?;
        let size = std::fs::metadata(archive_path)
            .with_context(|| format!("stat {}", archive_path.display()))?
            .len();
        tracing::info!(object = %self.text(), bytes = size, "uploading {what}");
        let start = Instant::now();
        let put = ctx
            .doors
            .s3()
            .await?
            .put_file(&self.bucket, &self.key, archive_path, &sha)
            .await;
        tracing::info!(object = %self.text(), secs = start.elapsed().as_secs_f64(), ok = put.is_ok(), "upload ended");
        Ok(match put {
            Ok(()) => line,
            Err(e) => {
                tracing::warn!("build cache upload failed (the node is fine): {e}");
                format!("{line} (the upload failed; the node is fine)")
            }
        })
    }
}
