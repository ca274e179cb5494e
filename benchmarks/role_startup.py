#!/usr/bin/env python3
"""Benchmark: wall time of `emrboot role` on EMR's fixture info files (the issue's target: under
20 ms on this machine), beside two references measured in the same run, interleaved round by
round so machine noise hits all alike:

- `true`: the floor (fork + exec of a static no-op, as seen from Python's subprocess);
- the seed's way of telling the role: `python3 -c` reading isMaster from instance.json
  (assign_private_ip.py does this before anything else).

Each sample is one subprocess.run, timed with perf_counter_ns; reports min, median, p90, max.

    .bench/venv/bin/python benchmarks/role_startup.py [--rounds 300] [--bin dist/emrboot-x86_64]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures" / "emr-info"

SEED_ROLE = ("import json; d = json.load(open({path!r})); "
             "print('MASTER' if str(d.get('isMaster')).lower() == 'true' else 'OTHER')")


def sample(argv, env):
    t = time.perf_counter_ns()
    cp = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ms = (time.perf_counter_ns() - t) / 1e6
    if cp.returncode != 0:
        sys.exit(f"{argv}: exit {cp.returncode}: {cp.stderr.decode()}")
    return ms, cp.stdout.decode().strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--bin", action="append",
                    help="an emrboot binary; repeat to compare builds side by side "
                         "(default: $EMRBOOT_BIN, else dist/emrboot-x86_64)")
    ap.add_argument("--kind", default="master-ig")
    a = ap.parse_args()
    bins = [Path(b).resolve() for b in (a.bin or [os.environ.get("EMRBOOT_BIN", REPO / "dist" / "emrboot-x86_64")])]
    info = FIXTURES / a.kind
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    label = {b: "emrboot role" + (f" [{b.name}]" if len(bins) > 1 else "") for b in bins}
    cases = {label[b]: [str(b), "--info-dir", str(info), "role"] for b in bins}
    cases.update({
        "true (floor)": [shutil.which("true")],
        "python3 json (seed)": [sys.executable, "-S", "-c", SEED_ROLE.format(path=str(info / "instance.json"))],
    })
    for argv in cases.values():  # warm the page cache
        sample(argv, env)
    times = {k: [] for k in cases}
    for _ in range(a.rounds):
        for name, argv in cases.items():
            ms, out = sample(argv, env)
            times[name].append(ms)
    for b in bins:
        _, role = sample(cases[label[b]], env)
        print(f"binary: {b} ({b.stat().st_size} bytes); fixture {a.kind} -> {role}")
    print(f"{a.rounds} rounds, interleaved; {os.cpu_count()} CPUs")
    width = max(map(len, cases)) + 1
    print(f"{'':{width}} {'min':>8} {'median':>8} {'p90':>8} {'max':>8}  (ms)")
    for name, v in times.items():
        v = sorted(v)
        p90 = v[int(0.9 * (len(v) - 1))]
        print(f"{name:{width}} {v[0]:8.2f} {statistics.median(v):8.2f} {p90:8.2f} {v[-1]:8.2f}")
    seed = statistics.median(times["python3 json (seed)"])
    for b in bins:
        med = statistics.median(times[label[b]])
        print(f"{label[b]} median {med:.2f} ms: {'under' if med < 20 else 'OVER'} the 20 ms target; "
              f"{seed / med:.1f}x faster than the seed's python3")


if __name__ == "__main__":
    main()
