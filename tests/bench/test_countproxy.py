"""The counting and fault-injecting proxy (countproxy.py) and the namespace helpers (netns.py)
themselves."""
import concurrent.futures
import http.client
import json
import random
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import bench
import netns


def clients(url):
    kw = dict(endpoint_url=url, region_name=bench.REGION, aws_access_key_id="testing",
              aws_secret_access_key="testing", config=Config(retries={"total_max_attempts": 1}))
    return boto3.client("ec2", **kw), boto3.client("s3", **kw)


def test_proxy_forwards_and_counts_by_action(moto, aws, tmp_path):
    proxy = bench.start_countproxy(moto.url, tmp_path)
    try:
        ec2, s3 = clients(proxy.url)
        vpcs = ec2.describe_vpcs()["Vpcs"]
        assert aws["vpc_id"] in [v["VpcId"] for v in vpcs]  # moto's answer came back whole
        ec2.create_tags(Resources=[aws["master"]["instance_id"]], Tags=[{"Key": "Biz Unit", "Value": "X Y"}])
        assert s3.list_objects_v2(Bucket=aws["bucket"]).get("KeyCount") == 0
        calls = proxy.calls()
        assert [c["action"] for c in calls if c["service"] == "ec2"] == ["DescribeVpcs", "CreateTags"], calls
        create = calls[1]
        assert create["params"]["Tag.1.Key"] == "Biz Unit" and create["params"]["Tag.1.Value"] == "X Y"
        assert all(c["status"] == 200 and c["fault"] is None for c in calls), calls
        assert [c["service"] for c in calls][-1] == "s3" and calls[-1]["action"] is None, calls
        assert proxy.actions(service="ec2") == {"DescribeVpcs": 1, "CreateTags": 1}
        assert proxy.count("CreateTags") == 1
        # an error answer is forwarded and counted with its status
        try:
            ec2.describe_network_interfaces(NetworkInterfaceIds=["eni-0000000000000000f"])
        except ec2.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "InvalidNetworkInterfaceID.NotFound"
        else:
            raise AssertionError("moto found a made-up ENI")
        assert proxy.calls()[-1]["status"] == 400
        proxy.clear()
        assert proxy.calls() == []
    finally:
        proxy.stop()
    assert not proxy.alive()


