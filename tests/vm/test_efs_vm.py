"""efs-mount end to end in a real Linux kernel: Debian's kernel in QEMU runs the static emrboot
against nfs-ganesha (NFSv4.1) on the host, with the IMDS emulator at 169.254.169.254 through
guestfwd. The guest's /etc/hosts maps the EFS name to the forwarded NFS address, as Route 53
would map it to the mount target.

Needs a static emrboot: tests/suite.sh builds target/x86_64-unknown-linux-gnu/debug/emrboot
(glibc, crt-static); EMRBOOT_STATIC_BIN overrides."""
import json
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vm  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
STATIC = Path(os.environ.get("EMRBOOT_STATIC_BIN",
                             REPO / "target" / "x86_64-unknown-linux-gnu" / "debug" / "emrboot"))
sys.path.insert(0, str(REPO / "tests" / "bench"))
import bench  # noqa: E402
from helpers import phase  # noqa: E402

MP = "/practice-efs"


def config(timeout=None):
    extra = f"timeout_secs = {timeout}\n" if timeout else ""
    return (f'[efs]\ndns_name = "{vm.NFS_NAME}"\nmount_point = "{MP}"\nowner = "hadoop:root"\n'
            f'{extra}')


def guest_files(aws, cfg_text):
    info = {}
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"efsvm-info-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    bench.write_info_files(tmp, "core-ig", aws)
    for f in tmp.glob("*.json"):
        info[f"/mnt/var/lib/info/{f.name}"] = f.read_bytes()
    info["/etc/emrboot.toml"] = cfg_text
    info["/etc/fstab"] = "# /etc/fstab of the guest\nproc /proc proc defaults 0 0\n"
    # Every EMR node has a CA bundle. (Without one, a debug build of the AWS SDK's HTTP client
    # trips a debug_assert when it builds its TLS connector, even for plain-http IMDS.)
    info["/etc/ssl/certs/ca-certificates.crt"] = Path("/etc/ssl/certs/ca-certificates.crt")
    return info


ENV = ("export AWS_REGION=ap-northeast-2 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "
       "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://169.254.169.254 AWS_ENDPOINT_URL=http://127.0.0.1:9\n"
       "mkdir -p /var/log /var/lib/emrboot\n")

RUN_TWICE = ENV + f"""
echo "PLAN0-BEGIN"; emrboot plan --config /etc/emrboot.toml --only efs-mount --json 2>/dev/null; echo "PLAN0-END"
emrboot run --config /etc/emrboot.toml --only efs-mount; echo "RUN1=$?"
echo "STATUS1-BEGIN"; emrboot status --json; echo "STATUS1-END"
echo "MOUNTINFO: $(grep ' {MP} ' /proc/self/mountinfo)"
printf 'written in the guest\\n' > {MP}/from-guest.txt || echo "WRITE FAILED"
emrboot run --config /etc/emrboot.toml --only efs-mount; echo "RUN2=$?"
echo "STATUS-BEGIN"; emrboot status --json; echo "STATUS-END"
echo "PLAN-BEGIN"; emrboot plan --config /etc/emrboot.toml --only efs-mount --json 2>/dev/null; echo "PLAN-END"
echo "FSTAB-BEGIN"; cat /etc/fstab; echo "FSTAB-END"
echo "MOUNTS: $(grep -c ' {MP} ' /proc/mounts)"
exit 0
"""


def section(console, name):
    m = re.search(rf"^{name}-BEGIN\n(.*?)^{name}-END$", console, re.S | re.M)
    assert m, f"no {name} section in the console:\n{console}"
    return m.group(1)


@pytest.fixture
def static_bin():
    if not STATIC.is_file():
        pytest.fail(f"no static emrboot at {STATIC}: tests/suite.sh builds it "
                    "(RUSTFLAGS='-C target-feature=+crt-static' cargo build --target x86_64-unknown-linux-gnu)",
                    pytrace=False)
    return STATIC


def test_efs_mount_in_a_real_kernel_then_a_second_run_skips(vmkit, imds, aws, static_bin):
    imds.impersonate(aws["core"]["instance_id"])
    res = vmkit.boot(RUN_TWICE, binary=static_bin, files=guest_files(aws, config()),
                     imds_port=imds.port, timeout=240)
    assert not res.timed_out and res.exit == 0, res
    assert "RUN1=0" in res.console, res
    # plan and run share one converge path: the first run took exactly the actions plan
    # listed on the fresh node (the chown planned as conditional, as the root's owner is
    # unknown before the mount; here it differs, so the run took it).
    planned0 = phase(json.loads(section(res.console, "PLAN0")), "efs-mount")
    done1 = phase(json.loads(section(res.console, "STATUS1")), "efs-mount")
    assert planned0["actions"] and done1["outcome"] == "changed", (planned0, done1)
    assert [a.replace(" (if the mounted root differs)", "") for a in planned0["actions"]] == \
        done1["actions"], (planned0, done1)
    # Verified where it counts: the kernel's mount table.
    assert re.search(rf"MOUNTINFO: .* {MP} .* - nfs4 {vm.NFS_NAME}:/ ", res.console), res
    # A file written in the guest is in the export on the host.
    assert (vmkit.export / "from-guest.txt").read_text() == "written in the guest\n"
    # Owner set by name on the node (hadoop is 1001 in the guest; root group 0).
    st = vmkit.export.stat()
    assert (st.st_uid, st.st_gid) == (vm.HADOOP_UID, 0)
    # The second run skips the mount: unchanged, still one mount.
    assert "RUN2=0" in res.console, res
    efs = phase(json.loads(section(res.console, "STATUS")), "efs-mount")
    assert efs["outcome"] == "unchanged", efs
    # ...and plan on the converged node lists nothing, not even a conditional chown.
    planned = phase(json.loads(section(res.console, "PLAN")), "efs-mount")
    assert (planned["result"], planned["actions"]) == ("converged", []), planned
    assert "MOUNTS: 1" in res.console, res
    # fstab: the rest kept byte for byte, one managed line.
    fstab = section(res.console, "FSTAB")
    line = (f"{vm.NFS_NAME}:/ {MP} nfs4 {vm.EFS_MOUNT_OPTIONS},_netdev,nofail 0 0")
    assert fstab == f"# /etc/fstab of the guest\nproc /proc proc defaults 0 0\n{line}\n", fstab


SERVER_DOWN = ENV + """
emrboot run --config /etc/emrboot.toml --only efs-mount; echo "RUN=$?"
echo "MOUNTS: $(grep -c ' /practice-efs ' /proc/mounts)"
echo "FSTAB-BEGIN"; cat /etc/fstab; echo "FSTAB-END"
exit 0
"""


def test_with_the_server_stopped_the_run_fails_within_its_bound(vmkit, imds, aws, static_bin):
    """QEMU's guestfwd still accepts TCP 2049 with ganesha stopped, so the mount itself must be
    bounded: 3 tries of timeout_secs each, then a clear error."""
    vmkit.ganesha.stop()
    imds.impersonate(aws["core"]["instance_id"])
    res = vmkit.boot(SERVER_DOWN, binary=static_bin, files=guest_files(aws, config(timeout=5)),
                     imds_port=imds.port, timeout=240)
    assert not res.timed_out and res.exit == 0, res
    assert "RUN=1" in res.console, res
    assert "3 tries" in res.console and f"{vm.NFS_NAME}:/" in res.console, res
    assert "MOUNTS: 0" in res.console, res
    # Nothing persisted for a mount that never happened.
    assert "practice-efs" not in section(res.console, "FSTAB"), res
