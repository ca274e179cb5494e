"""The VM bench: a real Linux kernel in QEMU (TCG) against nfs-ganesha on host loopback.

See ../shared/docs/test-bench.md, "NFS / EFS". tests/vm/setup.sh installs the packages and caches
Debian's bookworm kernel in $REPO/.bench/vm (vmlinux + the unpacked module tree).

    Ganesha(export_dir, port=None)         an NFSv4.1 server on 127.0.0.1:port; .stop()
    build_initramfs(out, binary, script, files, modules)
                                           a busybox initramfs whose /init sets up the guest,
                                           runs SCRIPT, prints EXIT=<code> and powers off
    host_program(path)                     FILES entries that put a dynamically linked host
                                           program in the guest, with its libraries and loader
    run_vm(kernel, initramfs, imds_port, nfs_port, timeout)
                                           boots it; a VmResult (.console, .exit, .timed_out)

The guest's network is QEMU user-mode networking with restrict=on: the guest is 169.254.0.15/16,
QEMU's gateway 169.254.0.2, and the only things it can reach are the guestfwd forwards,
169.254.169.254:80 -> the IMDS emulator and 169.254.0.10:2049 -> ganesha (each connection
through `socat - TCP:127.0.0.1:PORT`, spawned by QEMU). Nothing leaves the machine.

Every process started here (ganesha, qemu and the socat children qemu spawns) is stopped by
PID before the call or fixture that started it returns, also on failure.
"""
import gzip
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "bench"))
import bench  # noqa: E402  (free_port, _die_with_parent)

VM_DIR = Path(os.environ.get("VMKIT_DIR", REPO / ".bench" / "vm"))
KERNEL_TREE = VM_DIR / "kernel"
QEMU = os.environ.get("VMKIT_QEMU", "qemu-system-x86_64")  # override: test the skip path
BUSYBOX = Path("/bin/busybox")

GUEST_IP = "169.254.0.15"
GATEWAY_IP = "169.254.0.2"  # QEMU's own address in the guest net
NFS_GUEST_IP = "169.254.0.10"  # guestfwd tcp:169.254.0.10:2049 -> ganesha
IMDS_GUEST_IP = "169.254.169.254"  # guestfwd tcp:169.254.169.254:80 -> the IMDS emulator
NFS_NAME = "efs.test"  # in the guest's /etc/hosts by default
HADOOP_UID = HADOOP_GID = 1001  # the guest's hadoop user (numeric owners on the export)
GUEST_BINARY = "/usr/local/bin/emrboot"

# Loaded in this order after their modules.dep dependencies: the NIC and the NFSv4 client.
DEFAULT_MODULES = ("virtio_pci", "virtio_net", "nfsv4")
# NFS mount options as efs-utils / the EFS docs use them.
EFS_MOUNT_OPTIONS = "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"

EXIT_RE = re.compile(r"^EXIT=(-?\d+)\s*$", re.M)


class VmkitUnavailable(RuntimeError):
    """The machine cannot run the VM bench at all (no qemu-system-x86_64, or no cached kernel)."""


def qemu_binary():
    return shutil.which(QEMU)


def check_available():
    """Raise VmkitUnavailable with a message saying what is missing."""
    if not qemu_binary():
        raise VmkitUnavailable(f"{QEMU} not found on PATH: this machine cannot run the VM bench "
                               "(tests/vm/setup.sh installs qemu-system-x86)")
    missing = [str(p) for p in (kernel_image(), KERNEL_TREE / "lib" / "modules", BUSYBOX)
               if not p.exists()]
    if missing:
        raise VmkitUnavailable(f"VM bench not prepared, missing {', '.join(missing)}: "
                               "run tests/vm/setup.sh")


def kernel_image():
    """The cached ELF vmlinux (or a bzImage copy where the ELF could not be extracted)."""
    return VM_DIR / "vmlinux"


def kernel_version():
    (kver,) = os.listdir(KERNEL_TREE / "lib" / "modules")
    return kver


