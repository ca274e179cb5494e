//! EMR's node info files: instance.json, extraInstanceData.json and job-flow.json.
//!
//! EMR writes them in /mnt/var/lib/info and mirrors them in /emr/instance-controller/lib/info;
//! depending on the release a file may be in either, so each file is looked up in every dir.

use serde_json::Value;
use std::path::{Path, PathBuf};

pub const DEFAULT_DIRS: [&str; 2] = ["/mnt/var/lib/info", "/emr/instance-controller/lib/info"];
pub const INSTANCE: &str = "instance.json";
pub const EXTRA: &str = "extraInstanceData.json";
pub const JOB_FLOW: &str = "job-flow.json";

/// EMR's files are a few KB; anything past this is not one of them.
const MAX_SIZE: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("{file} not found in {}: is this an EMR node? (set --info-dir)", dirs_text(.dirs))]
    Missing {
        file: &'static str,
        dirs: Vec<PathBuf>,
    },
    #[error("{}: {reason}", .path.display())]
    Malformed { path: PathBuf, reason: String },
}

fn dirs_text(dirs: &[PathBuf]) -> String {
    let v: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
    v.join(" or ")
}

/// The dirs searched for info files, in order.
#[derive(Debug, Clone)]
pub struct InfoDirs(pub Vec<PathBuf>);

impl InfoDirs {
    /// `--info-dir` when given (then only that dir), else EMR's two locations.
    pub fn new(explicit: Option<PathBuf>) -> Self {
        match explicit {
            Some(d) => InfoDirs(vec![d]),
            None => InfoDirs(DEFAULT_DIRS.iter().map(PathBuf::from).collect()),
        }
    }

    fn find(&self, file: &str) -> Option<PathBuf> {
        self.0.iter().map(|d| d.join(file)).find(|p| p.exists())
    }
}

/// One parsed info file and where it came from.
#[derive(Debug, Clone)]
pub struct InfoFile {
    pub path: PathBuf,
    pub json: Value,
}

impl InfoFile {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.json.get(key).and_then(Value::as_str)
    }
}

/// The info files of this node. instance.json is always written by EMR; the other two depend
/// on the release and on groups versus fleets.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub instance: InfoFile,
    pub extra: Option<InfoFile>,
    pub job_flow: Option<InfoFile>,
}

impl NodeInfo {
    pub fn load(dirs: &InfoDirs) -> Result<NodeInfo, InfoError> {
        let instance = load_file(dirs, INSTANCE)?.ok_or_else(|| InfoError::Missing {
            file: INSTANCE,
            dirs: dirs.0.clone(),
        })?;
        Ok(NodeInfo {
            instance,
            extra: load_file(dirs, EXTRA)?,
            job_flow: load_file(dirs, JOB_FLOW)?,
        })
    }

    /// The primary master's instance id, where EMR names it (HA clusters have three masters).
    pub fn primary_master_id(&self) -> Option<&str> {
        self.job_flow.as_ref()?.str("masterInstanceId")
    }
}

fn load_file(dirs: &InfoDirs, file: &'static str) -> Result<Option<InfoFile>, InfoError> {
    let Some(path) = dirs.find(file) else {
        return Ok(None);
    };
    parse_file(&path).map(Some)
}

pub fn parse_file(path: &Path) -> Result<InfoFile, InfoError> {
    let bad = |reason: String| InfoError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = emrboot_config::read_limited(path, MAX_SIZE)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    parse_bytes(path, &bytes)
}

/// Parses an info file's bytes; `path` labels the errors. (The fuzz target's entry point.)
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<InfoFile, InfoError> {
    let bad = |reason: String| InfoError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() as u64 > MAX_SIZE {
        return Err(bad(format!(
            "larger than {MAX_SIZE} bytes: not an EMR info file"
        )));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("empty file".into()));
    }
    let json: Value = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("not valid JSON ({e}); truncated or corrupt?")))?;
    if !json.is_object() {
        return Err(bad("expected a JSON object".into()));
    }
    Ok(InfoFile {
        path: path.to_path_buf(),
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &[u8]) {
        std::fs::write(dir.join(name), body).unwrap();
    }

    #[test]
    fn files_are_found_in_either_dir() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write(a.path(), INSTANCE, br#"{"isMaster": true}"#);
        write(b.path(), JOB_FLOW, br#"{"masterInstanceId": "i-1"}"#);
        let dirs = InfoDirs(vec![a.path().into(), b.path().into()]);
        let info = NodeInfo::load(&dirs).unwrap();
        assert_eq!(info.primary_master_id(), Some("i-1"));
        assert!(info.extra.is_none());
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let dirs = InfoDirs(vec![d.path().into()]);
        let e = NodeInfo::load(&dirs).unwrap_err().to_string();
        assert!(e.contains("instance.json not found"), "{e}");
        for (body, why) in [
            (&b""[..], "empty"),
            (b"{\"isMaster\": tr", "not valid JSON"),
            (b"\xff\xfe{}", "not valid JSON"),
            (b"[1,2]", "JSON object"),
        ] {
            write(d.path(), INSTANCE, body);
            let e = NodeInfo::load(&dirs).unwrap_err().to_string();
            assert!(e.contains("instance.json") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn an_oversized_file_is_refused_without_reading_it_all() {
        let d = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(d.path().join(INSTANCE)).unwrap();
        f.set_len(100 << 20).unwrap();
        let e = NodeInfo::load(&InfoDirs(vec![d.path().into()])).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }
}
