"""install.packages on the platforms EMR runs: dnf on Amazon Linux 2023, proven on a real dnf 4.14
and rpm 4.18 (tests/al2023.py: Debian's, the series AL2023 ships, in a chroot set up like AL2023,
with one local file:// repo of tiny rpms that rpmbuild made); yum 3 (Amazon Linux 2), which Debian
does not package, against a fake yum at the end of this file.

A shim at /usr/local/sbin/dnf (first on the node's PATH) records every call before it execs the real
dnf, so the tests see exactly what emrboot ran. The package database is always checked with rpm
itself (`rpm -q`), not through emrboot.
"""
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import al2023
import bench
from helpers import assert_no_crash, phase, plan_json, planned_actions, status_json
from install_kit import shim, shim_calls

CALLS = "/var/log/dnf-calls.log"  # inside the chroot
LOCK_ENV = "EMRBOOT_PKG_LOCK_WAIT_SECS"

# Every name form people write, each for a package of the local repo.
FORMS = ["emr-hello", "emr-hello-1.0", "emr-hello-1.0-1", "emr-hello.noarch", "emr-hello-1.0-1.noarch",
         "python3dist(emr-requests)", "/usr/bin/emr-tool"]


def config(*pkgs):
    return "[install]\npackages = [" + ", ".join(f'"{p}"' for p in pkgs) + "]\n"


@pytest.fixture
def al(al2023_node):
    n = al2023_node
    shim(n.chroot.path("/usr/local/sbin"), "dnf", "/usr/bin/dnf", CALLS)
    # The stand-in is AL2023-like only if dnf sees nothing but the local repo (and so no network).
    assert al2023.repolist(n) == ["emr-local"]
    assert n.chroot.run(["sh", "-c", "command -v apt-get"], env=n.env).returncode != 0
    return n


def dnf_installs(n):
    """The argv (after `dnf`) of each `dnf install` emrboot ran."""
    return [args for _, args in shim_calls(n.chroot.path(CALLS)) if "install" in args]


def run_install(n, cfg="/cfg.toml", timeout=900):
    cp = n.run("run", "--config", cfg, "--only", "install", timeout=timeout)
    assert_no_crash(cp)
    return cp


def install_status(n):
    code, st = status_json(n)
    return phase(st, "install")


def test_every_name_form_converges_and_plan_shows_the_exact_command(al):
    n = al
    n.write("/cfg.toml", config(*FORMS))
    code, doc = plan_json(n, "plan", "--config", "/cfg.toml")
    planned = planned_actions(doc)["install"]
    want = "dnf install -y --setopt=exit_on_lock=True " + " ".join(FORMS)
    assert planned == [want], planned
    assert dnf_installs(n) == [], "plan ran dnf install"

    cp = run_install(n)
    assert cp.returncode == 0, cp.stderr
    assert al2023.rpm_q(n, "emr-hello", "emr-provider") == {"emr-hello": True, "emr-provider": True}
    assert len(dnf_installs(n)) == 1, "one transaction"
    st = install_status(n)
    assert st["outcome"] == "changed" and st["actions"] == [want], st

    # Converged: each form is recognised as installed, so no dnf call and nothing planned.
    cp = run_install(n)
    assert cp.returncode == 0, cp.stderr
    assert len(dnf_installs(n)) == 1, f"a re-run called dnf: {dnf_installs(n)}"
    assert install_status(n)["outcome"] == "unchanged"
    code, doc = plan_json(n, "plan", "--config", "/cfg.toml")
    assert planned_actions(doc).get("install") is None, doc


@pytest.mark.parametrize("form", FORMS[1:])
def test_each_name_form_alone_is_seen_as_installed(al, form):
    """A package installed by another means (rpm -i, as EMR's agents do) counts for every form."""
    n = al
    for rpm in ("emr-hello-1.0-1.noarch.rpm", "emr-provider-2.0-3.noarch.rpm"):
        cp = n.chroot.run(["rpm", "-i", f"{al2023.REPO_DIR}/{rpm}"], env=n.env)
        assert cp.returncode == 0, cp.stderr
    n.write("/cfg.toml", config(form))
    code, doc = plan_json(n, "plan", "--config", "/cfg.toml")
    assert planned_actions(doc).get("install") is None, doc
    cp = run_install(n)
    assert cp.returncode == 0, cp.stderr
    assert dnf_installs(n) == []
    assert install_status(n)["outcome"] == "unchanged"


