//! The one marker system: a marker says that a piece of work succeeded on this instance with
//! this config. It is written only after that success, atomically and 0600, under
//! `STATE/markers/<instance-id>/`, so a run killed at any point leaves none for the work it
//! did not finish, and a re-run does that work. Two grains, one layout:
//!
//! - **Phase markers**, `<phase>-<hash of the phase's table>.json`, written by the runner after
//!   each phase succeeds: when it converged and with which actions. They skip nothing: every
//!   phase reads the node's real state, which no marker can vouch for (a mount gone after a
//!   reboot, the fixed IP moved by another node, a package removed by hand, a tag edited).
//! - **Part markers**, `<phase>/<part>.json`, for the parts whose result the node cannot show:
//!   a pip run and a source build (install). `part` carries the hash of everything that
//!   changes the part's result; a part with its marker is done and is skipped, by `plan` too.

use crate::state::{config_hash, StateDir, StateError};
use crate::status::now_rfc3339;
use emrboot_config::{Config, PhaseName};
use emrboot_os::atomic;
use std::path::PathBuf;

impl StateDir {
    fn markers(&self, instance_id: &str) -> PathBuf {
        self.path.join("markers").join(instance_id)
    }

    fn marker_path(&self, instance_id: &str, phase: PhaseName, config: &Config) -> PathBuf {
        let name = format!("{}-{}.json", phase.as_str(), config_hash(config, phase));
        self.markers(instance_id).join(name)
    }

    fn part_path(&self, instance_id: &str, phase: PhaseName, part: &str) -> PathBuf {
        self.markers(instance_id)
            .join(phase.as_str())
            .join(format!("{part}.json"))
    }

    /// The marker of a phase that succeeded on this instance with this config, if any.
    pub fn marker(&self, instance_id: &str, phase: PhaseName, config: &Config) -> Option<PathBuf> {
        let p = self.marker_path(instance_id, phase, config);
        p.is_file().then_some(p)
    }

    /// Written by the runner, only after the phase succeeded.
    pub fn write_marker(
        &self,
        instance_id: &str,
        phase: PhaseName,
        config: &Config,
        body: &serde_json::Value,
    ) -> Result<(), StateError> {
        let p = self.marker_path(instance_id, phase, config);
        Ok(atomic::write(&p, body.to_string().as_bytes(), 0o600)?)
    }

    /// Whether `part` of `phase` finished on this instance (its marker exists).
    pub fn part_done(&self, instance_id: &str, phase: PhaseName, part: &str) -> bool {
        self.part_path(instance_id, phase, part).is_file()
    }

    /// Written by the phase, only after the part succeeded.
    pub fn write_part_marker(
        &self,
        instance_id: &str,
        phase: PhaseName,
        part: &str,
    ) -> Result<(), StateError> {
        let p = self.part_path(instance_id, phase, part);
        let body = serde_json::json!({"part": part, "finished_at": now_rfc3339()});
        Ok(atomic::write(&p, body.to_string().as_bytes(), 0o600)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn markers_are_keyed_by_instance_and_config() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path());
        let a = emrboot_config::parse("c", "[install]\ntimezone = \"UTC\"\n").unwrap();
        let b = emrboot_config::parse("c", "[install]\ntimezone = \"Asia/Seoul\"\n").unwrap();
        s.write_marker("i-1", PhaseName::Install, &a, &serde_json::json!({}))
            .unwrap();
        assert!(s.marker("i-1", PhaseName::Install, &a).is_some());
        assert!(s.marker("i-2", PhaseName::Install, &a).is_none());
        assert!(s.marker("i-1", PhaseName::Install, &b).is_none());
        let p = s.marker("i-1", PhaseName::Install, &a).unwrap();
        assert_eq!(mode(&p), 0o600);
    }

    #[test]
    fn part_markers_are_keyed_by_instance_phase_and_part_and_sit_beside_the_phase_markers() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::new(d.path());
        assert!(!s.part_done("i-1", PhaseName::Install, "pip-00ff"));
        s.write_part_marker("i-1", PhaseName::Install, "pip-00ff")
            .unwrap();
        assert!(s.part_done("i-1", PhaseName::Install, "pip-00ff"));
        assert!(!s.part_done("i-2", PhaseName::Install, "pip-00ff"));
        assert!(!s.part_done("i-1", PhaseName::Install, "pip-11ee"));
        assert!(!s.part_done("i-1", PhaseName::Tag, "pip-00ff"));
        let p = d.path().join("markers/i-1/install/pip-00ff.json");
        assert_eq!(mode(&p), 0o600);
        let body: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(body["part"], "pip-00ff");
    }
}
