"""[[install.source]] with [install.cache]: a synthetic tarball served over loopback http, built on
one node (cache miss: download, sha256 check, build, install to DESTDIR, copy into the node root,
upload the staged tree to moto S3) and unpacked on the next (cache hit: no download of the
source, no build step, same files and bytes).

Every build and post step appends a line to a marks file outside the node roots, so the tests see
which steps ran on which node. A counting proxy (tests/bench/countproxy.py) sits between emrboot
and moto so the tests see which S3 objects were read and written. Nodes are fresh scratch roots
and state dirs from the `node` fixture (EMRBOOT_ROOT), never this machine's /usr.
"""
import io
import os
import re
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

import bench
import helpers
from helpers import assert_no_crash, phase, plan_lines, status_json
from install_kit import (CachedObjects, FileServer, make_demo_tarball, make_wheel, s3_client, sha256_bytes,
                         sha256_file, tree)

PREFIX = CachedObjects.CACHE_PREFIX
KEY_RE = re.compile(r"^build-cache/demo-[^/]+\.tar\.gz$")


class SourceBench(CachedObjects):
    """The tarball on a loopback http server, a counting proxy in front of moto, the marks dir."""

    KEY_RE = KEY_RE

    def __init__(self, tmp_path, moto, aws, node):
        self.tmp, self.moto, self.aws, self._node = tmp_path, moto, aws, node
        self.marks = tmp_path / "marks"
        self.marks.mkdir()
        self.www = FileServer(tmp_path / "www")
        self.tarball = make_demo_tarball(self.www.dir / "demo-1.0.tar.gz")
        self.sha256 = sha256_file(self.tarball)
        self.url = f"{self.www.url}/demo-1.0.tar.gz"
        self.proxy = None
        try:
            self.proxy = bench.start_countproxy(moto.url, tmp_path / "countproxy")
        except BaseException:
            self.www.stop()
            raise
        self.s3 = s3_client(moto.url)
        self.bucket = aws["bucket"]
        self.cache_url = f"s3://{self.bucket}/{PREFIX}"

    def close(self):
        try:
            self.www.stop()
        finally:
            if self.proxy:
                self.proxy.stop()

    def node(self, kind="master-ig", root=None):
        env = {"AWS_ENDPOINT_URL": self.proxy.url}
        if root is not None:
            env["EMRBOOT_ROOT"] = str(root)
        n = self._node(kind, extra_env=env)
        n.root = Path(n.env["EMRBOOT_ROOT"])
        return n

    def steps(self, extra_build=()):
        m = self.marks
        build = ["./build.sh", f'echo "build $EMRBOOT_ROOT $(pwd)" >> {m}/build.log', *extra_build]
        install = ['echo "$DESTDIR" >> ' + f"{m}/destdir.log",
                   'mkdir -p "$DESTDIR/usr/local/share/demo" "$DESTDIR/usr/local/bin"',
                   'cp demo.out README data/words.txt "$DESTDIR/usr/local/share/demo/"',
                   'cp demo "$DESTDIR/usr/local/bin/demo"',
                   'ln -s demo.out "$DESTDIR/usr/local/share/demo/current"']
        post = [f'echo "post $EMRBOOT_ROOT $(pwd)" >> {m}/post.log']
        return build, install, post

    def config(self, sha256=None, url=None, cache=True, extra_build=(), build=None, post=None, timeout=120,
               install_extra="", name="emrboot.toml"):
        b, i, p = self.steps(extra_build)
        b = b if build is None else build
        p = p if post is None else post
        arr = lambda xs: "[" + ", ".join(f"'{x}'" for x in xs) + "]"  # noqa: E731 - TOML literal strings
        text = (f"[install]\nallow_http = true\n{install_extra}\n"
                f'[[install.source]]\nname = "demo"\nurl = "{url or self.url}"\n'
                f'sha256 = "{sha256 or self.sha256}"\n'
                f"build = {arr(b)}\ninstall = {arr(i)}\npost = {arr(p)}\nstep_timeout_secs = {timeout}\n")
        if cache:
            text += f'\n[install.cache]\ns3 = "{self.cache_url}"\n'
        path = self.tmp / name
        path.write_text(text)
        return path

    def run(self, n, cfg, expect=0, timeout=300):
        cp = n.run("run", "--config", cfg, "--only", "install", timeout=timeout)
        assert_no_crash(cp)
        if expect is not None:
            assert cp.returncode == expect, f"exit {cp.returncode}, expected {expect}\n{cp.stdout}\n{cp.stderr}"
        return cp

    def plan(self, n, cfg):
        cp = n.run("plan", "--config", cfg)
        assert_no_crash(cp)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        return plan_lines(cp.stdout)[1]["install"]

    def lines(self, name):
        p = self.marks / name
        return p.read_text().splitlines() if p.exists() else []

    def tarball_gets(self):
        return len(self.www.gets("/demo-1.0.tar.gz"))

    def cache_writes(self):
        return [c for c in self.proxy.calls()
                if c["method"] in ("PUT", "POST") and c["path"].startswith(f"/{self.bucket}/{PREFIX}")]

    def cache_reads(self):
        return [c for c in self.proxy.calls()
                if c["method"] == "GET" and c["path"].startswith(f"/{self.bucket}/{PREFIX}")]


