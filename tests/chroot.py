"""A real Debian node for the install phase's package tests: a bookworm minbase tree in a chroot.

The tree is made once with `debootstrap --variant=minbase` (tests/bench/setup.sh installs
debootstrap) and kept as an uncompressed tarball under $REPO/.bench/ (gitignored); every test
unpacks a fresh copy into its own tmp dir. The chroot shares the host's network namespace, so
emrboot inside it reaches moto and the IMDS emulator on 127.0.0.1, and apt-get reaches Debian's
mirror (the one package registry these tests talk to).

Mounts: only a fresh `proc` instance at ROOT/proc (apt and dpkg work without it, but some
maintainer scripts look there). ROOT/dev is NOT a bind mount of the host's /dev: debootstrap
leaves real device nodes (null, zero, random, urandom, full, tty, ...) in the tree, and a bind
mount of /dev under a tmp dir is one missed umount away from `rm -rf` deleting the host's device
nodes. Every mount is made private and is unmounted in close(), which also refuses to delete a
tree that still has anything mounted under it.
"""
import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import bench
from node import EmrbootNode

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
TARBALL = bench.REPO / ".bench" / f"debian-{SUITE}-minbase.tar"
LOCK = bench.REPO / ".bench" / f"debian-{SUITE}-minbase.lock"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEV_NODES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
             "tty": (5, 0)}


class ChrootError(RuntimeError):
    pass


def mounts_under(top):
    """Mount points at or below TOP (deepest first), from /proc/self/mountinfo."""
    top = os.path.realpath(top)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
                .replace("\\134", "\\")
            if mp == top or mp.startswith(top.rstrip("/") + "/"):
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def unmount_all(top):
    """Unmounts everything under TOP; raises if anything is still mounted afterwards."""
    for mp in mounts_under(top):
        if subprocess.run(["umount", mp], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", mp], capture_output=True)
    left = mounts_under(top)
    if left:
        raise ChrootError(f"still mounted under {top}: {left}")


def safe_rmtree(top):
    """rm -rf TOP, but never through a mount point."""
    if not os.path.lexists(top):
        return
    unmount_all(top)
    shutil.rmtree(top, ignore_errors=True)


def ensure_tarball(timeout=1500):
    """The cached minbase tarball, made on first use. Raises ChrootError (with debootstrap's
    output) when it cannot be made, e.g. when the mirror is unreachable."""
    if TARBALL.is_file():
        return TARBALL
    TARBALL.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second pytest process waits for the first one's build
        if TARBALL.is_file():
            return TARBALL
        exe = shutil.which("debootstrap") or ("/usr/sbin/debootstrap" if os.path.exists("/usr/sbin/debootstrap") else None)
        if exe is None:
            raise ChrootError("debootstrap is not installed: run tests/bench/setup.sh "
                              "(it installs it with apt-get)")
        build = TARBALL.with_name(TARBALL.name + f".build-{os.getpid()}")
        log = TARBALL.with_name(TARBALL.name + ".debootstrap.log")
        safe_rmtree(build)
        t0 = time.monotonic()
        try:
            with open(log, "w") as out:
                cp = subprocess.run([exe, "--variant=minbase", SUITE, str(build), MIRROR],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    timeout=timeout, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if cp.returncode != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
                raise ChrootError(f"debootstrap --variant=minbase {SUITE} {build} {MIRROR} failed "
                                  f"(exit {cp.returncode}); is {MIRROR} reachable from this machine?\n"
                                  f"--- last lines of {log}\n{tail}")
            unmount_all(build)  # debootstrap unmounts its own proc/sys; make sure
            # Downloaded .debs are 50 MB the tests never need.
            for deb in (build / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            tmp = TARBALL.with_name(TARBALL.name + ".tmp")
            subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(build), "-cf", str(tmp), "."],
                           check=True, capture_output=True, timeout=600)
            tmp.rename(TARBALL)
        except subprocess.TimeoutExpired:
            raise ChrootError(f"debootstrap did not finish in {timeout} s (see {log}); "
                              f"is {MIRROR} reachable from this machine?")
        finally:
            safe_rmtree(build)
        print(f"chroot: made {TARBALL} in {time.monotonic() - t0:.0f} s")
    return TARBALL


class Chroot:
    """A fresh unpacked copy of the minbase tree at ROOT with /proc mounted. close() undoes it."""

    def __init__(self, root):
        self.root = Path(root)
        self.mounted = []

    @classmethod
    def create(cls, root, tarball=None):
        """A fresh copy of TARBALL (default: the Debian minbase tree) at ROOT."""
        tarball = tarball or ensure_tarball()
        self = cls(root)
        self.root.mkdir(parents=True)
        try:
            subprocess.run(["tar", "--numeric-owner", "--xattrs", "-xpf", str(tarball), "-C", str(self.root)],
                           check=True, capture_output=True, timeout=600)
            shutil.copyfile("/etc/resolv.conf", self.root / "etc/resolv.conf") \
                if os.path.exists("/etc/resolv.conf") else None
            dev = self.root / "dev"
            dev.mkdir(exist_ok=True)
            for name, (major, minor) in DEV_NODES.items():
                p = dev / name
                if not os.path.lexists(p):
                    os.mknod(p, 0o666 | 0o020000, os.makedev(major, minor))
                    os.chmod(p, 0o666)
            proc = self.root / "proc"
            proc.mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(proc)],
                           check=True, capture_output=True, timeout=30)
            self.mounted.append(proc)
            subprocess.run(["mount", "--make-private", str(proc)], check=True, capture_output=True, timeout=30)
            # A private devpts instance (not the host's) so that dpkg can log through a pty;
            # optional: apt works without it, only noisier.
            pts = dev / "pts"
            pts.mkdir(exist_ok=True)
            if subprocess.run(["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=620",
                               "devpts", str(pts)], capture_output=True, timeout=30).returncode == 0:
                self.mounted.append(pts)
                subprocess.run(["mount", "--make-private", str(pts)], capture_output=True, timeout=30)
        except BaseException:
            self.close()
            raise
        return self

    def path(self, inside):
        """The host path of the chroot path INSIDE."""
        return self.root / str(inside).lstrip("/")

    def run(self, argv, env=None, timeout=120, input=None):
        """Runs ARGV inside the chroot (cwd /)."""
        return subprocess.run(["chroot", str(self.root), *map(str, argv)], env=env, text=True,
                              capture_output=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL, cwd="/")

    def sh(self, script, env=None, timeout=120):
        return self.run(["/bin/sh", "-c", script], env=env or base_env(), timeout=timeout)

    def close(self):
        """Unmounts everything under the root. Leaves the files (pytest's tmp cleanup removes
        them; safe now that nothing is mounted there)."""
        unmount_all(self.root)
        self.mounted.clear()


