"""The release as packaging/build.sh leaves it in dist/: two static binaries (x86_64, aarch64),
their RPMs, the systemd units. The aarch64 binary runs under qemu-user (Debian's
qemu-user-static). The rest of the suite runs the x86_64 binary from dist/ (tests/suite.sh sets
EMRBOOT_BIN), so this file checks only what is particular to the package."""
import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DIST = Path(os.environ.get("EMRBOOT_DIST", REPO / "dist"))
FIXTURES = Path("/work/shared/fixtures/emr-info")
ARCHES = ("x86_64", "aarch64")
SIZE_LIMIT = 20 * 1000 * 1000  # "under 20 MB", in decimal megabytes: the stricter reading

FILES = {
    "/usr/bin/emrboot",
    "/usr/lib/systemd/system/emrboot-boot.service",
    "/usr/lib/systemd/system/emrboot-release-ip.service",
    "/etc/emrboot",
    "/etc/emrboot/emrboot.toml.example",
    "/usr/share/man/man1/emrboot.1.gz",
    "/usr/share/bash-completion/completions/emrboot",
    "/usr/share/zsh/site-functions/_emrboot",
    "/usr/share/fish/vendor_completions.d/emrboot.fish",
    "/usr/share/doc/emrboot/README.md",
    "/var/lib/emrboot",
}


def sh(*argv, **kw):
    cp = subprocess.run(list(map(str, argv)), text=True, capture_output=True, timeout=120, **kw)
    assert cp.returncode == 0, f"{' '.join(map(str, argv))}: exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    return cp.stdout


def binary(arch):
    p = DIST / f"emrboot-{arch}"
    if not p.is_file():
        pytest.fail(f"{p} is missing: run packaging/build.sh (tests/suite.sh does)", pytrace=False)
    return p


def shipped_profile(arch):
    """False for a binary that `packaging/build.sh --check-aarch64` built unoptimised (the suite's
    aarch64): dist/NOT-FOR-RELEASE names it. Its size says nothing about the shipped binary."""
    marker = DIST / "NOT-FOR-RELEASE"
    return not (marker.is_file() and f"emrboot-{arch} " in marker.read_text())


def rpm(arch):
    found = sorted(DIST.glob(f"emrboot-*.{arch}.rpm"))
    if len(found) != 1:
        pytest.fail(f"expected one emrboot-*.{arch}.rpm in {DIST}, found {found}", pytrace=False)
    return found[0]


def run_arch(arch, *args):
    exe = binary(arch)
    argv = [str(exe), *map(str, args)] if arch == "x86_64" else ["qemu-aarch64-static", str(exe), *map(str, args)]
    return subprocess.run(argv, text=True, capture_output=True, timeout=60, env={"PATH": os.environ["PATH"]})


def head_commit():
    return sh("git", "-C", REPO, "rev-parse", "--short=12", "HEAD").strip()


@pytest.mark.parametrize("arch", ARCHES)
def test_binary_is_static_stripped_and_under_the_size_limit(arch):
    exe = binary(arch)
    desc = sh("file", "-b", exe)
    assert "statically linked" in desc or "static-pie linked" in desc, desc
    assert "not stripped" not in desc and "stripped" in desc, desc
    machine = {"x86_64": "x86-64", "aarch64": "ARM aarch64"}[arch]
    assert machine in desc, desc
    size = exe.stat().st_size
    if shipped_profile(arch):
        assert size < SIZE_LIMIT, f"{exe.name} is {size} bytes"


def test_the_x86_64_binary_is_always_the_shipped_profile():
    # The bench tests run the x86_64 binary; --check-aarch64 must never touch it.
    assert shipped_profile("x86_64")


@pytest.mark.parametrize("arch", ARCHES)
def test_version_names_the_commit_and_the_target(arch):
    cp = run_arch(arch, "--version")
    assert cp.returncode == 0, cp.stderr
    m = re.fullmatch(r"emrboot (\S+) \(commit ([0-9a-f]{12})(-dirty)?, (\S+)\)\n", cp.stdout)
    assert m, cp.stdout
    assert m.group(2) == head_commit(), cp.stdout
    assert m.group(4) == f"{arch}-unknown-linux-musl", cp.stdout


@pytest.mark.parametrize("kind,role", [("master-ig", "MASTER"), ("core-ig", "CORE")])
def test_aarch64_binary_tells_the_role_under_qemu(kind, role):
    cp = run_arch("aarch64", "--info-dir", FIXTURES / kind, "role")
    assert (cp.returncode, cp.stdout) == (0, role + "\n"), cp.stderr


def test_aarch64_binary_names_a_malformed_info_file(tmp_path):
    (tmp_path / "instance.json").write_text('{"isMaster": tru')
    cp = run_arch("aarch64", "--info-dir", tmp_path, "role")
    assert cp.returncode == 2, cp
    assert str(tmp_path / "instance.json") in cp.stderr, cp.stderr
    assert "panicked" not in cp.stderr


@pytest.mark.parametrize("arch", ARCHES)
def test_rpm_holds_exactly_the_expected_files(arch):
    listed = set(sh("rpm", "-qlp", rpm(arch)).split())
    assert listed == FILES, f"extra: {listed - FILES}, missing: {FILES - listed}"
    info = sh("rpm", "-qp", "--qf", "%{NAME} %{ARCH} %{PAYLOADCOMPRESSOR}\n", rpm(arch))
    assert info.split() == ["emrboot", arch, "xz"], info


