#!/usr/bin/env python3
"""Benchmark: [install.pip] from the S3 build cache, with the seed's requirements (pandas,
pyarrow, boto3, requests, PyMySQL, redis, prettytable and their dependencies, as wheels for the
bench's Python), in one run on one moto + IMDS emulator:

- plain: pip with no [install.cache], what every node does without the cache: `pip install
  --target T` from the local index;
- miss: the first node with the cache: pip into a staging dir, pack, unpack into T, upload;
- hit: fresh nodes (fresh root and state dir each): download the archive, check its sha256,
  unpack into T; no pip at all (the index is stopped before the hits).

The wheels are fetched from PyPI once with `pip download` into .bench/pip-wheels/ and served by
a loopback http server (`--no-index --find-links http://127.0.0.1:PORT/`). pip's own cache is
off. A local index understates the real cold time (no NAT gateway, no PyPI latency).

    .bench/venv/bin/python benchmarks/pip_cache.py [--hit-rounds 3] [--python /path/to/python3] [--logs DIR]

The binary: $EMRBOOT_BIN, else target/release/emrboot if it exists, else target/debug/emrboot.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "bench"))
sys.path.insert(0, str(REPO / "tests"))
import bench  # noqa: E402
from install_cache import pick_binary  # noqa: E402  (benchmarks/, the script's own dir)
from install_kit import FileServer, s3_client, tree  # noqa: E402

PREFIX = "build-cache/"
TARGET_RATIO = 20
# --logs DIR: each run's stderr (timestamped log lines) kept as DIR/<node>.log, to see where a
# run's time goes.
LOG_DIR = None
WHEELS = REPO / ".bench" / "pip-wheels"
REQUIREMENTS = ["pandas==2.2.3", "pyarrow==18.1.0", "boto3==1.35.90", "requests==2.32.3", "PyMySQL==1.1.1",
                "redis==5.2.1", "prettytable==3.12.0"]


def real_python():
    out = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], capture_output=True, text=True,
                         check=True, timeout=60)
    return out.stdout.strip()


def fetch_wheels(python):
    """pip download, once: the wheels stay in .bench/pip-wheels/ for the next run."""
    stamp = WHEELS / ".complete"
    if stamp.is_file() and stamp.read_text() == "\n".join(REQUIREMENTS):
        return
    WHEELS.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--only-binary=:all:",
                    "-d", str(WHEELS), *REQUIREMENTS], check=True, timeout=1800)
    stamp.write_text("\n".join(REQUIREMENTS))


def config(req_url, target, bucket, cache):
    text = (f'[install]\nallow_http = true\n[install.pip]\nrequirements = "{req_url}"\n'
            f'target = "{target}"\n')
    if cache:
        text += f'[install.cache]\ns3 = "s3://{bucket}/{PREFIX}"\n'
    return text


def new_node(work, name, kind, facts, moto, imds, path):
    d = work / name
    bench.write_info_files(d / "info", kind, facts)
    (d / "state").mkdir(parents=True)
    (d / "root" / "etc").mkdir(parents=True)
    imds.impersonate(facts["master" if bench.ROLE_OF_KIND[kind] == "Master" else "core"]["instance_id"])
    return bench.node_env(moto, imds, d / "info", d / "state", {
        "EMRBOOT_ROOT": str(d / "root"), "PATH": path, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1"})


def timed(exe, cfg, env, timeout):
    t0 = time.perf_counter()
    cp = subprocess.run([str(exe), "run", "--config", str(cfg), "--only", "install"], env=env, capture_output=True,
                        text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if cp.returncode != 0:
        raise RuntimeError(f"emrboot exit {cp.returncode}\n{cp.stdout}\n{cp.stderr[-4000:]}")
    if LOG_DIR:
        (LOG_DIR / f"{Path(env['EMRBOOT_STATE_DIR']).parent.name}.log").write_text(cp.stderr)
    return wall


def action_list(exe, env):
    cp = subprocess.run([str(exe), "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
    st = json.loads(cp.stdout)
    return next(p for p in st["phases"] if p["phase"] == "install").get("actions", [])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hit-rounds", type=int, default=3)
    ap.add_argument("--python", default=None, help="the node's python3 (default: python3 on PATH, resolved)")
    ap.add_argument("--logs", type=Path, default=None, help="keep each run's log lines in this dir")
    a = ap.parse_args()
    global LOG_DIR
    if a.logs:
        LOG_DIR = a.logs
        LOG_DIR.mkdir(parents=True, exist_ok=True)
    exe = pick_binary()
    if not exe.is_file():
        sys.exit(f"emrboot binary not found at {exe}: cargo build (--release), or set EMRBOOT_BIN")
    python = a.python or real_python()
    fetch_wheels(python)
    wheels = sorted(p.name for p in WHEELS.glob("*.whl"))
    with tempfile.TemporaryDirectory(prefix="emrboot-pip-bench-") as d:
        work = Path(d)
        bindir = work / "bin"
        bindir.mkdir()
        (bindir / "python3").symlink_to(python)
        path = f"{bindir}:{os.environ['PATH']}"
        target = work / "site-target"
        moto = imds = index = None
        try:
            moto = bench.start_moto(work / "moto")
            facts = bench.seed(moto.url)
            imds = bench.start_imds(moto.url, facts["master"]["instance_id"], work / "imds")
            index = FileServer(work / "index")
            for w in wheels:
                shutil.copyfile(WHEELS / w, index.dir / w)
            s3 = s3_client(moto.url)
            req = f"--no-index\n--find-links {index.url}/\n" + "".join(f"{r}\n" for r in REQUIREMENTS)
            s3.put_object(Bucket=facts["bucket"], Key="pip/requirements.txt", Body=req.encode())
            req_url = f"s3://{facts['bucket']}/pip/requirements.txt"
            plain_cfg, cache_cfg = work / "plain.toml", work / "cached.toml"
            plain_cfg.write_text(config(req_url, target, facts["bucket"], cache=False))
            cache_cfg.write_text(config(req_url, target, facts["bucket"], cache=True))

            plain = timed(exe, plain_cfg, new_node(work, "plain", "master-ig", facts, moto, imds, path), 1800)
            target.rename(work / "target-plain")
            env = new_node(work, "miss", "master-ig", facts, moto, imds, path)
            miss = timed(exe, cache_cfg, env, 1800)
            miss_actions = action_list(exe, env)
            target.rename(work / "target-miss")
            objs = s3.list_objects_v2(Bucket=facts["bucket"], Prefix=PREFIX).get("Contents", [])
            if len(objs) != 1:
                raise RuntimeError(f"expected one cache object after the miss, found {objs}")
            key = objs[0]["Key"]
            size = s3.head_object(Bucket=facts["bucket"], Key=key)["ContentLength"]
            index_requests = len(index.requests)
            index.stop()  # a hit needs no index

            hits = []
            for r in range(a.hit_rounds):
                env = new_node(work, f"hit{r}", "core-ig", facts, moto, imds, path)
                hits.append(timed(exe, cache_cfg, env, 600))
                if r == 0:
                    hit_actions = action_list(exe, env)
                    same = tree(target) == tree(work / "target-miss")
                    files = sum(1 for p in target.rglob("*") if p.is_file())
                    tbytes = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
                shutil.rmtree(target)
        finally:
            for p in (index, imds, moto):
                if p is not None:
                    p.stop()

    hit = statistics.median(hits)
    print(f"binary: {exe}")
    print(f"python: {python}")
    print(f"requirements: {' '.join(REQUIREMENTS)}; {len(wheels)} wheels with dependencies")
    print(f"installed tree: {files} files, {tbytes / 1048576:.1f} MiB")
    print(f"plain pip (no cache) from the loopback index: {plain:.2f} s")
    print(f"miss (pip into staging, pack, unpack, upload): {miss:.2f} s   index requests: {index_requests}")
    print(f"hit (download, sha256, unpack; index stopped), median of {len(hits)}: {hit:.3f} s "
          f"[{', '.join(f'{h:.3f}' for h in hits)}]")
    print(f"archive: s3://{facts['bucket']}/{key}: {size / 1048576:.1f} MiB")
    print(f"miss actions: {miss_actions}")
    print(f"hit actions: {hit_actions}")
    print(f"hit tree identical to miss tree: {same}")
    ratio = plain / hit
    print(f"ratio plain pip / hit: {ratio:.1f}x (target >= {TARGET_RATIO}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'}); "
          f"miss / hit: {miss / hit:.1f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
