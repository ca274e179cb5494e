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

    /// For `plan`: whether the cache holds the object with its checksum (a hit, unless the
    /// body turns out corrupt when apply downloads it).
    pub(super) async fn present(&self, ctx: &Ctx) -> Result<bool, PhaseError> {
        let s3 = ctx.doors.s3().await.map_err(PhaseError::failed)?;
        Ok(matches!(
            s3.head_sha256(&self.bucket, &self.key).await?,
            Some(Some(_))
        ))
    }

    /// Downloads the cached archive to `dest` when the cache holds a whole one.
    pub(super) async fn fetch(&self, ctx: &Ctx, dest: &Path) -> anyhow::Result<bool> {
        let s3 = ctx.doors.s3().await?;
        let Some(meta) = s3.head_sha256(&self.bucket, &self.key).await? else {
            tracing::info!(phase = "install", object = %self.text(), "build cache miss");
            return Ok(false);
        };
        let loc = emrboot_config::Location::S3 {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
        };
        let got = download(&ctx.doors.aws, &loc, dest).await?;
        if meta.as_deref() == Some(got.as_str()) {
            return Ok(true);
        }
        tracing::warn!(
            phase = "install",
            object = %self.text(),
            expected = meta.as_deref().unwrap_or("(none)"),
            got = %got,
            "cached archive is corrupt or partial; building it again and replacing it"
        );
        Ok(false)
    }

    /// Uploads `archive_path` with its sha256. A failed upload is logged, not an error: the
    /// node itself is fine. Another node racing us uploads the same content under the same
    /// key: either wins whole. Returns the action to report, when it was uploaded.
    pub(super) async fn upload(
        &self,
        ctx: &Ctx,
        what: &str,
        archive_path: &Path,
    ) -> anyhow::Result<Option<String>> {
        let sha = archive::sha256_file(archive_path)?;
        let size = std::fs::metadata(archive_path)
            .with_context(|| format!("stat {}", archive_path.display()))?
            .len();
        tracing::info!(phase = "install", object = %self.text(), bytes = size, "uploading {what}");
        let start = Instant::now();
        let put = ctx
            .doors
            .s3()
            .await?
            .put_file(&self.bucket, &self.key, archive_path, &sha)
            .await;
        tracing::info!(phase = "install", object = %self.text(), secs = start.elapsed().as_secs_f64(), ok = put.is_ok(), "upload ended");
        match put {
            Ok(()) => Ok(Some(format!("uploaded {} ({size} bytes)", self.text()))),
            Err(e) => {
                tracing::warn!(
                    phase = "install",
                    "build cache upload failed (the node is fine): {e}"
                );
                Ok(None)
            }
        }
    }
}
