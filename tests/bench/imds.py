#!/usr/bin/env python3
"""IMDSv2 emulator for the test bench, backed by a moto server.

moto's own instance metadata is static and lacks the token TTL header (aws-config then refuses the
token) and network/interfaces, so this serves the paths emrboot reads, computed from moto's live
state on every request: an IP assigned through AssignPrivateIpAddresses shows up at once.

Control API, no token: POST /_emu/instance {"instance_id": ...}; POST /_emu/faults {"delay_s": 2.5,
"delay_n": N, "fail_500": N, "refuse_token": N, "drop": N, "paths": "regex"} (N: the next N matching
requests, -1 until cleared; delay_n defaults to -1); DELETE /_emu/faults; GET|DELETE /_emu/log;
GET /_emu/health; POST /_emu/pin {"<mac>": ["ip", ...]} freezes local-ipv4s of that MAC (IMDS
lagging EC2), DELETE /_emu/pin unfreezes. Test-only extras: fault "revoke_tokens": N (the next N matching requests first
forget every token issued so far, as an IMDS restart does, then are served normally: a GET with an
old token then gets a genuine 401); GET /_emu/issued-tokens lists every token ever handed out, so
tests can check that no log or output leaks one.

    python imds.py --port 0 --moto http://127.0.0.1:MP --instance-id i-xxx [--region ap-northeast-2]

prints `IMDS_PORT=<n>` once it listens.

    python imds.py --moto http://127.0.0.1:MP --herd IDS_FILE

many identities from one process, for scale runs (benchmarks/herd.py): a listener per instance id
on its own loopback port, metadata from a snapshot of moto taken at start (see serve_herd);
prints `IMDS_PORTS=<JSON {instance id: port}>`.
"""
import argparse
import json
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
from botocore.config import Config

TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
FAULT_COUNTS = ("drop", "fail_500", "refuse_token", "delay_n", "revoke_tokens")


class NotFound(Exception):
    pass


def moto_client(moto_url, region):
    return boto3.client(
        "ec2", endpoint_url=moto_url, region_name=region,
        aws_access_key_id="testing", aws_secret_access_key="testing",
        # A test that breaks moto should see a fast 500, not botocore's backoff.
        config=Config(retries={"max_attempts": 1, "mode": "standard"}))


