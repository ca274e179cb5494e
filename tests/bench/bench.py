#!/usr/bin/env python3
"""The test bench: moto + the IMDS emulator on loopback, seeded like a small EMR cluster.

Library (pytest's conftest and other tests import it) and CLI for shell scripts:

    python tests/bench/bench.py up --dir D --role master|core|task [--kind KIND]

starts moto and the IMDS emulator, seeds moto, writes D/info/*.json, D/facts.json and D/env
(`export K=V` lines; written last, atomically: wait for it, then source it) and prints "ready".
It runs until SIGTERM/SIGINT, then stops both servers. All traffic stays on 127.0.0.1.
"""
import argparse
import ctypes
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV = Path(os.environ.get("BENCH_VENV", REPO / ".bench" / "venv"))
REGION = "ap-northeast-2"
# An Amazon Linux 2 image in moto 5.2.5's built-in catalogue (moto accepts any id, with a
# warning, but a known Linux one keeps Platform/Architecture sensible in DescribeInstances).
AMI = "ami-04681a1dbd79675a5"
JOB_FLOW_ID = "j-2AO77MNLG17NW"
GROUPS = {"Master": "ig-2XQ29JGCTKLBL", "Core": "ig-16NXM94TY33LB", "Task": "ig-3TKQ1W5ZBGLA0"}
FLEETS = {"MASTER": "if-1M5T9N0WJ2K4A", "CORE": "if-2C8V3Q7XHD5RB", "TASK": "if-3T6F4P2LZS9YC"}
ROLE_OF_KIND = {"master-ig": "Master", "core-ig": "Core", "task-ig": "Task",
                "fleet-task": "Task", "fleet-core": "Core",
                "ha-master-primary": "Master", "ha-master-secondary": "Master"}
KINDS = tuple(ROLE_OF_KIND)
# Never let urllib pick up a proxy from the environment: bench traffic is loopback only.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method, url, body=None, headers=None, timeout=10):
    """(status, headers, text) for any HTTP status; connection errors propagate."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    if method in ("POST", "PUT") and data is None:
        data = b""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _opener.open(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def proc_files(name):
    """(pid, bytes) of /proc/<pid>/NAME for every process readable now (gone ones skipped)."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/{name}", "rb") as f:
                yield int(d), f.read()
        except OSError:
            continue


def pids_with_argv(argv):
    """PIDs of the processes whose command line is exactly ARGV."""
    want = [str(a).encode() for a in argv]
    return [pid for pid, cmdline in proc_files("cmdline") if cmdline.split(b"\0")[:-1] == want]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    # If the bench (or pytest) is SIGKILLed, its servers go too instead of lingering.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Proc:
    """A server process on 127.0.0.1; stop() is idempotent."""

    def __init__(self, name, popen, port, log):
        self.name, self.popen, self.port, self.log = name, popen, port, Path(log)
        self.url = f"http://127.0.0.1:{port}" if port else None

    def alive(self):
        return self.popen.poll() is None

    def stop(self):
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def log_tail(self, n=30):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __repr__(self):
        return f"<{self.name} {self.url} pid={self.popen.pid}>"


def _spawn(name, cmd, workdir, env=None):
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, preexec_fn=_die_with_parent)
    return popen, log


