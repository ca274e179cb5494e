//! EFS: the mount target of a file system in this instance's AZ, for when its DNS name does
//! not resolve (a VPC without DNS hostnames, a resolver that is not up yet).

use crate::AwsError;
use std::net::Ipv4Addr;

/// DescribeMountTargets of `fs_id`; the IP of the one in `az`, if any.
pub async fn mount_target_ip(
    client: &aws_sdk_efs::Client,
    fs_id: &str,
    az: &str,
) -> Result<Option<Ipv4Addr>, AwsError> {
    let out = client
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