def test_proxy_answers_502_when_the_upstream_is_down(tmp_path):
    proxy = bench.start_countproxy(f"http://127.0.0.1:{bench.free_port()}", tmp_path)
    try:
        status, _, body = bench.http("POST", proxy.url + "/", body=b"Action=DescribeVpcs&Version=2016-11-15",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 502, body
        assert proxy.calls() == [{"method": "POST", "path": "/", "service": None, "action": "DescribeVpcs",
                                  "params": {"Action": "DescribeVpcs", "Version": "2016-11-15"}, "status": 502,
                                  "fault": None}]
    finally:
        proxy.stop()


def test_topology_forwards_into_a_namespace_and_is_torn_down(tmp_path):
    srv = bench.start_countproxy(f"http://127.0.0.1:{bench.free_port()}", tmp_path)  # any HTTP server
    topo = netns.Topology()
    try:
        ns = topo.add_namespace("probe")
        topo.forward(ns, srv.port, srv.port)
        cp = topo.run_in(ns, ["python3", "-c",
                              "import sys, urllib.request as u; "
                              "print(u.build_opener(u.ProxyHandler({})).open(sys.argv[1]).read().decode())",
                              srv.url + "/_count/health"])
        assert (cp.returncode, cp.stdout.strip()) == (0, "ok"), cp.stderr
        # the namespace has no other way out: only loopback, no route to the host
        cp = topo.run_in(ns, ["ip", "-4", "route", "show"])
        assert cp.stdout.strip() == "", cp.stdout
        pids = [p.pid for p in topo.procs]
        assert ns in netns.list_namespaces()
    finally:
        topo.close()
        srv.stop()
    assert ns not in netns.list_namespaces()
    for pid in pids:
        assert not netns._pid_alive(pid), pid  # stopped and reaped
    topo.close()  # idempotent


# -- fault injection, against a tiny upstream that records what reached it ------------------------

class Upstream:
    """A tiny HTTP upstream on loopback: answers 200 `up METHOD PATH` and records each request."""

    def __init__(self):
        self.requests = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                seen.append((self.command, self.path, body.decode(errors="replace")))
                data = f"up {self.command} {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxied(tmp_path):
    """(countproxy, Upstream): the proxy forwards to the tiny upstream; both stopped after."""
    upstream = Upstream()
    try:
        proxy = bench.start_countproxy(upstream.url, tmp_path)
        try:
            yield proxy, upstream
        finally:
            proxy.stop()
    finally:
        upstream.close()


def auth(service):
    """An Authorization header whose SigV4 credential scope names SERVICE (not a valid signature:
    the proxy only reads the scope)."""
    return {"Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20250101/{bench.REGION}/{service}/"
                             "aws4_request, SignedHeaders=host, Signature=00"}


def ec2_request(url, action="DescribeVpcs", timeout=10):
    """A query-protocol EC2 request: (status, body text)."""
    return bench.http("POST", url + "/", body=f"Action={action}&Version=2016-11-15".encode(),
                      headers={"Content-Type": "application/x-www-form-urlencoded", **auth("ec2")},
                      timeout=timeout)[::2]


def s3_request(url, method="GET", path="/bucket/key", timeout=10):
    st, _, body = bench.http(method, url + path, headers=auth("s3"), timeout=timeout)
    return st, body


def test_throttle_answers_in_each_services_shape_and_botocore_reads_the_code(proxied):
    proxy, upstream = proxied
    proxy.faults([{"service": "ec2", "fault": "throttle"}, {"service": "s3", "fault": "throttle"}])
    ec2, s3 = clients(proxy.url)
    with pytest.raises(ClientError) as e:
        ec2.describe_vpcs()
    err = e.value.response
    assert (err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]) == (503, "RequestLimitExceeded")
    assert err["Error"]["Message"] == "Request limit exceeded."
    assert err["ResponseMetadata"]["RequestId"], err  # EC2's <RequestID> was found
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="b", Key="k")
    err = e.value.response
    assert (err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]) == (503, "SlowDown")
    assert err["Error"]["Message"] == "Please reduce your request rate."
    # the raw EC2 body, as EC2 sends it
    st, body = ec2_request(proxy.url)
    assert st == 503
    assert re.fullmatch(r'<\?xml version="1.0" encoding="UTF-8"\?>\n<Response><Errors><Error>'
                        r"<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
                        r"</Error></Errors><RequestID>[0-9a-f-]{36}</RequestID></Response>", body), body
    assert upstream.requests == []  # nothing was forwarded
    calls = proxy.calls()
    assert [(c["service"], c["action"], c["status"], c["fault"]) for c in calls] == [
        ("ec2", "DescribeVpcs", 503, "throttle"), ("s3", None, 503, "throttle"),
        ("ec2", "DescribeVpcs", 503, "throttle")], calls


def test_error_faults_carry_the_status_and_code_asked_for(proxied):
    proxy, upstream = proxied
    proxy.faults([
        {"service": "ec2", "action": "^CreateTags$", "fault": "error", "status": 400, "code": "InvalidParameterValue"},
        {"service": "ec2", "action": "^DescribeTags$", "fault": "error", "status": 403,
         "code": "UnauthorizedOperation", "message": "You are not authorized to perform this operation."},
        {"service": "s3", "method": "PUT", "fault": "error500"},
        {"service": "ec2", "action": "^DescribeVpcs$", "fault": "error500"},
    ])
    ec2, s3 = clients(proxy.url)
    cases = [(lambda: ec2.create_tags(Resources=["i-1"], Tags=[{"Key": "k", "Value": "v"}]), 400, "InvalidParameterValue"),
             (lambda: ec2.describe_tags(), 403, "UnauthorizedOperation"),
             (lambda: ec2.describe_vpcs(), 500, "InternalError"),
             (lambda: s3.put_object(Bucket="b", Key="k", Body=b"x"), 500, "InternalError")]
    for call, status, code in cases:
        with pytest.raises(ClientError) as e:
            call()
        err = e.value.response
        assert (err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]) == (status, code), err
    assert "not authorized" in ec2_request(proxy.url, "DescribeTags")[1]
    # a request no rule matches is forwarded: a GET to S3, an EC2 action without a rule
    assert s3_request(proxy.url) == (200, "up GET /bucket/key")
    assert ec2_request(proxy.url, "DescribeSubnets")[0] == 200
    # a JSON-protocol request gets the JSON error shape
    proxy.faults([{"action": "^Foo_1.Bar$", "fault": "error", "status": 400, "code": "ValidationException"}])
    st, headers, body = bench.http("POST", proxy.url + "/", body=b"{}",
                                   headers={"X-Amz-Target": "Foo_1.Bar", "Content-Type": "application/x-amz-json-1.1"})
    assert st == 400 and headers["x-amzn-ErrorType"] == "ValidationException", (st, body)
    assert json.loads(body)["__type"] == "ValidationException"
    assert [r[:2] for r in upstream.requests] == [("GET", "/bucket/key"), ("POST", "/")]
    faulted = [(c["action"], c["status"], c["fault"]) for c in proxy.calls() if c["fault"]]
    assert faulted[:4] == [("CreateTags", 400, "error"), ("DescribeTags", 403, "error"),
                           ("DescribeVpcs", 500, "error500"), (None, 500, "error500")], faulted


