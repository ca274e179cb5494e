"""Network namespaces for the node tests: a LAN bridge, nodes with the ENI's MAC and IP, and
loopback forwards from inside a namespace to the bench's servers on the host.

Topology (all built with `ip` from iproute2, argument vectors only, never a shell):

    ns <prefix>lan:     br0 (up), the client address, e.g. 172.31.15.250/20
    ns <prefix>master:  lo, ens5 = veth with the master ENI's MAC and primary IP/20
    ns <prefix>core:    lo, ens5 = veth with the core ENI's MAC and primary IP/20
                        (each veth's other end is a port of br0 in the lan namespace)

A namespace gets no route to the host. Instead `forward(ns, port, host_port)` makes
127.0.0.1:port inside it reach 127.0.0.1:host_port on the host through two socat processes joined
by a Unix socket (pathname sockets work across network namespaces):

    host:  socat UNIX-LISTEN:S,fork TCP:127.0.0.1:host_port
    ns:    ip netns exec NS socat TCP-LISTEN:port,bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:S

Every namespace is named `ebt-<pid of this Python>-<n>-<role>`: close() deletes the ones it made;
an atexit hook deletes whatever this process left; cleanup_stale() deletes those of dead
processes. Every process started here runs in its own session and dies with its parent
(PR_SET_PDEATHSIG); close() signals each session by its id.
"""
import atexit
import ctypes
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench
from node import EmrbootNode

ROOT_PREFIX = "ebt-"
PID_PREFIX = f"{ROOT_PREFIX}{os.getpid()}-"
_counter = itertools.count(1)
IP_TIMEOUT = 30


def _die_with_parent():
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def ip(*args, check=True):
    """`ip ARGS...`; raises RuntimeError with its stderr unless check=False."""
    cp = subprocess.run(["ip", *map(str, args)], capture_output=True, text=True, timeout=IP_TIMEOUT,
                        stdin=subprocess.DEVNULL)
    if check and cp.returncode != 0:
        raise RuntimeError(f"ip {' '.join(map(str, args))}: exit {cp.returncode}: {cp.stderr.strip()}")
    return cp


def list_namespaces():
    out = ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def delete_namespace(name):
    """Idempotent: a namespace that is already gone is fine."""
    cp = ip("netns", "del", name, check=False)
    if cp.returncode != 0 and name in list_namespaces():
        raise RuntimeError(f"ip netns del {name}: {cp.stderr.strip()}")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_mine():
    """Deletes every namespace this Python process created (ebt-<our pid>-...)."""
    for name in list_namespaces():
        if name.startswith(PID_PREFIX):
            delete_namespace(name)


