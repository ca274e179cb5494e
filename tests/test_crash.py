"""Crash consistency (issue 7): `emrboot run` killed with SIGKILL at many points, then run again,
must leave the node as an uninterrupted run does: no duplicate rule, tag suffix or file, no
partial or temporary file, every phase ok, and a third run that changes nothing. Also SIGTERM and
SIGINT: the run stops at the next safe point, says so, and the next run finishes the work.

Where the kills land:
- every atomic rename of a run (strace fault injection: SIGKILL as the k-th rename is entered):
  status.json (at the start, as each phase starts, at the end), the config copy, each phase
  marker, the source build's marker, the time zone link, the kept binary, the boot unit and its
  link, the shutdown action;
- before and after each program emrboot runs (a PATH shim SIGKILLs its parent): tar of the source,
  each build/install/post step, each iptables call (so between the /32 and the first rule,
  between the two rules...);
- while the counting proxy holds an EC2 call (AssignPrivateIpAddresses, CreateTags) or the
  build cache's S3 PUT, before or after moto executed it;
- inside a build step and a post step (the step touches a marker, then sleeps).

The netbench tests reset one bench between kill points (the IP taken off the master's ENI in
moto, tags, /32, NAT rules, files, the cache) and compare each outcome with the state an
uninterrupted run left on the same bench. The efs-mount phase is left out (no NFS client in this
kernel; the VM bench covers it).
"""
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import bench
import helpers
from crash_kit import (debris, diff, files, kill_all, killed_by_sigkill, reference_argv, rename_targets,
                       shim_env, strace_argv, wait_for_process, wait_gone, write_shims)
from install_kit import make_demo_tarball, s3_client, sha256_bytes, sha256_file, tree
from net_helpers import (SEED_NAME, TAGS_SET, aws_state, config_text, first_run_outcomes, mutating, os_state,
                         toml_str)
from test_install_source import SourceBench, archive_names, assert_demo_installed
from helpers import PHASES as ALL_PHASES

PHASES = tuple(p for p in ALL_PHASES if p != "efs-mount")  # no [efs] table: skipped
DONE = ("changed", "unchanged")
CACHE = "build-cache/"
SLEEP = "1381"  # the build step's sleep: an argv ("sleep", "1381") no other process has
# Files whose content holds a time or a pid: compared by name and mode only.
VOLATILE = (r"lock", r"ip\.lock", r"status\.json", r"markers/[^/]+/[^/]+\.json", r"markers/[^/]+/install/[^/]+\.json")
SHIMMED = ("tar", "sh", "iptables")


def lines_of(text, n=25):
    return "\n".join(text.splitlines()[-n:])


