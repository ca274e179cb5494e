#!/usr/bin/env python3
"""A counting and fault-injecting HTTP proxy for the test bench: sits between emrboot and moto,
forwards every request unchanged and records what it was, so tests can count AWS calls by Action
(moto's own request log is not reliable enough for that); on demand it answers, delays, drops or
holds chosen requests instead, the way a throttled or broken AWS endpoint would.

    python countproxy.py --upstream http://127.0.0.1:MOTO_PORT [--port 0] [--host 127.0.0.1]

prints `COUNTPROXY_PORT=<n>` once it listens. Standard library only, one thread per connection,
HTTP/1.1 keep-alive towards the client (the AWS SDK's hyper client reuses connections), TCP_NODELAY.

Each record: {"method", "path", "service", "action", "params", "status", "fault"}:
- action: `Action` from the form body (EC2/query protocol) or the query string, else the
  `X-Amz-Target` header (JSON protocols), else null (S3, REST);
- service: from the SigV4 credential scope of the Authorization header (`ec2`, `s3`, ...), or null;
- params: the query-protocol parameters, first value of each (so tests can check e.g.
  `AllowReassignment=true` on the wire, which moto itself ignores);
- status: the HTTP status the client got (the upstream's, the fault's, 502 when the upstream could
  not be reached), or null when it got no answer (reset, hang, a client gone while held);
- fault: null when the request was forwarded untouched, else the name of the fault applied.
A request is recorded once it is finished (answered, reset, released or abandoned).

Control API (not forwarded), JSON:
- GET /_count/log (the records, oldest first), DELETE /_count/log (clears them; answers the
  records it dropped), GET /_count/health.
- PUT /_fault/rules with a list of rules: replaces the rules (their counters start afresh).
  GET /_fault/rules: the rules, each with "matched" and "applied" counts.
  DELETE /_fault/rules: clears the rules and releases every held or hung request.
- PUT /_fault/reassignment true|false: emulate EC2's AllowReassignment, which moto ignores: after
  moto answers an AssignPrivateIpAddresses with AllowReassignment=true, the IP is taken off every
  other ENI (straight in moto) before the client gets the answer.
- GET /_fault/held: the requests held right now, oldest first:
  [{"id", "action", "service", "method", "path", "when"}] (when: "before" | "after" | "hang").

A rule: {"service": "ec2"|"s3"|...|null, "action": REGEX|null, "method": "PUT"|...|null,
"path": REGEX|null, "fault": F, ...}. A null (or absent) filter matches everything; the regexes are
searched (re.search: anchor them for an exact name) in the action (Action or X-Amz-Target) and in
the path without its query string; a request without an action never matches an action filter.
Faults:
- "throttle": EC2 and other query services: 503 with EC2's
  <Response><Errors><Error><Code>RequestLimitExceeded</Code>... ; S3: 503 <Error><Code>SlowDown</Code>...;
  JSON protocols: 400 ThrottlingException.
- "error500": 500 InternalError in the service's error shape.
- "error": "status" and "code" (and optional "message"), e.g. 400 InvalidParameterValue,
  403 UnauthorizedOperation, in the service's error shape.
- "reset": the client connection is closed with a TCP RST (SO_LINGER 0), without an answer.
- "delay": sleeps "seconds", then forwards normally.
- "hang": never answers; the connection is closed without an answer when the rules are cleared
  or once the client goes away.
- "hold": "when": "before" holds the request before forwarding it; "after" forwards it, reads the
  upstream's answer and holds that. Released (forwarded, answered) when the rules are cleared;
  dropped when the client goes away first. Listed by GET /_fault/held while held.
Which matching requests a rule takes: "first": N (only the first N it matches), or "rate": 0.0-1.0
(each matching request drawn from random.Random("seed", default 1) of that rule: repeatable), or
by default all. Rules are tried in order; the first that takes a request applies its fault.

EC2's account-level request buckets (`--ec2-buckets [--drain D]` at start, or the control API):
one token bucket per category, shared by every client of the proxy, as EC2 keeps them per account
and region (see docs/test-bench.md); each EC2 request takes a token from its category's bucket,
and an empty bucket answers 503 RequestLimitExceeded in EC2's shape (recorded with fault
"bucket"; a throttled request takes no token). Fault rules are tried first. Categories
(default burst, refill per second):
- "describe": non-mutating EC2 calls (Describe*, Get*, List*), e.g. DescribeTags and a filtered
  DescribeNetworkInterfaces: 100, 20;
- "describe-eni-unfiltered": DescribeNetworkInterfaces without a filter or id: 50, 10;
- "tags": CreateTags, DeleteTags: 100, 10;
- "private-ip": AssignPrivateIpAddresses, UnassignPrivateIpAddresses: 100, 5;
- "mutating": every other EC2 call: 50, 5.
"drain": tokens per second that other workloads of the account take from every bucket (a
background load; they take what is there, so a bucket's net refill is refill - drain).
While buckets are on, requests to the upstream are sent one at a time (moto's tag store is not
thread-safe, and a real account's calls are served in any case).
- PUT /_fault/buckets {"categories": {NAME: {"burst": B, "refill": R}, ...}, "drain": D}: turns the
  buckets on, full; categories not given keep EC2's defaults; an unknown name is an error.
- GET /_fault/buckets: {"categories": {NAME: {"burst", "refill", "tokens"}}, "drain",
  "stats": {ACTION: {"allowed": n, "throttled": n}}} (or {"categories": null} when off).
- DELETE /_fault/buckets: turns them off (and forgets the stats).
"""
import argparse
import xml.etree.ElementTree as ET
import http.client
import itertools
import json
import random
import re
import select
import socket
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "expect", "proxy-connection"}
SERVICE_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")
FAULTS = ("throttle", "error500", "error", "reset", "delay", "hang", "hold")
RULE_KEYS = {"service", "action", "method", "path", "fault", "status", "code", "message", "seconds",
             "when", "rate", "seed", "first"}


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.records = []

    def add(self, rec):
        with self.lock:
            self.records.append(rec)

    def snapshot(self, clear=False):
        with self.lock:
            out = list(self.records)
            if clear:
                self.records.clear()
            return out


