"""efs-mount killed with SIGKILL at its two risky points, in a real kernel (the VM bench of
test_efs_vm.py: Debian's kernel in QEMU, the static emrboot, nfs-ganesha on the host), then run
again: the node must converge to exactly one mount and one managed fstab line.

One boot runs every scenario in turn (boots are the slow part); the guest prints sections that
the test parses:
  K1/R1  SIGKILL as emrboot enters rename() of its temp file onto /etc/fstab (strace fault
         injection, Debian's strace copied into the guest with its libraries), then a normal run.
  K2/R2  SIGKILL while the mount is in progress: emrboot mounts through a `mount` child process
         (crates/emrboot-os/src/mount.rs), so a `mount` earlier on PATH kills its parent emrboot
         the moment it is started, then does the real mount as an orphan (the mount lands after
         emrboot died, as when the kill comes while mount.nfs4 is waiting on the server); then a
         normal run.
  R3     a third normal run changes nothing.
"""
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vm  # noqa: E402
from test_efs_vm import ENV, MP, config, guest_files, section, static_bin  # noqa: E402,F401

STRACE = Path("/usr/bin/strace")
ORIGINAL_FSTAB = "# /etc/fstab of the guest\nproc /proc proc defaults 0 0\n"  # guest_files()
LINE = f"{vm.NFS_NAME}:/ {MP} nfs4 {vm.EFS_MOUNT_OPTIONS},_netdev,nofail 0 0"
RUN = "emrboot run --config /etc/emrboot.toml --only efs-mount"

# The `mount` that emrboot finds first on PATH during K2. Its parent is emrboot (which starts
# it in a process group of its own, so the kill does not reach it): SIGKILL emrboot, then mount
# for real. Its stdout/stderr are pipes to the dead emrboot: log to a file instead.
MOUNT_KILLER = """#!/bin/sh
exec >>/run/killer.log 2>&1
parent=$PPID
echo "killer: parent $parent ($(cat /proc/$parent/comm)), args: $*"
if [ "$(cat /proc/$parent/comm)" = emrboot ]; then
    kill -KILL "$parent"; echo "killer: kill -KILL $parent: $?"
fi
/bin/mount "$@"; rc=$?
echo "killer: mount exited $rc"
echo "$rc" > /run/killer.done
exit $rc
"""

SCRIPT = ENV + f"""
snap() {{  # the node's state after step $1
    echo "$1-FSTAB-BEGIN"; cat /etc/fstab; echo "$1-FSTAB-END"
    echo "$1-MOUNTS: $(grep -c ' {MP} ' /proc/mounts)"
    echo "$1-MOUNTINFO-BEGIN"; grep ' {MP} ' /proc/self/mountinfo; echo "$1-MOUNTINFO-END"
    echo "$1-TMP-BEGIN"
    for f in /etc/.fstab.tmp.*; do [ -e "$f" ] && {{ echo "== $f"; cat "$f"; }}; done
    echo "$1-TMP-END"
    echo "$1-STATUS-BEGIN"; emrboot status --json 2>/dev/null; echo "$1-STATUS-END"
}}
echo "STRACE: $(strace -V | head -n 1)"

echo "=== 1: SIGKILL at the rename onto /etc/fstab"
# strace 6.1's -P matches rename(2) by its first path only, the temp file, named after emrboot's
# pid: -D keeps the tracee in this sh's process (pid $$; strace traces it from a grandchild),
# so the name is known. /etc/fstab covers renameat/renameat2, which -P matches on both paths.
sh -c 'exec strace -D -f -qq -o /dev/null -P /etc/fstab -P /etc/.fstab.tmp.$$ \\
    -e inject=rename,renameat,renameat2:signal=KILL:when=1 -- {RUN}'; echo "K1=$?"
snap K1
{RUN}; echo "R1=$?"
snap R1

echo "=== 2: SIGKILL while the mount is in progress"
umount {MP}; echo "UMOUNT=$?"
cp /tmp/fstab.orig /etc/fstab
cp /vmkit/mount-killer /usr/local/sbin/mount; chmod 755 /usr/local/sbin/mount
{RUN}; echo "K2=$?"
n=0; while [ ! -e /run/killer.done ] && [ $n -lt 600 ]; do usleep 100000; n=$((n+1)); done
rm -f /usr/local/sbin/mount
echo "KILLER-BEGIN"; cat /run/killer.log; echo "KILLER-END"
snap K2
{RUN}; echo "R2=$?"
snap R2

echo "=== 3: a third run changes nothing"
cp /etc/fstab /tmp/fstab.r2; echo "R2-INODE: $(stat -c %i /etc/fstab)"
{RUN}; echo "R3=$?"
cmp /tmp/fstab.r2 /etc/fstab && echo "R3-FSTAB-IDENTICAL"
echo "R3-INODE: $(stat -c %i /etc/fstab)"
snap R3
exit 0
"""


def value(console, key):
    m = re.search(rf"^{key}[=:] ?(.*)$", console, re.M)
    assert m, f"no {key} in the console:\n{console}"
    return m.group(1).strip()


def efs_phase(status):
    (p,) = [p for p in status["phases"] if p["phase"] == "efs-mount"]
    return p


