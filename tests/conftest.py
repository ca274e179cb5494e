"""Fixtures of the test bench (tests/bench/bench.py): moto, the IMDS emulator, emrboot nodes.

Run from the repo root after tests/bench/setup.sh:  .bench/venv/bin/pytest tests
"""
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
import bench  # noqa: E402
from node import EmrbootNode  # noqa: E402


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """One moto server for the whole session (a bench.Proc: .url, .port, .stop())."""
    proc = bench.start_moto(tmp_path_factory.mktemp("moto"))
    yield proc
    proc.stop()


@pytest.fixture
def aws(moto):
    """moto reset and seeded afresh for this test: the facts dict of bench.seed()."""
    status = bench.http("POST", moto.url + "/moto-api/reset")[0]
    assert status == 200, f"moto reset answered {status}"
    return bench.seed(moto.url)


@pytest.fixture
def imds(moto, aws, tmp_path_factory):
    """The IMDS emulator (bench.Imds), impersonating the seeded master; stopped after the test."""
    proc = bench.start_imds(moto.url, aws["master"]["instance_id"], tmp_path_factory.mktemp("imds"))
    yield proc
    try:
        if proc.alive():
            proc.clear_faults()
    finally:
        proc.stop()


class Node(EmrbootNode):
    """One emrboot node: its info/state dirs and environment, on the host (bench/node.py)."""

    default_timeout = 60

    def __init__(self, root, kind, env):
        self.dir = root
        self.kind = kind
        self.label = kind
        self.info_dir = root / "info"
        self.state_dir = root / "state"
        self.log_file = Path(env["EMRBOOT_LOG_FILE"])
        self.shutdown_actions_dir = Path(env["EMRBOOT_SHUTDOWN_ACTIONS_DIR"])
        self.env = env


@pytest.fixture
def node(moto, aws, imds, tmp_path):
    """Factory: node(kind="master-ig", impersonate=True, extra_env=None) -> Node.

    Writes the info files of KIND for the seeded cluster. With impersonate (the default), the
    `imds` fixture is switched to the seeded instance that plays that role (master for master-ig and
    ha-*, else core), so only one node's view is live at a time.
    """
    count = 0

    def make(kind="master-ig", impersonate=True, extra_env=None):
        nonlocal count
        count += 1
        root = tmp_path / f"node{count}-{kind}"
        bench.write_info_files(root / "info", kind, aws)
        (root / "state").mkdir(parents=True)
        if impersonate:
            who = "master" if bench.ROLE_OF_KIND[kind] == "Master" else "core"
            imds.impersonate(aws[who]["instance_id"])
        # Never this machine's own /etc: a scratch root unless the test brings its own.
        env_extra = {"EMRBOOT_ROOT": str(root / "root"), **(extra_env or {})}
        (root / "root" / "etc").mkdir(parents=True)
        return Node(root, kind, bench.node_env(moto, imds, root / "info", root / "state", env_extra))

    return make


@pytest.fixture
def scratch_root(tmp_path):
    """A scratch node root for `--root`/EMRBOOT_ROOT: ROOT/etc and a few zones under
    ROOT/usr/share/zoneinfo (copied from the host, or fake TZif files if it has none)."""
    import helpers

    return helpers.make_root(tmp_path / "root")


@pytest.fixture
def netbench(moto, aws, tmp_path):
    """The seeded cluster on a real network (tests/bench/netns.py): a `lan` namespace with
    bridge br0 and a client address, and master + core namespaces whose ens5 carries the
    ENI's MAC and primary IP. Each node has its own IMDS emulator (impersonating it) and its own
    counting proxy in front of moto, both reachable inside its namespace at the same
    127.0.0.1 ports as on the host. Everything is torn down after the test, even on failure.

    Returns a netns.NetBench: .master/.core (NetNode: .ns .env .info_dir .state_dir .fs_root
    .shutdown_actions_dir .log_file .facts .run() .sh() .addresses() .nat_rules() .nat_has()
    .actions() .calls() .clear_calls() .write_info()), .lan_ns, .client_ip, .facts, .fixed_ip,
    .reserved_eni, .run_in(), .popen_in(), .ec2, .eni_ips(), .enis(), .instance_tags(),
    .create_eni().
    """
    import netns

    nb = netns.NetBench.create(moto, aws, tmp_path / "netbench")
    yield nb
    nb.close()