def base_env(**extra):
    env = {"PATH": CHROOT_PATH, "HOME": "/root", "LANG": "C", "TERM": "dumb"}
    env.update(extra)
    return env


class ChrootNode(EmrbootNode):
    """An EMR node that is a Debian chroot: emrboot at /usr/local/bin/emrboot, the info files at
    /mnt/var/lib/info, state in /var/lib/emrboot, log in /var/log/emrboot.log, no EMRBOOT_ROOT
    (the chroot's / is the node's root). AWS is the bench's moto and IMDS emulator on 127.0.0.1."""

    label = "chroot"
    default_timeout = 900
    cwd = "/"
    BIN = "/usr/local/bin/emrboot"
    INFO = "/mnt/var/lib/info"
    STATE = "/var/lib/emrboot"
    LOG = "/var/log/emrboot.log"

    def __init__(self, ch, moto, imds, facts, kind="master-ig", exe=None, with_ca_certificates=True):
        self.chroot, self.root = ch, ch.root
        exe = Path(exe or bench.emrboot_bin())
        if not exe.is_file():
            raise ChrootError(f"emrboot binary not found at {exe}: build it (cargo build) or set EMRBOOT_BIN")
        dst = ch.path(self.BIN)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(exe, dst)
        dst.chmod(0o755)
        bench.write_info_files(ch.path(self.INFO), kind, facts)
        if with_ca_certificates:
            # An EMR node has CA certificates; minbase has none (and emrboot's TLS stack refuses
            # to start without any). The host's bundle stands in for the ca-certificates package.
            bundle = ch.path("/etc/ssl/certs/ca-certificates.crt")
            bundle.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(CA_BUNDLE, bundle)
        host = bench.node_env(moto, imds, ch.path(self.INFO), ch.path(self.STATE))
        self.env = base_env(**{k: v for k, v in host.items() if k.startswith("AWS_")})
        self.env.update({
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "EMRBOOT_INFO_DIR": self.INFO,
            "EMRBOOT_STATE_DIR": self.STATE,
            "EMRBOOT_LOG_FILE": self.LOG,
            "EMRBOOT_SHUTDOWN_ACTIONS_DIR": "/mnt/var/lib/instance-controller/public/shutdown-actions",
        })

    @property
    def log_file(self):
        return self.chroot.path(self.LOG)

    def write(self, inside, text):
        p = self.chroot.path(inside)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return inside

    # -- emrboot in the node: run, start, finish (bench/node.py) ----------------------------------
    def enter(self):
        return ["chroot", str(self.root)]

    def exe(self):
        return self.BIN

    def sh(self, script, timeout=120):
        return self.chroot.sh(script, timeout=timeout)
