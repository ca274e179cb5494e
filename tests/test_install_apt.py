"""install.packages on a real Debian node: a bookworm minbase chroot (tests/chroot.py) where emrboot
finds apt-get on PATH, installs what is missing in one transaction, and skips it on a re-run.

apt-get in the chroot talks to Debian's mirror (the only outside traffic of the suite); emrboot
talks to moto and the IMDS emulator on 127.0.0.1 (the chroot shares the host's network).
A shim at /usr/local/sbin/apt-get (first on the node's PATH) records every call before it execs
the real /usr/bin/apt-get, so the tests see exactly what emrboot ran.
"""
import fcntl
import threading
import time

import pytest

import chroot
from helpers import assert_no_crash, phase, plan_lines, status_json
from install_kit import shim, shim_calls

CALLS = "/var/log/apt-calls.log"  # inside the chroot
CONFIG = '[install]\npackages = ["hello", "bash"]\n'


@pytest.fixture
def debian(debian_node):
    """The chroot node with the apt-get shim in place."""
    shim(debian_node.chroot.path("/usr/local/sbin"), "apt-get", "/usr/bin/apt-get", CALLS)
    return debian_node


def apt_calls(n):
    return shim_calls(n.chroot.path(CALLS))


def installed(n, pkg):
    cp = n.chroot.run(["dpkg-query", "-W", "-f=${Status}", pkg], env=chroot.base_env())
    return cp.returncode == 0 and cp.stdout == "install ok installed"


def status(n):
    return status_json(n)[1]


def run_install(n, config="/cfg.toml"):
    cp = n.run("run", "--config", config, "--only", "install")
    assert_no_crash(cp)
    return cp


def install_args(args):
    """The package names of an `apt-get install` argv: what is left without options (and the
    values of -o/-c/-t)."""
    names, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("-o", "-c", "-t", "--option", "--config-file", "--target-release"):
            skip = True
        elif not a.startswith("-") and a != "install":
            names.append(a)
    return names


def lock_timeout_given(args):
    for i, a in enumerate(args):
        if a in ("-o", "--option") and i + 1 < len(args) and args[i + 1].lower().startswith("dpkg::lock::timeout="):
            return True
        if a.lower().startswith(("-odpkg::lock::timeout=", "--option=dpkg::lock::timeout=")):
            return True
    return False


def test_installs_a_missing_package_in_one_transaction_and_skips_it_next_time(debian):
    n = debian
    n.write("/cfg.toml", CONFIG)
    assert not installed(n, "hello"), "minbase should not have `hello`"
    assert installed(n, "bash")

    # plan: only the missing package, and plan itself runs no apt-get.
    cp = n.run("plan", "--config", "/cfg.toml")
    assert_no_crash(cp)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    _, phases = plan_lines(cp.stdout)
    planned = [ln.strip()[2:] for ln in phases["install"][1:]]
    assert len(planned) == 2 and planned[0].startswith("apt-get update"), cp.stdout
    assert planned[1].startswith("apt-get install") and planned[1].endswith(" hello"), cp.stdout
    assert apt_calls(n) == [], "plan ran apt-get"

    cp = run_install(n)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert installed(n, "hello")
    hello = n.chroot.run(["/usr/bin/hello"], env=chroot.base_env())
    assert hello.returncode == 0 and hello.stdout.strip() == "Hello, world!", hello

    calls = apt_calls(n)
    updates = [c for c in calls if "update" in c[1]]
    installs = [c for c in calls if "install" in c[1]]
    assert len(updates) == 1 and len(installs) == 1 and len(calls) == 2, calls
    assert calls.index(updates[0]) < calls.index(installs[0]), "apt-get update must come first"
    frontend, args = installs[0]
    assert frontend == "noninteractive", f"DEBIAN_FRONTEND={frontend!r}"
    assert "-y" in args and "--no-install-recommends" in args, args
    assert lock_timeout_given(args), f"no -o DPkg::Lock::Timeout=... in {args}"
    assert install_args(args) == ["hello"], f"only the missing package goes to apt-get: {args}"
    # plan showed the exact command lines the run executed.
    assert planned == [" ".join(["apt-get", *c[1]]) for c in calls], (planned, calls)

    st = status(n)
    inst = phase(st, "install")
    assert inst["outcome"] == "changed", inst
    assert any("hello" in a for a in inst["actions"]), inst
    assert not any("bash" in a for a in inst["actions"]), inst
    # apt-get's own output is streamed to the log.
    log = n.log_file.read_text()
    assert "Setting up hello" in log, log[-3000:]

    # A re-run: everything is there, so no apt-get at all.
    log_size = n.log_file.stat().st_size
    cp = run_install(n)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert apt_calls(n) == calls, f"the re-run called apt-get: {apt_calls(n)[len(calls):]}"
    inst = phase(status(n), "install")
    assert inst["outcome"] == "unchanged", inst
    assert not inst.get("actions"), inst
    rerun_log = n.log_file.read_bytes()[log_size:].decode(errors="replace")
    assert "Setting up" not in rerun_log, rerun_log
    # ... and plan has nothing left to install.
    cp = n.run("plan", "--config", "/cfg.toml")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert not any("apt-get install" in ln for ln in plan_lines(cp.stdout)[1]["install"]), cp.stdout