def test_rate_is_seeded_and_counts_only_matching_requests(proxied):
    proxy, upstream = proxied
    proxy.faults([{"service": "ec2", "action": "^DescribeVpcs$", "fault": "throttle", "rate": 0.5, "seed": 7}])
    got = []
    for _ in range(20):
        got.append(ec2_request(proxy.url)[0])
        assert ec2_request(proxy.url, "DescribeSubnets")[0] == 200  # not matched: no draw
        assert s3_request(proxy.url)[0] == 200
    rng = random.Random(7)
    assert got == [503 if rng.random() < 0.5 else 200 for _ in range(20)]
    assert 0 < got.count(503) < 20, got
    assert proxy.rules()[0]["matched"] == 20 and proxy.rules()[0]["applied"] == got.count(503)
    # the same rules again: the same sequence (the counters start afresh)
    proxy.faults([{"service": "ec2", "action": "^DescribeVpcs$", "fault": "throttle", "rate": 0.5, "seed": 7}])
    assert [ec2_request(proxy.url)[0] for _ in range(20)] == got
    # the default seed is 1
    proxy.faults([{"service": "ec2", "fault": "throttle", "rate": 0.3}])
    rng = random.Random(1)
    assert [ec2_request(proxy.url)[0] for _ in range(20)] == [503 if rng.random() < 0.3 else 200 for _ in range(20)]


def test_first_n_then_the_next_rule(proxied):
    proxy, upstream = proxied
    proxy.faults([{"service": "ec2", "fault": "error500", "first": 3},
                  {"service": "ec2", "action": "Describe", "fault": "throttle", "first": 1}])
    got = [ec2_request(proxy.url, a)[0] for a in ("CreateTags", "DescribeVpcs", "DescribeVpcs",
                                                   "DescribeVpcs", "DescribeVpcs", "CreateTags")]
    assert got == [500, 500, 500, 503, 200, 200], got
    assert [c["fault"] for c in proxy.calls()] == ["error500"] * 3 + ["throttle", None, None]
    assert len(upstream.requests) == 2
    proxy.clear_faults()
    assert proxy.rules() == []
    assert ec2_request(proxy.url)[0] == 200


def test_bad_rules_are_refused_and_keep_the_old_ones(proxied):
    proxy, _ = proxied
    proxy.faults([{"fault": "throttle", "service": "ec2"}])
    for bad in ({"fault": "explode"}, {"fault": "error", "status": 400}, {"fault": "delay"},
                {"fault": "hold"}, {"fault": "hold", "when": "during"}, {"fault": "throttle", "rate": 2},
                {"fault": "throttle", "rate": 0.5, "first": 1}, {"fault": "throttle", "action": "("},
                {"fault": "throttle", "servcie": "ec2"}, "throttle"):
        st, _, body = bench.http("PUT", proxy.url + "/_fault/rules", body=[bad])
        assert st == 400 and json.loads(body)["error"], (bad, st, body)
    assert bench.http("PUT", proxy.url + "/_fault/rules", body={"fault": "reset"})[0] == 400  # not a list
    assert [r["fault"] for r in proxy.rules()] == ["throttle"]


def test_reset_closes_the_connection_with_a_rst_and_forwards_nothing(proxied):
    proxy, upstream = proxied
    proxy.faults([{"service": "ec2", "fault": "reset"}])
    body = b"Action=DescribeVpcs&Version=2016-11-15"
    head = "".join(f"{k}: {v}\r\n" for k, v in auth("ec2").items())
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n{head}"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        with pytest.raises(ConnectionResetError):  # a FIN would read b"" instead
            s.recv(1024)
    assert upstream.requests == []
    assert [(c["action"], c["status"], c["fault"]) for c in proxy.calls()] == [("DescribeVpcs", None, "reset")]
    # the proxy itself goes on
    assert s3_request(proxy.url)[0] == 200