def cleanup_stale():
    """Deletes the ebt-<pid>-... namespaces of processes that are gone (a killed earlier run)."""
    for name in list_namespaces():
        m = re.match(rf"{re.escape(ROOT_PREFIX)}(\d+)-", name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            delete_namespace(name)


atexit.register(cleanup_mine)


class Topology:
    """The namespaces and helper processes of one test; close() undoes all of it."""

    def __init__(self):
        self.prefix = f"{PID_PREFIX}{next(_counter)}-"
        self.namespaces = []
        self.procs = []
        self.sockdir = Path(tempfile.mkdtemp(prefix="ebt-"))  # short: Unix socket paths max 107
        self.lan_ns = None
        self.client_ip = None
        self.closed = False

    # -- namespaces and links -------------------------------------------------------------------
    def add_namespace(self, short):
        name = self.prefix + short
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def add_lan(self, client_ip, prefix=20):
        """The LAN: namespace `lan` with bridge br0 (up) holding CLIENT_IP/PREFIX."""
        ns = self.add_namespace("lan")
        ip("-n", ns, "link", "add", "br0", "type", "bridge")
        ip("-n", ns, "addr", "add", f"{client_ip}/{prefix}", "dev", "br0")
        ip("-n", ns, "link", "set", "br0", "up")
        self.lan_ns, self.client_ip = ns, client_ip
        return ns

    def add_node(self, name, mac, addr, prefix=20, ifname="ens5"):
        """A node namespace: lo up, IFNAME (a veth) with MAC and ADDR/PREFIX, up; the veth's
        peer is a port of br0 in the lan namespace."""
        if self.lan_ns is None:
            raise RuntimeError("add_lan() first")
        ns = self.add_namespace(name)
        peer = f"v{name}"[:15]
        ip("-n", ns, "link", "add", "name", ifname, "type", "veth", "peer", "name", peer,
           "netns", self.lan_ns)
        ip("-n", ns, "link", "set", "dev", ifname, "address", mac)
        ip("-n", ns, "addr", "add", f"{addr}/{prefix}", "dev", ifname)
        ip("-n", ns, "link", "set", "dev", ifname, "up")
        ip("-n", self.lan_ns, "link", "set", "dev", peer, "master", "br0")
        ip("-n", self.lan_ns, "link", "set", "dev", peer, "up")
        return ns

    # -- processes ------------------------------------------------------------------------------
    def popen(self, argv, **kw):
        """A helper process on the host, in its own session, stopped by close()."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen([str(a) for a in argv], start_new_session=True,
                             preexec_fn=_die_with_parent, **kw)
        self.procs.append(p)
        return p

    def popen_in(self, ns, argv, **kw):
        """A helper process inside namespace NS (`ip netns exec` execs it: same pid)."""
        return self.popen(["ip", "netns", "exec", ns, *argv], **kw)

    def run_in(self, ns, argv, env=None, timeout=60, input=None):
        """`ip netns exec NS ARGV...` to completion: the CompletedProcess (text)."""
        return subprocess.run(["ip", "netns", "exec", ns, *map(str, argv)], env=env, text=True,
                              capture_output=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def forward(self, ns, port, host_port, timeout=15.0):
        """127.0.0.1:PORT inside NS reaches 127.0.0.1:HOST_PORT on the host; returns once a
        connection from inside NS is accepted."""
        sock = self.sockdir / f"{ns[len(self.prefix):]}-{port}.sock"
        log = open(self.sockdir / f"{sock.stem}.log", "ab")
        try:
            host = self.popen(["socat", f"UNIX-LISTEN:{sock},fork", f"TCP:127.0.0.1:{host_port}"],
                              stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            while not sock.exists():
                if host.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"host socat for {sock} did not listen: "
                                       f"{(self.sockdir / f'{sock.stem}.log').read_text(errors='replace')}")
                time.sleep(0.02)
            inner = self.popen_in(ns, ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
                                       f"UNIX-CONNECT:{sock}"], stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        probe = ("import socket, sys, time\n"
                 "end = time.monotonic() + float(sys.argv[2])\n"
                 "while True:\n"
                 "    try:\n"
                 "        socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close(); break\n"
                 "    except OSError:\n"
                 "        if time.monotonic() > end: sys.exit(1)\n"
                 "        time.sleep(0.02)\n")
        cp = self.run_in(ns, [sys.executable, "-c", probe, port, timeout], timeout=timeout + 10)
        if cp.returncode != 0 or inner.poll() is not None:
            raise RuntimeError(f"forward {ns} 127.0.0.1:{port} -> host :{host_port} not accepting: "
                               f"{cp.stderr}{(self.sockdir / f'{sock.stem}.log').read_text(errors='replace')}")

    def _stop(self, p):
        # Signal the whole session (its id is the leader's pid), even when the leader is gone:
        # a socat's forked children may still be in it.
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()

    def close(self):
        """Stops every process, deletes every namespace, removes the socket dir. Idempotent;
        raises the first error only after trying everything."""
        errors = []
        for p in reversed(self.procs):
            try:
                self._stop(p)
            except Exception as e:  # noqa: BLE001 - keep going: the namespaces must go
                errors.append(e)
        self.procs.clear()
        for ns in reversed(self.namespaces):
            try:
                delete_namespace(ns)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        self.namespaces.clear()
        shutil.rmtree(self.sockdir, ignore_errors=True)
        self.closed = True
        if errors:
            raise errors[0]


class NetNode(EmrbootNode):
    """One node of the netbench: emrboot runs inside its namespace, seeing its own IMDS emulator
    and moto (through its own counting proxy) at the same 127.0.0.1 ports as on the host."""

    def __init__(self, bench_, name, kind, root, facts, imds, proxy):
        self.bench = bench_
        self.name = name  # "master" | "core"
        self.label = name
        self.kind = kind
        self.ns = None
        self.root = Path(root)
        self.info_dir = self.root / "info"
        self.state_dir = self.root / "state"
        self.facts = facts  # instance_id, eni_id, mac, private_ip, hostname
        self.imds = imds
        self.proxy = proxy
        # The node's file system root (the boot unit goes under ROOT/etc/systemd/system): a
        # scratch dir, so that no run writes to this machine's /etc.
        self.fs_root = self.root / "root"
        (self.fs_root / "etc").mkdir(parents=True, exist_ok=True)
        self.env = bench.node_env(proxy, imds, self.info_dir, self.state_dir,
                                  {"EMRBOOT_ROOT": str(self.fs_root)})
        self.log_file = Path(self.env["EMRBOOT_LOG_FILE"])
        self.shutdown_actions_dir = Path(self.env["EMRBOOT_SHUTDOWN_ACTIONS_DIR"])

    @property
    def instance_id(self):
        return self.facts["instance_id"]

    @property
    def eni_id(self):
        return self.facts["eni_id"]

    @property
    def primary_ip(self):
        return self.facts["private_ip"]

    def write_info(self, kind):
        """(Re)writes the node's info files as KIND (bench.KINDS)."""
        for f in self.info_dir.glob("*.json"):
            f.unlink()
        bench.write_info_files(self.info_dir, kind, self.bench.facts)
        self.kind = kind

    def sh(self, *argv, check=None, timeout=60, env=None, input=None):
        """Runs ARGV inside the node's namespace (env: the node's unless given)."""
        cp = self.bench.topo.run_in(self.ns, argv, env=self.env if env is None else env,
                                    timeout=timeout, input=input)
        if check is not None and cp.returncode != check:
            raise AssertionError(f"[{self.name}] {' '.join(map(str, argv))}: exit {cp.returncode}, "
                                 f"expected {check}\n--- stdout\n{cp.stdout}\n--- stderr\n{cp.stderr}")
        return cp

    # -- emrboot in the node: run, start, finish (bench/node.py) ----------------------------------
    def enter(self):
        return ["ip", "netns", "exec", self.ns]

    def spawn(self, argv, env):
        """Kept by the netbench, which stops it if the test does not."""
        return self.bench.topo.popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # -- the node's OS state --------------------------------------------------------------------
    def addresses(self, ifname="ens5"):
        """IPv4 addresses on IFNAME as 'a.b.c.d/len', from `ip -j -4 addr show`."""
        cp = ip("-n", self.ns, "-j", "-4", "addr", "show", "dev", ifname)
        return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(cp.stdout or "[]")
                for a in link.get("addr_info", [])]

    def nat_rules(self, chain):
        """The rules of nat CHAIN as `iptables -t nat -S CHAIN` prints them, policy line dropped."""
        cp = self.sh("iptables", "-t", "nat", "-S", chain, check=0)
        return [line for line in cp.stdout.splitlines() if line.startswith("-A ")]

    def nat_has(self, chain, fixed, primary):
        """`iptables -t nat -C CHAIN -d FIXED/32 -j DNAT --to-destination PRIMARY` succeeds."""
        cp = self.sh("iptables", "-t", "nat", "-C", chain, "-d", f"{fixed}/32", "-j", "DNAT",
                     "--to-destination", primary)
        return cp.returncode == 0

    # -- what it asked AWS --------------------------------------------------------------------
    def calls(self):
        return self.proxy.calls()

    def actions(self):
        """{Action: n} of the EC2 calls this node made since the last clear_calls()."""
        return self.proxy.actions(service="ec2")

    def clear_calls(self):
        self.proxy.clear()

    def __repr__(self):
        return f"<NetNode {self.name} ns={self.ns} {self.facts.get('instance_id')}>"