@pytest.fixture
def src(tmp_path, moto, aws, imds, node):
    b = SourceBench(tmp_path, moto, aws, node)
    yield b
    b.close()


def archive_names(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
        return sorted({m.name.lstrip("./").rstrip("/") for m in t.getmembers()} - {""})


def assert_demo_installed(root):
    share = root / "usr/local/share/demo"
    assert (share / "demo.out").read_text() == "demo 1.0 built\n"
    assert (share / "README").is_file()
    assert (share / "words.txt").read_text().splitlines()[-1] == "word1999"
    assert os.readlink(share / "current") == "demo.out"
    demo = root / "usr/local/bin/demo"
    assert os.stat(demo).st_mode & 0o111, "the executable bit was lost"
    assert demo.read_text().endswith("echo hello from demo\n")


def build_on_a(src):
    """Node A builds (cache miss) and uploads. Returns (node, config, key)."""
    a = src.node("master-ig")
    cfg = src.config()
    src.run(a, cfg)
    key, _ = src.only_object()
    return a, cfg, key


# -- miss, then hit --------------------------------------------------------------------------------

def test_first_node_builds_and_uploads_second_node_unpacks(src):
    a = src.node("master-ig")
    cfg = src.config()
    plan = src.plan(a, cfg)
    # `- source demo: cache miss: download URL, check sha256, build, upload s3://...`; details of
    # each item (the steps, in brackets) may be added.
    miss = re.compile(rf"^     - source demo: cache miss: download {re.escape(src.url)}, check sha256, build\b.*, "
                      rf"upload {re.escape(src.cache_url)}demo-[^/\s]+\.tar\.gz$")
    assert any(miss.match(ln) for ln in plan), "\n".join(plan)
    assert src.objects() == {} and src.lines("build.log") == [], "plan changed something"
    planned = planned_install(a, cfg)

    src.run(a, cfg)
    assert_demo_installed(a.root)
    build = src.lines("build.log")
    assert len(build) == 1, build
    assert build[0].startswith(f"build {a.root} ") and build[0].endswith("/demo-1.0"), \
        f"build steps run in the unpacked top-level dir with EMRBOOT_ROOT set: {build[0]!r}"
    destdir = src.lines("destdir.log")
    assert destdir and all(d and d != str(a.root) for d in destdir), f"DESTDIR must be a staging dir: {destdir}"
    assert src.lines("post.log") == [f"post {a.root} {a.root}"], "post runs in the node root with EMRBOOT_ROOT"
    assert src.tarball_gets() == 1
    inst = phase(status_json(a)[1], "install")
    assert inst["outcome"] == "changed", inst
    assert inst["actions"] == planned, f"plan listed {planned}, the run did {inst['actions']}"

    key, head = src.only_object()
    body = src.body(key)
    assert head["Metadata"].get("sha256") == sha256_bytes(body), head["Metadata"]
    names = archive_names(body)
    for f in ("usr/local/share/demo/demo.out", "usr/local/share/demo/current", "usr/local/bin/demo"):
        assert f in names, names
    assert not any(n.startswith("etc") for n in names), f"only the staged tree is archived: {names}"
    assert len(src.cache_writes()) >= 1

    # Node B: a hit.
    b = src.node("core-ig")
    plan = src.plan(b, cfg)
    assert f"     - source demo: cache hit s3://{src.bucket}/{key}: unpack and run post" in plan, "\n".join(plan)
    planned = planned_install(b, cfg)
    src.proxy.clear()
    src.run(b, cfg)
    assert src.lines("build.log") == build, "a cache hit ran a build step"
    assert src.tarball_gets() == 1, "a cache hit downloaded the source"
    assert tree(b.root / "usr/local") == tree(a.root / "usr/local")
    assert_demo_installed(b.root)
    assert src.lines("post.log") == [f"post {a.root} {a.root}", f"post {b.root} {b.root}"]
    assert src.cache_reads(), "the hit did not read the cache object"
    assert src.cache_writes() == [], "a hit uploaded to the cache"
    assert src.objects()[key]["ETag"] == head["ETag"]
    inst = phase(status_json(b)[1], "install")
    assert inst["outcome"] == "changed", inst
    assert any("cache hit" in x for x in inst["actions"]), inst
    assert inst["actions"] == planned, f"plan listed {planned}, the run did {inst['actions']}"
    assert planned_install(b, cfg) == [], "plan on the converged node is not empty"


def planned_install(n, cfg):
    """install's actions in `plan --json`, [] when it would change nothing."""
    rc, doc = helpers.plan_json(n, "plan", "--config", cfg)
    assert rc == 0, doc
    return helpers.planned_actions(doc).get("install", [])


def test_rerun_on_the_building_node_does_nothing(src):
    a, cfg, key = build_on_a(src)
    etag = src.objects()[key]["ETag"]
    src.proxy.clear()
    src.run(a, cfg)
    inst = phase(status_json(a)[1], "install")
    assert inst["outcome"] == "unchanged", inst
    assert not inst.get("actions"), inst
    assert len(src.lines("build.log")) == 1 and len(src.lines("post.log")) == 1
    assert src.tarball_gets() == 1
    assert src.cache_reads() == [] and src.cache_writes() == [], src.proxy.calls()
    assert src.objects()[key]["ETag"] == etag
    assert_demo_installed(a.root)


# -- checksums ---------------------------------------------------------------------------------------

def test_wrong_sha256_fails_before_anything_runs(src):
    a = src.node("master-ig")
    wrong = sha256_bytes(b"not the tarball")
    cp = src.run(a, src.config(sha256=wrong), expect=1)
    text = cp.stdout + cp.stderr
    assert src.url in text and wrong in text and src.sha256 in text, \
        f"the error must name the URL, the expected and the actual sha256:\n{text}"
    assert src.lines("build.log") == [] and src.lines("destdir.log") == [] and src.lines("post.log") == []
    assert not (a.root / "usr").exists(), helpers.snapshot(a.root / "usr")
    assert src.objects() == {}
    inst = phase(status_json(a)[1], "install")
    assert inst["outcome"] == "failed", inst
    assert src.sha256 in inst.get("error", "") or src.url in inst.get("error", ""), inst


def test_truncated_cache_object_falls_back_to_a_build_and_is_replaced(src):
    a, cfg, key = build_on_a(src)
    good = src.body(key)
    meta = src.s3.head_object(Bucket=src.bucket, Key=key)["Metadata"]
    src.s3.put_object(Bucket=src.bucket, Key=key, Body=good[: len(good) // 2], Metadata=meta)
    assert src.s3.head_object(Bucket=src.bucket, Key=key)["ContentLength"] == len(good) // 2

    c = src.node("core-ig")
    src.run(c, cfg)
    assert len(src.lines("build.log")) == 2, "node C should have built from source"
    assert src.tarball_gets() == 2
    assert tree(c.root / "usr/local") == tree(a.root / "usr/local")
    assert_demo_installed(c.root)
    key2, head = src.only_object()
    assert key2 == key
    body = src.body(key)
    assert head["ContentLength"] > len(good) // 2
    assert head["Metadata"].get("sha256") == sha256_bytes(body), "metadata does not match the new object"
    assert archive_names(body) == archive_names(good)


def test_cache_object_with_wrong_metadata_is_not_unpacked(src):
    """Same size, wrong checksum kept with it: detected, rebuilt, replaced."""
    a, cfg, key = build_on_a(src)
    good = src.body(key)
    src.s3.put_object(Bucket=src.bucket, Key=key, Body=good, Metadata={"sha256": sha256_bytes(b"other")})
    c = src.node("core-ig")
    src.run(c, cfg)
    assert len(src.lines("build.log")) == 2
    assert_demo_installed(c.root)
    head = src.s3.head_object(Bucket=src.bucket, Key=key)
    assert head["Metadata"].get("sha256") == sha256_bytes(src.body(key))


def test_two_nodes_racing_to_upload_both_succeed(src):
    """Both miss (the build sleeps a little so that their runs overlap) and both upload: the
    last upload wins, and the object stays consistent with its checksum."""
    cfg = src.config(extra_build=["sleep 1"])
    a, b = src.node("master-ig"), src.node("core-ig")
    exe = str(bench.emrboot_bin())
    procs = [subprocess.Popen([exe, "run", "--config", str(cfg), "--only", "install"], env=n.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
             for n in (a, b)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, f"exit {p.returncode}\n{out}\n{err}"
    assert len(src.lines("build.log")) in (1, 2)
    assert_demo_installed(a.root)
    assert tree(b.root / "usr/local") == tree(a.root / "usr/local")
    key, head = src.only_object()
    body = src.body(key)
    assert head["Metadata"].get("sha256") == sha256_bytes(body)
    assert "usr/local/share/demo/demo.out" in archive_names(body)


# -- the cache key ---------------------------------------------------------------------------------

def test_another_os_release_is_another_cache_entry(src, tmp_path):
    a, cfg, key = build_on_a(src)
    root = tmp_path / "al2023-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('NAME="Amazon Linux"\nID="amzn"\nVERSION_ID="2023"\n')
    b = src.node("core-ig", root=root)
    src.run(b, cfg)
    assert len(src.lines("build.log")) == 2, "a node with another OS must not unpack this build"
    assert len(src.objects()) == 2, sorted(src.objects())
    assert_demo_installed(root)


def test_changed_build_steps_are_another_cache_entry(src):
    a, cfg, key = build_on_a(src)
    b = src.node("core-ig")
    src.run(b, src.config(extra_build=["true"], name="changed.toml"))
    assert len(src.lines("build.log")) == 2
    assert len(src.objects()) == 2, sorted(src.objects())


# -- steps --------------------------------------------------------------------------------------------

def test_a_failing_build_step_installs_and_uploads_nothing(src):
    a = src.node("master-ig")
    cp = src.run(a, src.config(extra_build=["exit 3"]), expect=1)
    assert "exit 3" in cp.stderr, cp.stderr
    assert len(src.lines("build.log")) == 1
    assert src.lines("destdir.log") == [] and src.lines("post.log") == []
    assert not (a.root / "usr").exists()
    assert src.objects() == {}
    assert phase(status_json(a)[1], "install")["outcome"] == "failed"


def test_a_step_over_its_timeout_is_stopped_and_fails(src):
    a = src.node("master-ig")
    sleeper = ["sleep", "1379"]  # an argv no other process on the machine has
    # `; true` keeps sh from exec'ing sleep: the sleep is a grandchild of emrboot, as a compiler
    # under make would be, so killing only the direct child would leave it running.
    cp = src.run(a, src.config(build=["./build.sh", " ".join(sleeper) + "; true"], timeout=2), expect=1)
    try:
        assert "time" in cp.stderr.lower(), f"the error should say the step timed out:\n{cp.stderr}"
        assert "sleep 1379" in cp.stderr, cp.stderr
        assert src.objects() == {} and not (a.root / "usr").exists()
        # The step's process (a child of sh -c) must not outlive the run. Allow the kill a moment.
        left = bench.pids_with_argv(sleeper)
        for _ in range(50):
            if not left:
                break
            time.sleep(0.1)
            left = bench.pids_with_argv(sleeper)
        assert left == [], f"the timed-out step's process is still running: {left}"
    finally:
        for pid in bench.pids_with_argv(sleeper):
            try:
                os.kill(pid, 9)
            except OSError:
                pass


# -- sources from S3, without a cache ---------------------------------------------------------------

def test_source_from_s3_without_a_cache(src):
    s3_url = f"s3://{src.bucket}/sources/demo-1.0.tar.gz"
    src.s3.put_object(Bucket=src.bucket, Key="sources/demo-1.0.tar.gz", Body=src.tarball.read_bytes())
    a = src.node("master-ig")
    cfg = src.config(url=s3_url, cache=False)
    plan = src.plan(a, cfg)
    hits = [ln for ln in plan if ln.startswith("     - source demo: ")]
    shape = re.compile(rf"^     - source demo: (cache miss: )?download {re.escape(s3_url)}, check sha256, build\b.*, install\b")
    assert len(hits) == 1 and shape.match(hits[0]), "\n".join(plan)
    assert "upload" not in hits[0]
    src.run(a, cfg)
    assert_demo_installed(a.root)
    assert src.tarball_gets() == 0
    assert src.objects() == {}, "no [install.cache]: nothing uploaded"
    # A marker makes the re-run skip it, cache or not.
    src.run(a, cfg)
    assert len(src.lines("build.log")) == 1
    assert phase(status_json(a)[1], "install")["outcome"] == "unchanged"


# -- order inside the install phase --------------------------------------------------------------------

def test_pip_then_sources_then_time_zone(src, tmp_path):
    """A post step proves that pip already ran and the time zone is not set yet."""
    root = helpers.make_root(tmp_path / "ordered-root")
    wheels, target = tmp_path / "wheels", tmp_path / "pip-target"
    make_wheel(wheels, "ebtestpkg", "0.1")
    req = tmp_path / "requirements.txt"
    req.write_text(f"--no-index\n--find-links {wheels}\nebtestpkg==0.1\n")
    _, _, post = src.steps()
    post = [*post, f"test -f {target}/ebtestpkg/__init__.py", 'test ! -e "$EMRBOOT_ROOT/etc/localtime"']
    cfg = src.config(post=post, install_extra=(
        f'timezone = "Asia/Seoul"\n[install.pip]\nrequirements = "{req}"\ntarget = "{target}"\n'))
    a = src.node("master-ig", root=root)
    a.env["PIP_CONFIG_FILE"] = os.devnull
    src.run(a, cfg)
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Asia/Seoul"
    assert (target / "ebtestpkg/__init__.py").is_file()
    assert_demo_installed(root)


def test_plan_leaves_a_dead_runs_work_dir_and_run_sweeps_it(src):
    """plan changes nothing, not even debris: a killed run's work dir is swept by the next run."""
    import subprocess
    n = src.node()
    cfg = src.config(cache=False)
    p = subprocess.Popen(["true"])
    p.wait()  # its pid is now a dead run's
    work = n.state_dir / "install" / f"work-demo-{p.pid}"
    (work / "tree").mkdir(parents=True)
    src.plan(n, cfg)
    assert work.is_dir(), "plan deleted a work dir"
    src.run(n, cfg)
    assert not work.exists(), "run left the dead run's work dir"
