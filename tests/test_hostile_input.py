"""Hostile input: every file emrboot reads from the node, broken in every way we could think of.

The config file (through `validate FILE`, `run --config FILE` and `plan --config FILE`) and each
EMR info file (instance.json, extraInstanceData.json, job-flow.json, through `role` and `run`):
truncated at several offsets, 100 MB (sparse, and 100 MB of valid-looking content), not UTF-8,
with NUL bytes, nested 100000 deep, empty, a directory, a FIFO nobody writes to, unreadable.

Each must end with exit 2 and a message naming the file, without a panic, within a wide bound,
and with nothing changed on the node (no status, no marker, the scratch root and the instance's
tags as they were). Every emrboot here runs under a 2 GiB address-space limit: refusing a file
must not need more memory than that (and the test must not starve the machine).

Cases already in test_role.py (empty, half-truncated, non-UTF-8, 100 MB sparse info files
through `role`) and test_validate.py (non-UTF-8 value through `validate`) are not repeated.
"""
import os
import resource
from pathlib import Path

import pytest

import bench
from helpers import assert_no_crash, offline_env, run_bounded, snapshot
from test_role import bench_info

BOUND = 60  # seconds: a wide bound for refusing any file
# Nothing here should take more than milliseconds; a FIFO nobody writes to blocks a reader for
# ever, so a run on one is given 10 s before the test calls it hung (and kills it).
FIFO_BOUND = 10
MEM_LIMIT = 2 << 30  # RLIMIT_AS for every emrboot below
SIZE = 100 * 1024 * 1024
DEPTH = 100_000
# Root without the capabilities that let it read any file: how a root test sees "permission denied".
NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search",
          "--inh-caps=-dac_override,-dac_read_search")

# A config that is safe to run on the bench node: if emrboot took a broken copy of it for
# valid, the run would change the scratch root (the time zone) and moto (the tags), and the test
# would see it.
CONFIG = """# hostile-input tests: a config that is safe to run on the bench node
[install]
timezone = "Asia/Seoul"

[tags]
name_suffix = "role"
[tags.set]
Project = "HOSTILE-INPUT"
"Cost Center" = "emrboot-tests"
"""
# Cut right after each of these: every cut leaves invalid TOML (an open string, key or header).
CONFIG_CUTS = {"header": "[ins", "no-value": "timezone =", "zone": 'timezone = "Asia/Se',
               "suffix": 'name_suffix = "ro', "quoted-key": '"Cost Ce', "tag-value": 'Project = "HOSTILE-IN'}
INFO_FILES = ("instance.json", "extraInstanceData.json", "job-flow.json")
INFO_KIND = "ha-master-primary"  # a master whose info dir holds all three files


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))


# -- the 100 MB files, made once -----------------------------------------------------------------

