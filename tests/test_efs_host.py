"""efs-mount on the host side (the mount itself needs an NFS client, which this machine's kernel
lacks: tests/vm covers it in a real kernel). Here: the DNS fallback to the mount target in the
instance's AZ, against moto's EFS; the mount point already mounted from another source; plan
changing nothing.

The master runs in its network namespace: there the resolver in /etc/resolv.conf is unreachable
(no route), so the EFS name fails to resolve at once and no DNS query leaves the machine."""
import boto3

import bench


def efs_client(moto):
    return boto3.client("efs", endpoint_url=moto.url, region_name=bench.REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def make_fs(moto, facts):
    efs = efs_client(moto)
    fs = efs.create_file_system(CreationToken="emrboot-test")["FileSystemId"]
    mt = efs.create_mount_target(FileSystemId=fs, SubnetId=facts["subnet_id"])
    return fs, mt["IpAddress"]


def test_unresolvable_name_falls_back_to_the_mount_target_in_this_az(netbench, moto):
    nb, m = netbench, netbench.master
    fs, ip = make_fs(moto, nb.facts)
    cfg = m.root / "efs.toml"
    cfg.write_text(f'[efs]\nfile_system_id = "{fs}"\nmount_point = "/practice-efs"\n'
                   f'fstab = "/etc/fstab"\n')
    fstab = m.fs_root / "etc/fstab"
    fstab.write_text("# fstab of the node\n")
    cp = m.run("plan", "--config", cfg, check=0)
    lines = [ln.strip() for ln in cp.stdout.splitlines()]
    assert f"- wait for TCP {ip}:2049 (mount target IP: {fs}.efs.{bench.REGION}.amazonaws.com does not resolve)" in lines, cp.stdout
    assert any(ln.startswith(f"- mount -t nfs4 -o nfsvers=4.1,") and f" {ip}:/ " in ln for ln in lines), cp.stdout
    assert any(ln.startswith("- fstab /etc/fstab: ") and ln.endswith(
        f"{ip}:/ /practice-efs nfs4 nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport,_netdev,nofail 0 0")
        for ln in lines), cp.stdout
    assert "does not resolve; using the mount target" in cp.stderr, cp.stderr
    # plan changed nothing
    assert fstab.read_text() == "# fstab of the node\n"
    assert not (m.fs_root / "practice-efs").exists()


def test_no_mount_target_in_the_az_is_a_config_error(netbench, moto):
    nb, m = netbench, netbench.master
    fs = efs_client(moto).create_file_system(CreationToken="no-targets")["FileSystemId"]
    cfg = m.root / "efs.toml"
    cfg.write_text(f'[efs]\nfile_system_id = "{fs}"\nmount_point = "/practice-efs"\n')
    cp = m.run("run", "--config", cfg)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert f"{fs} has no mount target in" in cp.stderr, cp.stderr
    assert not (m.fs_root / "practice-efs").exists()


def test_a_mount_point_mounted_from_elsewhere_is_refused(node, tmp_path):
    """/proc is mounted from `proc`: asking for an NFS mount there is refused before any change.
    (The scratch root is `/` here only for the mount point: the config's fstab is a scratch file.)"""
    fstab = tmp_path / "fstab"
    fstab.write_text("# x\n")
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": "/"})
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[efs]\ndns_name = "localhost"\nmount_point = "/proc"\nfstab = "{fstab}"\n')
    cp = n.run("plan", "--config", cfg)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "/proc is already mounted from proc" in cp.stdout + cp.stderr, cp.stdout + cp.stderr
    assert fstab.read_text() == "# x\n"