class Emulator:
    def __init__(self, moto_url, region, instance_id, ec2=None, static_tree=None):
        self.region = region
        self.instance_id = instance_id
        self.ec2 = ec2 or moto_client(moto_url, region)
        self.static_tree = static_tree  # herd mode: the tree of a snapshot, moto not asked again
        self.lock = threading.Lock()
        self.tokens = {}  # token -> monotonic expiry
        self.issued = []  # every token ever handed out (GET /_emu/issued-tokens)
        self.allow_v1 = False  # POST /_emu/v1 {"allow": true}: tokenless GETs, for the seed's scripts
        self.faults = {}
        self.log = []

    # -- tokens ---------------------------------------------------------------------------------
    def new_token(self, ttl):
        token = secrets.token_urlsafe(40)
        now = time.monotonic()
        with self.lock:
            self.tokens = {t: exp for t, exp in self.tokens.items() if exp > now}
            self.tokens[token] = now + ttl
            self.issued.append(token)
        return token

    def token_ok(self, token):
        with self.lock:
            return token is not None and self.tokens.get(token, 0) > time.monotonic()

    # -- faults ---------------------------------------------------------------------------------
    def take_faults(self, path):
        """The faults that hit this request, consuming one from each count that applies.

        At most one of drop/fail_500/refuse_token answers a request (in that order), so that
        {"fail_500": 1, "refuse_token": 1} fails two successive requests in two ways.
        """
        hit = {}
        with self.lock:
            f = self.faults
            if not f or (f.get("paths") and not re.search(f["paths"], path)):
                return hit
            if f.get("revoke_tokens", 0):
                n = f["revoke_tokens"]
                f["revoke_tokens"] = n - 1 if n > 0 else n
                self.tokens.clear()
                hit["revoke_tokens"] = True
            for name in ("delay_n", "drop", "fail_500", "refuse_token"):
                n = f.get(name, 0)
                if n == 0 or (name == "delay_n" and not f.get("delay_s")):
                    continue
                f[name] = n - 1 if n > 0 else n
                if name == "delay_n":
                    hit["delay_s"] = f["delay_s"]
                    continue
                hit[name] = True
                break
        return hit

    def set_faults(self, spec):
        """Replace the faults (None clears them); returns what is now in force."""
        spec = dict(spec or {})
        unknown = set(spec) - {"delay_s", "paths", *FAULT_COUNTS}
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        re.compile(spec.get("paths") or "")
        spec.update({k: int(spec[k]) for k in FAULT_COUNTS if k in spec})
        spec.update({k: float(spec[k]) for k in ["delay_s"] if k in spec})
        if spec.get("delay_s"):
            spec.setdefault("delay_n", -1)  # a delay applies until cleared unless counted
        with self.lock:
            self.faults = spec
        return spec

    def impersonate(self, instance_id):
        if not self.ec2.describe_instances(
                Filters=[{"Name": "instance-id", "Values": [instance_id]}])["Reservations"]:
            return 404, {"error": f"{instance_id} not in moto"}
        self.instance_id = instance_id
        return 200, {"instance_id": instance_id}

    # -- metadata tree, live from moto ----------------------------------------------------------
    def subnets(self, ids):
        """Subnets by id. A subnet's CIDR and AZ never change, so each is asked of moto once:
        one moto call per metadata request instead of two."""
        cache = self.__dict__.setdefault("_subnets", {})
        missing = sorted(set(ids) - set(cache))
        if missing:
            for sn in self.ec2.describe_subnets(SubnetIds=missing)["Subnets"]:
                cache[sn["SubnetId"]] = sn
        return {i: cache[i] for i in ids}

    def tree(self):
        if self.static_tree is not None:
            return self.static_tree
        res = self.ec2.describe_instances(
            Filters=[{"Name": "instance-id", "Values": [self.instance_id]}])["Reservations"]
        if not res:
            raise NotFound(f"instance {self.instance_id} not in moto")
        return self.tree_of(res[0]["Instances"][0])

    def tree_of(self, inst):
        """The metadata tree of INST (one instance of a DescribeInstances answer)."""
        az = inst["Placement"]["AvailabilityZone"]
        enis = sorted(inst.get("NetworkInterfaces", []), key=lambda e: e["Attachment"]["DeviceIndex"])
        # DescribeInstances shows each ENI's current IPs (moto builds it from the same ENI objects).
        subnets = self.subnets({e["SubnetId"] for e in enis})
        az_id = next((s["AvailabilityZoneId"] for s in subnets.values() if s.get("AvailabilityZoneId")
                      and s["AvailabilityZone"] == az), None) or fake_az_id(az)
        macs = {}
        for e in enis:
            ips = sorted(e["PrivateIpAddresses"], key=lambda a: not a.get("Primary"))
            pinned = self.__dict__.get("pinned_ipv4s", {}).get(e["MacAddress"])
            macs[e["MacAddress"]] = {
                "device-number": str(e["Attachment"]["DeviceIndex"]),
                "interface-id": e["NetworkInterfaceId"],
                "local-ipv4s": "\n".join(pinned if pinned is not None
                                         else [a["PrivateIpAddress"] for a in ips]),
                "mac": e["MacAddress"],
                "owner-id": e.get("OwnerId", "123456789012"),
                "subnet-id": e["SubnetId"],
                "subnet-ipv4-cidr-block": subnets[e["SubnetId"]]["CidrBlock"],
                "vpc-id": e["VpcId"],
            }
        account = enis[0].get("OwnerId") if enis else None
        meta = {
            "ami-id": inst.get("ImageId", ""),
            "instance-id": inst["InstanceId"],
            "instance-type": inst.get("InstanceType", ""),
            "local-hostname": inst.get("PrivateDnsName", ""),
            "local-ipv4": inst.get("PrivateIpAddress", ""),
            "mac": enis[0]["MacAddress"] if enis else "",
            "placement": {"availability-zone": az, "availability-zone-id": az_id, "region": self.region},
            "network": {"interfaces": {"macs": macs}},
        }
        doc = {"accountId": account or "123456789012", "architecture": inst.get("Architecture", "x86_64"),
               "availabilityZone": az, "imageId": meta["ami-id"], "instanceId": inst["InstanceId"],
               "instanceType": meta["instance-type"], "privateIp": meta["local-ipv4"],
               "region": self.region, "version": "2017-09-30"}
        return {"meta-data": meta,
                "dynamic": {"instance-identity": {"document": json.dumps(doc, indent=2)}}}


