//! EFS: the mount target of a file system in this instance's AZ, for when its DNS name does
//! not resolve (a VPC without DNS hostnames, a resolver that is not up yet).

use crate::AwsError;
use async_trait::async_trait;
use std::net::Ipv4Addr;

/// The EFS calls emrboot makes, and no others; a trait so that efs-mount can be driven by a fake.
#[async_trait]
pub trait Efs: Send + Sync {
    /// DescribeMountTargets of `fs_id`; the IP of the one in `az`, if any.
    async fn mount_target_ip(&self, fs_id: &str, az: &str) -> Result<Option<Ipv4Addr>, AwsError>;
}

pub struct SdkEfs {
    client: aws_sdk_efs::Client,
}

impl SdkEfs {
    pub fn new(client: aws_sdk_efs::Client) -> Self {
        SdkEfs { client }
    }
}

#[async_trait]
impl Efs for SdkEfs {
    async fn mount_target_ip(&self, fs_id: &str, az: &str) -> Result<Option<Ipv4Addr>, AwsError> {
        let out = self
            .client
            .describe_mount_targets()
            .file_system_id(fs_id)
            .send()
            .await
            .map_err(|e| AwsError::new("efs:DescribeMountTargets", e))?;
        Ok(out
            .mount_targets()
            .iter()
            .filter(|m| m.availability_zone_name() == Some(az))
            .find_map(|m| m.ip_address()?.parse().ok()))
    }
}