def test_a_name_no_repo_has_is_named_and_nothing_is_installed(al):
    n = al
    n.write("/cfg.toml", config("emr-hello", "no-such-pkg"))
    cp = run_install(n)
    assert cp.returncode == 1, cp.stderr
    # dnf refuses the whole transaction: say so, and name the culprit.
    assert "no enabled repository provides no-such-pkg" in cp.stderr, cp.stderr
    assert "the transaction installed nothing" in cp.stderr, cp.stderr
    assert al2023.rpm_q(n, "emr-hello") == {"emr-hello": False}
    st = install_status(n)
    assert st["outcome"] == "failed"
    assert "no enabled repository provides no-such-pkg" in st["error"], st
    assert "installed nothing" in st["error"], st


def test_a_glob_is_refused_by_validate_with_its_position(al):
    n = al
    n.write("/cfg.toml", '[install]\npackages = ["emr-hello", "emr-hel*"]\n')
    cp = n.run("validate", "/cfg.toml")
    said = cp.stdout + cp.stderr
    assert cp.returncode == 2, said
    assert "/cfg.toml:2:26:" in said and "glob" in said, said
    cp = run_install(n)
    assert cp.returncode == 2
    assert dnf_installs(n) == []


# -- the package database's locks ---------------------------------------------------------------

def rpm_lock_holder_pid(n):
    """The pid holding the node's rpm transaction lock (F_GETLK, as rpm's own lock is a POSIX
    record lock), or None."""
    import struct
    p = n.chroot.path("/var/lib/rpm/.rpm.lock")
    if not p.exists():
        return None
    with open(p, "rb") as f:
        probe = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0)
        got = fcntl.fcntl(f.fileno(), fcntl.F_GETLK, probe)
        l_type, _, _, _, pid = struct.unpack("hhqqi", got)
        return None if l_type == fcntl.F_UNLCK else pid


