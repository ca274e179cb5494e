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
        return Node(root, kind, bench.node_env(moto, imds, root / "info", root / "state", extra_env))

    return make