def _write_repeated(path, head, unit, tail, size=SIZE):
    with open(path, "wb") as f:
        f.write(head)
        chunk = unit * ((1 << 20) // len(unit))
        written = len(head)
        while written < size:
            f.write(chunk)
            written += len(chunk)
        f.write(tail)


@pytest.fixture(scope="session")
def big_files(tmp_path_factory):
    """Files of 100 MB of valid-looking content, made on first use and shared (hard-linked into
    place; emrboot only reads them)."""
    d = tmp_path_factory.mktemp("big")
    made = {}
    recipes = {
        # TOML: a tag value of 100 MB; a package list of 17 million entries.
        "toml-string": (b'[tags]\nname_suffix = "role"\n[tags.set]\nProject = "', b"A", b'"\n'),
        "toml-array": (b'[install]\ntimezone = "Asia/Seoul"\npackages = [', b'"jq", ', b'"jq"]\n'),
        # JSON: an info object whose last field is a 100 MB string, or a 100 MB array.
        "json-string": (b'{"isMaster": true, "instanceGroupId": "ig-2XQ29JGCTKLBL", "pad": "', b"A", b'"}\n'),
        "json-array": (b'{"isMaster": true, "instanceGroupId": "ig-2XQ29JGCTKLBL", "pad": [', b"0, ", b"0]}\n"),
    }

    def get(name):
        if name not in made:
            made[name] = d / name
            _write_repeated(made[name], *recipes[name])
        return made[name]

    return get


# -- how each file is broken -------------------------------------------------------------------

def _bytes(data):
    return lambda path, valid, big: path.write_bytes(data(valid))


def _sparse(path, valid, big):
    with open(path, "wb") as f:
        f.truncate(SIZE)  # holes only: no disk used


def _link(name):
    def make(path, valid, big):
        os.link(big(name), path)
    return make


def _directory(path, valid, big):
    path.mkdir()
    (path / "inside").write_bytes(valid)


def _fifo(path, valid, big):
    os.mkfifo(path)


def _unreadable(path, valid, big):
    path.write_bytes(valid)
    path.chmod(0)


def _cut_after(needle):
    def data(valid):
        text = valid.decode()
        return text[: text.index(needle) + len(needle)].encode()
    return data


def _nul_in_string(valid):
    """A NUL byte inside the first quoted string."""
    at = valid.index(b'"', valid.index(b'"') + 1)  # the first string's closing quote
    return valid[:at] + b"\0" + valid[at:]


COMMON = {
    "empty": _bytes(lambda v: b""),
    "sparse-100MB": _sparse,
    "utf16": _bytes(lambda v: v.decode().encode("utf-16")),
    "nul-in-string": _bytes(_nul_in_string),
    "nul-first": _bytes(lambda v: b"\0" + v),
    "directory": _directory,
    "fifo": _fifo,
    "unreadable": _unreadable,
}

CONFIG_BREAKS = {
    **{f"cut-in-{name}": _bytes(_cut_after(needle)) for name, needle in CONFIG_CUTS.items()},
    **COMMON,
    "huge-string-100MB": _link("toml-string"),
    "huge-array-100MB": _link("toml-array"),
    "latin1-in-comment": _bytes(lambda v: v.replace(b"# hostile-input", b"# hostile-input caf\xe9", 1)),
    "latin1-in-value": _bytes(lambda v: v.replace(b"Asia/Seoul", b"Asia/S\xe9oul", 1)),
    "nul-in-comment": _bytes(lambda v: v.replace(b"# hostile", b"# hos\0tile", 1)),
    "deep-arrays": _bytes(lambda v: b"[install]\npackages = " + b"[" * DEPTH + b"\n"),
    "deep-inline-tables": _bytes(lambda v: b"[install]\npackages = " + b"{a = " * DEPTH + b"\n"),
    "deep-balanced": _bytes(lambda v: b"[install]\npackages = " + b"[" * DEPTH + b"]" * DEPTH + b"\n"),
}

INFO_BREAKS = {
    **{f"cut-at-{name}": _bytes(cut) for name, cut in (
        ("1", lambda v: v[:1]), ("quarter", lambda v: v[: len(v) // 4]),
        ("two-thirds", lambda v: v[: 2 * len(v) // 3]), ("end-2", lambda v: v[:-2]))},
    **COMMON,
    "huge-string-100MB": _link("json-string"),
    "huge-array-100MB": _link("json-array"),
    "latin1-in-value": _bytes(lambda v: v.replace(b'"', b'"\xe9', 1)),
    "deep-arrays": _bytes(lambda v: b'{"isMaster": true, "x": ' + b"[" * DEPTH + b"\n"),
    "deep-objects": _bytes(lambda v: b'{"isMaster": true, "x": ' + b'{"a": ' * DEPTH + b"\n"),
    "deep-balanced": _bytes(lambda v: b"[" * DEPTH + b"]" * DEPTH + b"\n"),
}
# Already covered through `role` by test_role.py::test_malformed_file_is_an_error_naming_it.
ROLE_COVERED = {"empty", "sparse-100MB", "latin1-in-value"}
# Already covered through `validate` by test_validate.py::test_non_utf8_file.
VALIDATE_COVERED = {"latin1-in-value"}


def break_file(how, path, valid, big):
    breaks = CONFIG_BREAKS if path.suffix == ".toml" else INFO_BREAKS
    breaks[how](path, valid, big)
    return path


# -- running emrboot on a broken file --------------------------------------------------------------

def run_on(how, argv, env):
    prefix = NO_DAC if how == "unreadable" else ()
    timeout = FIFO_BOUND if how == "fifo" else BOUND
    cp = run_bounded(argv, env, timeout=timeout, prefix=prefix, preexec_fn=limit_memory, what=how)
    assert_no_crash(cp)
    return cp


def assert_refused(cp, path, how):
    text = cp.stdout + cp.stderr
    assert cp.returncode == 2, f"{how}: exit {cp.returncode}, expected 2\n--- stdout\n{cp.stdout}\n--- stderr\n{cp.stderr}"
    assert str(path) in text, f"{how}: the message does not name {path}:\n{text}"


class NodeState:
    """What a run could change on the node: the state dir, the scratch root, the instance's tags
    in moto."""

    def __init__(self, n, root, ec2, instance_id):
        self.n, self.root, self.ec2, self.instance_id = n, root, ec2, instance_id
        self.before = self.now()

    def now(self):
        tags = self.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [self.instance_id]}])["Tags"]
        return {"state": snapshot(self.n.state_dir), "root": snapshot(self.root),
                "tags": sorted((t["Key"], t["Value"]) for t in tags)}

    def assert_unchanged(self):
        assert not (self.n.state_dir / "status.json").exists(), "a status was written"
        assert not (self.n.state_dir / "markers").exists(), "markers were written"
        after = self.now()
        for what in self.before:
            assert after[what] == self.before[what], f"the {what} changed"
        cp = self.n.run("status", "--json")
        assert_no_crash(cp)
        assert cp.returncode == 1, f"status after a refused run: exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"


@pytest.fixture
def master(node, aws, moto, scratch_root):
    """The seeded master (all three info files) on the scratch root, and a NodeState."""
    n = node(INFO_KIND, extra_env={"EMRBOOT_ROOT": str(scratch_root)})
    ec2 = bench._clients(moto.url, bench.REGION)[0]
    return n, NodeState(n, scratch_root, ec2, aws["master"]["instance_id"])


# -- the config file ---------------------------------------------------------------------------------

CONFIG_CASES = [(cmd, how) for how in CONFIG_BREAKS for cmd in ("validate", "run", "plan")
                if not (cmd == "validate" and how in VALIDATE_COVERED)]


@pytest.mark.parametrize("cmd,how", CONFIG_CASES)
def test_broken_config(request, tmp_path, big_files, cmd, how):
    path = break_file(how, tmp_path / "emrboot.toml", CONFIG.encode(), big_files)
    if cmd == "validate":
        env = offline_env(tmp_path)
        cp = run_on(how, ["validate", path], env)
        assert_refused(cp, path, how)
        assert not Path(env["EMRBOOT_STATE_DIR"]).exists()
        return
    n, state = request.getfixturevalue("master")
    cp = run_on(how, [cmd, "--config", path], n.env)
    assert_refused(cp, path, how)
    state.assert_unchanged()


def test_the_config_fixture_is_valid_and_runs(master, tmp_path, scratch_root):
    """The control: the unbroken config is valid, and a run of it changes the node (so the
    `unchanged` checks above would see a run that went ahead)."""
    n, state = master
    path = tmp_path / "emrboot.toml"
    path.write_text(CONFIG)
    cp = run_on("valid", ["validate", path], offline_env(tmp_path))
    assert (cp.returncode, cp.stdout.strip()) == (0, f"{path}: valid"), cp.stdout + cp.stderr
    cp = run_on("valid", ["run", "--config", path], n.env)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert os.readlink(scratch_root / "etc/localtime") == "/usr/share/zoneinfo/Asia/Seoul"
    assert state.now()["tags"] != state.before["tags"]


# -- the EMR info files ---------------------------------------------------------------------------

INFO_CASES = [(cmd, name, how) for name in INFO_FILES for how in INFO_BREAKS for cmd in ("role", "run")
              if not (cmd == "role" and how in ROLE_COVERED)]


def offline_info(tmp_path):
    return bench_info(tmp_path, INFO_KIND)


@pytest.mark.parametrize("cmd,name,how", INFO_CASES)
def test_broken_info_file(request, tmp_path, big_files, cmd, name, how):
    if cmd == "role":
        info, env = offline_info(tmp_path), offline_env(tmp_path)
        argv = ["role", "--info-dir", info]
    else:
        n, state = request.getfixturevalue("master")
        info, env = n.info_dir, n.env
        cfg = tmp_path / "emrboot.toml"
        cfg.write_text(CONFIG)
        argv = ["run", "--config", cfg]
    path = info / name
    assert path.is_file(), f"the {INFO_KIND} fixture has no {name}"
    valid = path.read_bytes()
    path.unlink()
    break_file(how, path, valid, big_files)
    cp = run_on(how, argv, env)
    assert_refused(cp, path, how)
    if cmd == "role":
        assert cp.stdout.strip() == "", "no role may be printed"
    else:
        state.assert_unchanged()


def test_the_info_fixture_gives_the_role(tmp_path):
    """The control for the info cases: the unbroken files give MASTER offline."""
    cp = run_on("valid", ["role", "--info-dir", offline_info(tmp_path)], offline_env(tmp_path))
    assert (cp.returncode, cp.stdout.strip()) == (0, "MASTER"), cp.stdout + cp.stderr