def wait_for(cond, what, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Holder:
    """A process in the node that holds the package database: `rpm -i emr-slow` or `dnf install
    emr-slow`, whose %pre waits for al2023.RELEASE_FILE. Released and reaped on exit."""

    def __init__(self, n, argv):
        self.n = n
        self.proc = subprocess.Popen(["chroot", str(n.root), *argv], env=n.env, text=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.pid = wait_for(lambda: rpm_lock_holder_pid(n), "the holder to take rpm's lock")

    def release(self):
        self.n.chroot.path(al2023.RELEASE_FILE).parent.mkdir(parents=True, exist_ok=True)
        self.n.chroot.path(al2023.RELEASE_FILE).write_text("")
        out, _ = self.proc.communicate(timeout=300)
        return self.proc.returncode, out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            try:
                self.release()
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def log_text(n):
    return n.log_file.read_text(errors="replace") if n.log_file.exists() else ""


@pytest.mark.parametrize("holder", [
    ["rpm", "-i", f"{al2023.REPO_DIR}/emr-slow-1.0-1.noarch.rpm"],
    ["/usr/bin/dnf", "install", "-y", "emr-slow"],  # not through the shim: not emrboot's call
], ids=["rpm-i", "dnf"])
def test_a_held_package_database_is_waited_for_then_the_install_runs(al, holder):
    n = al
    n.write("/cfg.toml", config("emr-hello"))
    with Holder(n, holder) as h:
        run = n.start("run", "--config", "/cfg.toml", "--only", "install")
        try:
            # It says it waits, and for whom, and starts no transaction meanwhile.
            wait_for(lambda: "waiting for the package lock" in log_text(n), "emrboot to say it waits")
            assert f"pid {h.pid}" in log_text(n), log_text(n)
            time.sleep(1)
            assert run.poll() is None, "emrboot did not wait for the lock"
            assert dnf_installs(n) == [], "emrboot ran dnf while the package database was held"
            code, out = h.release()
            assert code == 0, out
            stdout, stderr = run.communicate(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    assert run.returncode == 0, stderr
    assert al2023.rpm_q(n, "emr-hello", "emr-slow") == {"emr-hello": True, "emr-slow": True}
    assert install_status(n)["outcome"] == "changed"


def test_a_lock_never_released_fails_after_the_bound_naming_the_lock(al):
    """A process holding /var/lib/rpm/.rpm.lock (rpm's own kind of lock: fcntl, from the host)
    that never lets go: the run fails once the bound (here 3 s) is spent, names the lock and its
    holder, and installs nothing."""
    n = al
    n.write("/cfg.toml", config("emr-hello"))
    lock = n.chroot.path("/var/lib/rpm/.rpm.lock")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl,sys; f=open(sys.argv[1],'a'); fcntl.lockf(f, fcntl.LOCK_EX); "
                               "print('held', flush=True); sys.stdin.read()", str(lock)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        n.env[LOCK_ENV] = "3"
        cp = run_install(n, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert cp.returncode == 1, cp.stderr
    assert "/var/lib/rpm/.rpm.lock" in cp.stderr and f"pid {holder.pid}" in cp.stderr, cp.stderr
    assert "gave up after 3 s" in cp.stderr, cp.stderr
    assert dnf_installs(n) == []
    assert al2023.rpm_q(n, "emr-hello") == {"emr-hello": False}
    st = install_status(n)
    assert st["outcome"] == "failed" and ".rpm.lock" in st["error"], st


# -- yum 3 (Amazon Linux 2): a fake, since Debian does not package yum ---------------------------

FAKE_YUM = r'''#!/usr/bin/env python3
"""yum 3 as it behaves by default: skip_missing_names_on_install=True, so a name no repo has is
skipped with one line and the rest is installed, exit 0. Honours --setopt=...=False for it."""
import os, sys
db, repo = os.environ["FAKE_RPMDB"], {"emr-hello", "emr-other"}
with open(os.environ["FAKE_YUM_CALLS"], "a") as f:
    f.write("\t".join(sys.argv[1:]) + "\n")
names = [a for a in sys.argv[1:] if not a.startswith("-") and a != "install"]
strict = "--setopt=skip_missing_names_on_install=False" in sys.argv
missing = [n for n in names if n not in repo]
for n in missing:
    print(f"No package {n} available.")
if missing and strict:
    print("Error: Nothing to do" if len(missing) == len(names) else "Error: Not tolerating missing names on install, stopping.")
    sys.exit(1)
with open(db, "a") as f:
    for n in names:
        if n in repo:
            f.write(n + "\n")
sys.exit(0)
'''

FAKE_RPM = r'''#!/usr/bin/env python3
import os, sys
db = os.environ["FAKE_RPMDB"]
if sys.argv[1:2] == ["--eval"]:
    print(os.path.dirname(db)); sys.exit(0)
have = set(open(db).read().split()) if os.path.exists(db) else set()
sys.exit(0 if sys.argv[-1] in have else 1)
'''


@pytest.fixture
def yum_node(node, tmp_path):
    fakes = tmp_path / "fake-bin"
    fakes.mkdir()
    for name, text in (("yum", FAKE_YUM), ("rpm", FAKE_RPM)):
        (fakes / name).write_text(text)
        (fakes / name).chmod(0o755)
    calls = tmp_path / "yum-calls.log"
    n = node(extra_env={"PATH": f"{fakes}:/usr/bin:/bin", "FAKE_RPMDB": str(tmp_path / "rpmdb" / "installed"),
                        "FAKE_YUM_CALLS": str(calls)})
    (tmp_path / "rpmdb").mkdir()
    n.yum_calls = lambda: [ln.split("\t") for ln in calls.read_text().splitlines()] if calls.exists() else []
    n.installed = lambda: set((tmp_path / "rpmdb" / "installed").read_text().split()) \
        if (tmp_path / "rpmdb" / "installed").exists() else set()
    return n


def test_yum_is_told_not_to_skip_missing_names_and_emrboot_checks_anyway(yum_node, tmp_path):
    n = yum_node
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(config("emr-hello", "no-such-pkg"))
    cp = n.run("run", "--config", cfg, "--only", "install")
    assert_no_crash(cp)
    assert cp.returncode == 1, cp.stderr
    (argv,) = n.yum_calls()
    assert argv[:2] == ["install", "-y"]
    assert "--setopt=skip_missing_names_on_install=False" in argv and "--setopt=exit_on_lock=True" in argv
    assert "no enabled repository provides no-such-pkg" in cp.stderr, cp.stderr


def test_a_yum_that_skips_a_name_and_exits_0_still_fails_the_run(yum_node, tmp_path):
    """Even if the flag were ignored (an old yum, a yum.conf override), the database is checked."""
    n = yum_node
    wrapper = Path(n.env["PATH"].split(":")[0]) / "yum"
    # This yum drops the flag before behaving as yum 3 does by default.
    wrapper.write_text(FAKE_YUM.replace('strict = "--setopt=skip_missing_names_on_install=False" in sys.argv',
                                        "strict = False"))
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(config("emr-hello", "no-such-pkg"))
    cp = n.run("run", "--config", cfg, "--only", "install")
    assert_no_crash(cp)
    assert cp.returncode == 1, cp.stderr
    assert n.installed() == {"emr-hello"}
    assert "exited with status 0" in cp.stderr and "not installed: no-such-pkg" in cp.stderr, cp.stderr
    assert "it installed emr-hello" in cp.stderr, cp.stderr
    code, st = status_json(n)
    assert "no-such-pkg" in phase(st, "install")["error"]
    # A re-run after the name is fixed: only what is missing goes to yum.
    cfg.write_text(config("emr-hello", "emr-other"))
    cp = n.run("run", "--config", cfg, "--only", "install")
    assert cp.returncode == 0, cp.stderr
    assert n.yum_calls()[-1][-1:] == ["emr-other"]