class Rule:
    def __init__(self, spec):
        if not isinstance(spec, dict):
            raise ValueError(f"a rule is a JSON object, not {spec!r}")
        unknown = set(spec) - RULE_KEYS
        if unknown:
            raise ValueError(f"unknown rule keys {sorted(unknown)} in {spec!r}")
        self.spec = dict(spec)
        self.fault = spec.get("fault")
        if self.fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, not {self.fault!r}")
        self.service = spec.get("service")
        self.method = (spec.get("method") or "").upper() or None
        self.action = re.compile(spec["action"]) if spec.get("action") is not None else None
        self.path = re.compile(spec["path"]) if spec.get("path") is not None else None
        if self.fault == "error":
            if not isinstance(spec.get("status"), int) or not spec.get("code"):
                raise ValueError(f'fault "error" needs an integer "status" and a "code": {spec!r}')
        if self.fault == "delay" and not isinstance(spec.get("seconds"), (int, float)):
            raise ValueError(f'fault "delay" needs "seconds": {spec!r}')
        if self.fault == "hold" and spec.get("when") not in ("before", "after"):
            raise ValueError(f'fault "hold" needs "when": "before" or "after": {spec!r}')
        if "rate" in spec and "first" in spec:
            raise ValueError(f'"rate" and "first" exclude each other: {spec!r}')
        self.rate = spec.get("rate")
        if self.rate is not None and not (isinstance(self.rate, (int, float)) and 0 <= self.rate <= 1):
            raise ValueError(f'"rate" must be a number in [0, 1]: {spec!r}')
        self.first = spec.get("first")
        if self.first is not None and not (isinstance(self.first, int) and self.first >= 0):
            raise ValueError(f'"first" must be a non-negative integer: {spec!r}')
        self.rng = random.Random(spec.get("seed", 1))
        self.matched = 0
        self.applied = 0

    def matches(self, req):
        if self.service is not None and req["service"] != self.service:
            return False
        if self.method is not None and req["method"] != self.method:
            return False
        if self.action is not None and (req["action"] is None or not self.action.search(req["action"])):
            return False
        return self.path is None or bool(self.path.search(req["path"]))

    def takes(self, req):
        """Whether this rule applies to REQ; counts and draws only for requests it matches."""
        if not self.matches(req):
            return False
        self.matched += 1
        if self.first is not None:
            take = self.matched <= self.first
        elif self.rate is not None:
            take = self.rng.random() < self.rate
        else:
            take = True
        self.applied += take
        return take

    def describe(self):
        return {**self.spec, "matched": self.matched, "applied": self.applied}


