"""The VM bench itself (tests/vm/vm.py), with busybox only: a real NFSv4.1 mount of nfs-ganesha from
Debian's kernel in QEMU, and the guest reaching the IMDS emulator at 169.254.169.254."""
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vm  # noqa: E402


def check_vm(res):
    """The guest ran its script to the end (EXIT=<code> printed), within the run's timeout."""
    assert not res.timed_out, f"VM killed at its timeout\n{res}"
    assert res.exit is not None, f"the guest never printed EXIT=\n{res}"


MOUNT_SCRIPT = f"""
set -x
mkdir -p /mnt/efs
mount -t nfs4 -o {vm.EFS_MOUNT_OPTIONS} {vm.NFS_NAME}:/ /mnt/efs || exit 10
echo "MOUNTINFO: $(grep ' /mnt/efs ' /proc/self/mountinfo)"
echo "PROCMOUNTS: $(grep ' /mnt/efs ' /proc/mounts)"
grep -E '^[0-9]+ [0-9]+ [0-9:]+ / /mnt/efs [^ ]+ .*- nfs4 {vm.NFS_NAME}:/ ' /proc/self/mountinfo || exit 11
echo "FROM-HOST: $(cat /mnt/efs/from-host.txt)"
printf 'written in the guest\\n' > /mnt/efs/from-guest.txt || exit 12
mkdir -p /mnt/efs/data || exit 13
chown hadoop:hadoop /mnt/efs/data || exit 14
umount /mnt/efs || exit 15
grep -q ' /mnt/efs ' /proc/mounts && exit 16
exit 0
"""


def test_nfs41_mount_in_guest(vmkit):
    (vmkit.export / "from-host.txt").write_text("seen from the host\n")

    res = vmkit.boot(MOUNT_SCRIPT)

    check_vm(res)
    assert res.exit == 0, res
    # What the kernel mounted: an NFSv4.1 mount of efs.test:/ through the guestfwd address.
    procmounts = re.search(r"^PROCMOUNTS: (.*)$", res.console, re.M).group(1).split()
    assert procmounts[:3] == [f"{vm.NFS_NAME}:/", "/mnt/efs", "nfs4"], res
    opts = procmounts[3].split(",")
    for opt in ("vers=4.1", "rsize=1048576", "wsize=1048576", "hard", "noresvport", "timeo=600",
                "retrans=2", "proto=tcp", f"addr={vm.NFS_GUEST_IP}"):
        assert opt in opts, (opt, procmounts)
    assert f"- nfs4 {vm.NFS_NAME}:/ " in res.console
    # Both ways through the export: the host's file read in the guest, the guest's on the host.
    assert "FROM-HOST: seen from the host" in res.console
    assert (vmkit.export / "from-guest.txt").read_text() == "written in the guest\n"
    # chown by name in the guest (its /etc/passwd) lands as the numeric owner (No_Root_Squash).
    st = (vmkit.export / "data").stat()
    assert (st.st_uid, st.st_gid) == (vm.HADOOP_UID, vm.HADOOP_GID)


IMDS_SCRIPT = r"""
echo "GET-NO-TOKEN: $(wget -q -O /dev/null http://169.254.169.254/latest/meta-data/ 2>&1)"
# busybox wget cannot PUT: ask for an IMDSv2 token with a raw HTTP/1.0 request through nc.
tok=$(printf 'PUT /latest/api/token HTTP/1.0\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\r\n' \
      | nc 169.254.169.254 80 | tr -d '\r' | sed '1,/^$/d')
echo "TOKEN-LEN: ${#tok}"
echo "INSTANCE-ID: $(wget -q -O - --header "X-aws-ec2-metadata-token: $tok" http://169.254.169.254/latest/meta-data/instance-id)"
"""


def test_guest_reaches_imds_emulator(vmkit, imds, aws):
    res = vmkit.boot(IMDS_SCRIPT, imds_port=imds.port)

    check_vm(res)
    assert res.exit == 0, res
    # No token: the emulator's 401 (so the request went through guestfwd to it).
    line = re.search(r"^GET-NO-TOKEN: (.*)$", res.console, re.M).group(1)
    assert "401" in line, res
    # And the whole IMDSv2 round trip works from the guest.
    assert f"INSTANCE-ID: {aws['master']['instance_id']}\n" in res.console, res
    seen = [(r["method"], r["path"], r["status"]) for r in imds.requests()]
    assert ("GET", "/latest/meta-data/", 401) in seen, seen
    assert ("PUT", "/latest/api/token", 200) in seen, seen
    assert ("GET", "/latest/meta-data/instance-id", 200) in seen, seen
