"""An Amazon Linux 2023 stand-in for the install phase's package tests: Debian bookworm's dnf 4.14
and rpm 4.18 (the series AL2023 ships) in a minbase chroot, set up the way AL2023 is:

- rpm's database at /var/lib/rpm (Debian's rpm keeps it under $HOME): /etc/rpm/macros;
- apt-get is not on PATH (renamed), so emrboot picks dnf, as on AL2023;
- a `system-release` rpm that provides `system-release(releasever) = 2023`, so `$releasever`
  resolves (it also provides /bin/sh, which rpmbuild makes every scriptlet require and which no
  rpm owns in a Debian tree);
- one repo, `emr-local`, at file:///srv/emr-repo, built with createrepo_c from tiny rpms that
  rpmbuild makes here (SPECS below): no network at test time, and `dnf repolist` shows only it.

The tree is built once from the Debian minbase tarball (tests/chroot.py), apt-get fetching dnf, rpm
and createrepo-c from Debian's mirror, and kept as .bench/al2023-standin-<hash>.tar, the hash
covering this file's SPECS and SETUP: change a spec and the tree is rebuilt. Each test unpacks a
fresh copy (chroot.Chroot.create).
"""
import fcntl
import hashlib
import json
import subprocess
import time

import bench
import chroot

REPO_DIR = "/srv/emr-repo"
RELEASE_FILE = "/run/emr-slow.release"  # emr-slow's %pre waits for it (at most 300 s)

def spec(name, version, release, summary, install, files, headers="", scripts=""):
    """A noarch spec with no automatic dependencies; INSTALL is its %install body."""
    return (f"Name: {name}\nVersion: {version}\nRelease: {release}\nSummary: {summary}\n{headers}"
            "License: MIT\nBuildArch: noarch\nAutoReqProv: no\n%description\nemrboot test bench package.\n"
            f"{scripts}%install\n{install}%files\n{files}\n")


def shared_file_spec(name, summary, scripts=""):
    """A package that owns one file, /usr/share/NAME/<word>.txt."""
    word = name.removeprefix("emr-")
    path = f"/usr/share/{name}/{word}.txt"
    install = f"mkdir -p %{{buildroot}}/usr/share/{name}\necho {word} > %{{buildroot}}{path}\n"
    return spec(name, "1.0", "1", summary, install, path, scripts=scripts)


SPECS = {
    "system-release": spec(
        "system-release", "2023.6", "1", "AL2023 stand-in release file",
        "mkdir -p %{buildroot}/etc\n"
        "echo 'Amazon Linux release 2023 (emrboot bench stand-in)' > %{buildroot}/etc/system-release\n",
        "/etc/system-release",
        headers="Provides: system-release(releasever) = 2023\nProvides: /bin/sh\n"),
    # A plain package, for every name form (name, name-version, -release, .arch).
    "emr-hello": shared_file_spec("emr-hello", "plain package"),
    # A capability and a file path that people install by (python3dist(...), /usr/bin/...).
    "emr-provider": spec(
        "emr-provider", "2.0", "3", "provides a capability",
        "mkdir -p %{buildroot}/usr/bin\n"
        "printf '#!/bin/sh\\necho emr-tool\\n' > %{buildroot}/usr/bin/emr-tool\n"
        "chmod 755 %{buildroot}/usr/bin/emr-tool\n",
        "/usr/bin/emr-tool",
        headers="Provides: python3dist(emr-requests) = 2.31\n"),
    # Holds its transaction (and so rpm's transaction lock) open until RELEASE_FILE exists.
    "emr-slow": shared_file_spec(
        "emr-slow", "a transaction that waits",
        scripts="%pre\ni=0\n"
                f"while [ ! -e {RELEASE_FILE} ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done\n"),
    "emr-other": shared_file_spec("emr-other", "a second plain package"),
}

SETUP = f"""set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends dnf rpm createrepo-c
apt-get clean
rm -rf /var/lib/apt/lists/*
mkdir -p /etc/rpm /var/lib/rpm
echo '%_dbpath /var/lib/rpm' > /etc/rpm/macros
rpm --initdb
rm -f /etc/yum.repos.d/* /etc/dnf/repos.d/* 2>/dev/null || true
mkdir -p /etc/yum.repos.d
cat > /etc/yum.repos.d/emr-local.repo <<'EOF'
[emr-local]
name=emrboot bench repo
baseurl=file://{REPO_DIR}
enabled=1
gpgcheck=0
EOF
mkdir -p /build {REPO_DIR}
for spec in /build/*.spec; do
    rpmbuild --quiet --define '_topdir /build/top' -bb "$spec"
done
find /build/top/RPMS -name '*.rpm' -exec cp {{}} {REPO_DIR}/ \\;
createrepo_c --quiet {REPO_DIR}
rpm -i {REPO_DIR}/system-release-*.rpm
rm -rf /build
mv /usr/bin/apt-get /usr/bin/apt-get.hidden-like-al2023
"""

_KEY = hashlib.sha256(json.dumps([SPECS, SETUP], sort_keys=True).encode()).hexdigest()[:12]
TARBALL = bench.REPO / ".bench" / f"al2023-standin-{_KEY}.tar"
LOCK = bench.REPO / ".bench" / "al2023-standin.lock"


def ensure_tarball():
    """The cached stand-in tree, built on first use from the Debian minbase tarball. Raises
    chroot.ChrootError with the build's output when it cannot be made."""
    if TARBALL.is_file():
        return TARBALL
    TARBALL.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if TARBALL.is_file():
            return TARBALL
        build = TARBALL.with_name(TARBALL.name + ".build")
        chroot.safe_rmtree(build)
        t0 = time.monotonic()
        ch = chroot.Chroot.create(build)
        try:
            for old in TARBALL.parent.glob("al2023-standin-*.tar"):
                old.unlink()
            specs = ch.path("/build")
            specs.mkdir(parents=True, exist_ok=True)
            for name, text in SPECS.items():
                (specs / f"{name}.spec").write_text(text)
            cp = ch.sh(SETUP, timeout=1500)
            if cp.returncode != 0:
                raise chroot.ChrootError(f"the AL2023 stand-in setup failed (exit {cp.returncode}):\n"
                                         f"{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}")
        finally:
            ch.close()
        try:
            tmp = TARBALL.with_name(TARBALL.name + ".tmp")
            subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(build), "-cf", str(tmp), "."],
                           check=True, capture_output=True, timeout=600)
            tmp.rename(TARBALL)
        finally:
            chroot.safe_rmtree(build)
        print(f"al2023: made {TARBALL} in {time.monotonic() - t0:.0f} s")
    return TARBALL


def rpm_q(node, *names):
    """`rpm -q NAMES` in the node: {name: installed?} (the name forms rpm -q itself accepts)."""
    out = {}
    for name in names:
        cp = node.chroot.run(["rpm", "-q", name], env=chroot.base_env())
        out[name] = cp.returncode == 0
    return out


def repolist(node):
    """The enabled repo ids, from `dnf repolist` in the node."""
    cp = node.chroot.run(["dnf", "-q", "repolist"], env=chroot.base_env(), timeout=120)
    assert cp.returncode == 0, f"dnf repolist failed: {cp.stdout}\n{cp.stderr}"
    return [line.split()[0] for line in cp.stdout.splitlines()[1:] if line.strip()]