class Faults:
    """The rules and the requests held or hung under them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.release = threading.Event()  # set (and replaced) when the rules are cleared
        self.held = {}
        self.reassignment = False  # PUT /_fault/reassignment
        self.ids = itertools.count(1)

    def set_rules(self, specs):
        if not isinstance(specs, list):
            raise ValueError("the body must be a JSON list of rules")
        rules = [Rule(s) for s in specs]
        with self.lock:
            self.rules = rules

    def clear(self):
        with self.lock:
            self.rules = []
            self.release.set()
            self.release = threading.Event()

    def pick(self, req):
        """The rule that applies to REQ, or None; and the release event of this generation."""
        with self.lock:
            for rule in self.rules:
                if rule.takes(req):
                    return rule, self.release
            return None, self.release

    def describe(self):
        with self.lock:
            return [r.describe() for r in self.rules]

    def hold(self, req, when):
        with self.lock:
            hid = next(self.ids)
            self.held[hid] = {"id": hid, "action": req["action"], "service": req["service"],
                              "method": req["method"], "path": req["path"], "when": when}
            return hid

    def unhold(self, hid):
        with self.lock:
            self.held.pop(hid, None)

    def list_held(self):
        with self.lock:
            return [self.held[k] for k in sorted(self.held)]


EC2_BUCKETS = {"describe": (100, 20), "describe-eni-unfiltered": (50, 10), "tags": (100, 10),
               "private-ip": (100, 5), "mutating": (50, 5)}


def ec2_category(action, params):
    """The request bucket an EC2 call draws from (see EC2_BUCKETS)."""
    action = action or ""
    if action in ("CreateTags", "DeleteTags"):
        return "tags"
    if action in ("AssignPrivateIpAddresses", "UnassignPrivateIpAddresses"):
        return "private-ip"
    if action == "DescribeNetworkInterfaces" and not any(
            k.startswith(("Filter.", "NetworkInterfaceId.")) for k in params):
        return "describe-eni-unfiltered"
    if action.startswith(("Describe", "Get", "List")):
        return "describe"
    return "mutating"


class Bucket:
    def __init__(self, burst, refill, now):
        self.burst, self.refill = float(burst), float(refill)
        self.tokens, self.at = float(burst), now

    def advance(self, now, drain):
        dt = max(0.0, now - self.at)
        self.at = now
        # The background load takes DRAIN of the REFILL as it comes: the net rate, kept in [0, burst].
        self.tokens = max(0.0, min(self.burst, self.tokens + (self.refill - drain) * dt))

    def describe(self):
        return {"burst": self.burst, "refill": self.refill, "tokens": round(self.tokens, 3)}


class Buckets:
    """EC2's account-level token buckets, shared by every client (see the docstring)."""

    def __init__(self, clock=time.monotonic):
        self.lock = threading.Lock()
        self.clock = clock
        self.buckets = None  # {category: Bucket} while on
        self.drain = 0.0
        self.stats = {}
        self.upstream_lock = threading.Lock()  # one upstream request at a time while on

    def configure(self, spec):
        if spec is None:
            with self.lock:
                self.buckets, self.drain, self.stats = None, 0.0, {}
            return
        if not isinstance(spec, dict) or set(spec) - {"categories", "drain"}:
            raise ValueError(f'buckets: a JSON object with "categories" and "drain", not {spec!r}')
        cats = spec.get("categories") or {}
        if not isinstance(cats, dict) or set(cats) - set(EC2_BUCKETS):
            raise ValueError(f"bucket categories are {sorted(EC2_BUCKETS)}, not {sorted(cats)}")
        drain = spec.get("drain") or 0
        if not isinstance(drain, (int, float)) or drain < 0:
            raise ValueError(f'"drain" must be a number >= 0, not {drain!r}')
        now = self.clock()
        buckets = {}
        for name, (burst, refill) in EC2_BUCKETS.items():
            c = cats.get(name) or {}
            if not isinstance(c, dict) or set(c) - {"burst", "refill"}:
                raise ValueError(f'bucket {name}: {{"burst": B, "refill": R}}, not {c!r}')
            b, r = c.get("burst", burst), c.get("refill", refill)
            if not all(isinstance(x, (int, float)) and x >= 0 for x in (b, r)):
                raise ValueError(f"bucket {name}: burst and refill must be numbers >= 0: {c!r}")
            buckets[name] = Bucket(b, r, now)
        with self.lock:
            self.buckets, self.drain, self.stats = buckets, float(drain), {}

    @property
    def on(self):
        return self.buckets is not None

    def take(self, req):
        """True when REQ may go on (a token taken, or not an EC2 call, or buckets off)."""
        if req["service"] != "ec2" or req["action"] is None:
            return True
        with self.lock:
            if self.buckets is None:
                return True
            bucket = self.buckets[ec2_category(req["action"], req["params"])]
            bucket.advance(self.clock(), self.drain)
            ok = bucket.tokens >= 1.0
            if ok:
                bucket.tokens -= 1.0
            st = self.stats.setdefault(req["action"], {"allowed": 0, "throttled": 0})
            st["allowed" if ok else "throttled"] += 1
            return ok

    def describe(self):
        with self.lock:
            if self.buckets is None:
                return {"categories": None, "drain": 0, "stats": {}}
            now = self.clock()
            for b in self.buckets.values():
                b.advance(now, self.drain)
            return {"categories": {k: b.describe() for k, b in self.buckets.items()}, "drain": self.drain,
                    "stats": {k: dict(v) for k, v in self.stats.items()}}


