//! What the per-boot phases (efs-mount, ip-takeover) leave so that a reboot re-applies them:
//! a kept copy of emrboot in the state dir and the systemd unit that runs it at boot.

use anyhow::Context;
use emrboot_os::atomic;
use emrboot_runner::Ctx;
use std::path::PathBuf;

/// The unit as shipped in systemd/ (for the RPM, with /usr/bin/emrboot).
const UNIT_TEMPLATE: &str = include_str!("../../../systemd/emrboot-boot.service");
pub const UNIT_NAME: &str = "emrboot-boot.service";
const UNIT_DIR: &str = "/etc/systemd/system";

/// The copy of emrboot that the shutdown action and the boot unit exec: where EMR downloaded
/// the bootstrap action is not promised to last, and neither may need S3 to start.
pub fn kept_binary(ctx: &Ctx) -> PathBuf {
    ctx.state.path.join("bin").join("emrboot")
}

/// Copies this binary to `kept_binary` unless the copy is already identical and root's.
/// A hard link only when the binary is root's (the RPM's): EMR downloads the bootstrap action
/// as `hadoop`, and a link to that file would let `hadoop` rewrite what root runs at boot and at
/// shutdown.
pub fn ensure_kept_binary(ctx: &Ctx, dry_run: bool) -> anyhow::Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let kept = kept_binary(ctx);
    let owner = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.uid()).ok();
    let root_owned = |p: &std::path::Path| owner(p) == Some(0);
    if atomic::same_contents(&ctx.self_exe, &kept) && root_owned(&kept) {
        return Ok(None);
    }
    if !dry_run {
        let keep = if root_owned(&ctx.self_exe) {
            atomic::link_or_copy(&ctx.self_exe, &kept, 0o755)
        } else {
            atomic::copy(&ctx.self_exe, &kept, 0o755)
        };
        keep.with_context(|| format!("keep a copy of {}", ctx.self_exe.display()))?;
    }
    Ok(Some(format!(
        "keep {} as {}",
        ctx.self_exe.display(),
        kept.display()
    )))
}

/// The unit text for this node: the kept binary and this state dir in place of the shipped
/// unit's /usr/bin/emrboot and /var/lib/emrboot.
pub fn unit_text(ctx: &Ctx) -> String {
    let exe = kept_binary(ctx).display().to_string();
    let state = ctx.state.path.display().to_string();
    UNIT_TEMPLATE
        .lines()
        .map(|line| {
            // ExecStart takes quoted words; ConditionPathExists takes the rest of the line.
            let quote = if line.starts_with("ExecStart=") {
                systemd_quote
            } else {
                systemd_escape
            };
            substitute(
                line,
                &[
                    ("/usr/bin/emrboot", quote(&exe)),
                    ("/var/lib/emrboot", quote(&state)),
                ],
            )
        })
        .map(|l| l + "\n")
        .collect()
}

/// Replaces each needle in one left-to-right pass, so a replacement is never searched again.
fn substitute(text: &str, pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some((at, needle, with)) = pairs
        .iter()
        .filter_map(|(n, w)| rest.find(n).map(|at| (at, *n, w)))
        .min_by_key(|(at, _, _)| *at)
    {
        out.push_str(&rest[..at]);
        out.push_str(with);
        rest = &rest[at + needle.len()..];
    }
    out.push_str(rest);
    out
}

/// `%` is a specifier in unit files.
fn systemd_escape(s: &str) -> String {
    s.replace('%', "%%")
}

/// A double-quoted word for ExecStart, where systemd also expands `$VAR`.
fn systemd_quote(s: &str) -> String {
    let inner = systemd_escape(s)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('$', "$$");
    format!("\"{inner}\"")
}

/// Installs and enables the boot unit (file plus the multi-user.target.wants link that
/// `systemctl enable` would make), under the node's root.
pub fn ensure_boot_unit(ctx: &Ctx, dry_run: bool) -> anyhow::Result<Vec<String>> {
    let mut actions = Vec::new();
    actions.extend(ensure_kept_binary(ctx, dry_run)?);
    let unit = ctx.root.join(UNIT_DIR).join(UNIT_NAME);
    let text = unit_text(ctx);
    if std::fs::read_to_string(&unit).map_or(true, |t| t != text) {
        if !dry_run {
            atomic::write(&unit, text.as_bytes(), 0o644)?;
        }
        actions.push(format!("write {UNIT_DIR}/{UNIT_NAME}"));
    }
    let link = ctx
        .root
        .join(UNIT_DIR)
        .join("multi-user.target.wants")
        .join(UNIT_NAME);
    let target = PathBuf::from(UNIT_DIR).join(UNIT_NAME);
    if std::fs::read_link(&link).map_or(true, |t| t != target) {
        if !dry_run {
            atomic::symlink(&target, &link)?;
        }
        actions.push(format!("enable {UNIT_NAME} (multi-user.target.wants)"));
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_is_one_pass() {
        let pairs = [("/var/lib/emrboot", "/x/var/lib/emrboot-blue".to_string())];
        assert_eq!(
            substitute("a /var/lib/emrboot b", &pairs),
            "a /x/var/lib/emrboot-blue b"
        );
    }

    #[test]
    fn exec_words_are_quoted_for_systemd() {
        assert_eq!(systemd_quote("/a b/c\"d%"), "\"/a b/c\\\"d%%\"");
    }
}