@pytest.mark.parametrize("arch", ARCHES)
def test_rpm_installs_on_amazon_linux_2(arch):
    """AL2's rpm 4.11 reads xz payloads, not zstd; a static binary needs no libc from the node."""
    requires = sh("rpm", "-qp", "--requires", rpm(arch))
    assert "PayloadIsZstd" not in requires, requires
    assert "libc.so" not in requires and "ld-linux" not in requires, requires
    modes = sh("rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]", rpm(arch))
    assert "-rwxr-xr-x /usr/bin/emrboot" in modes, modes
    assert "drwx------ /var/lib/emrboot" in modes, modes


def test_rpm_scriptlets_enable_the_units_and_never_stop_the_release_unit():
    scripts = sh("rpm", "-qp", "--scripts", rpm("x86_64"))
    post = scripts.split("postinstall scriptlet")[1].split("scriptlet")[0]
    assert "systemctl enable emrboot-boot.service emrboot-release-ip.service" in post, scripts
    assert '"$1" -eq 1' in post, "enabled on first install only"
    preun = scripts.split("preuninstall scriptlet")[1].split("scriptlet")[0]
    assert "systemctl disable" in preun and '"$1" -eq 0' in preun, scripts
    # Stopping emrboot-release-ip.service runs its ExecStop, which releases the fixed IP.
    for word in ("stop", "restart", "--now"):
        assert not re.search(rf"systemctl\s+(\S+\s+)*{word}", scripts.replace("systemctl disable", "")), scripts


def extract(rpm_path, dest):
    dest.mkdir()
    cpio = subprocess.run(["rpm2cpio", str(rpm_path)], capture_output=True, check=True, timeout=60).stdout
    subprocess.run(["cpio", "-idm", "--quiet"], input=cpio, cwd=dest, check=True, timeout=60)
    return dest


@pytest.mark.parametrize("arch", ARCHES)
def test_rpm_contents_are_the_built_files(arch, tmp_path):
    root = extract(rpm(arch), tmp_path / "root")
    assert (root / "usr/bin/emrboot").read_bytes() == binary(arch).read_bytes()
    for unit in ("emrboot-boot.service", "emrboot-release-ip.service"):
        assert (root / "usr/lib/systemd/system" / unit).read_text() == (REPO / "systemd" / unit).read_text()
    example = root / "etc/emrboot/emrboot.toml.example"
    assert example.read_text() == (REPO / "packaging/emrboot.toml.example").read_text()
    man = gzip.decompress((root / "usr/share/man/man1/emrboot.1.gz").read_bytes()).decode()
    assert man.startswith(".ie") and ".TH emrboot 1" in man and "release\\-ip" in man, man[:300]
    bash = (root / "usr/share/bash-completion/completions/emrboot").read_text()
    assert "release-ip" in bash and "--not-on-reboot" in bash
    if arch == "x86_64":
        cp = subprocess.run([str(root / "usr/bin/emrboot"), "validate", str(example)],
                            capture_output=True, text=True, timeout=30)
        assert cp.returncode == 0, cp.stdout + cp.stderr


def test_units_pass_systemd_analyze_verify(tmp_path):
    """`systemd-analyze verify` in a root holding the RPM's files and the host's targets (it
    checks that ExecStart/ExecStop programs exist, so the units are checked as installed)."""
    root = extract(rpm("x86_64"), tmp_path / "root")
    units = root / "usr/lib/systemd/system"
    for target in Path("/usr/lib/systemd/system").glob("*.target"):
        shutil.copy(target, units / target.name)
    (root / "usr/bin/true").write_bytes(Path(shutil.which("true")).read_bytes())
    (root / "usr/bin/true").chmod(0o755)
    cp = subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                         units / "emrboot-boot.service", units / "emrboot-release-ip.service"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and cp.stderr.strip() == "", cp.stdout + cp.stderr


def unit(name):
    sections, current = {}, None
    for line in (REPO / "systemd" / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        k, v = line.split("=", 1)
        current.setdefault(k, []).append(v)
    return sections


def test_release_unit_runs_at_poweroff_after_the_network_and_is_bounded():
    u = unit("emrboot-release-ip.service")
    svc = u["Service"]
    assert svc["Type"] == ["oneshot"] and svc["RemainAfterExit"] == ["yes"]
    assert "network-online.target" in u["Unit"]["After"][0].split()
    assert "network-online.target" in u["Unit"]["Wants"][0].split()
    assert svc["ExecStop"] == ["/usr/bin/emrboot --state-dir /var/lib/emrboot release-ip --not-on-reboot"]
    stop = int(svc["TimeoutStopSec"][0].rstrip("s"))
    assert 50 < stop <= 90, "above release-ip's own 50 s bound, within systemd's default 90 s"
    assert u["Install"]["WantedBy"] == ["multi-user.target"]


def test_boot_unit_reapplies_the_per_boot_phases():
    u = unit("emrboot-boot.service")
    assert u["Service"]["Type"] == ["oneshot"]
    assert "--only efs-mount,ip-takeover" in u["Service"]["ExecStart"][0]
    assert "network-online.target" in u["Unit"]["After"][0].split()