def test_delay_then_forward(proxied):
    proxy, upstream = proxied
    proxy.faults([{"service": "ec2", "fault": "delay", "seconds": 0.6}])
    t0 = time.monotonic()
    assert ec2_request(proxy.url) == (200, "up POST /")
    assert time.monotonic() - t0 >= 0.6
    t0 = time.monotonic()
    assert s3_request(proxy.url)[0] == 200
    assert time.monotonic() - t0 < 0.6  # not matched: not delayed
    assert [(c["status"], c["fault"]) for c in proxy.calls()] == [(200, "delay"), (200, None)]


def in_thread(fn, *args):
    pool = concurrent.futures.ThreadPoolExecutor(1)
    fut = pool.submit(fn, *args)
    pool.shutdown(wait=False)
    return fut


def test_hang_lasts_until_the_rules_are_cleared_and_answers_nothing(proxied):
    proxy, upstream = proxied
    proxy.faults([{"service": "ec2", "fault": "hang"}])
    fut = in_thread(ec2_request, proxy.url, "DescribeVpcs", 30)
    (held,) = proxy.wait_held(1)
    assert {k: held[k] for k in ("action", "service", "method", "path", "when")} == \
        {"action": "DescribeVpcs", "service": "ec2", "method": "POST", "path": "/", "when": "hang"}
    time.sleep(0.5)
    assert not fut.done() and proxy.calls() == []
    proxy.clear_faults()
    with pytest.raises(http.client.RemoteDisconnected):  # closed without an answer
        fut.result(10)
    assert proxy.held() == []
    assert upstream.requests == []
    assert [(c["status"], c["fault"]) for c in proxy.calls()] == [(None, "hang")]


def test_a_hung_request_is_let_go_when_its_client_goes_away(proxied):
    proxy, upstream = proxied
    proxy.faults([{"service": "s3", "fault": "hang"}])
    with pytest.raises(TimeoutError):
        s3_request(proxy.url, timeout=1)  # urllib gives up and closes the connection
    deadline = time.monotonic() + 10
    while proxy.held() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.held() == []
    assert [(c["status"], c["fault"]) for c in proxy.calls()] == [(None, "hang")]
    assert upstream.requests == []


@pytest.mark.parametrize("when", ["before", "after"])
def test_hold_keeps_the_request_until_the_rules_are_cleared(proxied, when):
    proxy, upstream = proxied
    proxy.faults([{"service": "ec2", "action": "^AssignPrivateIpAddresses$", "fault": "hold", "when": when}])
    fut = in_thread(ec2_request, proxy.url, "AssignPrivateIpAddresses", 30)
    (held,) = proxy.wait_held(1)
    assert (held["action"], held["when"]) == ("AssignPrivateIpAddresses", when)
    # moto has (after) or has not (before) seen it; the client has no answer yet
    time.sleep(0.3)
    assert len(upstream.requests) == (1 if when == "after" else 0)
    assert not fut.done()
    assert ec2_request(proxy.url, "DescribeVpcs")[0] == 200  # other requests go on meanwhile
    proxy.clear_faults()
    assert fut.result(10) == (200, "up POST /")
    assert [r[2].split("&")[0] for r in upstream.requests] == (
        ["Action=AssignPrivateIpAddresses", "Action=DescribeVpcs"] if when == "after"
        else ["Action=DescribeVpcs", "Action=AssignPrivateIpAddresses"])
    assert proxy.held() == []
    assert [(c["action"], c["status"], c["fault"]) for c in proxy.calls()] == [
        ("DescribeVpcs", 200, None), ("AssignPrivateIpAddresses", 200, "hold")]


def test_a_request_held_before_is_dropped_when_its_client_goes_away(proxied):
    proxy, upstream = proxied
    proxy.faults([{"fault": "hold", "when": "before"}])
    with pytest.raises(TimeoutError):
        ec2_request(proxy.url, timeout=1)
    deadline = time.monotonic() + 10
    while proxy.held() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.held() == []
    proxy.clear_faults()
    time.sleep(0.2)
    assert upstream.requests == []  # never forwarded
    assert [(c["status"], c["fault"]) for c in proxy.calls()] == [(None, "hold")]


