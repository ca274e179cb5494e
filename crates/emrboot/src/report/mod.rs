//! `[report]`: each node publishes its run record to S3, and `emrboot cluster` reads them all.
//!
//! Objects: `<prefix><cluster-id>/nodes/<instance-id>.json`, one per node, rewritten as the run
//! goes (start, each phase's start and end, the end) and by release-ip. The schema is
//! `NodeRecord` (README: "The cluster view").

pub mod html;
pub mod publish;
pub mod record;
pub mod view;

pub use publish::Publisher;
pub use record::NodeRecord;

/// The S3 key prefix under which a cluster's node records live.
pub fn nodes_prefix(prefix: &str, cluster_id: &str) -> String {
    format!("{prefix}{cluster_id}/nodes/")
}
