//! A node for the phases' unit tests: a temporary root, state dir, shutdown-actions dir and
//! info dir (a primary master), a config, and `Doors` whose outside systems each test swaps
//! for the fakes it needs. No real IMDS, AWS, netlink, iptables, package manager or mount is
//! reached through a door a test has swapped; the bench tests under `tests/` cover the real
//! peers.

use emrboot_config::Role;
use emrboot_runner::{Ctx, Doors};
use std::path::Path;
use std::sync::Arc;

pub const INSTANCE_ID: &str = "i-master";

/// Builds a fresh `Ctx` over `dir`, as each `emrboot run` builds its own; state the test keeps
/// in `dir` and in its fakes persists from one to the next.
pub fn ctx(dir: &Path, config: &str, doors: impl FnOnce(Doors) -> Doors) -> Ctx {
    for sub in ["root", "state", "actions", "info"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("emrboot"), b"the binary").unwrap();
    std::fs::write(dir.join("info/instance.json"), br#"{"isMaster": true}"#).unwrap();
    std::fs::write(
        dir.join("info/job-flow.json"),
        format!(r#"{{"jobFlowId": "j-1", "masterInstanceId": "{INSTANCE_ID}"}}"#),
    )
    .unwrap();
    let config = emrboot_config::parse("test.toml", config).unwrap();
    let info =
        emrboot_node::NodeInfo::load(&emrboot_node::InfoDirs::new(Some(dir.join("info")))).unwrap();
    let imds = Arc::new(emrboot_node::Imds::from_env());
    let aws = Arc::new(emrboot_aws::Aws::new(
        imds.clone(),
        emrboot_aws::sdk::Budget::Shutdown,
    ));
    let node = emrboot_runner::Node {
        role: Role::Master,
        role_source: "test".into(),
        instance_id: INSTANCE_ID.into(),
        info,
    };
    Ctx::new(
        config,
        node,
        emrboot_os::Root::new(dir.join("root")),
        emrboot_runner::StateDir::new(dir.join("state")),
        dir.join("actions"),
        dir.join("emrboot"),
        doors(Doors::new(imds, aws)),
    )
}
