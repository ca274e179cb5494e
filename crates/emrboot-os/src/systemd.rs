//! What systemd is doing, asked through `systemctl` (an argument vector, bounded).

use crate::command::{Cmd, CommandError};
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(5);

/// Whether a reboot (or kexec) is queued: during shutdown, systemd lists the target it is
/// heading for as a `start` job. A poweroff or halt is not a reboot.
pub async fn reboot_queued() -> Result<bool, CommandError> {
    let out = Cmd::new(["systemctl", "list-jobs", "--no-legend", "--plain"], BOUND)
        .run()
        .await?;
    Ok(reboot_in_jobs(&out.stdout))
}

/// Parses `systemctl list-jobs --no-legend --plain`: `JOB UNIT TYPE STATE` per line.
fn reboot_in_jobs(jobs: &str) -> bool {
    jobs.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        matches!(
            f.as_slice(),
            [
                _,
                "reboot.target" | "kexec.target" | "soft-reboot.target",
                "start",
                ..
            ]
        )
    })
}

#[cfg(test)]
mod tests {
    use super::reboot_in_jobs;

    #[test]
    fn a_queued_reboot_is_seen_and_a_poweroff_is_not() {
        let reboot =
            "1204 reboot.target start waiting\n1210 systemd-reboot.service start waiting\n";
        let poweroff =
            "1304 poweroff.target start waiting\n1311 emrboot-release-ip.service stop running\n";
        assert!(reboot_in_jobs(reboot));
        assert!(reboot_in_jobs("77 kexec.target start waiting\n"));
        assert!(!reboot_in_jobs(poweroff));
        assert!(!reboot_in_jobs(""));
        // a reboot.target being stopped (a cancelled reboot) is not a reboot
        assert!(!reboot_in_jobs("5 reboot.target stop waiting\n"));
    }
}
