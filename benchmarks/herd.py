#!/usr/bin/env python3
"""Benchmark: a cluster start as EC2's account-level request buckets see it (issue 13).

N node processes (default 500), each with its own IMDS identity (a distinct instance in moto, one
IMDS listener each: tests/bench/imds.py --herd), run `emrboot run --only tag` at once. They all go
through one countproxy (tests/bench/countproxy.py) that keeps EC2's token buckets, shared by every
node, at EC2's published rates (DescribeTags 100 burst, 20/s; CreateTags 100, 10/s), optionally
with a background drain: tokens per second that other workloads of the account take from every
bucket. Reports per variant and drain: nodes that succeeded and failed, nodes whose tags are
really on their instance in moto, p50/p95/max time to tagged (each node's exit, from its own
start), and EC2 requests per node (CreateTags and DescribeTags, throttled ones included).

    .bench/venv/bin/python benchmarks/herd.py [--nodes 500] [--drain 0 --drain 5]
        [--variant new=target/release/emrboot]
        [--variant old=/tmp/emrboot-old --variant adaptive=target/release/emrboot,EMRBOOT_AWS_RETRY_MODE=adaptive]

A variant is LABEL=BINARY[,ENV=VALUE...]; the default is the release binary (dist/emrboot-x86_64
if present, else target/release/emrboot). Every (variant, drain) pair runs on a fresh moto seed.
Every process it starts (moto, the IMDS emulator, the proxy, the nodes) is stopped when it ends,
failed or interrupted. As a library (tests/test_herd.py): run_herd().
"""
import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "bench"))
import bench  # noqa: E402

SEED_NAME = "emr-practice"
TAGS_SET = {"Project": "EMR-PRACTICE", "Customer": "acme", "Biz Unit": "EMR-PRACTICE-CLUSTER"}
CONFIG = ('[tags]\nname_suffix = "role"\n[tags.set]\nProject = "EMR-PRACTICE"\nCustomer = "acme"\n'
          '"Biz Unit" = "EMR-PRACTICE-CLUSTER"\n')
WANT_TAGS = {**TAGS_SET, "Name": f"{SEED_NAME}-CORE"}


def release_binary():
    dist = REPO / "dist" / "emrboot-x86_64"
    return dist if dist.is_file() else REPO / "target" / "release" / "emrboot"


def seed_herd(moto_url, n):
    """moto reset and seeded (bench.seed), plus N core instances named like the seed's: ids."""
    st = bench.http("POST", moto_url + "/moto-api/reset")[0]
    if st != 200:
        raise RuntimeError(f"moto reset answered {st}")
    facts = bench.seed(moto_url)
    ec2 = bench._clients(moto_url, bench.REGION)[0]
    ids = []
    while len(ids) < n:
        batch = min(100, n - len(ids))
        insts = ec2.run_instances(
            ImageId=bench.AMI, InstanceType="m5.xlarge", MinCount=batch, MaxCount=batch,
            SubnetId=facts["subnet_id"],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": SEED_NAME},
                {"Key": "aws:elasticmapreduce:instance-group-role", "Value": "CORE"},
                {"Key": "aws:elasticmapreduce:job-flow-id", "Value": bench.JOB_FLOW_ID}]}])["Instances"]
        ids += [i["InstanceId"] for i in insts]
    return facts, ids


def instance_tags(moto_url, ids):
    """{instance id: {key: value}} straight from moto (not through the proxy)."""
    ec2 = bench._clients(moto_url, bench.REGION)[0]
    out = {i: {} for i in ids}
    want = set(ids)
    for page in ec2.get_paginator("describe_tags").paginate(
            Filters=[{"Name": "resource-type", "Values": ["instance"]}]):
        for t in page["Tags"]:
            if t["ResourceId"] in want:
                out[t["ResourceId"]][t["Key"]] = t["Value"]
    return out