def _children(pid):
    """PIDs whose parent is PID (read from /proc)."""
    out = []
    for child, raw in bench.proc_files("stat"):
        st = raw.decode(errors="replace")
        # pid (comm) state ppid ...; comm may hold spaces and parens
        if int(st[st.rindex(")") + 2:].split()[1]) == pid:
            out.append(child)
    return out


def _stat_fields(pid):
    """/proc/PID/stat after the comm field (state first), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read().decode(errors="replace")
        return st[st.rindex(")") + 2:].split()
    except (OSError, ValueError):
        return None


def _start_time(pid):
    f = _stat_fields(pid)
    return f[19] if f and len(f) > 19 else None


def _running(pid, start_time):
    """PID is still the process that started at START_TIME, and not a zombie."""
    f = _stat_fields(pid)
    return bool(f) and len(f) > 19 and f[19] == start_time and f[0] not in ("Z", "X")


def _kill_pids(pids, settle=2.0, grace=2.0):
    """Stop each (pid, start_time) still running as that same process: first let it exit on
    its own for up to SETTLE s (guestfwd's socat does once QEMU's end of its socket closes),
    then SIGTERM, then SIGKILL after GRACE s. Returns the PIDs that had to be signalled."""
    def live():
        return [(p, t) for p, t in pids if t is not None and _running(p, t)]

    deadline = time.monotonic() + settle
    while live() and time.monotonic() < deadline:
        time.sleep(0.05)
    signalled = live()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0)):
        for p, t in live():
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while live() and time.monotonic() < deadline:
            time.sleep(0.05)
    return [p for p, _ in signalled]


def _wait_port(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------
# nfs-ganesha


GANESHA_CONF = """\
NFS_CORE_PARAM {{
    Bind_Addr = 127.0.0.1;
    NFS_Port = {port};
    Protocols = 4;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}}