class CrashBench:
    """The netbench master with a config using every phase but efs-mount: [install] (a time
    zone and a source build from S3 with an S3 build cache), [tags], [ip_takeover] (and with it
    the shutdown hook). `reference()` runs it once, uninterrupted; `reset()` puts the bench back
    as it was before; `check()` tells how a re-run after a kill differs from the reference."""

    def __init__(self, nb, tmp_path):
        self.nb, self.m, self.tmp = nb, nb.master, tmp_path
        m = self.m
        (m.fs_root / "etc").rmdir()
        helpers.make_root(m.fs_root)  # etc/ and the zones
        self.s3 = s3_client(nb.moto.url)
        self.bucket = nb.facts["bucket"]
        tarball = make_demo_tarball(tmp_path / "demo-1.0.tar.gz")
        self.s3.put_object(Bucket=self.bucket, Key="sources/demo-1.0.tar.gz", Body=tarball.read_bytes())
        install = ['mkdir -p "$DESTDIR/usr/local/share/demo" "$DESTDIR/usr/local/bin"',
                   'cp demo.out README data/words.txt "$DESTDIR/usr/local/share/demo/"',
                   'cp demo "$DESTDIR/usr/local/bin/demo"']
        arr = lambda xs: "[" + ", ".join(map(toml_str, xs)) + "]"  # noqa: E731
        post = ['test -x "$EMRBOOT_ROOT/usr/local/bin/demo"']
        self.cfg = m.root / "emrboot.toml"
        self.cfg.write_text(
            '[install]\ntimezone = "Asia/Seoul"\n'
            '[[install.source]]\nname = "demo"\n'
            f'url = "s3://{self.bucket}/sources/demo-1.0.tar.gz"\n'
            f'sha256 = "{sha256_file(tarball)}"\n'
            f'build = {arr(["./build.sh"])}\ninstall = {arr(install)}\n'
            f'post = {arr(post)}\n'
            f'[install.cache]\ns3 = "s3://{self.bucket}/{CACHE}"\n'
            + config_text(address=nb.fixed_ip, reserved_eni=nb.reserved_eni))
        self.shims = write_shims(tmp_path / "shims", {p: shutil.which(p) for p in SHIMMED})
        self.calls_log = tmp_path / "shim-calls.log"
        self.exe = str(bench.emrboot_bin())
        self.baseline = self.state()
        self.ref = None

    # -- running emrboot in the master's namespace ------------------------------------------------
    def argv(self, *prefix):
        return ["ip", "netns", "exec", self.m.ns, *prefix, self.exe, "run", "--config", self.cfg]

    def run(self, *prefix, env=None, timeout=120):
        return subprocess.run(list(map(str, self.argv(*prefix))), env=env or self.m.env, text=True,
                              capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def popen(self, env=None):
        """emrboot run in the background (`ip netns exec` execs it: the pid is emrboot's)."""
        out = open(self.tmp / "background.out", "w")
        try:
            return subprocess.Popen(list(map(str, self.argv())), env=env or self.m.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            out.close()

    def background_output(self):
        return (self.tmp / "background.out").read_text(errors="replace")

    # -- what the node holds ------------------------------------------------------------------------
    def cache(self):
        """{key: (archive entries, metadata sha256 == body sha256)} of the build cache."""
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=CACHE):
            for obj in page.get("Contents", []):
                got = self.s3.get_object(Bucket=self.bucket, Key=obj["Key"])
                body = got["Body"].read()
                out[obj["Key"]] = (archive_names(body), got["Metadata"].get("sha256") == sha256_bytes(body))
        return out

    def state(self):
        m = self.m
        return {"aws": aws_state(self.nb), "os": os_state(self.nb, m), "cache": self.cache(),
                "state_dir": files(m.state_dir, VOLATILE), "root": files(m.fs_root),
                "shutdown_actions": files(m.shutdown_actions_dir)}

    def status(self):
        cp = self.m.run("status", "--json")
        try:
            return cp.returncode, json.loads(cp.stdout)
        except json.JSONDecodeError:
            return cp.returncode, None

    def outcomes(self):
        st = self.status()[1] or {"phases": []}
        return {p["phase"]: p["outcome"] for p in st["phases"]}

    def s3_writes(self):
        return [c for c in self.m.calls() if c["service"] == "s3" and c["method"] in ("PUT", "POST", "DELETE")]

    def shim_calls(self):
        """The programs run through the shims, the pid in a build's work dir left out."""
        root = f"{self.m.root}/"
        return [re.sub(r"/work-(.+?)-\d+/", r"/work-\1-PID/", c).replace(root, "")
                for c in self.calls_log.read_text().splitlines()]

    # -- the reference and the reset ------------------------------------------------------------------
    def reference(self):
        """One uninterrupted run, traced: the renames it makes (targets, in order), the programs it
        runs (through the shims), and the state it leaves."""
        trace = self.tmp / "reference.trace"
        env = shim_env(self.m.env, self.shims, self.calls_log)
        cp = self.run(*reference_argv([], trace), env=env)
        assert cp.returncode == 0, f"the reference run failed:\n{cp.stdout}\n{cp.stderr}"
        self.renames = rename_targets(trace.read_text())
        self.calls = self.shim_calls()
        self.ref = self.state()
        outcomes = self.outcomes()
        assert {p: outcomes[p] for p in PHASES} == first_run_outcomes(PHASES), outcomes
        # What the comparisons rest on: the reference holds what an uninterrupted run must leave.
        tags = self.ref["aws"]["master_tags"]
        assert tags["Name"] == f"{SEED_NAME}-MASTER" and all(tags[k] == v for k, v in TAGS_SET.items()), tags
        assert self.nb.fixed_ip in self.ref["aws"]["enis"][self.m.eni_id]
        assert self.ref["os"]["addresses"].count(f"{self.nb.fixed_ip}/32") == 1
        assert len(self.ref["os"]["PREROUTING"]) == 1 and len(self.ref["os"]["OUTPUT"]) == 1, self.ref["os"]
        assert len(self.ref["cache"]) == 1 and all(ok for _, ok in self.ref["cache"].values()), self.ref["cache"]
        assert self.ref["root"].get("etc/localtime") == ("link", "/usr/share/zoneinfo/Asia/Seoul")
        assert self.ref["root"].get("usr/local/bin/demo", ("",))[0] == "file", self.ref["root"]
        assert debris(self.m.root) == [], debris(self.m.root)
        return self.ref

    def reset(self):
        """The bench as it was before the reference run."""
        nb, m, fixed = self.nb, self.m, self.nb.fixed_ip
        if fixed in nb.eni_ips(m.eni_id):
            nb.ec2.unassign_private_ip_addresses(NetworkInterfaceId=m.eni_id, PrivateIpAddresses=[fixed])
        nb.ec2.delete_tags(Resources=[m.instance_id], Tags=[{"Key": k} for k in TAGS_SET])
        nb.ec2.create_tags(Resources=[m.instance_id], Tags=[{"Key": "Name", "Value": SEED_NAME}])
        for key in self.cache():
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        if f"{fixed}/32" in m.addresses():
            m.sh("ip", "addr", "del", f"{fixed}/32", "dev", "ens5", check=0)
        m.sh("iptables", "-t", "nat", "-F", check=0)
        for p in m.state_dir.iterdir():
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        for p in (m.fs_root / "etc/localtime", m.fs_root / "etc/systemd", m.fs_root / "usr/local",
                  m.shutdown_actions_dir, m.log_file):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif os.path.lexists(p):
                p.unlink()
        for p in m.fs_root.joinpath("etc").iterdir():  # a killed run's temporary link
            p.unlink()
        m.proxy.clear_faults()
        m.clear_calls()
        now = self.state()
        assert now == self.baseline, "reset left: " + "; ".join(diff(self.baseline, now))

    # -- after a kill --------------------------------------------------------------------------------
    def check(self, killed="", sigkilled=True):
        """What is wrong after a killed run (KILLED: what was wrong with how it died, '' if
        nothing; SIGKILLED: `status` must then call it interrupted): a re-run must exit 0 and
        leave the reference state, no debris, every phase done; a third run must change nothing.
        Returns a list of problems (empty: converged)."""
        m, problems = self.m, []
        if killed:
            problems.append(f"the killed run: {killed}")
        rc, st = self.status()
        if sigkilled and (rc != 1 or (st is not None and st.get("state") != "interrupted")):
            problems.append(f"status after the kill: exit {rc}, state {st and st.get('state')} "
                            "(expected exit 1, interrupted)")
        again = self.run()
        if again.returncode != 0:
            return problems + [f"re-run: exit {again.returncode}\n{lines_of(again.stderr)}"]
        now = self.state()
        problems += [f"after the re-run: {d}" for d in diff(self.ref, now)]
        problems += [f"debris after the re-run: {p}" for p in debris(m.root)]
        rc, st = self.status()
        outcomes = {p["phase"]: p["outcome"] for p in (st or {"phases": []})["phases"]}
        if rc != 0 or (st or {}).get("exit_code") != 0 or any(outcomes.get(p) not in DONE for p in PHASES):
            problems.append(f"status after the re-run: exit {rc}, {outcomes}")
        m.clear_calls()
        third = self.run()
        if third.returncode != 0:
            return problems + [f"third run: exit {third.returncode}\n{lines_of(third.stderr)}"]
        if mutating(m.actions()):
            problems.append(f"third run made mutating EC2 calls: {mutating(m.actions())}")
        if self.s3_writes():
            problems.append(f"third run wrote to S3: {self.s3_writes()}")
        problems += [f"third run changed: {d}" for d in diff(now, self.state())]
        outcomes = self.outcomes()
        if any(outcomes.get(p) != "unchanged" for p in PHASES):
            problems.append(f"third run's outcomes: {outcomes}")
        return problems


@pytest.fixture
def crash(netbench, tmp_path):
    cb = CrashBench(netbench, tmp_path / "crash")
    cb.reference()
    return cb


def report(what, tried, problems):
    print(f"\n{what}: {len(tried)} kill points tried:\n  " + "\n  ".join(tried))
    assert not problems, f"{len(problems)} of {len(tried)} kill points did not converge:\n" + "\n".join(
        f"- {point}:\n    " + "\n    ".join(p.replace("\n", "\n      ") for p in probs)
        for point, probs in problems.items())


# -- SIGKILL at every rename --------------------------------------------------------------------------

def test_sigkill_at_every_atomic_rename_then_a_rerun_converges(crash):
    cb, m = crash, crash.m
    total = len(cb.renames)
    status_renames = sum(1 for p in cb.renames if p == str(m.state_dir / "status.json"))
    assert status_renames >= 2 + len(PHASES), cb.renames  # at least at the start and each phase's start
    for want in ("config.toml", "bin/emrboot", "markers/*/install/source-demo-*.json",
                 "markers/*/shutdown-hook-*.json"):
        assert any(fnmatch.fnmatch(p, f"{m.state_dir}/{want}") for p in cb.renames), (want, cb.renames)
    tried, problems = [], {}
    for k, target in enumerate(cb.renames, 1):
        point = f"rename {k}/{total} onto {os.path.relpath(target, m.root)}"
        tried.append(point)
        cb.reset()
        trace = cb.tmp / f"kill-{k}.trace"
        cp = cb.run(*strace_argv([], trace, kill_at=k))  # strace ... -- emrboot run ...
        probs = []
        why = killed_by_sigkill(cp.returncode, trace)
        if not why:
            hit = trace.read_text().splitlines()
            last = [line for line in hit if line.startswith("rename")][-1:]
            if not last or f'"{target}"' not in last[0] or not last[0].rstrip().endswith("= ?"):
                probs.append(f"killed at another rename than {target}: {last}")
        probs += cb.check(why)
        if probs:
            problems[point] = probs
    report("SIGKILL at each rename", tried, problems)


def test_a_run_killed_between_two_phases_shows_the_first_one_finished(node, tmp_path):
    """README: status.json "is rewritten as each phase starts and ends, so a killed run shows the
    phase it died in". Killed after install's marker, before tag starts, the run died in no
    phase: install must not show as interrupted."""
    n = node("master-ig")
    (n.dir / "root/etc").rmdir()
    helpers.make_root(n.dir / "root")
    cfg = tmp_path / "two-phases.toml"
    cfg.write_text('[install]\ntimezone = "Asia/Seoul"\n[tags]\nname_suffix = "role"\n')
    argv = [bench.emrboot_bin(), "run", "--config", cfg]
    trace = tmp_path / "reference.trace"
    cp = subprocess.run(reference_argv(argv, trace), env=n.env, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    renames = rename_targets(trace.read_text())
    marker = next(i for i, p in enumerate(renames, 1)
                  if fnmatch.fnmatch(p, f"{n.state_dir}/markers/*/install-*.json"))
    # the status saved as install ends comes right after its marker; kill at the rename after it
    assert renames[marker] == str(n.state_dir / "status.json"), renames
    marker += 1
    shutil.rmtree(n.state_dir)  # afresh: kill the next run just after install's marker
    n.state_dir.mkdir()
    (n.dir / "root/etc/localtime").unlink()
    trace = tmp_path / "killed.trace"
    cp = subprocess.run(strace_argv(argv, trace, kill_at=marker + 1), env=n.env, capture_output=True,
                        text=True, timeout=60)
    assert killed_by_sigkill(cp.returncode, trace) == ""
    assert list(n.state_dir.glob("markers/*/install-*.json")), "install's marker was written"
    st = helpers.status_json(n)[1]
    assert st["state"] == "interrupted", st
    install, tag = helpers.phase(st, "install"), helpers.phase(st, "tag")
    assert install["outcome"] in DONE and not install.get("error"), \
        f"install finished (its marker is there) but status shows it as {install}"
    assert tag["outcome"] == "pending", tag


# -- SIGKILL around every program emrboot runs -------------------------------------------------------

def test_sigkill_before_and_after_each_child_process_then_a_rerun_converges(crash):
    cb = crash
    calls = cb.calls
    names = [c.split()[0] for c in calls]
    assert names.count("tar") == 1 and names.count("iptables") >= 5 and names.count("sh") >= 5, calls
    points = [(k, "before") for k in range(1, len(calls) + 1)] + [(len(calls), "after")]
    tried, problems = [], {}
    for k, when in points:
        point = f"{when} child {k}/{len(calls)}: {calls[k - 1]}"
        tried.append(point)
        cb.reset()
        cp = cb.run(env=shim_env(cb.m.env, cb.shims, cb.calls_log, kill_at=k, when=when))
        probs = cb.check(killed_by_sigkill(cp.returncode))
        got = cb.shim_calls()
        if got != calls[:k]:
            probs.append(f"the killed run ran {got}, expected the first {k} of {calls}")
        if probs:
            problems[point] = probs
    report("SIGKILL around each child", tried, problems)


# -- SIGKILL while an AWS call is in flight ------------------------------------------------------------

HELD_EC2 = [("AssignPrivateIpAddresses", "before"), ("AssignPrivateIpAddresses", "after"),
            ("CreateTags", "before"), ("CreateTags", "after")]


def hold_then_kill(cb, rule, sig=signal.SIGKILL):
    """Starts a run with RULE in the master's proxy, waits until the call is held, sends SIG to
    emrboot. Returns the Popen (waited for, and the hold cleared, only when SIG is SIGKILL) and
    the held request."""
    proxy = cb.m.proxy
    proxy.faults([rule])
    p = cb.popen()
    try:
        held = proxy.wait_held(1, timeout=60)
        assert len(held) == 1, held
        os.kill(p.pid, sig)
        if sig == signal.SIGKILL:
            p.wait(30)
            # A request whose client went away is dropped by the proxy; give it a moment to notice
            deadline = time.monotonic() + 5
            while proxy.held() and time.monotonic() < deadline:
                time.sleep(0.05)
            proxy.clear_faults()
        return p, held[0]
    except BaseException:
        if p.poll() is None:
            p.kill()
            p.wait()
        raise


def test_sigkill_while_an_ec2_call_is_held_then_a_rerun_converges(crash):
    cb = crash
    tried, problems = [], {}
    for action, when in HELD_EC2:
        point = f"{action} held {when} moto ran it"
        tried.append(point)
        cb.reset()
        p, held = hold_then_kill(cb, {"service": "ec2", "action": f"^{action}$", "fault": "hold", "when": when})
        probs = [] if held["action"] == action else [f"held {held}, not {action}"]
        probs += cb.check(killed_by_sigkill(p.returncode))
        if probs:
            problems[point] = probs + [f"output of the killed run:\n{lines_of(cb.background_output(), 8)}"]
    report("SIGKILL during an EC2 call", tried, problems)


# -- SIGTERM between phases -------------------------------------------------------------------------------

def test_sigterm_while_create_tags_is_held_stops_before_ip_takeover(crash):
    """SIGTERM arrives while CreateTags waits in the proxy (before moto got it): once the call is
    released, emrboot stops at the next safe point: tag finished or interrupted, ip-takeover not
    run, exit 1, a log line naming SIGTERM. The next run finishes the work."""
    cb, m = crash, crash.m
    cb.reset()
    p, held = hold_then_kill(cb, {"service": "ec2", "action": "^CreateTags$", "fault": "hold", "when": "before"},
                             sig=signal.SIGTERM)
    try:
        assert held["action"] == "CreateTags", held
        # the handler has seen it before the call is released
        deadline = time.monotonic() + 10
        while "SIGTERM" not in cb.background_output() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        m.proxy.clear_faults()
        rc = p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = cb.background_output()
    assert rc == 1, f"exit {rc} after SIGTERM (expected 1: stopped at a safe point)\n{lines_of(out)}"
    assert "SIGTERM" in out, f"no log line says the run stopped on SIGTERM:\n{lines_of(out)}"
    outcomes = cb.outcomes()
    assert outcomes["install"] == "changed", outcomes
    assert outcomes["tag"] in ("changed", "interrupted"), outcomes
    assert outcomes["ip-takeover"] in ("interrupted", "not-run"), outcomes
    assert outcomes["shutdown-hook"] == "not-run", outcomes
    assert list(outcomes.values()).count("interrupted") == 1, outcomes
    assert "AssignPrivateIpAddresses" not in m.actions(), m.actions()
    assert f"{cb.nb.fixed_ip}/32" not in m.addresses()
    assert m.nat_rules("PREROUTING") == [] and m.nat_rules("OUTPUT") == []
    markers = sorted(f.name.rsplit("-", 1)[0] for f in (m.state_dir / "markers").rglob("*.json"))
    assert "ip-takeover" not in markers and "shutdown-hook" not in markers, markers
    assert debris(m.root) == [], debris(m.root)
    problems = cb.check(sigkilled=False)
    assert not problems, "after SIGTERM, the next run did not converge:\n" + "\n".join(problems)


# -- source builds: inside a step, during the cache upload ------------------------------------------------

@pytest.fixture
def src(tmp_path, moto, aws, imds, node):
    b = SourceBench(tmp_path, moto, aws, node)
    yield b
    b.close()
    kill_all(["sleep", SLEEP])


def gated_config(src, tags=False, trap=False):
    """A source build whose last build step and last post step each touch a marker (in-build,
    in-post) and then sleep as long as their secs file says (0 unless a test sets SLEEP).
    With TRAP, the build step's shell and a grandchild shell (which runs the sleep) each log a
    SIGTERM they get into term.log: "TERM step", "TERM grandchild"."""
    mk = src.marks
    for f in ("build-secs", "post-secs"):
        (mk / f).write_text("0")
    gate = lambda where: f"touch {mk}/in-{where} && sleep $(cat {mk}/{where}-secs)"  # noqa: E731
    build = gate("build")
    if trap:
        child = mk / "child.sh"
        child.write_text(f"#!/bin/sh\ntrap 'echo \"TERM $1\" >> {mk}/term.log; exit 143' TERM\n"
                         'sleep "$2" & wait\n')
        child.chmod(0o755)
        build = (f'trap "echo TERM step >> {mk}/term.log; exit 143" TERM; touch {mk}/in-build; '
                 f"{child} grandchild $(cat {mk}/build-secs) & wait")
    _, _, post = src.steps()
    cfg = src.config(extra_build=[build], post=[*post, gate("post")], name="gated.toml")
    if tags:
        cfg.write_text(cfg.read_text() + "\n" + config_text(ip_takeover=False))
    return cfg


def start(n, cfg, only="install"):
    """`emrboot run --only ONLY` on node N in the background; its output goes to N.dir/run.out."""
    out = open(n.dir / "run.out", "w")
    try:
        return subprocess.Popen([str(bench.emrboot_bin()), "run", "--config", str(cfg), "--only", only],
                                env=n.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        out.close()


def reference_node(src, cfg):
    """An uninterrupted run on a fresh node; the cache is emptied afterwards. Returns its node."""
    ref = src.node("master-ig")
    src.run(ref, cfg)
    assert_demo_installed(ref.root)
    key, _ = src.only_object()
    src.s3.delete_object(Bucket=src.bucket, Key=key)
    return ref


def signal_in_step(src, n, cfg, where, sig=signal.SIGKILL, only="install", linger=3):
    """Runs N until its WHERE step (build or post) sleeps, then sends SIG to emrboot and waits
    for it to end. Returns its returncode and the pids of the step's sleep still there LINGER
    seconds later (it is killed in any case)."""
    (src.marks / f"{where}-secs").write_text(SLEEP)
    (src.marks / f"in-{where}").unlink(missing_ok=True)
    p = start(n, cfg, only=only)
    try:
        wait_for_process(["sleep", SLEEP], p, 60)
        assert (src.marks / f"in-{where}").exists(), f"the sleep is not the {where} step's"
        os.kill(p.pid, sig)
        p.wait(60)
        outlived = wait_gone(["sleep", SLEEP], linger)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        kill_all(["sleep", SLEEP])
        (src.marks / f"{where}-secs").write_text("0")
    return p.returncode, outlived


def assert_converged_like(src, n, ref, cfg):
    """N, re-run after a kill, holds what REF holds: the staged install, a whole cache object,
    the source marker, no debris; a third run changes nothing and writes nothing to S3."""
    src.run(n, cfg)
    assert tree(n.root / "usr/local") == tree(ref.root / "usr/local")
    assert_demo_installed(n.root)
    key, head = src.only_object()
    body = src.body(key)
    assert head["Metadata"].get("sha256") == sha256_bytes(body), "the cache object is not whole"
    assert "usr/local/share/demo/demo.out" in archive_names(body)
    assert helpers.phase(helpers.status_json(n)[1], "install")["outcome"] in DONE
    src.proxy.clear()
    src.run(n, cfg)
    assert helpers.phase(helpers.status_json(n)[1], "install")["outcome"] == "unchanged"
    assert src.cache_writes() == [], src.cache_writes()
    assert tree(n.root / "usr/local") == tree(ref.root / "usr/local")
    # last, so that a failure here means that all of the above held
    assert debris(n.state_dir, n.root) == [], f"a killed run's leftovers stay: {debris(n.state_dir, n.root)}"
    assert sorted(p.name for p in (n.state_dir / "install").iterdir()) == \
        sorted(p.name for p in (ref.state_dir / "install").iterdir()), "the source marker, and nothing else"


@pytest.mark.parametrize("where", ["build", "post"])
def test_sigkill_inside_a_step_then_a_rerun_converges(src, where):
    cfg = gated_config(src)
    ref = reference_node(src, cfg)
    n = src.node("master-ig")
    rc, _ = signal_in_step(src, n, cfg, where)
    assert rc == -signal.SIGKILL, f"exit {rc}"
    assert helpers.status_json(n)[1]["state"] == "interrupted"
    assert src.objects() == {}, "nothing is uploaded before the post steps ran"
    assert_converged_like(src, n, ref, cfg)


def test_sigkill_inside_a_build_step_leaves_no_process_behind(src):
    """`touch M && sleep N` in sh -c: the sleep is a grandchild of emrboot. A SIGKILLed emrboot
    cannot stop it itself; nothing of the step may run on after it (PR_SET_PDEATHSIG on the
    child alone does not reach the grandchild)."""
    cfg = gated_config(src)
    n = src.node("master-ig")
    rc, outlived = signal_in_step(src, n, cfg, "build")
    assert rc == -signal.SIGKILL, f"exit {rc}"
    assert outlived == [], f"the build step's `sleep {SLEEP}` (pids {outlived}) outlived the SIGKILLed emrboot"


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_while_the_cache_upload_is_held_then_a_rerun_converges(src, when):
    cfg = gated_config(src)
    ref = reference_node(src, cfg)
    n = src.node("master-ig")
    src.proxy.faults([{"service": "s3", "method": "PUT", "path": f"^/{src.bucket}/{CACHE}",
                       "fault": "hold", "when": when, "first": 1}])
    p = start(n, cfg)
    try:
        held = src.proxy.wait_held(1, timeout=60)
        assert held[0]["method"] == "PUT" and held[0]["path"].startswith(f"/{src.bucket}/{CACHE}"), held
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        deadline = time.monotonic() + 5
        while src.proxy.held() and time.monotonic() < deadline:
            time.sleep(0.05)
        src.proxy.clear_faults()
    assert p.returncode == -signal.SIGKILL
    objs = src.objects()
    if when == "before":
        assert objs == {}, f"moto never got the PUT, yet holds {sorted(objs)}"
    else:
        (key, head), = objs.items()
        assert head["Metadata"].get("sha256") == sha256_bytes(src.body(key))
    assert_converged_like(src, n, ref, cfg)


# -- SIGTERM / SIGINT inside a build step -----------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_inside_a_build_step_interrupts_the_phase(src, sig):
    cfg = gated_config(src, tags=True, trap=True)
    n = src.node("master-ig")
    rc, outlived = signal_in_step(src, n, cfg, "build", sig, only="install,tag", linger=10)
    out = (n.dir / "run.out").read_text(errors="replace")
    name = sig.name
    assert rc == 1, f"exit {rc} after {name} (expected 1: stopped at a safe point)\n{lines_of(out)}"
    assert name in out, f"no log line says the run stopped on {name}:\n{lines_of(out)}"
    assert sorted(src.lines("term.log")) == ["TERM grandchild", "TERM step"], \
        f"SIGTERM did not reach the build step's whole process group: {src.lines('term.log')}"
    assert outlived == [], f"the build step's sleep outlived the stop: {outlived}"
    code, st = helpers.status_json(n)
    assert code == 1 and st.get("exit_code") == 1, st
    assert helpers.phase(st, "install")["outcome"] == "interrupted", st
    assert helpers.phase(st, "tag")["outcome"] == "not-run", st
    assert not list(n.state_dir.glob("markers/*/install-*.json")), "a marker for the interrupted phase"
    assert not list(n.state_dir.glob("markers/*/install/*.json")), "a marker for the interrupted build"
    assert debris(n.state_dir, n.root) == [], debris(n.state_dir, n.root)
    assert src.objects() == {}, "an interrupted build was uploaded"
    assert not (n.root / "usr").exists(), "an interrupted build was installed"

    n.run("run", "--config", cfg, "--only", "install,tag", check=0)
    assert_demo_installed(n.root)
    key, head = src.only_object()
    assert head["Metadata"].get("sha256") == sha256_bytes(src.body(key))
    st = helpers.status_json(n)[1]
    assert helpers.phase(st, "install")["outcome"] in DONE and helpers.phase(st, "tag")["outcome"] == "changed", st
