"""Synthetic node records for `emrboot cluster` (the schema of crates/emrboot/src/report/record.rs),
written straight into S3: for the browser test and benchmarks/cluster_view.py."""
import json
import random
from datetime import datetime, timedelta, timezone

PHASES = ("install", "tag", "efs-mount", "ip-takeover", "shutdown-hook")


def _ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(i, cluster_id, t0, rng, state="ok"):
    """Node I's record: a role, phases with durations, STATE ok | failed | running."""
    role = "MASTER" if i == 0 else ("CORE" if i % 3 else "TASK")
    start = t0 + timedelta(seconds=rng.uniform(0, 30))
    t, phases = start, []
    for n, p in enumerate(PHASES):
        if role != "MASTER" and p in ("ip-takeover", "shutdown-hook"):
            phases.append({"phase": p, "outcome": "skipped", "required": True, "reason": "runs on MASTER only"})
            continue
        d = rng.uniform(0.2, 2.0) if p != "install" else rng.uniform(20, 90)
        outcome = "changed"
        if state == "failed" and n == 1:
            outcome = "failed"
        if state == "running" and n == 1:
            phases.append({"phase": p, "outcome": "running", "required": True, "started_at": _ts(t)})
            break
        rec = {"phase": p, "outcome": outcome, "required": True, "started_at": _ts(t), "duration_ms": int(d * 1000)}
        if outcome == "failed":
            rec["error"] = "ec2:CreateTags: RequestLimitExceeded: Request limit exceeded."
        phases.append(rec)
        t += timedelta(seconds=d)
        if outcome == "failed":
            break
    done = state != "running"
    run = {"started_at": _ts(start), "pid": 1000 + i, "instance_id": f"i-{i:017x}", "role": role,
           "config": "s3://b/emrboot.toml", "phases": phases}
    if done:
        run["finished_at"] = _ts(t)
        run["exit_code"] = 0 if state == "ok" else 1
    return {"schema": 1, "cluster_id": cluster_id, "instance_id": f"i-{i:017x}", "role": role,
            "instance_group_id": f"ig-{role}", "instance_type": "m5.xlarge", "availability_zone": "ap-northeast-2a",
            "emrboot_version": "0.1.0", "config_hash": "0" * 64,
            "updated_at": _ts(datetime.now(timezone.utc) if not done else t), "run": run}


def put_records(s3, bucket, prefix, cluster_id, n, failed=(), running=(), seed=1):
    """N records under <prefix><cluster_id>/nodes/; returns their instance ids."""
    rng = random.Random(seed)
    t0 = datetime.now(timezone.utc) - timedelta(minutes=5)
    ids = []
    for i in range(n):
        state = "failed" if i in failed else ("running" if i in running else "ok")
        r = record(i, cluster_id, t0, rng, state)
        s3.put_object(Bucket=bucket, Key=f"{prefix}{cluster_id}/nodes/{r['instance_id']}.json",
                      Body=json.dumps(r).encode())
        ids.append(r["instance_id"])
    return ids