NFSv4 {{
    Graceless = true;
    Minor_Versions = 1, 2;
    RecoveryBackend = fs;
    RecoveryRoot = "{recovery}";
    Only_Numeric_Owners = true;
}}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1;
    Path = "{export}";
    Pseudo = /;
    Protocols = 4;
    Transports = TCP;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"""


class Ganesha:
    """nfs-ganesha exporting EXPORT_DIR as `/` (NFSv4.1/4.2, TCP) on 127.0.0.1:PORT.

    Started by the constructor (a free port when PORT is None; a busy port is retried on another
    free one then); .stop() is idempotent and .start() starts it again on the same port and
    export. Config, log, pid file and the recovery dir live in WORKDIR (a fresh temp dir when
    None). Its dbus/rpcbind/krb5 complaints at start are expected and harmless.
    """

    def __init__(self, export_dir, port=None, workdir=None, timeout=30.0):
        self.export_dir = Path(export_dir).resolve()
        self.export_dir.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ganesha-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = self.workdir / "ganesha.conf"
        self.log = self.workdir / "ganesha.log"
        self.out = self.workdir / "ganesha.out"
        self.pidfile = self.workdir / "ganesha.pid"
        self.recovery = self.workdir / "recovery"
        self.recovery.mkdir(exist_ok=True)
        self.popen = None
        self.port = port
        self.timeout = timeout
        fixed = port is not None
        for _ in range(1 if fixed else 3):
            if not fixed:
                self.port = bench.free_port()
            if self._try_start():
                return
        raise RuntimeError(f"ganesha.nfsd did not start on 127.0.0.1:{self.port}:\n{self.log_tail()}")

    def start(self):
        """Start again (after .stop()) on the same port and export; raises if it does not come
        up."""
        if not self._try_start():
            raise RuntimeError(f"ganesha.nfsd did not start on 127.0.0.1:{self.port}:\n"
                               f"{self.log_tail()}")

    def _try_start(self):
        """Start on self.port; True once the port accepts, False if it died or timed out."""
        if self.alive():
            return True
        exe = shutil.which("ganesha.nfsd") or "/usr/bin/ganesha.nfsd"
        self.conf.write_text(GANESHA_CONF.format(port=self.port, recovery=self.recovery,
                                                 export=self.export_dir))
        self.pidfile.unlink(missing_ok=True)
        with open(self.out, "ab") as out:
            self.popen = subprocess.Popen(
                [exe, "-F", "-f", str(self.conf), "-L", str(self.log), "-p", str(self.pidfile)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
                preexec_fn=bench._die_with_parent)
        if _wait_port(self.port, self.popen, self.timeout):
            return True
        self.stop()
        return False

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def stop(self):
        """SIGTERM (ganesha shuts down cleanly in about a second), SIGKILL after 15 s; waits."""
        p = self.popen
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def log_tail(self, n=40):
        text = ""
        for f in (self.out, self.log):
            try:
                text += "\n".join(f.read_text(errors="replace").splitlines()[-n:]) + "\n"
            except OSError:
                pass
        return text

    def __repr__(self):
        pid = self.popen.pid if self.popen else None
        return f"<Ganesha 127.0.0.1:{self.port} {self.export_dir} pid={pid}>"


# ---------------------------------------------------------------------------------------------
# initramfs


class _Cpio:
    """A newc cpio archive written in memory; every entry owned by root."""

    def __init__(self):
        self.chunks = []
        self.ino = 1
        self.names = set()

    def _entry(self, name, mode, data=b"", nlink=1):
        name = name.lstrip("/")
        if name in self.names:
            return
        self.names.add(name)
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        self.ino += 1
        buf = hdr.encode() + nb
        buf += b"\0" * (-len(buf) % 4)
        buf += data
        buf += b"\0" * (-len(buf) % 4)
        self.chunks.append(buf)

    def dir(self, name, mode=0o755):
        parts = [p for p in name.strip("/").split("/") if p not in ("", ".")]
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | mode, nlink=2)

    def file(self, name, data, mode=0o644):
        self.dir(os.path.dirname(name.strip("/")))
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name, target):
        self.dir(os.path.dirname(name.strip("/")))
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def bytes(self):
        trailer = "070701" + "0" * 8 * 11 + f"{11:08x}" + "0" * 8
        end = trailer.encode() + b"TRAILER!!!\0"
        end += b"\0" * (-len(end) % 4)
        data = b"".join(self.chunks) + end
        return data + b"\0" * (-len(data) % 512)


def resolve_modules(names, kernel_tree=None):
    """Module paths (relative to lib/modules/KVER) for NAMES and their dependencies, in an order
    insmod can load them (each module after everything it depends on)."""
    tree = Path(kernel_tree or KERNEL_TREE) / "lib" / "modules"
    kver = kernel_version() if kernel_tree is None else os.listdir(tree)[0]
    deps, by_name = {}, {}
    for line in (tree / kver / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        base = os.path.basename(mod).split(".ko")[0]
        by_name[base] = mod
        by_name[base.replace("-", "_")] = mod
    order, seen = [], set()

    def visit(mod):
        if mod in seen:
            return
        seen.add(mod)
        for d in reversed(deps[mod]):  # modules.dep lists the deepest dependency last
            visit(d)
        order.append(mod)

    for n in names:
        mod = by_name.get(n) or by_name.get(n.replace("-", "_"))
        if mod is None:
            raise KeyError(f"module {n} not in {tree / kver / 'modules.dep'}")
        visit(mod)
    return order


def _default_etc(hosts):
    lines = ["127.0.0.1 localhost"] + [f"{ip} {name}" for name, ip in hosts.items()]
    return {
        "/etc/hosts": "\n".join(lines) + "\n",
        "/etc/passwd": (f"root:x:0:0:root:/root:/bin/sh\n"
                        f"hadoop:x:{HADOOP_UID}:{HADOOP_GID}:Hadoop:/var/lib/hadoop:/bin/sh\n"
                        f"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
        "/etc/group": f"root:x:0:\nhadoop:x:{HADOOP_GID}:\nnogroup:x:65534:\n",
        "/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
        # Nothing answers DNS in the guest (restrict=on): fail fast instead of waiting on QEMU's.
        "/etc/resolv.conf": "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        "/etc/fstab": "# /etc/fstab of the VM bench guest\n",
    }


LDD_LINE_RE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def host_program(path):
    """FILES entries ({guest path: host Path}) for a host program and everything `ldd` says it
    loads (its libraries and the dynamic loader), each at the same path in the guest as on the
    host, so that the loader finds them where the binary was linked to look (the guest has no
    ld.so.cache). A static program is just itself. Raises when ldd cannot resolve a library."""
    path = Path(path)
    files = {str(path): path}
    cp = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
    out = cp.stdout + cp.stderr
    if "not a dynamic executable" in out or "statically linked" in out:
        return files
    if cp.returncode != 0 or "not found" in out:
        raise RuntimeError(f"ldd {path} (exit {cp.returncode}):\n{out}")
    for line in cp.stdout.splitlines():
        m = LDD_LINE_RE.match(line)
        if m:  # linux-vdso.so.1 has no path: it is the kernel's
            files[m.group(1)] = Path(m.group(1))
    return files


INIT = r"""#!/bin/sh
# /init of the VM bench (tests/vm/vm.py): set up the guest, run /vmkit/test.sh, print its exit
# code as EXIT=<code> on the console, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/tmp /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
ln -sf /proc/mounts /etc/mtab
hostname vmkit
for m in {modules}; do
    insmod "/lib/modules/{kver}/$m" || echo "VMKIT: insmod $m failed"
