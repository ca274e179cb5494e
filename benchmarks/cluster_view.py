#!/usr/bin/env python3
"""Benchmark: `emrboot cluster --json` over N synthetic node records in moto S3 (issue 14's cost
target: 1,000 records listed and fetched in under 2 s against moto). The records are the schema
the nodes publish (tests/bench/cluster_records.py); the binary lists them with paginated
ListObjectsV2 (1,000 keys a page) and fetches them with 32 GETs in flight.

    .bench/venv/bin/python benchmarks/cluster_view.py [--nodes 1000] [--rounds 5]

Reports the median and max wall time of --rounds runs, with --html too. The binary: $EMRBOOT_BIN,
else target/release/emrboot if it exists, else target/debug/emrboot.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "bench"))
import bench  # noqa: E402
import cluster_records  # noqa: E402
from install_cache import pick_binary as binary  # noqa: E402  (benchmarks/, the script's own dir)


AUTH = ("AWS4-HMAC-SHA256 Credential=testing/20261207/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=0")


def raw_gets(port, bucket, keys, threads):
    """Seconds to GET every key from moto over plain HTTP/1.1, THREADS connections in parallel
    (unsigned: the header only names the bench's access key)."""
    import http.client
    import threading
    from concurrent.futures import ThreadPoolExecutor
    local = threading.local()

    def get(key):
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        # moto reads the access key from the header and checks no signature.
        local.conn.request("GET", f"/{bucket}/{key}", headers={"Authorization": AUTH})
        r = local.conn.getresponse()
        body = r.read()
        assert r.status == 200 and body, (r.status, key)

    t = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(get, keys))
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="emrboot-cluster-bench-"))
    moto = bench.start_moto(work / "moto")
    try:
        facts = bench.seed(moto.url)
        s3 = bench._clients(moto.url, bench.REGION)[1]
        t = time.monotonic()
        cluster_records.put_records(s3, facts["bucket"], "r/", bench.JOB_FLOW_ID, a.nodes, failed={1}, running={2})
        print(f"wrote {a.nodes} records in {time.monotonic() - t:.1f} s")
        # moto's own ceiling, side by side: the same list and GETs from boto3, 32 threads.
        from concurrent.futures import ThreadPoolExecutor
        times = []
        for _ in range(a.rounds):
            t = time.monotonic()
            keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=facts["bucket"], Prefix=f"r/{bench.JOB_FLOW_ID}/nodes/") for o in page.get("Contents", [])]
            with ThreadPoolExecutor(32) as pool:
                list(pool.map(lambda k: s3.get_object(Bucket=facts["bucket"], Key=k)["Body"].read(), keys))
            times.append(time.monotonic() - t)
        print(f"boto3 baseline (list + {len(keys)} GETs, 32 threads): median {statistics.median(times):.2f} s, "
              f"max {max(times):.2f} s over {a.rounds} runs")
        # moto's floor: the same GETs with no client work at all (no signing, no parsing, one
        # kept-alive connection per thread), so what is left is moto serving them.
        for threads in (1, 32):
            times = [raw_gets(moto.port, facts["bucket"], keys, threads) for _ in range(a.rounds)]
            print(f"raw http.client floor ({len(keys)} unsigned GETs, keep-alive, {threads} thread(s)): "
                  f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over {a.rounds} runs")
        env = bench.node_env(moto, "http://127.0.0.1:9", work / "info", work / "state")
        argv = [str(binary()), "cluster", "--cluster-id", bench.JOB_FLOW_ID, "--report", f"s3://{facts['bucket']}/r/"]
        for label, extra in (("--json", ["--json"]), ("--json --html", ["--json", "--html", str(work / "c.html")])):
            times = []
            for _ in range(a.rounds):
                t = time.monotonic()
                cp = subprocess.run(argv + extra, env=env, capture_output=True, text=True, timeout=300)
                times.append(time.monotonic() - t)
                assert cp.returncode == 0, cp.stderr
                assert len(json.loads(cp.stdout)["nodes"]) == a.nodes
            print(f"cluster {label}: {a.nodes} records: median {statistics.median(times):.2f} s, "
                  f"max {max(times):.2f} s over {a.rounds} runs ({binary()})")
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