def managed_lines(fstab):
    return [ln for ln in fstab.splitlines()
            if not ln.lstrip().startswith("#") and ln.split()[1:2] == [MP]]


def check_converged(res, step):
    """After a normal run STEP: exit 0, one mount, one managed fstab line (the rest of the file
    kept byte for byte), a status of `ok`. Returns the status."""
    c = res.console
    assert value(c, step) == "0", f"{step}: the run after the kill failed\n{res}"
    assert value(c, f"{step}-MOUNTS") == "1", f"{step}: not exactly one mount of {MP}\n{res}"
    mountinfo = section(c, f"{step}-MOUNTINFO")
    assert re.search(rf" {MP} .* - nfs4 {re.escape(vm.NFS_NAME)}:/ ", mountinfo), mountinfo
    fstab = section(c, f"{step}-FSTAB")
    assert managed_lines(fstab) == [LINE], f"{step}: managed lines for {MP}:\n{fstab}"
    assert fstab == ORIGINAL_FSTAB + LINE + "\n", fstab
    status = json.loads(section(c, f"{step}-STATUS"))
    assert status["state"] == "ok" and status["exit_code"] == 0, status
    assert efs_phase(status)["outcome"] in ("changed", "unchanged"), status
    return status


def check_killed(res, step):
    """After a run killed at STEP: killed by SIGKILL (sh reports 128+9), fstab as it was before
    the run, and a status that says the run was interrupted in efs-mount."""
    c = res.console
    assert value(c, step) == "137", f"{step}: emrboot was not killed by SIGKILL\n{res}"
    fstab = section(c, f"{step}-FSTAB")
    assert fstab == ORIGINAL_FSTAB, f"{step}: fstab changed by the killed run:\n{fstab}"
    status = json.loads(section(c, f"{step}-STATUS"))
    assert status["state"] == "interrupted" and "exit_code" not in status, status
    assert efs_phase(status)["outcome"] == "running", status
    return status


@pytest.fixture
def strace_bin():
    if not STRACE.is_file() or not shutil.which("ldd"):
        pytest.fail(f"{STRACE} (and ldd) needed on the host: apt-get install strace", pytrace=False)
    return STRACE


def test_sigkill_at_the_fstab_rename_and_during_the_mount_then_reruns_converge(
        vmkit, imds, aws, static_bin, strace_bin):
    imds.impersonate(aws["core"]["instance_id"])
    files = guest_files(aws, config())
    files.update(vm.host_program(strace_bin))
    files["/tmp/fstab.orig"] = ORIGINAL_FSTAB
    files["/vmkit/mount-killer"] = (MOUNT_KILLER, 0o755)
    res = vmkit.boot(SCRIPT, binary=static_bin, files=files, imds_port=imds.port, timeout=120)
    assert not res.timed_out and res.exit == 0, res
    c = res.console
    assert value(c, "STRACE").startswith("strace -- version"), f"strace does not run in the guest\n{res}"

    # 1. Killed as it entered rename(temp, /etc/fstab): after the mount (mount comes first), so
    #    the file system is mounted; fstab is the old file whole; the temp file holds the whole
    #    new fstab (written and fsynced before the rename: that is where the kill landed).
    check_killed(res, "K1")
    assert value(c, "K1-MOUNTS") == "1", res
    tmp = section(c, "K1-TMP")
    assert re.fullmatch(r"== /etc/\.fstab\.tmp\.\d+\n" + re.escape(ORIGINAL_FSTAB + LINE + "\n"),
                        tmp), f"K1: expected the killed write's temp file, got:\n{tmp}"
    check_converged(res, "R1")

    # 2. Killed as its `mount` child started; the mount landed after emrboot had died, and the
    #    next run takes it as its own instead of mounting a second time.
    assert value(c, "UMOUNT") == "0", res
    killer = section(c, "KILLER")
    assert re.search(r"^killer: parent \d+ \(emrboot\), args: -t nfs4 ", killer, re.M), killer
    assert re.search(r"^killer: kill -KILL \d+: 0$", killer, re.M), killer
    assert "killer: mount exited 0" in killer, killer
    check_killed(res, "K2")
    assert value(c, "K2-MOUNTS") == "1", res
    check_converged(res, "R2")
    st = vmkit.export.stat()
    assert (st.st_uid, st.st_gid) == (vm.HADOOP_UID, 0), "owner not set after the kill in the mount"

    # 3. A third run: nothing to do, fstab not even rewritten.
    status = check_converged(res, "R3")
    efs = efs_phase(status)
    assert efs["outcome"] == "unchanged" and not efs.get("actions"), efs
    assert "R3-FSTAB-IDENTICAL" in c, res
    assert value(c, "R3-INODE") == value(c, "R2-INODE"), "fstab rewritten by a run with nothing to do"

    # Last, as emrboot's sweep of dead writers' temp files is new: after the runs that followed
    # the kills, no `.fstab.tmp.<pid>` is left in /etc.
    for step in ("R1", "R2", "R3"):
        assert section(c, f"{step}-TMP") == "", (
            f"{step}: temp file of the killed run left in /etc:\n{section(c, f'{step}-TMP')}")
