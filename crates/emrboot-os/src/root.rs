//! The root of the node's file system. `/` on a node; a scratch directory in tests, so that no
//! test ever writes the test machine's own /etc.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Root {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Root(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Maps a path as the node sees it (`/etc/localtime`) to where it is on this host.
    pub fn join(&self, node_path: impl AsRef<Path>) -> PathBuf {
        let p = node_path.as_ref();
        self.0.join(p.strip_prefix("/").unwrap_or(p))
    }
}

impl Default for Root {
    fn default() -> Self {
        Root::new("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_paths_inside_the_root() {
        let r = Root::new("/tmp/x");
        assert_eq!(
            r.join("/etc/localtime"),
            PathBuf::from("/tmp/x/etc/localtime")
        );
        assert_eq!(
            Root::default().join("/etc/fstab"),
            PathBuf::from("/etc/fstab")
        );
    }
}
