"""What the install phase's tests (and benchmarks/install_cache.py) build and serve themselves:
a pure-Python wheel, source tarballs, a loopback HTTP server that logs its GETs, an S3 client
for moto, and PATH shims that record each call of a program."""
import base64
import functools
import hashlib
import http.server
import io
import os
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import bench

FIXTURES = bench.REPO.parent / "shared" / "fixtures"
MECAB_TARBALL = FIXTURES / "sources" / "mecab_0.996.orig.tar.gz"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def mecab_sha256():
    """The fixture's sha256 as SHA256SUMS gives it (and checked against the file itself)."""
    sums = (MECAB_TARBALL.parent / "SHA256SUMS").read_text().split()
    want = sums[sums.index(MECAB_TARBALL.name) - 1]
    assert sha256_file(MECAB_TARBALL) == want, f"{MECAB_TARBALL} does not match its SHA256SUMS"
    return want


# -- a wheel --------------------------------------------------------------------------------------

def make_wheel(outdir, name="ebtestpkg", version="0.1"):
    """A pure-Python wheel NAME-VERSION-py3-none-any.whl in OUTDIR whose module says its version."""
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{name}-{version}.dist-info/METADATA":
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: emrboot test package\n".encode(),
        f"{name}-{version}.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: emrboot-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{name}-{version}.dist-info/top_level.txt": f"{name}\n".encode(),
    }
    record_name = f"{name}-{version}.dist-info/RECORD"
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{record_name},,")
    files[record_name] = ("\n".join(record) + "\n").encode()
    whl = Path(outdir) / f"{name}-{version}-py3-none-any.whl"
    whl.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(path, data)
    return whl


# -- a source tarball -----------------------------------------------------------------------------

DEMO_BUILD_SH = """#!/bin/sh
# The demo's "compiler": writes the build output into the tree.
set -e
printf 'demo 1.0 built\\n' > demo.out
printf '#!/bin/sh\\necho hello from demo\\n' > demo
chmod 755 demo
"""


def make_demo_tarball(path, top="demo-1.0", extra_files=None):
    """demo-1.0.tar.gz: one top-level dir with build.sh, a README and a data file."""
    files = {f"{top}/build.sh": (DEMO_BUILD_SH.encode(), 0o755),
             f"{top}/README": (b"demo: a synthetic source package for emrboot's tests\n", 0o644),
             f"{top}/data/words.txt": (("\n".join(f"word{i}" for i in range(2000)) + "\n").encode(), 0o644)}
    files.update(extra_files or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as t:
        dirs = set()
        for name in files:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            t.addfile(info)
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            t.addfile(info, io.BytesIO(data))
    return path


# -- a loopback HTTP server --------------------------------------------------------------------------

class FileServer:
    """http.server on 127.0.0.1 serving DIR; .requests is every (method, path) it answered."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.requests = []
        lock = threading.Lock()
        log = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def send_head(self):
                with lock:
                    log.append((self.command, self.path))
                return super().send_head()

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(self.dir)))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def gets(self, path):
        return [r for r in self.requests if r == ("GET", path)]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# -- S3 (moto) -------------------------------------------------------------------------------------------

def s3_client(moto_url):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=moto_url, region_name=bench.REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(s3={"addressing_style": "path"}))


def cache_objects(s3, bucket, prefix):
    """{key: head_object} of every object under PREFIX."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = s3.head_object(Bucket=bucket, Key=obj["Key"])
    return out


class CachedObjects:
    """The build cache's objects, for a test bench class with .s3, .bucket and the class
    attribute KEY_RE (what every object key of that kind looks like) under CACHE_PREFIX."""

    CACHE_PREFIX = "build-cache/"
    KEY_RE = None

    def objects(self):
        return cache_objects(self.s3, self.bucket, self.CACHE_PREFIX)

    def only_object(self):
        objs = self.objects()
        assert len(objs) == 1, f"expected one cache object, found {sorted(objs)}"
        (key, head), = objs.items()
        assert self.KEY_RE.match(key), key
        return key, head

    def body(self, key):
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()


# -- PATH shims that record calls -----------------------------------------------------------------

def shim(bindir, name, real, log):
    """BINDIR/NAME: appends one line per call to LOG (the argv, tab-separated, after the value of
    DEBIAN_FRONTEND) and execs REAL with the same arguments."""
    bindir = Path(bindir)
    bindir.mkdir(parents=True, exist_ok=True)
    p = bindir / name
    p.write_text("#!/bin/sh\n"
                 f"{{ printf '%s' \"DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-}}\"; for a in \"$0\" \"$@\"; do printf '\\t%s' \"$a\"; done; echo; }} >> '{log}'\n"
                 f"exec '{real}' \"$@\"\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return p


def shim_calls(log):
    """[(env DEBIAN_FRONTEND value, [argv[1:]])] from a shim's log."""
    log = Path(log)
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        fields = line.split("\t")
        out.append((fields[0].split("=", 1)[1], fields[2:]))
    return out


def tree(top):
    """{relative path: (kind, mode, content or link target)} under TOP: to compare two roots."""
    top = Path(top)
    out = {}
    for p in sorted(top.rglob("*")):
        rel = str(p.relative_to(top))
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", oct(stat.S_IMODE(st.st_mode)), sha256_file(p))
    return out