def classify(method, path, headers, body):
    """(service, action, params) of one request."""
    m = SERVICE_RE.search(headers.get("Authorization") or "")
    service = m.group(1) if m else None
    params = {}
    query = urllib.parse.urlsplit(path).query
    if query:
        params.update({k: v[0] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()})
    ctype = (headers.get("Content-Type") or "").lower()
    if body and "application/x-www-form-urlencoded" in ctype:
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            form = {}
        params.update({k: v[0] for k, v in form.items()})
    action = params.get("Action") or headers.get("X-Amz-Target")
    if "Action" not in params:
        params = {}  # a REST request's query string is not an API call's parameters
    return service, action, params


def error_answer(req, status, code, message):
    """(status, headers, body) of an AWS error in the shape of REQ's service."""
    status, headers, body = _error_answer(req, status, code, message)
    return status, headers + [("Content-Length", str(len(body)))], body  # HEAD too


def _error_answer(req, status, code, message):
    rid = str(uuid.uuid4())
    if req["service"] == "s3":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{message}</Message><RequestId>{rid}</RequestId></Error>")
        return status, [("Content-Type", "application/xml"), ("x-amz-request-id", rid)], body.encode()
    if req["params"].get("Action") or not req["headers"].get("X-Amz-Target"):
        # EC2's query-protocol shape (other query services parse it too: Code and Message)
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
                f"<Message>{message}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>")
        return status, [("Content-Type", "text/xml;charset=UTF-8"), ("x-amzn-RequestId", rid)], body.encode()
    body = json.dumps({"__type": code, "message": message})
    return status, [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", rid),
                    ("x-amzn-ErrorType", code)], body.encode()


def canned(rule, req):
    """The answer of a throttle / error500 / error rule."""
    if rule.fault == "throttle":
        if req["service"] == "s3":
            return error_answer(req, 503, "SlowDown", "Please reduce your request rate.")
        if req["params"].get("Action") or not req["headers"].get("X-Amz-Target"):
            return error_answer(req, 503, "RequestLimitExceeded", "Request limit exceeded.")
        return error_answer(req, 400, "ThrottlingException", "Rate exceeded")
    if rule.fault == "error500":
        return error_answer(req, 500, "InternalError",
                            "We encountered an internal error. Please try again.")
    return error_answer(req, rule.spec["status"], rule.spec["code"],
                        rule.spec.get("message") or f"{rule.spec['code']} (injected by countproxy)")


def _moto_ec2(up, params):
    """One EC2 query call straight to moto (it checks no signature), parsed."""
    body = urllib.parse.urlencode({"Version": "2016-11-15", **params}).encode()
    conn = http.client.HTTPConnection(up.hostname, up.port or 80, timeout=30)
    try:
        conn.request("POST", "/", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/ap-northeast-2/ec2/aws4_request, "
                             "SignedHeaders=host, Signature=0"})
        return ET.fromstring(conn.getresponse().read())
    finally:
        conn.close()