def start_moto(workdir, timeout=15.0):
    exe = VENV / "bin" / "moto_server"
    if not exe.exists():
        raise RuntimeError(f"{exe} missing: run tests/bench/setup.sh")
    env = {**os.environ, "S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true"}
    for _ in range(3):  # free_port() can race with another process grabbing the port
        port = free_port()
        popen, log = _spawn("moto", [str(exe), "-H", "127.0.0.1", "-p", str(port)], workdir, env)
        proc = Proc("moto", popen, port, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.alive():
            try:
                if http("GET", proc.url + "/moto-api/", timeout=1)[0] == 200:
                    return proc
            except OSError:
                pass
            time.sleep(0.1)
        proc.stop()
    raise RuntimeError(f"moto_server did not become ready:\n{proc.log_tail()}")


class Imds(Proc):
    """The IMDS emulator, with helpers for its control API (see imds.py)."""

    def token(self, ttl=21600):
        st, _, body = http("PUT", self.url + "/latest/api/token",
                           headers={"X-aws-ec2-metadata-token-ttl-seconds": str(ttl)})
        assert st == 200, (st, body)
        return body

    def get(self, path, token=None):
        """GET /latest/meta-data/<path> (or an absolute path) with a fresh token: the text."""
        url = self.url + (path if path.startswith("/") else "/latest/meta-data/" + path)
        st, _, body = http("GET", url, headers={"X-aws-ec2-metadata-token": token or self.token()})
        assert st == 200, (st, url, body)
        return body

    def faults(self, **spec):
        st, _, body = http("POST", self.url + "/_emu/faults", body=spec)
        assert st == 200, body

    def clear_faults(self):
        http("DELETE", self.url + "/_emu/faults")

    def pin_local_ipv4s(self, mac, ips):
        """Freezes IMDS local-ipv4s of MAC at IPS (None unfreezes every MAC): IMDS lagging EC2."""
        if ips is None:
            http("DELETE", self.url + "/_emu/pin")
            return
        st, _, body = http("POST", self.url + "/_emu/pin", body={mac: list(ips)})
        assert st == 200, body

    def impersonate(self, instance_id):
        st, _, body = http("POST", self.url + "/_emu/instance", body={"instance_id": instance_id})
        assert st == 200, body

    def requests(self):
        return json.loads(http("GET", self.url + "/_emu/log")[2])

    def issued_tokens(self):
        """Every token the emulator has handed out (a test-only control endpoint)."""
        return json.loads(http("GET", self.url + "/_emu/issued-tokens")[2])


def _start_helper(cls, name, script, args, port_var, health, workdir, timeout):
    """Starts one of the bench's own servers (SCRIPT with `--port 0` ARGS), reads the port it
    prints as PORT_VAR=<n>, and waits until HEALTH answers 200."""
    py = VENV / "bin" / "python"
    cmd = [str(py if py.exists() else sys.executable), str(HERE / script), "--port", "0", *args]
    popen, log = _spawn(name, cmd, workdir, {**os.environ, "PYTHONUNBUFFERED": "1"})
    proc = cls(name, popen, None, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.alive():
        m = re.search(rf"^{port_var}=(\d+)$", log.read_text(errors="replace"), re.M)
        if m:
            proc.port = int(m.group(1))
            proc.url = f"http://127.0.0.1:{proc.port}"
            if http("GET", proc.url + health, timeout=2)[0] == 200:
                return proc
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"{script} did not start:\n{proc.log_tail()}")


def start_imds(moto_url, instance_id, workdir, region=REGION, timeout=15.0):
    return _start_helper(Imds, "imds", "imds.py",
                         ["--moto", moto_url, "--instance-id", instance_id, "--region", region],
                         "IMDS_PORT", "/_emu/health", workdir, timeout)


class ImdsHerd(Proc):
    """imds.py --herd: one process serving many instance identities, each on its own loopback
    port; .ports {instance id: port}, .url_of(instance id)."""

    ports = {}

    def url_of(self, instance_id):
        return f"http://127.0.0.1:{self.ports[instance_id]}"


def start_imds_herd(moto_url, instance_ids, workdir, region=REGION, timeout=60.0):
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ids = workdir / "imds-herd-ids.txt"
    ids.write_text("".join(i + "\n" for i in instance_ids))
    py = VENV / "bin" / "python"
    cmd = [str(py if py.exists() else sys.executable), str(HERE / "imds.py"), "--moto", moto_url,
           "--herd", str(ids), "--region", region]
    popen, log = _spawn("imds-herd", cmd, workdir, {**os.environ, "PYTHONUNBUFFERED": "1"})
    proc = ImdsHerd("imds-herd", popen, None, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.alive():
        m = re.search(r"^IMDS_PORTS=(\{.*\})$", log.read_text(errors="replace"), re.M)
        if m:
            proc.ports = json.loads(m.group(1))
            first = proc.url_of(instance_ids[0])
            if http("GET", first + "/_emu/health", timeout=2)[0] == 200:
                return proc
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"imds.py --herd did not start:\n{proc.log_tail()}")


class CountProxy(Proc):
    """The counting and fault-injecting proxy in front of moto (countproxy.py): what emrboot
    asked AWS for, and what it got instead when a test injects faults."""

    def control(self, method, path, body=None):
        """One call of the proxy's control API (asserted 200): its JSON answer, or None."""
        st, _, text = http(method, self.url + path, body=body)
        assert st == 200, (method, path, st, text)
        return json.loads(text) if text.strip() else None

    def calls(self):
        """Every request finished since the last clear(): dicts with method, path, service,
        action, params, status, fault."""
        return self.control("GET", "/_count/log")

    def clear(self):
        self.control("DELETE", "/_count/log")

    def count(self, action):
        return sum(1 for c in self.calls() if c["action"] == action)

    def actions(self, service=None):
        """{Action: n} of the calls since the last clear (only SERVICE's when given)."""
        out = {}
        for c in self.calls():
            if service is None or c["service"] == service:
                out[c["action"]] = out.get(c["action"], 0) + 1
        return out

    def faults(self, rules):
        """Replaces the fault rules with RULES (a list of dicts: see countproxy.py's docstring);
        answers the rules as the proxy took them."""
        return self.control("PUT", "/_fault/rules", list(rules))

    def clear_faults(self):
        """No rules any more; every held or hung request is released."""
        self.control("DELETE", "/_fault/rules")

    def rules(self):
        """The rules in force, each with its "matched" and "applied" counts."""
        return self.control("GET", "/_fault/rules")

    def emulate_reassignment(self, on=True):
        """EC2's AllowReassignment on this proxy's assigns (moto ignores it): see countproxy.py."""
        self.control("PUT", "/_fault/reassignment", json.dumps(bool(on)).encode())

    def buckets(self, categories=None, drain=0):
        """EC2's account-level request buckets on, full: CATEGORIES {name: {"burst", "refill"}}
        over EC2's defaults, DRAIN tokens/s taken from each by other workloads (countproxy.py)."""
        return self.control("PUT", "/_fault/buckets", {"categories": categories or {}, "drain": drain})

    def bucket_state(self):
        """{"categories": {name: {burst, refill, tokens}}, "drain", "stats": {Action: {allowed,
        throttled}}} (categories None when the buckets are off)."""
        return self.control("GET", "/_fault/buckets")

    def buckets_off(self):
        self.control("DELETE", "/_fault/buckets")

    def held(self):
        """The requests held (or hung) right now: dicts with id, action, service, method, path,
        when ("before", "after" or "hang")."""
        return self.control("GET", "/_fault/held")

    def wait_held(self, n=1, timeout=30.0):
        """Waits until at least N requests are held; returns them (raises on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            held = self.held()
            if len(held) >= n or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if len(held) < n:
            raise AssertionError(f"{len(held)} requests held after {timeout} s, expected {n}: {held}")
        return held


def start_countproxy(upstream_url, workdir, timeout=15.0, args=()):
    """A countproxy.py forwarding to UPSTREAM_URL (moto), listening on a free loopback port;
    ARGS e.g. ("--ec2-buckets", "--drain", "5")."""
    return _start_helper(CountProxy, "countproxy", "countproxy.py", ["--upstream", upstream_url, *args],
                         "COUNTPROXY_PORT", "/_count/health", workdir, timeout)


def _clients(moto_url, region):
    import boto3  # only the venv has it; keep `bench.py --help` working without it

    kw = dict(endpoint_url=moto_url, region_name=region,
              aws_access_key_id="testing", aws_secret_access_key="testing")
    return boto3.client("ec2", **kw), boto3.client("s3", **kw)


def seed(moto_url, region=REGION):
    """An EMR-like VPC in moto: a master, a core, a reserved ENI holding the fixed IP, a bucket."""
    http("POST", moto_url + "/moto-api/seed?a=42")  # repeatable ids (and random IPs) from here on
    ec2, s3 = _clients(moto_url, region)
    az = region + "a"
    vpc_id = ec2.create_vpc(CidrBlock="172.31.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock="172.31.0.0/20", AvailabilityZone=az)["Subnet"]
    facts = {"region": region, "vpc_id": vpc_id, "subnet_id": subnet["SubnetId"],
             "subnet_cidr": subnet["CidrBlock"], "az": az,
             "az_id": subnet.get("AvailabilityZoneId"), "account_id": subnet.get("OwnerId")}
    for role in ("MASTER", "CORE"):
        inst = ec2.run_instances(
            ImageId=AMI, InstanceType="m5.xlarge", MinCount=1, MaxCount=1,
            SubnetId=subnet["SubnetId"],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": "emr-practice"},
                {"Key": "aws:elasticmapreduce:instance-group-role", "Value": role},
                {"Key": "aws:elasticmapreduce:job-flow-id", "Value": JOB_FLOW_ID}]}],
        )["Instances"][0]
        eni = inst["NetworkInterfaces"][0]
        facts[role.lower()] = {"instance_id": inst["InstanceId"], "eni_id": eni["NetworkInterfaceId"],
                               "mac": eni["MacAddress"], "private_ip": inst["PrivateIpAddress"],
                               "hostname": inst["PrivateDnsName"]}
    eni = ec2.create_network_interface(
        SubnetId=subnet["SubnetId"], SecondaryPrivateIpAddressCount=1,
        Description="emrboot reserved ENI (holds the fixed master IP)",
        TagSpecifications=[{"ResourceType": "network-interface",
                            "Tags": [{"Key": "Name", "Value": "emr-practice-fixed-ip"}]}],
    )["NetworkInterface"]
    facts["reserved_eni_id"] = eni["NetworkInterfaceId"]
    facts["fixed_ip"] = next(a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"] if not a["Primary"])
    facts["bucket"] = "emrboot-test"
    s3.create_bucket(Bucket=facts["bucket"], CreateBucketConfiguration={"LocationConstraint": region})
    return facts


def _hostname(ip, region):
    return f"ip-{ip.replace('.', '-')}.{region}.compute.internal"


def write_info_files(dir, kind, facts):
    """EMR's node info files for one node of the seeded cluster (shapes of shared/fixtures/emr-info)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    role = ROLE_OF_KIND[kind]
    ha, fleet = kind.startswith("ha-"), kind.startswith("fleet-")
    master_id = facts["master"]["instance_id"]
    master_host = facts["master"].get("hostname") or _hostname(facts["master"]["private_ip"], facts["region"])
    if kind == "ha-master-secondary":  # another master is the primary: ids made up, not in moto
        master_id, master_host = "i-0a1b2c3d4e5f60718", _hostname("172.31.3.3", facts["region"])
    is_master = role == "Master"
    instance = {"isMaster": is_master, "isRunningNameNode": is_master, "isRunningDataNode": not is_master,
                "isRunningJobTracker": False, "isRunningTaskTracker": not is_master,
                "isRunningResourceManager": is_master, "isRunningNodeManager": not is_master}
    instance = ({"instanceFleetId": FLEETS[role.upper()]} if fleet
                else {"instanceGroupId": GROUPS[role]}) | instance
    job_flow = {"jobFlowId": JOB_FLOW_ID, "jobFlowCreationInstant": 1429046932628,
                "instanceCount": 5 if ha else 3, "masterInstanceId": master_id,
                "masterPrivateDnsName": master_host, "masterInstanceType": "m5.xlarge",
                "slaveInstanceType": "m5.xlarge", "hadoopVersion": "3.3.6"}
    if fleet:
        job_flow["instanceGroups"] = []
        job_flow["instanceFleets"] = [{"instanceFleetId": fid, "instanceFleetType": r, "name": r.title()}
                                      for r, fid in FLEETS.items()]
    else:
        job_flow["instanceGroups"] = [
            {"instanceGroupId": gid, "instanceGroupName": r.upper(), "instanceRole": r,
             "marketType": "OnDemand", "instanceType": "m5.xlarge",
             "requestedInstanceCount": 3 if (ha and r == "Master") else 1}
            for r, gid in GROUPS.items()]
    files = {"instance.json": instance, "job-flow.json": job_flow}
    if fleet or ha:
        files["extraInstanceData.json"] = {
            "instanceRole": role.upper(), "jobFlowId": JOB_FLOW_ID, "masterHost": master_host,
            "releaseLabel": "emr-7.5.0", "numCandidates": 3 if ha else 1}
    for name, content in files.items():
        (d / name).write_text(json.dumps(content, indent=2) + "\n")
    return sorted(files)


def node_env(moto, imds, info_dir, state_dir, extra=None):
    """The environment emrboot runs with: only the bench's AWS, never the host's."""
    url = lambda p: p if isinstance(p, str) else p.url  # noqa: E731 - Proc or URL
    node_dir = Path(state_dir).resolve().parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ENDPOINT_URL": url(moto),
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        # aws-config takes a base URL and appends /latest/...; a trailing slash works too.
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": url(imds),
        # No ~/.aws of the host machine may leak into a test.
        "AWS_CONFIG_FILE": str(node_dir / "aws-config-absent"),
        "AWS_SHARED_CREDENTIALS_FILE": str(node_dir / "aws-credentials-absent"),
        "EMRBOOT_INFO_DIR": str(info_dir),
        "EMRBOOT_STATE_DIR": str(state_dir),
        "EMRBOOT_LOG_FILE": str(node_dir / "emrboot.log"),
        "EMRBOOT_SHUTDOWN_ACTIONS_DIR": str(node_dir / "shutdown-actions"),
    })
    env.update(extra or {})
    return env


