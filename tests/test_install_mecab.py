"""The real workload: MeCab 0.996 from ../shared/fixtures/sources (served over loopback http),
configure + make -j2 + make install to DESTDIR on node A (cache miss, about 90 s on 2 cores),
then node B (a fresh scratch root) unpacks the cached build and ends with the same files and
bytes under ROOT/usr/local. Slow: one test.
"""
import os
import shutil
import subprocess
import time

import pytest

from helpers import assert_no_crash, phase, status_json
from install_kit import MECAB_TARBALL, FileServer, cache_objects, mecab_sha256, s3_client, sha256_bytes, tree

PREFIX = "build-cache/"


def mecab_config(url, sha256, cache_url):
    return (f'[install]\nallow_http = true\n\n[[install.source]]\nname = "mecab"\nurl = "{url}"\n'
            f'sha256 = "{sha256}"\nbuild = ["./configure --prefix=/usr/local", "make -j2"]\n'
            f'install = ["make install"]\npost = []\nstep_timeout_secs = 1800\n\n'
            f'[install.cache]\ns3 = "{cache_url}"\n')


def run_install(n, cfg, timeout):
    """`emrboot run --only install` on node N; (its root, the completed run, its wall time)."""
    t0 = time.monotonic()
    cp = n.run("run", "--config", cfg, "--only", "install", timeout=timeout)
    took = time.monotonic() - t0
    assert_no_crash(cp)
    assert cp.returncode == 0, cp.stdout + cp.stderr[-5000:]
    return n.dir / "root", cp, took


def test_mecab_builds_once_and_the_second_node_unpacks_it(tmp_path, moto, aws, node):
    if not MECAB_TARBALL.is_file():
        pytest.fail(f"{MECAB_TARBALL} is missing (shared/fixtures)", pytrace=False)
    sha = mecab_sha256()
    s3 = s3_client(moto.url)
    with FileServer(tmp_path / "www") as www:
        shutil.copyfile(MECAB_TARBALL, www.dir / MECAB_TARBALL.name)
        url = f"{www.url}/{MECAB_TARBALL.name}"
        cfg = tmp_path / "emrboot.toml"
        cfg.write_text(mecab_config(url, sha, f"s3://{aws['bucket']}/{PREFIX}"))

        a = node("master-ig")
        root_a, cp, cold = run_install(a, cfg, timeout=1800)
        for rel in ("usr/local/bin/mecab", "usr/local/bin/mecab-config", "usr/local/include/mecab.h",
                    "usr/local/etc/mecabrc", "usr/local/libexec/mecab/mecab-dict-index"):
            assert (root_a / rel).exists(), rel
        libs = sorted(p.name for p in (root_a / "usr/local/lib").glob("libmecab.so*"))
        assert "libmecab.so" in libs and any(n.startswith("libmecab.so.2") for n in libs), libs
        objs = cache_objects(s3, aws["bucket"], PREFIX)
        assert len(objs) == 1 and next(iter(objs)).startswith(f"{PREFIX}mecab-"), sorted(objs)
        key, head = next(iter(objs.items()))
        body = s3.get_object(Bucket=aws["bucket"], Key=key)["Body"].read()
        assert head["Metadata"].get("sha256") == sha256_bytes(body)
        # Each build step is in the log.
        log = a.log_file.read_text()
        assert "./configure --prefix=/usr/local" in log and "make -j2" in log

        b = node("core-ig")
        root_b, cp, warm = run_install(b, cfg, timeout=600)
        assert len(www.gets(f"/{MECAB_TARBALL.name}")) == 1, "node B downloaded the source"
        # Build output is streamed to the log: configure's "checking for ..." lines were in A's.
        assert "checking for" in log
        assert "checking for" not in cp.stderr and "checking for" not in b.log_file.read_text(), \
            "node B ran configure"
        assert tree(root_b / "usr/local") == tree(root_a / "usr/local")
        assert any("cache hit" in x for x in phase(status_json(b)[1], "install")["actions"])

    # The unpacked MeCab works.
    env = {**os.environ, "LD_LIBRARY_PATH": str(root_b / "usr/local/lib")}
    ver = subprocess.run([str(root_b / "usr/local/bin/mecab"), "--version"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert ver.returncode == 0 and "0.996" in ver.stdout, ver
    print(f"\nmecab: cold (miss, build, upload) {cold:.1f} s; warm (hit) {warm:.2f} s; "
          f"archive {head['ContentLength']} bytes")