done
ip link set lo up
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 200 ]; do usleep 50000; n=$((n+1)); done
ip link set eth0 up
ip addr add {guest_ip}/16 dev eth0
ip route add default via {gateway}
echo "VMKIT: guest up, $(cut -d' ' -f1 /proc/uptime)s since boot"
sh /vmkit/test.sh </dev/null
rc=$?
echo "EXIT=$rc"
sync
poweroff -f
"""


def build_initramfs(out, binary=None, init_script="", files=None, modules=DEFAULT_MODULES,
                    hosts=None, compress=False):
    """Write a newc initramfs to OUT and return OUT.

    - busybox (static) at /bin/busybox, with a symlink for every applet it has;
    - MODULES and their dependencies from the cached kernel, insmod-ed in modules.dep order;
    - BINARY (a static executable, host path) at /usr/local/bin/emrboot, when given;
    - INIT_SCRIPT (sh) at /vmkit/test.sh: /init runs it once the network is up, then prints
      EXIT=<its exit code> and powers off;
    - FILES {guest path: content}: bytes or str is the file's content, a Path (os.PathLike) a
      host file copied in (keeping its exec bit); a (content, mode) tuple sets the mode;
    - defaults for /etc/hosts (HOSTS, {name: ip}, default {"efs.test": 169.254.0.10}),
      /etc/passwd and /etc/group (root, hadoop 1001:1001), nsswitch.conf, resolv.conf, fstab;
      FILES overrides any of them.
    COMPRESS gzips it (smaller, but the guest then spends TCG time unpacking).
    """
    out = Path(out)
    kver = kernel_version()
    mods = resolve_modules(modules) if modules else []
    cpio = _Cpio()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin", "etc",
              "proc", "sys", "dev", "run", "tmp", "root", "mnt", "var/tmp", "var/lib", "vmkit"):
        cpio.dir(d)
    all_files = {k: v for k, v in _default_etc(hosts if hosts is not None else {NFS_NAME: NFS_GUEST_IP}).items()}
    all_files.update(files or {})
    # Caller's files first (they override the defaults and may replace an applet).
    for path, spec in all_files.items():
        mode = None
        if isinstance(spec, tuple):
            spec, mode = spec
        if isinstance(spec, os.PathLike):
            host = Path(spec)
            data = host.read_bytes()
            if mode is None:
                mode = 0o755 if os.access(host, os.X_OK) else 0o644
        else:
            data = spec.encode() if isinstance(spec, str) else bytes(spec)
        cpio.file(path, data, 0o644 if mode is None else mode)
    if binary is not None:
        cpio.file(GUEST_BINARY, Path(binary).read_bytes(), 0o755)
    cpio.file("/bin/busybox", BUSYBOX.read_bytes(), 0o755)
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        cpio.symlink(a, "/bin/busybox")
    tree = KERNEL_TREE / "lib" / "modules" / kver
    for m in mods:
        cpio.file(f"/lib/modules/{kver}/{m}", (tree / m).read_bytes())
    for f in ("modules.dep", "modules.alias", "modules.symbols", "modules.builtin",
              "modules.order"):
        if (tree / f).exists():
            cpio.file(f"/lib/modules/{kver}/{f}", (tree / f).read_bytes())
    script = init_script.encode() if isinstance(init_script, str) else bytes(init_script)
    cpio.file("/vmkit/test.sh", script, 0o755)
    init = INIT.format(modules=" ".join(mods), kver=kver, guest_ip=GUEST_IP, gateway=GATEWAY_IP)
    cpio.file("/init", init.encode(), 0o755)
    data = cpio.bytes()
    if compress:
        data = gzip.compress(data, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out


# ---------------------------------------------------------------------------------------------
# QEMU


@dataclass
class VmResult:
    console: str  # the serial console, \r removed
    exit: int | None  # the test script's exit code from EXIT=<code>, None if never printed
    timed_out: bool  # QEMU was killed at the timeout
    qemu_rc: int | None
    seconds: float  # wall time from QEMU's start to its end (for reports, not assertions)
    cmd: list = field(default_factory=list)
    console_file: Path | None = None

    def __str__(self):
        return (f"VM exit={self.exit} timed_out={self.timed_out} qemu_rc={self.qemu_rc} "
                f"({self.seconds:.1f}s)\n--- console\n{self.console}")


def netdev_arg(imds_port=None, nfs_port=None, extra_guestfwd=(), socat_log=None):
    """The -netdev value: user net, restrict=on, and a guestfwd per forward.
    EXTRA_GUESTFWD: (guest_ip, guest_port, host_port) more forwards to 127.0.0.1.

    QEMU runs `socat - TCP:127.0.0.1:PORT` per guest connection, with the connection as its
    stdin/stdout *and stderr*: socat's messages go to SOCAT_LOG instead, or they would reach the
    guest as data. Note that the guest's connect() to a forward always succeeds (QEMU accepts
    it, then socat connects): with the host side down the guest sees the connection closed
    right after it opened, not a refusal."""
    fwds = []
    if imds_port:
        fwds.append((IMDS_GUEST_IP, 80, imds_port))
    if nfs_port:
        fwds.append((NFS_GUEST_IP, 2049, nfs_port))
    fwds.extend(extra_guestfwd)
    socat = shutil.which("socat") or "socat"
    parts = ["user", "id=n0", "restrict=on", "net=169.254.0.0/16", f"host={GATEWAY_IP}"]
    log = f"-lf {socat_log} " if socat_log else ""
    parts += [f"guestfwd=tcp:{ip}:{gport}-cmd:{socat} {log}- TCP:127.0.0.1:{hport}"
              for ip, gport, hport in fwds]
    return ",".join(parts)


def run_vm(kernel, initramfs, imds_port=None, nfs_port=None, timeout=120, workdir=None,
           append="", extra_guestfwd=(), memory=512):
    """Boot KERNEL with INITRAMFS under TCG and wait for the guest to power off (or TIMEOUT s,
    then QEMU is killed). The serial console goes to WORKDIR/console.log. QEMU and the socat
    processes it spawned for guestfwd are gone when this returns, whatever happened."""
    exe = qemu_binary()
    if not exe:
        raise VmkitUnavailable(f"{QEMU} not found on PATH")
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="vmkit-"))
    workdir = workdir.resolve()
    if re.search(r"[,\s]", str(workdir)):
        raise ValueError(f"{workdir}: a comma or a space would break QEMU's -netdev/-serial arguments")
    workdir.mkdir(parents=True, exist_ok=True)
    console = workdir / "console.log"
    console.unlink(missing_ok=True)
    cmd = [exe, "-accel", "tcg", "-smp", "1", "-m", str(memory), "-nographic", "-no-reboot",
           "-monitor", "none", "-serial", f"file:{console}",
           "-kernel", str(kernel), "-initrd", str(initramfs),
           "-append", f"console=ttyS0 quiet panic=-1 {append}".strip(),
           "-netdev", netdev_arg(imds_port, nfs_port, extra_guestfwd, workdir / "socat.log"),
           # romfile= : no iPXE option ROM (nothing to network-boot; saves TCG time)
           "-device", "virtio-net-pci,netdev=n0,romfile="]
    (workdir / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
    qlog = workdir / "qemu.log"
    start = time.monotonic()
    timed_out = False
    seen = {}  # socat children of qemu: pid -> start time, to stop them by PID afterwards
    with open(qlog, "wb") as qout:
        popen = subprocess.Popen(cmd, stdout=qout, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=workdir,
                                 preexec_fn=bench._die_with_parent)
    try:
        deadline = start + timeout
        while popen.poll() is None:
            for c in _children(popen.pid):
                seen.setdefault(c, _start_time(c))
            if time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(0.1)
    finally:
        if popen.poll() is None:
            for c in _children(popen.pid):
                seen.setdefault(c, _start_time(c))
            popen.kill()
        rc = popen.wait()
        # guestfwd's socat exits on EOF once qemu is gone; any that did not is stopped here.
        stray = _kill_pids(list(seen.items()))
        (workdir / "children.txt").write_text(
            f"qemu spawned: {sorted(seen)}\nhad to be signalled: {stray}\n")
    seconds = time.monotonic() - start
    text = console.read_text(errors="replace").replace("\r", "") if console.exists() else ""
    qtext = qlog.read_text(errors="replace").strip()
    if qtext:
        text += f"\n--- qemu output\n{qtext}\n"
    codes = EXIT_RE.findall(text)
    return VmResult(console=text, exit=int(codes[-1]) if codes else None, timed_out=timed_out,
                    qemu_rc=rc, seconds=seconds, cmd=cmd, console_file=console)


# ---------------------------------------------------------------------------------------------
# the pytest fixture's object


class VmKit:
    """What the `vmkit` fixture gives a test: an export dir served by a started Ganesha, the
    cached kernel, and build()/run() helpers writing into the test's tmp dir."""

    def __init__(self, tmp):
        check_available()
        self.tmp = Path(tmp)
        self.kernel = kernel_image()
        self.kernel_version = kernel_version()
        self.export = self.tmp / "export"
        self.export.mkdir(parents=True, exist_ok=True)
        self.ganesha = Ganesha(self.export, workdir=self.tmp / "ganesha")
        self.nfs_port = self.ganesha.port
        self.runs = 0
        self.results = []

    def build(self, init_script, binary=None, files=None, **kw):
        """build_initramfs into the tmp dir; returns its path."""
        self.runs += 1
        return build_initramfs(self.tmp / f"initramfs-{self.runs}.cpio", binary, init_script,
                               files, **kw)

    def run(self, initramfs, imds_port=None, timeout=120, nfs_forward=True, **kw):
        """run_vm with the kit's kernel and ganesha port; the result is also kept in .results.

        With NFS_FORWARD=False there is no guestfwd for 169.254.0.10:2049 at all: the guest's
        connect() there then fails (no route to host, after ARP gives up) instead of being
        accepted and closed, which is what it sees with the forward in place and ganesha
        stopped (kit.ganesha.stop())."""
        n = len(self.results) + 1
        res = run_vm(self.kernel, initramfs, imds_port=imds_port,
                     nfs_port=self.nfs_port if nfs_forward else None,
                     timeout=timeout, workdir=self.tmp / f"vm-{n}", **kw)
        self.results.append(res)
        return res

    def boot(self, init_script, binary=None, files=None, imds_port=None, timeout=120,
             build_kw=None, **run_kw):
        """build() then run(): the VmResult."""
        return self.run(self.build(init_script, binary, files, **(build_kw or {})),
                        imds_port=imds_port, timeout=timeout, **run_kw)

    def close(self):
        self.ganesha.stop()
