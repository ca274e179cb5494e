#!/usr/bin/env python3
"""Benchmark: the seed's emr-tag-practice.sh + assign_private_ip.py (AWS CLI from PyPI) against
`emrboot run --only tag,ip-takeover,shutdown-hook`, side by side in one run, on the same moto and
IMDS emulator, each on a fresh master network namespace (tests/bench/netns.py).

Measures per tool: wall time (median of ROUNDS), peak RSS of the largest process (GNU time %M),
and EC2 calls by Action as counted by the proxy in front of moto; for emrboot also the re-run.
The seed scripts are adapted only where this machine differs from an EMR node: file paths, the
IMDS address (the emulator accepts IMDSv1 for them) and the interface name (ens5).

    .bench/venv/bin/python benchmarks/ip_tag.py [--rounds 5]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "bench"))
import bench  # noqa: E402
import netns  # noqa: E402

SEED_BLOG = REPO.parent / "shared" / "seed" / "emr-provisioning-blog.txt"
AWSCLI_VENV = REPO / ".bench" / "awscli"
MUTATING = {"CreateTags", "AssignPrivateIpAddresses", "UnassignPrivateIpAddresses"}


def seed_script(name_line, end_marker):
    """The text of one of the seed's scripts, cut from the blog post."""
    lines = SEED_BLOG.read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(name_line))
    out = []
    for l in lines[start + 1:]:
        if end_marker(l):
            break
        out.append(l)
    return "\n".join(l for l in out if l.strip() not in ("", "\u00a0")) + "\n"


def adapted_seed(node, workdir):
    """The two seed scripts with paths, IMDS address and interface name adapted to the node."""
    imds = node.imds.url
    tag = seed_script("emr-tag-practice.sh", lambda l: l.startswith("보안옵션"))
    tag = tag.replace("/mnt/var/lib/info", str(node.info_dir)).replace("http://169.254.169.254", imds)
    # The seed's own defect (a key with a space, unquoted) makes its last call fail; quoted here so
    # that the seed runs to the end and the comparison covers all of its work.
    tag = tag.replace("--tags Key=Biz Unit,Value=EMR-PRACTICE-CLUSTER", '--tags "Key=Biz Unit,Value=EMR-PRACTICE-CLUSTER"')
    assign = seed_script("assign_private_ip.py", lambda l: l.startswith("emr-tag-practice.sh"))
    assign = (assign.replace("/emr/instance-controller/lib/info", str(node.info_dir))
              .replace("http://169.254.169.254", imds)
              .replace("eth0", "ens5")
              .replace("/mnt/var/lib/instance-controller/public/shutdown-actions", str(node.shutdown_actions_dir)))
    (workdir / "emr-tag-practice.sh").write_text(tag)
    (workdir / "assign_private_ip.py").write_text(assign)
    return workdir / "emr-tag-practice.sh", workdir / "assign_private_ip.py"


def config(nb):
    return (f'[tags]\nname_suffix = "role"\n[tags.set]\nProject = "EMR-PRACTICE"\nCustomer = "acme"\n'
            f'"Biz Unit" = "EMR-PRACTICE-CLUSTER"\n[ip_takeover]\naddress = "{nb.fixed_ip}"\n'
            f'reserved_eni = "{nb.reserved_eni}"\n')


