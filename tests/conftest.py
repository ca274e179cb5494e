"""Fixtures of the test bench (tests/bench/bench.py): moto, the IMDS emulator, emrboot nodes.

Run from the repo root after tests/bench/setup.sh:  .bench/venv/bin/pytest tests
"""
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
import bench  # noqa: E402


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


class Node:
    """One emrboot node: its info/state dirs and environment; .run() runs the binary."""

    def __init__(self, root, kind, env):
        self.dir = root
        self.kind = kind
        self.info_dir = root / "info"
        self.state_dir = root / "state"
        self.log_file = Path(env["EMRBOOT_LOG_FILE"])
        self.shutdown_actions_dir = Path(env["EMRBOOT_SHUTDOWN_ACTIONS_DIR"])
        self.env = env

    def run(self, *args, check=None, timeout=60, input=None):
        """Run emrboot ARGS; check=N fails the test unless the exit code is N."""
        exe = bench.emrboot_bin()
        if not exe.is_file():
            pytest.fail(f"emrboot binary not found at {exe}: build it (cargo build) or set EMRBOOT_BIN",
                        pytrace=False)
        cp = subprocess.run([str(exe), *map(str, args)], env=self.env, text=True, capture_output=True,
                            timeout=timeout, input=input,
                            stdin=None if input is not None else subprocess.DEVNULL)
        if check is not None and cp.returncode != check:
            pytest.fail(f"emrboot {' '.join(map(str, args))}: exit {cp.returncode}, expected {check}\n"
                        f"--- stdout\n{cp.stdout}\n--- stderr\n{cp.stderr}", pytrace=False)
        return cp


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
