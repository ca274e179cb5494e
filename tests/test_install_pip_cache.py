"""[install.pip] with [install.cache]: pip's result cached in moto S3 the way source builds are.

The package index is a loopback http server over a wheels dir (pip `--find-links URL` with
`--no-index`), so the tests see whether pip asked it anything and can stop it. Two simulated
nodes are two `node` fixtures (fresh state dir and root); the config's target is one host path,
so the first node's target is moved aside before the second node runs, and the two trees are
compared. A `python3` shim records every interpreter call (a hit may ask the interpreter its
version, never run pip).
"""
import io
import os
import re
import tarfile

import pytest

from helpers import assert_no_crash, phase, plan_json, plan_lines, status_json
from install_kit import CachedObjects, FileServer, make_wheel, s3_client, sha256_bytes, shim, shim_calls, tree
from test_install_pip import real_python

PREFIX = CachedObjects.CACHE_PREFIX
KEY_RE = re.compile(r"^build-cache/pip-[0-9a-f]{16}\.tar\.gz$")


class PipCacheBench(CachedObjects):
    KEY_RE = KEY_RE

    def __init__(self, tmp_path, moto, aws, node):
        self.tmp, self._node = tmp_path, node
        self.index = FileServer(tmp_path / "index")
        make_wheel(self.index.dir, "ebtestpkg", "0.1")
        make_wheel(self.index.dir, "ebtestextra", "1.0")
        self.target = tmp_path / "site-target"
        self.calls_log = tmp_path / "python3-calls.log"
        self.bin = tmp_path / "shim-bin"
        shim(self.bin, "python3", real_python(), self.calls_log)
        self.s3 = s3_client(moto.url)
        self.bucket = aws["bucket"]
        self.cache_url = f"s3://{self.bucket}/{PREFIX}"
        req = f"--no-index\n--find-links {self.index.url}/\nebtestpkg==0.1\n"
        self.req_url = f"s3://{self.bucket}/pip/requirements.txt"
        self.s3.put_object(Bucket=self.bucket, Key="pip/requirements.txt", Body=req.encode())

    def close(self):
        self.index.stop()

    def node(self, kind="master-ig", extra_path=()):
        path = ":".join([*map(str, extra_path), str(self.bin), os.environ["PATH"]])
        return self._node(kind, extra_env={"PATH": path, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1"})

    def config(self, target=True, name="emrboot.toml"):
        text = (f'[install]\nallow_http = true\n[install.pip]\nrequirements = "{self.req_url}"\n'
                f'packages = ["ebtestextra==1.0"]\n')
        if target:
            text += f'target = "{self.target}"\n'
        text += f'[install.cache]\ns3 = "{self.cache_url}"\n'
        p = self.tmp / name
        p.write_text(text)
        return p

    def run(self, n, cfg, expect=0):
        cp = n.run("run", "--config", cfg, "--only", "install", timeout=600)
        assert_no_crash(cp)
        assert cp.returncode == expect, f"exit {cp.returncode}, expected {expect}\n{cp.stdout}\n{cp.stderr}"
        return cp

    def plan(self, n, cfg):
        cp = n.run("plan", "--config", cfg)
        assert_no_crash(cp)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        return plan_lines(cp.stdout)[1]["install"]

    def plan_json_actions(self, n, cfg):
        rc, doc = plan_json(n, "plan", "--config", cfg)
        assert rc == 0, doc
        (inst,) = [p for p in doc["phases"] if p["phase"] == "install"]
        assert all(isinstance(a, str) for a in inst["actions"]), inst
        return inst["actions"]

    def pip_calls(self):
        """Every pip or ensurepip run but the read-only probe `-m pip --version` (plan asks it, to
        list ensurepip exactly when a run would take it)."""
        return [a for _, a in shim_calls(self.calls_log)
                if a[:2] in (["-m", "pip"], ["-m", "ensurepip"]) and a != ["-m", "pip", "--version"]]

    def move_target_aside(self, name):
        aside = self.tmp / name
        self.target.rename(aside)
        return aside


@pytest.fixture
def pc(tmp_path, moto, aws, imds, node):
    b = PipCacheBench(tmp_path, moto, aws, node)
    yield b
    b.close()


def assert_installed(target):
    ns = {}
    exec((target / "ebtestpkg" / "__init__.py").read_text(), ns)
    assert ns["__version__"] == "0.1"
    assert (target / "ebtestpkg-0.1.dist-info" / "METADATA").is_file()
    assert (target / "ebtestextra" / "__init__.py").is_file()


def without_pyc(t):
    return {k: v for k, v in t.items() if not k.endswith(".pyc")}


def archive_names(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
        return sorted({m.name.lstrip("./").rstrip("/") for m in t.getmembers()} - {""})


def miss_on_a(pc):
    a = pc.node("master-ig")
    cfg = pc.config()
    pc.run(a, cfg)
    key, _ = pc.only_object()
    return a, cfg, key


def test_miss_then_hit_on_a_second_node_with_the_index_stopped(pc):
    a = pc.node("master-ig")
    cfg = pc.config()
    plan = pc.plan(a, cfg)
    miss = re.compile(r"^     - pip: cache miss: python3 -m pip install .*-r " + re.escape(pc.req_url)
                      + r" --target " + re.escape(str(pc.target)) + r" .*, upload "
                      + re.escape(pc.cache_url) + r"pip-[0-9a-f]{16}\.tar\.gz$")
    assert any(miss.match(ln) for ln in plan), "\n".join(plan)
    planned = pc.plan_json_actions(a, cfg)
    assert any(x.startswith("pip: cache miss: ") for x in planned)
    assert pc.objects() == {} and pc.pip_calls() == [], "plan changed something"

    pc.run(a, cfg)
    assert_installed(pc.target)
    assert pc.index.requests, "the miss did not use the index"
    installs = [c for c in pc.pip_calls() if c[:3] == ["-m", "pip", "install"]]
    assert len(installs) == 1, pc.pip_calls()
    staged = installs[0][installs[0].index("--target") + 1]
    assert staged != str(pc.target) and staged.startswith(str(a.state_dir)), \
        f"a miss installs into a staging dir: {installs[0]}"
    key, head = pc.only_object()
    body = pc.body(key)
    assert head["Metadata"].get("sha256") == sha256_bytes(body), head["Metadata"]
    assert "ebtestpkg/__init__.py" in archive_names(body) and "ebtestextra/__init__.py" in archive_names(body)
    inst = phase(status_json(a)[1], "install")
    assert inst["outcome"] == "changed", inst
    assert inst["actions"] == planned, f"plan listed {planned}, the run did {inst['actions']}"
    assert any(x.startswith("pip: cache miss") and x.endswith(f", upload s3://{pc.bucket}/{key}")
               for x in inst["actions"]), inst
    assert not list((a.state_dir / "install").glob("work-pip-*")), "the staging dir was left behind"

    # Node B: the index is gone; the hit needs none of it.
    a_tree = pc.move_target_aside("target-of-a")
    pc.index.stop()
    b = pc.node("core-ig")
    hit = f"     - pip: cache hit s3://{pc.bucket}/{key}: unpack into {pc.target}"
    assert hit in pc.plan(b, cfg), "\n".join(pc.plan(b, cfg))
    planned = pc.plan_json_actions(b, cfg)
    assert f"pip: cache hit s3://{pc.bucket}/{key}: unpack into {pc.target}" in planned
    before = pc.pip_calls()
    pc.run(b, cfg)
    assert pc.pip_calls() == before, f"a hit ran pip: {pc.pip_calls()[len(before):]}"
    assert_installed(pc.target)
    assert tree(pc.target) == tree(a_tree), "hit and miss left different files"
    inst = phase(status_json(b)[1], "install")
    assert inst["outcome"] == "changed", inst
    assert inst["actions"] == planned, f"plan listed {planned}, the run did {inst['actions']}"
    assert f"pip: cache hit s3://{pc.bucket}/{key}: unpack into {pc.target}" in inst["actions"], inst
    assert not any("uploaded" in x for x in inst["actions"]), inst
    assert pc.objects()[key]["ETag"] == head["ETag"], "a hit replaced the object"

    # Converged: a re-run asks nothing (no interpreter, no pip) and plans nothing.
    calls = shim_calls(pc.calls_log)
    pc.run(b, cfg)
    assert shim_calls(pc.calls_log) == calls, "the re-run ran python3"
    inst = phase(status_json(b)[1], "install")
    assert inst["outcome"] == "unchanged" and not inst.get("actions"), inst
    assert not any("pip" in ln for ln in pc.plan(b, cfg)[1:])


@pytest.mark.parametrize("damage", ["truncated", "wrong-checksum"])
def test_a_corrupt_cached_object_is_rebuilt_and_replaced(pc, damage):
    a, cfg, key = miss_on_a(pc)
    a_tree = pc.move_target_aside("target-of-a")
    good = pc.body(key)
    if damage == "truncated":
        meta = pc.s3.head_object(Bucket=pc.bucket, Key=key)["Metadata"]
        pc.s3.put_object(Bucket=pc.bucket, Key=key, Body=good[: len(good) // 2], Metadata=meta)
    else:
        pc.s3.put_object(Bucket=pc.bucket, Key=key, Body=good, Metadata={"sha256": sha256_bytes(b"other")})

    c = pc.node("core-ig")
    before = len([x for x in pc.pip_calls() if x[:3] == ["-m", "pip", "install"]])
    pc.run(c, cfg)
    after = len([x for x in pc.pip_calls() if x[:3] == ["-m", "pip", "install"]])
    assert after == before + 1, "the corrupt object was not rebuilt with pip"
    # Another pip run: the same files, the same bytes but for the .pyc files pip compiled (they
    # hold the staging dir's path and the time).
    assert sorted(tree(pc.target)) == sorted(tree(a_tree))
    assert without_pyc(tree(pc.target)) == without_pyc(tree(a_tree))
    key2, head = pc.only_object()
    assert key2 == key
    body = pc.body(key)
    assert head["Metadata"].get("sha256") == sha256_bytes(body), "the object was not replaced whole"
    assert archive_names(body) == archive_names(good)
    inst = phase(status_json(c)[1], "install")
    assert any(x.startswith("pip: cache miss") and x.endswith(f", upload s3://{pc.bucket}/{key}")
               for x in inst["actions"]), inst


def test_files_the_os_package_manager_owns_are_never_overwritten(pc, tmp_path):
    """A target among the OS's own files (as /usr/lib/python3.9/site-packages is): a file there
    that dpkg owns (a dpkg-query shim says so) makes the install fail, naming it, and nothing
    is written; miss or hit alike."""
    a, cfg, key = miss_on_a(pc)
    pc.move_target_aside("target-of-a")
    owned = pc.target / "ebtestpkg" / "__init__.py"
    owned.parent.mkdir(parents=True)
    owned.write_text("# the OS's copy\n")
    fake = tmp_path / "fake-dpkg"
    fake.mkdir()
    q = fake / "dpkg-query"
    # Claims OWNED for python3-ebtestpkg, as `dpkg-query -S` prints it; nothing else is owned.
    q.write_text("#!/bin/sh\nrc=1\nfor a in \"$@\"; do\n"
                 f"  if [ \"$a\" = '{owned}' ]; then echo \"python3-ebtestpkg: $a\"; rc=0; fi\n"
                 "done\nexit $rc\n")
    q.chmod(0o755)
    b = pc.node("core-ig", extra_path=[fake])
    cp = pc.run(b, cfg, expect=1)
    assert str(owned) in cp.stderr and "python3-ebtestpkg" in cp.stderr, cp.stderr
    assert owned.read_text() == "# the OS's copy\n"
    assert sorted(p.name for p in pc.target.iterdir()) == ["ebtestpkg"], "something was unpacked"
    inst = phase(status_json(b)[1], "install")
    assert inst["outcome"] == "failed", inst
    # Not marked done: once the file is not the OS's, the next run installs.
    owned.unlink()
    pc.run(b, cfg)
    assert_installed(pc.target)


def test_a_system_wide_install_is_not_cached_and_plan_says_so(pc):
    n = pc.node("master-ig")
    plan = pc.plan(n, pc.config(target=False, name="system.toml"))
    lines = [ln for ln in plan if "pip install" in ln]
    assert len(lines) == 1 and "not cached" in lines[0] and "cache hit" not in lines[0], "\n".join(plan)
    assert pc.objects() == {}