def timed(node, argv, env):
    """Runs ARGV in the node's namespace under GNU time: (wall s, peak RSS KiB, result)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        t0 = time.perf_counter()
        cp = node.bench.topo.run_in(node.ns, ["/usr/bin/time", "-f", "%M", "-o", t.name, *argv], env=env,
                                    timeout=300)
        wall = time.perf_counter() - t0
        rss = int(t.read().strip().splitlines()[-1] or 0)
    if cp.returncode != 0:
        raise RuntimeError(f"{argv}: exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}")
    return wall, rss, cp


def one_round(moto, tool, work):
    bench.http("POST", moto.url + "/moto-api/reset")
    facts = bench.seed(moto.url)
    nb = netns.NetBench.create(moto, facts, work)
    try:
        m = nb.master
        bench.http("POST", m.imds.url + "/_emu/v1", json.dumps({"allow": True}).encode())
        m.clear_calls()
        if tool == "seed":
            tag, assign = adapted_seed(m, work)
            # AWS CLI v1 reads AWS_DEFAULT_REGION (an EMR node's profile has the region).
            env = dict(m.env, PATH=f"{AWSCLI_VENV}/bin:{os.environ['PATH']}", AWS_DEFAULT_REGION=m.env["AWS_REGION"])
            script = f"sh {tag} && python3 {assign} {nb.fixed_ip} {nb.reserved_eni}"
            wall, rss, _ = timed(m, ["sh", "-c", script], env)
            return {"wall": wall, "rss": rss, "calls": m.actions()}
        cfg = work / "emrboot.toml"
        cfg.write_text(config(nb))
        argv = [str(bench.emrboot_bin()), "run", "--config", str(cfg), "--only", "tag,ip-takeover,shutdown-hook"]
        wall, rss, _ = timed(m, argv, m.env)
        calls = m.actions()
        m.clear_calls()
        wall2, _, _ = timed(m, argv, m.env)
        return {"wall": wall, "rss": rss, "calls": calls, "rerun_wall": wall2, "rerun_calls": m.actions()}
    finally:
        nb.close()


def ensure_tools():
    subprocess.run(["bash", str(REPO / "tests" / "bench" / "setup.sh")], check=True, stdout=subprocess.DEVNULL)
    need = [p for p, exe in (("jq", "jq"), ("net-tools", "ifconfig"), ("time", "/usr/bin/time"), ("sudo", "sudo"),
                             ("curl", "curl"), ("wget", "wget")) if not shutil_which(exe)]
    if need:
        subprocess.run(["apt-get", "install", "-y", "-qq", *need], check=True, stdin=subprocess.DEVNULL)
    if not (AWSCLI_VENV / "bin" / "aws").exists():
        subprocess.run([sys.executable, "-m", "venv", str(AWSCLI_VENV)], check=True)
        subprocess.run([str(AWSCLI_VENV / "bin" / "pip"), "install", "-q", "awscli"], check=True)


def shutil_which(exe):
    import shutil
    return shutil.which(exe)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    ensure_tools()
    results = {"seed": [], "emrboot": []}
    with tempfile.TemporaryDirectory(prefix="emrboot-bench-") as d:
        moto = bench.start_moto(Path(d) / "moto")
        try:
            for r in range(a.rounds):
                # Alternate the order so that warm-up and machine noise fall on both alike.
                for tool in (("seed", "emrboot") if r % 2 == 0 else ("emrboot", "seed")):
                    work = Path(d) / f"{tool}-{r}"
                    work.mkdir()
                    results[tool].append(one_round(moto, tool, work))
        finally:
            moto.stop()
    med = {t: statistics.median(x["wall"] for x in rs) for t, rs in results.items()}
    print(f"rounds: {a.rounds} (median wall time; every round on a fresh moto seed and namespaces)")
    for t, rs in results.items():
        walls = ", ".join(f"{x['wall']:.3f}" for x in rs)
        calls = rs[0]["calls"]
        print(f"{t:8} wall median {med[t]:.3f} s  [{walls}]  peak RSS {max(x['rss'] for x in rs) / 1024:.1f} MiB")
        print(f"{'':8} EC2 calls: {sum(calls.values())} {json.dumps(calls, sort_keys=True)}")
    rr = results["emrboot"]
    print(f"emrboot re-run: wall median {statistics.median(x['rerun_wall'] for x in rr):.3f} s, "
          f"mutating calls {sum(v for x in rr for k, v in x['rerun_calls'].items() if k in MUTATING)}, "
          f"calls {json.dumps(rr[0]['rerun_calls'], sort_keys=True)}")
    print(f"speed-up (seed / emrboot, median wall): {med['seed'] / med['emrboot']:.1f}x")


if __name__ == "__main__":
    main()