def emrboot_bin():
    return Path(os.environ.get("EMRBOOT_BIN", REPO / "target" / "debug" / "emrboot"))


def cmd_up(a):
    d = Path(a.dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    (d / "env").unlink(missing_ok=True)  # a waiting script must never source a stale one
    kind = a.kind or {"master": "master-ig", "core": "core-ig", "task": "task-ig"}[a.role]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    procs = []
    try:
        moto = start_moto(d)
        procs.append(moto)
        facts = seed(moto.url, a.region)
        who = facts["master" if ROLE_OF_KIND[kind] == "Master" else "core"]
        imds = start_imds(moto.url, who["instance_id"], d, a.region)
        procs.append(imds)
        facts.update(moto_url=moto.url, imds_url=imds.url, kind=kind, node=who["instance_id"])
        write_info_files(d / "info", kind, facts)
        (d / "state").mkdir(exist_ok=True)
        (d / "facts.json").write_text(json.dumps(facts, indent=2) + "\n")
        env = node_env(moto, imds, d / "info", d / "state")
        env = {k: v for k, v in env.items() if k.startswith(("AWS_", "EMRBOOT_"))}
        env.update(BENCH_DIR=str(d), BENCH_MOTO_URL=moto.url, BENCH_IMDS_URL=imds.url,
                   BENCH_PID=str(os.getpid()))
        tmp = d / "env.tmp"
        tmp.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items())))
        tmp.rename(d / "env")
        print("ready", flush=True)
        while not stop.wait(0.5):
            dead = [p for p in procs if not p.alive()]
            if dead:
                print(f"bench: {dead[0].name} exited:\n{dead[0].log_tail()}", file=sys.stderr)
                return 1
        return 0
    finally:
        for p in reversed(procs):
            p.stop()
        print("bench: stopped", file=sys.stderr, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start moto + IMDS, seed, write D/env, block until signalled")
    up.add_argument("--dir", required=True)
    up.add_argument("--role", choices=("master", "core", "task"), default="master",
                    help="which seeded node IMDS impersonates (task impersonates the core instance)")
    up.add_argument("--kind", choices=KINDS, help="info files to write (default: <role>-ig)")
    up.add_argument("--region", default=REGION)
    a = ap.parse_args(argv)
    return cmd_up(a)


if __name__ == "__main__":
    sys.exit(main())