def node_of(call):
    """The instance id an EC2 call is about (CreateTags ResourceId.1, DescribeTags's filter)."""
    p = call.get("params") or {}
    if "ResourceId.1" in p:
        return p["ResourceId.1"]
    return next((v for k, v in p.items() if k.startswith("Filter.") and v.startswith("i-")), None)


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def _stop_all(popens):
    for p in popens:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 5
    for p in popens:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_herd(moto, workdir, n=500, drain=0.0, binary=None, env=None, categories=None, timeout=600,
             schedule=()):
    """One herd on MOTO (a bench.Proc; reset and seeded here): N nodes at once through one
    throttling proxy. CATEGORIES overrides the proxy's EC2 buckets ({name: {burst, refill}});
    SCHEDULE [(seconds after the start, categories)] replaces them (full) while the herd runs,
    e.g. buckets that stay empty for a while, then recover.
    A dict: nodes, ok, failed, tagged (tags really on the instance in moto), times (s, of each
    node that exited 0), wall, requests {Action: n}, throttled {Action: n}, per_node
    {instance id: {"exit", "time", "requests"}}, failures (first lines of failed nodes' logs)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    binary = Path(binary or release_binary())
    if not binary.is_file():
        raise RuntimeError(f"emrboot binary not found at {binary}")
    facts, ids = seed_herd(moto.url, n)
    procs, nodes = [], []
    try:
        imds = bench.start_imds_herd(moto.url, ids, workdir / "imds")
        procs.append(imds)
        proxy = bench.start_countproxy(moto.url, workdir / "proxy", args=("--ec2-buckets", "--drain", str(drain)))
        procs.append(proxy)
        if categories:
            proxy.buckets(categories, drain)
        info = workdir / "info"
        bench.write_info_files(info, "core-ig", facts)
        cfg = workdir / "emrboot.toml"
        cfg.write_text(CONFIG)
        envs = []
        for i, iid in enumerate(ids):
            d = workdir / "nodes" / f"n{i:04d}"
            (d / "state").mkdir(parents=True, exist_ok=True)
            envs.append((d, bench.node_env(proxy.url, imds.url_of(iid), info, d / "state", env)))
        proxy.clear()
        t0 = time.monotonic()
        for d, e in envs:  # as fast as fork allows: every node starts within about a second
            with open(d / "out.log", "wb") as out:
                p = subprocess.Popen([str(binary), "run", "--config", str(cfg), "--only", "tag"], env=e,
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     preexec_fn=bench._die_with_parent)
            nodes.append({"popen": p, "start": time.monotonic(), "end": None, "dir": d})
        pending = list(nodes)
        deadline = t0 + timeout
        schedule = sorted(schedule, key=lambda s: s[0])
        while pending and time.monotonic() < deadline:
            time.sleep(0.02)
            now = time.monotonic()
            while schedule and now - t0 >= schedule[0][0]:
                proxy.buckets(schedule.pop(0)[1], drain)
            still = []
            for nd in pending:
                if nd["popen"].poll() is None:
                    still.append(nd)
                else:
                    nd["end"] = now
            pending = still
        wall = time.monotonic() - t0
        _stop_all([nd["popen"] for nd in pending])  # still running at the timeout: failed
        calls = proxy.calls()
        bucket_state = proxy.bucket_state()
    finally:
        _stop_all([nd["popen"] for nd in nodes])
        for p in reversed(procs):
            p.stop()
    tags = instance_tags(moto.url, ids)
    per_node = {}
    for iid, nd in zip(ids, nodes):
        code = nd["popen"].returncode if nd["end"] is not None else None
        per_node[iid] = {"exit": code, "time": (nd["end"] - nd["start"]) if nd["end"] else None, "requests": 0,
                         "tagged": all(tags[iid].get(k) == v for k, v in WANT_TAGS.items())}
    requests, throttled = {}, {}
    for c in calls:
        if c["service"] != "ec2":
            continue
        requests[c["action"]] = requests.get(c["action"], 0) + 1
        if c["status"] == 503:
            throttled[c["action"]] = throttled.get(c["action"], 0) + 1
        who = node_of(c)
        if who in per_node:
            per_node[who]["requests"] += 1
    failures = []
    for iid, nd in zip(ids, nodes):
        if per_node[iid]["exit"] != 0 and len(failures) < 5:
            text = (nd["dir"] / "out.log").read_text(errors="replace").splitlines()
            failures.append(f"{iid} exit {per_node[iid]['exit']}: " + " | ".join(
                l for l in text if "ERROR" in l or "failed" in l)[-400:])
    ok = sum(1 for v in per_node.values() if v["exit"] == 0)
    return {"nodes": n, "drain": drain, "binary": str(binary), "env": env or {}, "ok": ok, "failed": n - ok,
            "tagged": sum(1 for v in per_node.values() if v["tagged"]),
            "times": [v["time"] for v in per_node.values() if v["exit"] == 0], "wall": wall,
            "requests": requests, "throttled": throttled, "per_node": per_node, "failures": failures,
            "buckets": bucket_state}


def summary(label, r):
    t = r["times"]
    per = lambda a: r["requests"].get(a, 0) / r["nodes"]  # noqa: E731
    fmt = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
    return (f"| {label} | {r['drain']:g}/s | {r['ok']} | {r['failed']} | {r['tagged']} | {fmt(pct(t, 0.5))} | "
            f"{fmt(pct(t, 0.95))} | {fmt(max(t) if t else None)} | {per('CreateTags'):.2f} | "
            f"{per('DescribeTags'):.2f} | {(per('CreateTags') + per('DescribeTags')):.2f} | "
            f"{max(v['requests'] for v in r['per_node'].values())} |")


HEADER = ("| variant | drain | ok | failed | tagged in moto | p50 s | p95 s | max s | CreateTags/node | "
          "DescribeTags/node | requests/node | max requests (one node) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def _interrupt(*_):
    """SIGTERM ends it like ^C: the finally blocks stop every process it started."""
    raise KeyboardInterrupt


def parse_variant(text):
    label, _, rest = text.partition("=")
    parts = rest.split(",")
    env = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    return label, Path(parts[0]), env


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--drain", type=float, action="append", help="background drain, tokens/s (repeatable)")
    ap.add_argument("--variant", action="append", help="LABEL=BINARY[,ENV=VALUE...] (repeatable)")
    ap.add_argument("--json", help="write every result (per node too) to this file")
    a = ap.parse_args()
    variants = [parse_variant(v) for v in (a.variant or [f"new={release_binary()}"])]
    drains = a.drain or [0.0]
    signal.signal(signal.SIGTERM, _interrupt)
    results = []
    with tempfile.TemporaryDirectory(prefix="emrboot-herd-") as d:
        moto = bench.start_moto(Path(d) / "moto")
        try:
            print(HEADER, flush=True)
            for drain in drains:
                for label, binary, env in variants:
                    r = run_herd(moto, Path(d) / f"{label}-{drain:g}", a.nodes, drain, binary, env)
                    results.append((label, r))
                    print(summary(label, r), flush=True)
                    for f in r["failures"]:
                        print(f"    {f}", file=sys.stderr)
        finally:
            moto.stop()
    if a.json:
        Path(a.json).write_text(json.dumps([{"variant": lbl, **r} for lbl, r in results], indent=1))
    print(f"{a.nodes} nodes, `emrboot run --only tag` at once, EC2's buckets (DescribeTags 100 burst 20/s, "
          f"CreateTags 100 burst 10/s) shared through one proxy; time to tagged of the nodes that succeeded")


if __name__ == "__main__":
    main()
