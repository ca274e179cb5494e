//! S3: the objects emrboot reads (config, requirements, cached builds) and writes (cached builds).

use crate::AwsError;
use aws_sdk_s3::Client;

#[derive(Clone)]
pub struct S3 {
    client: Client,
}

impl S3 {
    pub fn new(client: Client) -> Self {
        S3 { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, AwsError> {
        self.client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| located(AwsError::new("s3:GetObject", e), bucket, key))
    }

    /// An object's body as a stream of chunks.
    pub async fn get_stream(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<aws_sdk_s3::primitives::ByteStream, AwsError> {
        Ok(self.get(bucket, key).await?.body)
    }

    /// The object's user metadata `sha256`, or `Ok(None)` when the object does not exist.
    pub async fn head_sha256(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Option<String>>, AwsError> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => Ok(Some(o.metadata().and_then(|m| m.get("sha256")).cloned())),
            Err(e) => {
                let e = located(AwsError::new("s3:HeadObject", e), bucket, key);
                if matches!(e.code.as_deref(), Some("NotFound" | "NoSuchKey" | "404")) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Uploads a file with its sha256 as user metadata, so a reader can tell a whole object
    /// from a partial or corrupt one. Racing uploads of the same key are harmless: the last
    /// one wins whole.
    pub async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &std::path::Path,
        sha256: &str,
    ) -> Result<(), AwsError> {
        let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
            .await
            .map_err(|e| AwsError {
                call: "s3:PutObject",
                code: None,
                message: format!("{}: {e}", path.display()),
            })?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .metadata("sha256", sha256)
            .body(body)
            .send()
            .await
            .map_err(|e| located(AwsError::new("s3:PutObject", e), bucket, key))?;
        Ok(())
    }

    /// A small object read whole into memory, refused past `max` bytes.
    pub async fn get_small(&self, bucket: &str, key: &str, max: u64) -> Result<Vec<u8>, AwsError> {
        let err = |message: String| AwsError {
            call: "s3:GetObject",
            code: None,
            message: format!("s3://{bucket}/{key}: {message}"),
        };
        let out = self.get(bucket, key).await?;
        if out.content_length().unwrap_or(0) as u64 > max {
            return Err(err(format!("larger than {max} bytes")));
        }
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| err(crate::error_chain(&e)))?
            .into_bytes();
        if bytes.len() as u64 > max {
            return Err(err(format!("larger than {max} bytes")));
        }
        Ok(bytes.to_vec())
    }
}

fn located(mut e: AwsError, bucket: &str, key: &str) -> AwsError {
    e.message = format!("s3://{bucket}/{key}: {}", e.message);
    e
}