def _chroot_node(tmp_path, name, tarball_of, moto, imds, aws):
    """A chroot.ChrootNode on a fresh copy of the tree TARBALL_OF() makes (cached in .bench/):
    when that is impossible the test fails and says why. Every mount is undone after the test,
    even on failure."""
    import chroot

    try:
        ch = chroot.Chroot.create(tmp_path / name, tarball=tarball_of())
    except chroot.ChrootError as e:
        pytest.fail(f"cannot make the {name} chroot: {e}", pytrace=False)
    try:
        try:
            n = chroot.ChrootNode(ch, moto, imds, aws)
        except chroot.ChrootError as e:
            pytest.fail(str(e), pytrace=False)
        yield n
    finally:
        ch.close()
    assert not chroot.mounts_under(tmp_path), "a mount was left behind"


@pytest.fixture
def debian_node(moto, aws, imds, tmp_path):
    """A real Debian node (tests/chroot.py): a fresh bookworm minbase chroot with emrboot at
    /usr/local/bin/emrboot and the seeded master's info files; a chroot.ChrootNode (.root,
    .chroot, .env, .run(*args), .sh(script), .write(path, text), .log_file). The minbase
    tarball is made once with debootstrap (cached in .bench/)."""
    import chroot

    yield from _chroot_node(tmp_path, "debian", chroot.ensure_tarball, moto, imds, aws)


@pytest.fixture
def al2023_node(moto, aws, imds, tmp_path):
    """An Amazon Linux 2023 stand-in node (tests/al2023.py): Debian's dnf 4.14 and rpm 4.18 in a
    chroot set up like AL2023, one local file:// repo of tiny rpms; otherwise as debian_node."""
    import al2023

    yield from _chroot_node(tmp_path, "al2023", al2023.ensure_tarball, moto, imds, aws)


@pytest.fixture
def vmkit(tmp_path, request):
    """The VM bench (tests/vm/vm.py): Debian's kernel in QEMU (TCG) against nfs-ganesha on
    loopback. Gives a vm.VmKit: .export (a tmp dir served as `/` by .ganesha, a started
    vm.Ganesha on .nfs_port), .kernel, .build(script, binary=None, files=None, **kw) ->
    initramfs, .run(initramfs, imds_port=None, timeout=120) -> vm.VmResult (.console, .exit),
    .boot(script, ...) = build + run. Ganesha is stopped after the test, even on failure.

    Skipped, with a message saying so, only where qemu-system-x86_64 is missing (the machine
    cannot run the VM bench at all); a missing kernel cache is an error (run tests/vm/setup.sh).
    """
    vm_dir = str(Path(__file__).resolve().parent / "vm")
    if vm_dir not in sys.path:
        sys.path.insert(0, vm_dir)
    import vm

    if not vm.qemu_binary():
        msg = (f"SKIPPED VM test: {vm.QEMU} is not installed, this machine cannot run QEMU "
               "(tests/vm/setup.sh installs qemu-system-x86)")
        print(msg)
        plugins = request.config.pluginmanager
        reporter, capman = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
        if reporter is not None and capman is not None:  # shown even with -q and output capture
            with capman.global_and_fixture_disabled():
                reporter.ensure_newline()
                reporter.write_line(msg)
        pytest.skip(msg)
    try:
        kit = vm.VmKit(tmp_path / "vmkit")
    except vm.VmkitUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield kit
    finally:
        kit.close()
