//! Works out the node: its info files, its role (files first, then the EC2 tag), its instance id.

use crate::exit::Exit;
use emrboot_node::{role, InfoDirs, NodeInfo, RoleFinding};
use emrboot_runner::Node;
use std::path::PathBuf;

pub fn load_info(info_dir: Option<PathBuf>) -> Result<NodeInfo, Exit> {
    NodeInfo::load(&InfoDirs::new(info_dir)).map_err(Exit::invalid)
}

/// The role; only when the files cannot tell does it ask IMDS and EC2 for the tag.
pub async fn find_role(
    info: &NodeInfo,
    imds: &dyn emrboot_node::Metadata,
    aws: &emrboot_aws::Aws,
    instance_id: Option<&str>,
) -> Result<RoleFinding, Exit> {
    if let Some(found) = role::from_files(info).map_err(Exit::invalid)? {
        return Ok(found);
    }
    let id = match instance_id {
        Some(id) => id.to_string(),
        None => imds
            .instance_id()
            .await
            .map_err(|e| Exit::invalid(format!("cannot tell this node's role: {e}")))?,
    };
    let ec2 = aws.ec2().await.map_err(Exit::invalid)?;
    let tags = emrboot_aws::Ec2::instance_tags(&ec2, &id)
        .await
        .map_err(|e| Exit::invalid(format!("cannot tell this node's role: {e}")))?;
    role::from_tag(tags.get(role::ROLE_TAG).map(String::as_str), &id).map_err(Exit::invalid)
}

pub async fn resolve(
    info: NodeInfo,
    imds: &dyn emrboot_node::Metadata,
    aws: &emrboot_aws::Aws,
) -> Result<Node, Exit> {
    let instance_id = imds
        .instance_id()
        .await
        .map_err(|e| Exit::invalid(format!("cannot learn the instance id: {e}")))?;
    // It names a directory in the state dir; take nothing but an instance id.
    let id_ok = instance_id
        .strip_prefix("i-")
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
    if !id_ok {
        return Err(Exit::invalid(format!(
            "IMDS instance-id {instance_id:?} is not an instance id"
        )));
    }
    let found = find_role(&info, imds, aws, Some(&instance_id)).await?;
    tracing::info!(role = %found.role, source = %found.source, instance = %instance_id, "node");
    Ok(Node {
        role: found.role,
        role_source: found.source,
        instance_id,
        info,
    })
}