# -- EC2's account-level request buckets ------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_buckets_refill_drain_and_keep_categories_apart():
    import countproxy

    clock = FakeClock()
    b = countproxy.Buckets(clock)
    ec2 = lambda action, **params: {"service": "ec2", "action": action, "params": params}  # noqa: E731
    assert b.take(ec2("CreateTags"))  # off: everything passes, nothing counted
    b.configure({"categories": {"tags": {"burst": 3, "refill": 2}, "describe": {"burst": 1, "refill": 0}},
                 "drain": 1})
    assert [b.take(ec2("CreateTags")) for _ in range(4)] == [True, True, True, False]
    assert [b.take(ec2("DescribeTags")) for _ in range(2)] == [True, False]  # its own bucket
    assert b.take(ec2("AssignPrivateIpAddresses"))  # EC2's default burst (100) for the others
    assert b.take({"service": "s3", "action": None, "params": {}})  # not EC2: never throttled
    clock.now += 1.0  # net refill 2 - 1 (drain) = 1 token
    assert [b.take(ec2("CreateTags")) for _ in range(2)] == [True, False]
    clock.now += 100.0  # refilled to the burst, not beyond
    assert [b.take(ec2("DeleteTags")) for _ in range(4)] == [True, True, True, False]
    st = b.describe()
    assert st["stats"] == {"CreateTags": {"allowed": 4, "throttled": 2},
                           "DescribeTags": {"allowed": 1, "throttled": 1},
                           "AssignPrivateIpAddresses": {"allowed": 1, "throttled": 0},
                           "DeleteTags": {"allowed": 3, "throttled": 1}}
    assert st["categories"]["private-ip"] == {"burst": 100.0, "refill": 5.0, "tokens": 100.0}  # refilled
    assert st["categories"]["describe"]["tokens"] == 0  # drain empties what does not refill
    assert st["drain"] == 1
    # the categories of test-bench.md
    cat = countproxy.ec2_category
    assert [cat("DescribeTags", {}), cat("DescribeNetworkInterfaces", {"Filter.1.Name": "x"}),
            cat("DescribeNetworkInterfaces", {}), cat("UnassignPrivateIpAddresses", {}),
            cat("RunInstances", {})] == ["describe", "describe", "describe-eni-unfiltered", "private-ip",
                                         "mutating"]
    with pytest.raises(ValueError):
        b.configure({"categories": {"nope": {"burst": 1, "refill": 1}}})
    b.configure(None)
    assert b.describe()["categories"] is None and b.take(ec2("CreateTags"))


def test_an_empty_bucket_answers_ec2s_request_limit_exceeded(moto, aws, tmp_path):
    proxy = bench.start_countproxy(moto.url, tmp_path, args=("--ec2-buckets", "--drain", "0"))
    try:
        assert proxy.bucket_state()["categories"]["tags"] == {"burst": 100.0, "refill": 10.0, "tokens": 100.0}
        proxy.buckets({"tags": {"burst": 2, "refill": 0}})
        ec2, s3 = clients(proxy.url)
        iid = aws["master"]["instance_id"]
        for n in range(2):
            ec2.create_tags(Resources=[iid], Tags=[{"Key": f"k{n}", "Value": "v"}])
        with pytest.raises(ClientError) as e:
            ec2.create_tags(Resources=[iid], Tags=[{"Key": "k2", "Value": "v"}])
        err = e.value.response
        assert (err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]) == (503, "RequestLimitExceeded")
        ec2.describe_tags()  # another bucket
        s3.list_objects_v2(Bucket=aws["bucket"])  # not EC2
        st = proxy.bucket_state()
        assert st["stats"] == {"CreateTags": {"allowed": 2, "throttled": 1},
                               "DescribeTags": {"allowed": 1, "throttled": 0}}, st
        calls = proxy.calls()
        assert [(c["action"], c["status"], c["fault"]) for c in calls if c["service"] == "ec2"] == [
            ("CreateTags", 200, None), ("CreateTags", 200, None), ("CreateTags", 503, "bucket"),
            ("DescribeTags", 200, None)], calls
        # the throttled call never reached moto
        tags = {t["Key"] for t in clients(moto.url)[0].describe_tags(
            Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]}
        assert {"k0", "k1"} <= tags and "k2" not in tags
        proxy.buckets_off()
        ec2.create_tags(Resources=[iid], Tags=[{"Key": "k2", "Value": "v"}])
        assert proxy.bucket_state() == {"categories": None, "drain": 0, "stats": {}}
    finally:
        proxy.stop()