def test_waits_for_the_package_manager_lock(debian):
    """Another apt holds the dpkg frontend lock when emrboot's apt-get install starts; emrboot
    (or apt-get, with DPkg::Lock::Timeout) waits until it is released instead of failing."""
    n = debian
    n.write("/cfg.toml", '[install]\npackages = ["hello"]\n')
    lock_path = n.chroot.path("/var/lib/dpkg/lock-frontend")
    lock = open(lock_path, "a")
    fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    released = threading.Event()
    saw_install_while_locked = []

    def holder():
        # Keep the lock until apt-get install has been started (plus a moment for it to hit the
        # lock), or 60 s at most; then release it.
        try:
            for _ in range(600):
                if any("install" in c[1] for c in apt_calls(n)):
                    saw_install_while_locked.append(True)
                    time.sleep(3)
                    break
                time.sleep(0.1)
        finally:
            fcntl.lockf(lock, fcntl.LOCK_UN)
            lock.close()
            released.set()

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    try:
        cp = run_install(n)
    finally:
        t.join(90)
    assert released.is_set()
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert installed(n, "hello")
    assert phase(status(n), "install")["outcome"] == "changed"
    if not saw_install_while_locked:
        # emrboot waited for the lock itself before calling apt-get: also fine, but say so.
        print("emrboot did not call apt-get install while the lock was held (it waited itself)")


def test_a_package_name_with_shell_metacharacters_is_a_config_error(debian):
    """(More shapes of bad names: test_validate.py; here on the node, and `run` too.)"""
    n = debian
    n.write("/bad.toml", '[install]\npackages = ["hello", "hello;id"]\n')
    cp = n.run("validate", "/bad.toml")
    assert_no_crash(cp)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert any(ln.startswith("/bad.toml:2:22: ") for ln in cp.stdout.splitlines()), cp.stdout
    cp = run_install(n, "/bad.toml")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert apt_calls(n) == [], "apt-get ran for an invalid config"
    assert not n.chroot.path("/var/lib/emrboot/status.json").exists()


def test_a_node_without_ca_certificates_is_not_a_crash(debian):
    """minbase has no CA certificates. emrboot talks to moto over plain http here, so it needs
    none; it may refuse to start (exit 2, saying why) but must not panic."""
    n = debian
    n.chroot.path("/etc/ssl/certs/ca-certificates.crt").unlink()
    n.write("/cfg.toml", '[install]\npackages = ["bash"]\n')
    cp = n.run("plan", "--config", "/cfg.toml")
    assert_no_crash(cp)
    assert cp.returncode in (0, 2), cp.stdout + cp.stderr
    if cp.returncode == 2:
        assert "certificate" in cp.stderr.lower(), cp.stderr


def test_a_name_apt_cannot_find_is_named_and_status_says_so(debian):
    n = debian
    n.write("/cfg.toml", '[install]\npackages = ["hello", "no-such-package-emrboot"]\n')
    cp = run_install(n)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "no enabled repository provides no-such-package-emrboot" in cp.stderr, cp.stderr
    assert not installed(n, "hello"), "apt-get refuses the whole transaction"
    assert "the transaction installed nothing" in cp.stderr, cp.stderr
    inst = phase(status(n), "install")
    assert inst["outcome"] == "failed" and "no-such-package-emrboot" in inst["error"], inst