def emulate_reassignment(up, params):
    """What EC2 does and moto does not (it ignores AllowReassignment): an IP assigned to one ENI
    leaves every other ENI. Applied after moto answered the assign, while the client still waits,
    so the client sees EC2's end state."""
    target = params.get("NetworkInterfaceId")
    ips = {v for k, v in params.items() if k.startswith("PrivateIpAddress.")}
    if params.get("AllowReassignment") != "true" or not target or not ips:
        return
    root = _moto_ec2(up, {"Action": "DescribeNetworkInterfaces"})
    strip = lambda t: t.split("}", 1)[-1]  # noqa: E731
    for ni in root.iter():
        if strip(ni.tag) != "item" or ni.find("./{*}networkInterfaceId") is None:
            continue
        eni = ni.find("./{*}networkInterfaceId").text
        held = [a.findtext("./{*}privateIpAddress") for a in ni.findall("./{*}privateIpAddressesSet/{*}item")
                if a.findtext("./{*}primary") != "true"]
        for n, ip in enumerate(sorted(ips & set(held)) if eni != target else [], 1):
            _moto_ec2(up, {"Action": "UnassignPrivateIpAddresses", "NetworkInterfaceId": eni,
                           "PrivateIpAddress.1": ip})


def make_handler(upstream, recorder, faults, buckets=None):
    buckets = buckets if buckets is not None else Buckets()
    up = urllib.parse.urlsplit(upstream)
    if up.scheme != "http" or not up.hostname:
        raise ValueError(f"--upstream must be http://host:port, not {upstream!r}")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, the second waits for the client's
        # delayed ACK (40 ms a response). Real IMDS and EC2 answer without that stall.
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):
            sys.stderr.write("countproxy: " + (fmt % args) + "\n")

        def read_body(self):
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def reply(self, status, data, ctype="application/json", extra=()):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def reply_json(self, status, obj):
            return self.reply(status, json.dumps(obj).encode())

        def control(self, method, path, body):
            if (method, path) == ("GET", "/_count/health"):
                return self.reply(200, b"ok", "text/plain")
            if path == "/_count/log" and method in ("GET", "DELETE"):
                return self.reply_json(200, recorder.snapshot(clear=method == "DELETE"))
            if path == "/_fault/rules" and method == "PUT":
                try:
                    faults.set_rules(json.loads(body or b"null"))
                except (ValueError, re.error) as e:
                    return self.reply_json(400, {"error": str(e)})
                return self.reply_json(200, faults.describe())
            if path == "/_fault/rules" and method == "GET":
                return self.reply_json(200, faults.describe())
            if path == "/_fault/rules" and method == "DELETE":
                faults.clear()
                return self.reply_json(200, [])
            if path == "/_fault/reassignment" and method == "PUT":
                faults.reassignment = bool(json.loads(body or b"null"))
                return self.reply_json(200, {"reassignment": faults.reassignment})
            if path == "/_fault/buckets" and method in ("PUT", "DELETE"):
                try:
                    buckets.configure(json.loads(body or b"null") if method == "PUT" else None)
                except ValueError as e:
                    return self.reply_json(400, {"error": str(e)})
                return self.reply_json(200, buckets.describe())
            if (method, path) == ("GET", "/_fault/buckets"):
                return self.reply_json(200, buckets.describe())
            if (method, path) == ("GET", "/_fault/held"):
                return self.reply_json(200, faults.list_held())
            return self.reply_json(404, {"error": "no such control endpoint"})

        # -- the client's side of the connection -------------------------------------------------
        def client_gone(self):
            """True once the client has closed (or reset) its end of the connection."""
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                if not readable:
                    return False
                return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                return False
            except OSError:
                return True

        def wait_release(self, release):
            """Blocks until RELEASE is set (True) or the client goes away (False)."""
            while not release.wait(0.1):
                if self.client_gone():
                    return False
            return True

        def drop(self, rst):
            """Ends the connection without an answer; with a TCP RST when RST."""
            self.close_connection = True
            try:
                if rst:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    # No shutdown() first: that would send a FIN. Closing the descriptor with
                    # linger 0 sends the RST at once; the server's own close then finds it closed.
                    fd = self.connection.detach()
                    socket.close(fd)
                else:
                    self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        # -- forwarding -----------------------------------------------------------------------------
        def upstream_call(self, req, body):
            if buckets.on:
                with buckets.upstream_lock:
                    return self._upstream_call(req, body)
            return self._upstream_call(req, body)

        def _upstream_call(self, req, body):
            method, path = req["method"], req["full_path"]
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or method in ("POST", "PUT", "PATCH"):
                headers["Content-Length"] = str(len(body))
            status, reason, resp_headers, data = 502, "Bad Gateway", [], b""
            conn = http.client.HTTPConnection(up.hostname, up.port or 80, timeout=120)
            try:
                conn.request(method, path, body=body if body or method in ("POST", "PUT", "PATCH") else None,
                             headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status, reason = resp.status, resp.reason
                resp_headers = [(k, v) for k, v in resp.getheaders()
                                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
                if method == "HEAD":
                    length = resp.getheader("Content-Length")
                    if length is not None:
                        resp_headers.append(("Content-Length", length))
            except OSError as e:
                data = f"countproxy: upstream {upstream} failed: {e!r}".encode()
                resp_headers = [("Content-Type", "text/plain")]
            finally:
                conn.close()
            return status, reason, resp_headers, data

        def send_answer(self, method, status, reason, resp_headers, data):
            self.send_response(status, reason)
            for k, v in resp_headers:
                self.send_header(k, v)
            if method != "HEAD" and not any(k.lower() == "content-length" for k, _ in resp_headers):
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)

        def forward(self, method):
            body = self.read_body()
            path = self.path
            if path.startswith(("/_count/", "/_fault/")):
                return self.control(method, path.split("?", 1)[0], body)
            service, action, params = classify(method, path, self.headers, body)
            req = {"method": method, "path": path.split("?", 1)[0], "full_path": path,
                   "service": service, "action": action, "params": params, "headers": self.headers}
            rule, release = faults.pick(req)
            fault = rule.fault if rule else None
            answer = None  # (status, reason, headers, data) to send
            if fault is None and not buckets.take(req):
                fault = "bucket"
                status, headers, data = error_answer(req, 503, "RequestLimitExceeded", "Request limit exceeded.")
                answer = (status, None, headers, data)
            elif fault in ("throttle", "error500", "error"):
                status, headers, data = canned(rule, req)
                answer = (status, None, headers, data)
            elif fault == "reset":
                self.drop(rst=True)
            elif fault == "hang":
                hid = faults.hold(req, "hang")
                try:
                    self.wait_release(release)
                finally:
                    faults.unhold(hid)
                self.drop(rst=False)
            elif fault == "hold" and rule.spec["when"] == "before":
                hid = faults.hold(req, "before")
                try:
                    released = self.wait_release(release)
                finally:
                    faults.unhold(hid)
                if released:
                    answer = self.upstream_call(req, body)
                else:
                    self.drop(rst=False)
            elif fault == "hold":  # after
                answer = self.upstream_call(req, body)
                hid = faults.hold(req, "after")
                try:
                    released = self.wait_release(release)
                finally:
                    faults.unhold(hid)
                if not released:
                    answer = None
                    self.drop(rst=False)
            else:
                if fault == "delay":
                    time.sleep(float(rule.spec["seconds"]))
                answer = self.upstream_call(req, body)
            if answer and answer[0] == 200 and faults.reassignment and service == "ec2" \
                    and action == "AssignPrivateIpAddresses":
                emulate_reassignment(up, params)
            recorder.add({"method": method, "path": req["path"], "service": service, "action": action,
                          "params": params, "status": answer[0] if answer else None, "fault": fault})
            if answer:
                self.send_answer(method, *answer)

    for m in ("GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"):
        setattr(Handler, "do_" + m, lambda self, m=m: self.forward(m))
    return Handler


class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # hundreds of simulated nodes connect at once


def raise_fd_limit():
    """Hundreds of simulated nodes keep a connection each: the soft limit up to the hard one."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT of moto")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--ec2-buckets", action="store_true",
                    help="start with EC2's account-level request buckets on (see the docstring)")
    ap.add_argument("--drain", type=float, default=0.0,
                    help="with --ec2-buckets: tokens/s other workloads take from every bucket")
    a = ap.parse_args()
    raise_fd_limit()
    buckets = Buckets()
    if a.ec2_buckets:
        buckets.configure({"drain": a.drain})
    server = Server((a.host, a.port), make_handler(a.upstream, Recorder(), Faults(), buckets))
    server.daemon_threads = True
    print(f"COUNTPROXY_PORT={server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