def fake_az_id(az):
    # "ap-northeast-2a" -> "apne2-az1": the shape of real AZ ids, deterministic in the AZ letter.
    region, letter = az[:-1], az[-1]
    short = {"north": "n", "south": "s", "east": "e", "west": "w", "central": "c",
             "northeast": "ne", "northwest": "nw", "southeast": "se", "southwest": "sw"}
    p = region.split("-")
    return f"{p[0]}{''.join(short.get(x, x[:1]) for x in p[1:-1])}{p[-1]}-az{ord(letter) - 96}"


def make_handler(emu):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as aws-config's hyper client expects
        # Headers and body go out in two writes; with Nagle on, the second waits for the client's
        # delayed ACK (40 ms a response). Real IMDS and EC2 answer without that stall.
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):  # request lines carry no token; headers are not logged
            sys.stderr.write("imds: " + (fmt % args) + "\n")

        def send(self, status, body="", ctype="text/plain", headers=()):
            data = body.encode() if isinstance(body, str) else body
            self.status = status
            # Logged before the first byte goes out: a client that has its answer and then reads
            # /_emu/log must find this request there.
            self.record()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def record(self):
            if self.hit is None:  # a control request, or this request is already logged
                return
            with emu.lock:
                emu.log.append({"method": self.method, "path": self.emu_path,
                                "status": self.status,
                                **({"faults": sorted(self.hit)} if self.hit else {})})
            self.hit = None

        def body_json(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}") if n else {}

        def handle_one(self, method):
            self.status = None
            self.hit = None
            path = re.sub(r"/{2,}", "/", self.path.split("?", 1)[0])
            if path.startswith("/_emu/"):
                return self.control(method, path)
            if method == "PUT" and self.headers.get("Content-Length"):
                self.rfile.read(int(self.headers["Content-Length"]))
            hit = emu.take_faults(path)
            self.method, self.emu_path, self.hit = method, path, hit
            try:
                time.sleep(hit.get("delay_s", 0))
                if hit.get("drop"):
                    self.close_connection = True  # no bytes at all: the client sees EOF
                elif hit.get("fail_500"):
                    self.send(500, "Internal Server Error (injected)")
                elif hit.get("refuse_token"):
                    self.send(401, "Unauthorized (injected)")
                else:
                    self.serve(method, path)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            self.record()  # a dropped request sent nothing, so it is logged here

        def serve(self, method, path):
            if method == "PUT":
                if path != "/latest/api/token":
                    return self.send(405 if path.startswith("/latest/") else 404, "Not Found")
                ttl = self.headers.get(TTL_HEADER, "")
                if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                    return self.send(400, "Bad Request")
                return self.send(200, emu.new_token(int(ttl)), headers=[(TTL_HEADER, ttl)])
            if not path.startswith("/latest/"):
                return self.send(404, "Not Found")
            token = self.headers.get(TOKEN_HEADER)
            if not emu.token_ok(token) and not (emu.allow_v1 and token is None):
                return self.send(401, "Unauthorized")
            try:
                node = {"latest": emu.tree()}
                for part in [p for p in path.split("/") if p]:
                    if not isinstance(node, dict) or part not in node:
                        raise NotFound(path)
                    node = node[part]
            except NotFound as e:
                sys.stderr.write(f"imds: 404 {e}\n")
                return self.send(404, "Not Found")
            except Exception as e:  # moto down or confused: a 5xx is what real IMDS would give
                sys.stderr.write(f"imds: moto error {e!r}\n")
                return self.send(500, "Internal Server Error")
            if isinstance(node, dict):
                node = "\n".join(k + "/" if isinstance(v, dict) else k for k, v in node.items())
            self.send(200, node)

        def control(self, method, path):
            def reply(status, obj):
                self.send(status, json.dumps(obj), "application/json")

            route = (method, path[len("/_emu/"):])
            try:
                if route == ("GET", "health"):
                    return self.send(200, "ok")
                if route in (("GET", "log"), ("DELETE", "log")):
                    with emu.lock:
                        if method == "DELETE":
                            emu.log.clear()
                        return reply(200, emu.log)
                if route == ("GET", "issued-tokens"):
                    with emu.lock:
                        return reply(200, list(emu.issued))
                if route == ("POST", "faults"):
                    return reply(200, emu.set_faults(self.body_json()))
                if route == ("DELETE", "faults"):
                    return reply(200, emu.set_faults(None))
                if route == ("POST", "v1"):
                    emu.allow_v1 = bool(self.body_json().get("allow"))
                    return reply(200, {"allow_v1": emu.allow_v1})
                if route in (("POST", "pin"), ("DELETE", "pin")):
                    # IMDS lagging EC2: local-ipv4s of a MAC frozen at what the test says.
                    with emu.lock:
                        emu.pinned_ipv4s = {} if method == "DELETE" else dict(self.body_json())
                        return reply(200, emu.pinned_ipv4s)
                if route == ("POST", "instance"):
                    return reply(*emu.impersonate(self.body_json()["instance_id"]))
                reply(404, {"error": "no such control endpoint"})
            except (ValueError, KeyError, TypeError, re.error) as e:
                reply(400, {"error": str(e)})

    for method in ("GET", "PUT", "POST", "DELETE"):
        setattr(Handler, "do_" + method, lambda self, m=method: self.handle_one(m))
    return Handler


class HerdServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def serve_herd(a):
    """--herd FILE: one listener per instance id of FILE (one a line), each on its own loopback
    port and with its own identity, all in this one process (a process per node is too heavy for
    hundreds of nodes). Their metadata is a snapshot taken from moto at start with one
    DescribeInstances call: static, for scale runs that move no IP. Prints
    `IMDS_PORTS=<JSON {instance id: port}>` once every listener is up."""
    import resource
    import selectors

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    ids = [line.strip() for line in open(a.herd) if line.strip()]
    ec2 = moto_client(a.moto, a.region)
    found = {}
    for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-id", "Values": ids}]):
        for r in page["Reservations"]:
            for inst in r["Instances"]:
                found[inst["InstanceId"]] = inst
    missing = [i for i in ids if i not in found]
    if missing:
        sys.exit(f"imds: {len(missing)} instances not in moto, e.g. {missing[:3]}")
    sel = selectors.DefaultSelector()
    ports, subnets = {}, {}
    for iid in ids:
        emu = Emulator(a.moto, a.region, iid, ec2=ec2)
        emu._subnets = subnets  # one subnet cache for all: one DescribeSubnets in all
        emu.static_tree = emu.tree_of(found[iid])
        server = HerdServer((a.host, 0), make_handler(emu))
        sel.register(server.socket, selectors.EVENT_READ, server)
        ports[iid] = server.server_address[1]
    print("IMDS_PORTS=" + json.dumps(ports), flush=True)
    try:
        while True:
            for key, _ in sel.select():
                key.data._handle_request_noblock()  # what serve_forever does for one server
    except KeyboardInterrupt:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--moto", required=True)
    ap.add_argument("--instance-id")
    ap.add_argument("--herd", metavar="FILE", help="instance ids, one a line: a listener for each (see serve_herd)")
    ap.add_argument("--region", default="ap-northeast-2")
    a = ap.parse_args()
    if a.herd:
        return serve_herd(a)
    if not a.instance_id:
        ap.error("--instance-id (or --herd FILE) is required")
    emu = Emulator(a.moto, a.region, a.instance_id)
    server = ThreadingHTTPServer((a.host, a.port), make_handler(emu))
    server.daemon_threads = True
    print(f"IMDS_PORT={server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