class NetBench:
    """lan + master + core namespaces over the seeded moto; see the module docstring."""

    CLIENT_IP = "172.31.15.250"

    def __init__(self, moto, facts, workdir):
        self.moto = moto
        self.facts = facts
        self.workdir = Path(workdir)
        self.topo = Topology()
        self.servers = []
        self.master = self.core = None
        self._ec2 = None

    @classmethod
    def create(cls, moto, facts, workdir):
        cleanup_stale()
        nb = cls(moto, facts, workdir)
        try:
            nb._build()
        except BaseException:
            nb.close()
            raise
        return nb

    def _build(self):
        used = {ip_ for eni in self.ec2.describe_network_interfaces()["NetworkInterfaces"]
                for ip_ in (a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"])}
        if self.CLIENT_IP in used:
            raise RuntimeError(f"the LAN client address {self.CLIENT_IP} is used by a moto ENI: {sorted(used)}")
        nodes = {}
        for name, kind in (("master", "master-ig"), ("core", "core-ig")):
            f = self.facts[name]
            imds = bench.start_imds(self.moto.url, f["instance_id"], self.workdir / name / "imds")
            self.servers.append(imds)
            proxy = bench.start_countproxy(self.moto.url, self.workdir / name / "proxy")
            self.servers.append(proxy)
            node = NetNode(self, name, kind, self.workdir / name, f, imds, proxy)
            bench.write_info_files(node.info_dir, kind, self.facts)
            node.state_dir.mkdir(parents=True, exist_ok=True)
            nodes[name] = node
        self.topo.add_lan(self.CLIENT_IP)
        for name, node in nodes.items():
            node.ns = self.topo.add_node(name, node.facts["mac"], node.facts["private_ip"])
            self.topo.forward(node.ns, node.proxy.port, node.proxy.port)
            self.topo.forward(node.ns, node.imds.port, node.imds.port)
        self.master, self.core = nodes["master"], nodes["core"]

    # -- topology -------------------------------------------------------------------------------
    @property
    def lan_ns(self):
        return self.topo.lan_ns

    @property
    def client_ip(self):
        return self.topo.client_ip

    @property
    def fixed_ip(self):
        return self.facts["fixed_ip"]

    @property
    def reserved_eni(self):
        return self.facts["reserved_eni_id"]

    def run_in(self, ns, argv, env=None, timeout=60, input=None):
        return self.topo.run_in(ns, argv, env=env, timeout=timeout, input=input)

    def popen_in(self, ns, argv, **kw):
        return self.topo.popen_in(ns, argv, **kw)

    # -- moto, read directly (not through a node's proxy) ----------------------------------------
    @property
    def ec2(self):
        if self._ec2 is None:
            self._ec2 = bench._clients(self.moto.url, bench.REGION)[0]
        return self._ec2

    def eni_ips(self, eni_id):
        """The private IPs of ENI_ID in moto, primary first."""
        eni = self.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]
        return [a["PrivateIpAddress"] for a in sorted(eni["PrivateIpAddresses"], key=lambda a: not a["Primary"])]

    def enis(self):
        """{eni id: sorted private IPs} of every ENI in moto."""
        return {e["NetworkInterfaceId"]: sorted(a["PrivateIpAddress"] for a in e["PrivateIpAddresses"])
                for e in self.ec2.describe_network_interfaces()["NetworkInterfaces"]}

    def instance_tags(self, instance_id):
        """{key: value} of the instance's tags in moto."""
        res = self.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]}])
        return {t["Key"]: t["Value"] for t in res["Tags"]}

    def create_eni(self, private_ip, description="unrelated ENI (test)"):
        """A new ENI in the seeded subnet with PRIVATE_IP as its primary IP; its id."""
        return self.ec2.create_network_interface(
            SubnetId=self.facts["subnet_id"], PrivateIpAddress=private_ip,
            Description=description)["NetworkInterface"]["NetworkInterfaceId"]

    def close(self):
        errors = []
        try:
            self.topo.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        for s in reversed(self.servers):
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        self.servers.clear()
        if errors:
            raise errors[0]
