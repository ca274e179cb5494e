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

    /// A small object read whole into memory, refused past `max` bytes.
    pub async fn get_small(&self, bucket: &str, key: &str, max: u64) -> Result<Vec<u8>, AwsError> {
        let err = |message: String| AwsError {
            call: "s3:GetObject",
            code: None,
            message: format!("s3://{bucket}/{key}: {message}"),
        };
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                let mut e = AwsError::new("s3:GetObject", e);
                e.message = format!("s3://{bucket}/{key}: {}", e.message);
                e
            })?;
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
