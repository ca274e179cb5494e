use crate::cli::Global;
use crate::exit::{CmdResult, OK};
use emrboot_aws::sdk::Budget;
use emrboot_aws::Aws;
use emrboot_node::Imds;
use std::sync::Arc;

/// Prints MASTER, CORE or TASK. Reads only the info files unless they cannot tell.
pub async fn role(g: &Global) -> CmdResult {
    let info = crate::node::load_info(g.info_dir.clone())?;
    let imds = Arc::new(Imds::from_env());
    let aws = Aws::new(imds.clone(), Budget::Bootstrap);
    let found = crate::node::find_role(&info, imds.as_ref(), &aws, None).await?;
    tracing::debug!(source = %found.source, "role");
    println!("{}", found.role);
    Ok(OK)
}
