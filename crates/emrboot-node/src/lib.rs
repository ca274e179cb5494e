//! Facts about the node emrboot runs on: its EMR role, read from EMR's info files, and what
//! IMDSv2 says about the instance and its network.

#[cfg(feature = "imds")]
pub mod imds;
pub mod info;
pub mod role;

#[cfg(feature = "imds")]
pub use imds::{Imds, ImdsError, Metadata, NetworkFacts};
pub use info::{InfoDirs, InfoError, NodeInfo};
pub use role::{RoleError, RoleFinding};
