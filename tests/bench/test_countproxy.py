"""The counting proxy (countproxy.py) and the namespace helpers (netns.py) themselves."""
import boto3
from botocore.config import Config

import bench
import netns


def clients(url):
    kw = dict(endpoint_url=url, region_name=bench.REGION, aws_access_key_id="testing",
              aws_secret_access_key="testing", config=Config(retries={"max_attempts": 1}))
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
        assert all(c["status"] == 200 for c in calls), calls
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
                                  "params": {"Action": "DescribeVpcs", "Version": "2016-11-15"}, "status": 502}]
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
