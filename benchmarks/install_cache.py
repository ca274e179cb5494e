#!/usr/bin/env python3
"""Benchmark: the install phase's build cache with the real MeCab 0.996 source
(../shared/fixtures/sources/mecab_0.996.orig.tar.gz), in one run on one moto + IMDS emulator:

- cold: a node with an empty cache: download over loopback http, sha256 check, ./configure,
  make -j2, make install to DESTDIR, copy into its scratch root, upload the staged tree to S3;
- warm: fresh nodes (fresh scratch root and state dir each) that hit the cache: download the
  archive, check it, unpack into the root, run post.

Reports wall time and peak RSS (GNU time %M: the largest process of the run, i.e. the compiler
for cold, emrboot for warm) of each, the archive's size in S3 (head_object ContentLength), and
the cold/warm ratio (issue 4's target: at least 50). Warm is the median of --warm-rounds runs.

    .bench/venv/bin/python benchmarks/install_cache.py [--warm-rounds 5]

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
from install_kit import MECAB_TARBALL, FileServer, mecab_sha256, s3_client, tree  # noqa: E402

PREFIX = "build-cache/"
TARGET_RATIO = 50


def pick_binary():
    if os.environ.get("EMRBOOT_BIN"):
        return Path(os.environ["EMRBOOT_BIN"])
    release = REPO / "target" / "release" / "emrboot"
    return release if release.is_file() else REPO / "target" / "debug" / "emrboot"


def config(url, sha256, bucket):
    return (f'[install]\nallow_http = true\n\n[[install.source]]\nname = "mecab"\nurl = "{url}"\n'
            f'sha256 = "{sha256}"\nbuild = ["./configure --prefix=/usr/local", "make -j2"]\n'
            f'install = ["make install"]\npost = []\nstep_timeout_secs = 1800\n\n'
            f'[install.cache]\ns3 = "s3://{bucket}/{PREFIX}"\n')


def new_node(work, name, kind, facts, moto, imds):
    d = work / name
    bench.write_info_files(d / "info", kind, facts)
    (d / "state").mkdir(parents=True)
    (d / "root" / "etc").mkdir(parents=True)
    imds.impersonate(facts["master" if bench.ROLE_OF_KIND[kind] == "Master" else "core"]["instance_id"])
    return d, bench.node_env(moto, imds, d / "info", d / "state", {"EMRBOOT_ROOT": str(d / "root")})


def timed(exe, cfg, env, timeout):
    """(wall s, peak RSS KiB) of `emrboot run --config CFG --only install` under GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        t0 = time.perf_counter()
        cp = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", t.name, str(exe), "run", "--config", str(cfg),
                             "--only", "install"], env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        rss = int((t.read().strip().splitlines() or ["0"])[-1])
    if cp.returncode != 0:
        raise RuntimeError(f"emrboot exit {cp.returncode}\n{cp.stdout}\n{cp.stderr[-4000:]}")
    return wall, rss


def action_list(env):
    cp = subprocess.run([str(pick_binary()), "status", "--json"], env=env, capture_output=True, text=True,
                        timeout=60)
    st = json.loads(cp.stdout)
    return next(p for p in st["phases"] if p["phase"] == "install").get("actions", [])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warm-rounds", type=int, default=5)
    a = ap.parse_args()
    exe = pick_binary()
    if not exe.is_file():
        sys.exit(f"emrboot binary not found at {exe}: cargo build (--release), or set EMRBOOT_BIN")
    if not Path("/usr/bin/time").exists():
        sys.exit("/usr/bin/time (GNU time) is missing: run tests/bench/setup.sh")
    sha = mecab_sha256()
    with tempfile.TemporaryDirectory(prefix="emrboot-install-bench-") as d:
        work = Path(d)
        moto = imds = www = None
        try:
            moto = bench.start_moto(work / "moto")
            facts = bench.seed(moto.url)
            imds = bench.start_imds(moto.url, facts["master"]["instance_id"], work / "imds")
            www = FileServer(work / "www")
            shutil.copyfile(MECAB_TARBALL, www.dir / MECAB_TARBALL.name)
            cfg = work / "emrboot.toml"
            cfg.write_text(config(f"{www.url}/{MECAB_TARBALL.name}", sha, facts["bucket"]))
            s3 = s3_client(moto.url)

            cold_dir, env = new_node(work, "cold", "master-ig", facts, moto, imds)
            cold_wall, cold_rss = timed(exe, cfg, env, timeout=3600)
            cold_actions = action_list(env)
            objs = s3.list_objects_v2(Bucket=facts["bucket"], Prefix=PREFIX).get("Contents", [])
            if len(objs) != 1:
                raise RuntimeError(f"expected one cache object after the cold run, found {objs}")
            key = objs[0]["Key"]
            size = s3.head_object(Bucket=facts["bucket"], Key=key)["ContentLength"]

            warm = []
            for r in range(a.warm_rounds):
                wdir, env = new_node(work, f"warm{r}", "core-ig", facts, moto, imds)
                warm.append(timed(exe, cfg, env, timeout=600))
                if r == 0:
                    warm_actions = action_list(env)
                    same = tree(wdir / "root" / "usr/local") == tree(cold_dir / "root" / "usr/local")
            gets = len(www.gets(f"/{MECAB_TARBALL.name}"))
        finally:
            for p in (www, imds, moto):
                if p is not None:
                    p.stop()

    warm_wall = statistics.median(w for w, _ in warm)
    warm_rss = max(r for _, r in warm)
    ratio = cold_wall / warm_wall
    print(f"binary: {exe}")
    print(f"source: {MECAB_TARBALL.name} ({MECAB_TARBALL.stat().st_size} bytes), sha256 {sha[:16]}...")
    print(f"cold (miss: download, configure, make -j2, make install, upload): {cold_wall:.2f} s, "
          f"peak RSS {cold_rss / 1024:.1f} MiB   actions: {cold_actions}")
    print(f"warm (hit: download, check, unpack, post), median of {len(warm)}: {warm_wall:.3f} s "
          f"[{', '.join(f'{w:.3f}' for w, _ in warm)}], peak RSS {warm_rss / 1024:.1f} MiB   actions: {warm_actions}")
    print(f"archive: s3://{facts['bucket']}/{key}: {size} bytes ({size / 1048576:.2f} MiB)")
    print(f"source downloads over http: {gets} (1 expected: the cold node's)")
    print(f"warm tree identical to cold tree under usr/local: {same}")
    print(f"ratio cold/warm: {ratio:.0f}x (target >= {TARGET_RATIO}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    return 0 if same and gets == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
