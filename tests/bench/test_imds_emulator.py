"""The IMDS emulator itself, against a real moto server."""
import http.client as httpclient
import socket
import json
import time
import urllib.error

import boto3
import pytest

import bench
from bench import http

TTL = "X-aws-ec2-metadata-token-ttl-seconds"
TOK = "X-aws-ec2-metadata-token"
CONNECTION_ERRORS = (ConnectionError, urllib.error.URLError, httpclient.HTTPException)


@pytest.fixture
def ec2(moto):
    return boto3.client("ec2", endpoint_url=moto.url, region_name=bench.REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def get(imds, path, token):
    return http("GET", imds.url + path, headers={TOK: token} if token else {})


def put_token(imds, ttl="60"):
    return http("PUT", imds.url + "/latest/api/token", headers={TTL: ttl} if ttl is not None else {})


def test_token_required(imds):
    assert get(imds, "/latest/meta-data/instance-id", None)[0] == 401
    assert get(imds, "/latest/meta-data/instance-id", "not-a-token")[0] == 401
    status, _, body = get(imds, "/latest/meta-data/instance-id", imds.token())
    assert status == 200 and body.startswith("i-")


def test_token_ttl_echoed_and_content_headers(imds):
    status, headers, token = put_token(imds, "21600")
    assert status == 200 and token
    assert headers[TTL] == "21600"
    assert headers["Content-Type"].startswith("text/plain")
    assert int(headers["Content-Length"]) == len(token)
    status, headers, body = get(imds, "/latest/meta-data/mac", token)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert int(headers["Content-Length"]) == len(body)


@pytest.mark.parametrize("ttl", [None, "0", "21601", "-5", "abc", ""])
def test_invalid_ttl_is_400(imds, ttl):
    assert put_token(imds, ttl)[0] == 400


def test_token_expires(imds):
    token = put_token(imds, "1")[2]
    assert get(imds, "/latest/meta-data/instance-id", token)[0] == 200
    time.sleep(1.2)
    assert get(imds, "/latest/meta-data/instance-id", token)[0] == 401


def test_metadata_matches_moto(imds, aws, ec2):
    inst = ec2.describe_instances(InstanceIds=[aws["master"]["instance_id"]])["Reservations"][0]["Instances"][0]
    eni = inst["NetworkInterfaces"][0]
    mac = eni["MacAddress"]
    t = imds.token()
    assert imds.get("instance-id", t) == inst["InstanceId"]
    assert imds.get("mac", t) == mac == aws["master"]["mac"]
    assert imds.get("local-ipv4", t) == inst["PrivateIpAddress"] == aws["master"]["private_ip"]
    assert imds.get("placement/region", t) == "ap-northeast-2"
    assert imds.get("placement/availability-zone", t) == "ap-northeast-2a"
    assert imds.get("placement/availability-zone-id", t) == "apne2-az1"
    assert imds.get("network/interfaces/macs/", t) == mac + "/"
    base = f"network/interfaces/macs/{mac}/"
    assert imds.get(base + "interface-id", t) == eni["NetworkInterfaceId"]
    assert imds.get(base + "device-number", t) == "0"
    assert imds.get(base + "subnet-id", t) == aws["subnet_id"]
    assert imds.get(base + "subnet-ipv4-cidr-block", t) == "172.31.0.0/20"
    assert imds.get(base + "vpc-id", t) == aws["vpc_id"]
    assert imds.get(base + "local-ipv4s", t) == inst["PrivateIpAddress"]
    listing = imds.get(base, t).split("\n")
    assert {"interface-id", "local-ipv4s", "subnet-ipv4-cidr-block"} <= set(listing)
    top = imds.get("", t).split("\n")
    assert {"instance-id", "mac", "placement/", "network/"} <= set(top)
    doc = json.loads(imds.get("/latest/dynamic/instance-identity/document", t))
    assert doc["instanceId"] == inst["InstanceId"] and doc["region"] == "ap-northeast-2"
    assert doc["availabilityZone"] == "ap-northeast-2a" and doc["privateIp"] == inst["PrivateIpAddress"]
    assert doc["accountId"] == "123456789012"


def test_unknown_paths_404(imds):
    t = imds.token()
    for path in ("/latest/meta-data/nope", "/latest/meta-data/network/interfaces/macs/00:11:22:33:44:55/",
                 "/latest/meta-data/instance-id/extra", "/nothing", "/latest/user-data"):
        assert get(imds, path, t)[0] == 404, path


def test_assigned_ip_shows_up_live(imds, aws, ec2):
    mac = aws["master"]["mac"]
    path = f"network/interfaces/macs/{mac}/local-ipv4s"
    assert imds.get(path) == aws["master"]["private_ip"]
    ec2.assign_private_ip_addresses(NetworkInterfaceId=aws["master"]["eni_id"],
                                    PrivateIpAddresses=[aws["fixed_ip"]], AllowReassignment=True)
    assert imds.get(path).split("\n") == [aws["master"]["private_ip"], aws["fixed_ip"]]
    assert imds.get("local-ipv4") == aws["master"]["private_ip"]  # the primary stays primary


def test_fault_fail_500(imds):
    t = imds.token()
    imds.faults(fail_500=2, paths="instance-id")
    assert get(imds, "/latest/meta-data/mac", t)[0] == 200  # not matching: untouched
    assert get(imds, "/latest/meta-data/instance-id", t)[0] == 500
    assert get(imds, "/latest/meta-data/instance-id", t)[0] == 500
    assert get(imds, "/latest/meta-data/instance-id", t)[0] == 200


def test_fault_fail_500_until_cleared(imds):
    t = imds.token()
    imds.faults(fail_500=-1)
    for _ in range(3):
        assert get(imds, "/latest/meta-data/mac", t)[0] == 500
    assert put_token(imds)[0] == 500
    imds.clear_faults()
    assert get(imds, "/latest/meta-data/mac", t)[0] == 200


def test_fault_refuse_token(imds):
    t = imds.token()
    imds.faults(refuse_token=1, paths="^/latest/api/token$")
    assert put_token(imds)[0] == 401
    assert put_token(imds)[0] == 200
    imds.faults(refuse_token=1)  # a 401 on GET, as when IMDS no longer accepts a token
    assert get(imds, "/latest/meta-data/mac", t)[0] == 401
    assert get(imds, "/latest/meta-data/mac", t)[0] == 200


def test_fault_drop(imds):
    t = imds.token()
    imds.faults(drop=1)
    with pytest.raises(CONNECTION_ERRORS):
        get(imds, "/latest/meta-data/mac", t)
    assert get(imds, "/latest/meta-data/mac", t)[0] == 200


def test_fault_drop_raw_connection_gets_no_bytes(imds):
    imds.faults(drop=1)
    with socket.create_connection(("127.0.0.1", imds.port), timeout=5) as s:
        s.sendall(b"GET /latest/meta-data/mac HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100) == b""  # orderly close with nothing sent


def test_fault_delay(imds):
    t = imds.token()
    imds.faults(delay_s=0.5, delay_n=1)
    start = time.monotonic()
    assert get(imds, "/latest/meta-data/mac", t)[0] == 200
    assert time.monotonic() - start >= 0.5


def test_faults_combine(imds):
    t = imds.token()
    imds.faults(delay_s=0.3, fail_500=1, refuse_token=1, paths="/mac$")
    start = time.monotonic()
    assert get(imds, "/latest/meta-data/mac", t)[0] == 500
    assert get(imds, "/latest/meta-data/mac", t)[0] == 401
    assert get(imds, "/latest/meta-data/mac", t)[0] == 200
    assert time.monotonic() - start >= 0.9
    assert get(imds, "/latest/meta-data/instance-id", t)[0] == 200


def test_bad_fault_spec_is_400(imds):
    assert http("POST", imds.url + "/_emu/faults", body={"fial_500": 1})[0] == 400
    assert http("POST", imds.url + "/_emu/faults", body={"paths": "("})[0] == 400


def test_log_never_contains_tokens(imds):
    tokens = [imds.token() for _ in range(3)]
    for t in tokens:
        imds.get("instance-id", t)
    get(imds, "/latest/meta-data/mac", "bogus-token-value")
    status, _, raw = http("GET", imds.url + "/_emu/log")
    assert status == 200
    entries = json.loads(raw)
    assert {"method": "PUT", "path": "/latest/api/token", "status": 200} in entries
    assert {"method": "GET", "path": "/latest/meta-data/mac", "status": 401} in entries
    for t in tokens + ["bogus-token-value"]:
        assert t not in raw
        assert t not in imds.log.read_text()


def test_fault_revoke_tokens(imds):
    """Like an IMDS restart: tokens issued before no longer work; a new one does."""
    old = imds.token()
    assert get(imds, "/latest/meta-data/instance-id", old)[0] == 200
    imds.faults(revoke_tokens=1, paths="^/latest/meta-data/mac$")
    assert get(imds, "/latest/meta-data/mac", old)[0] == 401  # revoked by this very request
    assert get(imds, "/latest/meta-data/mac", old)[0] == 401  # and stays revoked
    new = imds.token()
    assert get(imds, "/latest/meta-data/mac", new)[0] == 200  # the count is used up
    log = imds.requests()
    assert [r.get("faults") for r in log if r["path"] == "/latest/meta-data/mac"] == \
        [["revoke_tokens"], None, None]


def test_issued_tokens_lists_every_token(imds):
    tokens = [imds.token() for _ in range(3)]
    issued = imds.issued_tokens()
    assert set(tokens) <= set(issued)
    assert imds.token() in imds.issued_tokens()


def test_instance_switching(imds, aws):
    assert imds.get("instance-id") == aws["master"]["instance_id"]
    imds.impersonate(aws["core"]["instance_id"])
    assert imds.get("instance-id") == aws["core"]["instance_id"]
    assert imds.get("mac") == aws["core"]["mac"]
    assert imds.get("local-ipv4") == aws["core"]["private_ip"]
    st = http("POST", imds.url + "/_emu/instance", body={"instance_id": "i-00000000000000000"})[0]
    assert st == 404
    assert imds.get("instance-id") == aws["core"]["instance_id"]


def test_health(imds):
    assert http("GET", imds.url + "/_emu/health")[:3:2] == (200, "ok")


def test_seed_facts(aws):
    assert aws["subnet_cidr"] == "172.31.0.0/20" and aws["az"] == "ap-northeast-2a"
    assert aws["fixed_ip"] not in (aws["master"]["private_ip"], aws["core"]["private_ip"])
    assert aws["master"]["mac"] != aws["core"]["mac"]


def test_seed_is_repeatable(moto, aws):
    http("POST", moto.url + "/moto-api/reset")
    assert bench.seed(moto.url) == aws


@pytest.mark.parametrize("kind", bench.KINDS)
def test_info_files(tmp_path, aws, kind):
    names = bench.write_info_files(tmp_path, kind, aws)
    inst = json.loads((tmp_path / "instance.json").read_text())
    flow = json.loads((tmp_path / "job-flow.json").read_text())
    role = bench.ROLE_OF_KIND[kind]
    assert inst["isMaster"] is (role == "Master")
    if kind.startswith("fleet-"):
        assert "instanceGroupId" not in inst and inst["instanceFleetId"].startswith("if-")
        assert flow["instanceGroups"] == []
    else:
        group = next(g for g in flow["instanceGroups"] if g["instanceGroupId"] == inst["instanceGroupId"])
        assert group["instanceRole"] == role
    if kind.startswith(("fleet-", "ha-")):
        extra = json.loads((tmp_path / "extraInstanceData.json").read_text())
        assert extra["instanceRole"] == role.upper()
        assert "extraInstanceData.json" in names
    primary = flow["masterInstanceId"]
    assert (primary == aws["master"]["instance_id"]) is (kind != "ha-master-secondary")


def test_node_env_has_no_host_aws(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_PROFILE", "host-profile")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "host-token")
    env = bench.node_env("http://127.0.0.1:1", "http://127.0.0.1:2", tmp_path / "info", tmp_path / "state")
    assert "AWS_PROFILE" not in env and "AWS_SESSION_TOKEN" not in env
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
    assert env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == "http://127.0.0.1:2"
    assert env["EMRBOOT_LOG_FILE"] == str(tmp_path / "emrboot.log")


def test_keep_alive_connection_serves_token_and_gets(imds):
    # aws-config's hyper client pools connections: PUT and GETs travel on one HTTP/1.1 connection.
    conn = httpclient.HTTPConnection("127.0.0.1", imds.port, timeout=5)
    try:
        conn.request("PUT", "/latest/api/token", headers={TTL: "60"})
        r = conn.getresponse()
        token = r.read().decode()
        assert r.status == 200 and r.getheader(TTL) == "60"
        for path in ("/latest/meta-data/instance-id", "/latest/meta-data/nope", "/latest/meta-data/mac"):
            conn.request("GET", path, headers={TOK: token})
            r = conn.getresponse()
            r.read()
            assert r.status == (404 if path.endswith("nope") else 200)
        conn.request("GET", "/latest/meta-data/mac")
        r = conn.getresponse()
        r.read()
        assert r.status == 401 and not r.will_close
    finally:
        conn.close()


def test_imdsv1_only_when_allowed(imds):
    """The seed's scripts (benchmarks/) speak IMDSv1; the emulator answers them only when told."""
    import urllib.error
    import urllib.request
    url = imds.url + "/latest/meta-data/instance-id"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=5)
    assert e.value.code == 401
    bench.http("POST", imds.url + "/_emu/v1", b'{"allow": true}')
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.read().decode().startswith("i-")
    bench.http("POST", imds.url + "/_emu/v1", b'{"allow": false}')
