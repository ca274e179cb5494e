"""Shared helpers for the end-to-end tests of emrboot (not fixtures: those are in conftest.py)."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import bench

ZONEINFO = Path("/usr/share/zoneinfo")
# What a crash or an unhandled error looks like, from Rust or from a Python wrapper.
CRASH_MARKERS = ("panicked", "RUST_BACKTRACE", "Traceback (most recent call last)", "stack backtrace")
PHASES = ("install", "tag", "efs-mount", "ip-takeover", "shutdown-hook")


def assert_no_crash(cp):
    for text in (cp.stdout, cp.stderr):
        for marker in CRASH_MARKERS:
            assert marker not in text, f"emrboot crashed ({marker!r}):\n{cp.stdout}\n{cp.stderr}"


def offline_env(tmp_path, **extra):
    """An environment for commands that need no AWS: IMDS disabled, no moto, no host AWS config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EMRBOOT_"))}
    env.update({
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config-absent"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials-absent"),
        # Endpoints nobody listens on: a stray AWS call fails fast instead of leaving the host.
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9",
        "AWS_REGION": bench.REGION,
        "EMRBOOT_STATE_DIR": str(tmp_path / "offline-state"),
        "EMRBOOT_LOG_FILE": str(tmp_path / "offline-emrboot.log"),
        "EMRBOOT_SHUTDOWN_ACTIONS_DIR": str(tmp_path / "offline-shutdown-actions"),
    })
    env.update(extra)
    return env


def emrboot(*args, env, timeout=60, cwd=None):
    exe = bench.emrboot_bin()
    assert exe.is_file(), f"emrboot binary not found at {exe}"
    return subprocess.run([str(exe), *map(str, args)], env=env, text=True, capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd)


def make_root(root):
    """A scratch node root: ROOT/etc and ROOT/usr/share/zoneinfo/{Asia/Seoul,UTC,Europe/Paris}."""
    (root / "etc").mkdir(parents=True)
    for zone in ("Asia/Seoul", "UTC", "Europe/Paris"):
        dst = root / "usr/share/zoneinfo" / zone
        dst.parent.mkdir(parents=True, exist_ok=True)
        src = ZONEINFO / zone
        if src.is_file():
            shutil.copyfile(src, dst)
        else:  # a minimal TZif header is all emrboot may look at
            dst.write_bytes(b"TZif2" + b"\0" * 39)
    return root


def snapshot(top):
    """Every path under TOP with its type and content (file bytes, symlink target): to prove that
    nothing changed."""
    top = Path(top)
    if not top.exists():
        return None
    out = {}
    for p in sorted(top.rglob("*")):
        rel = str(p.relative_to(top))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", oct(p.stat().st_mode & 0o7777))
        else:
            out[rel] = ("file", oct(p.stat().st_mode & 0o7777), p.read_bytes())
    return out


def status_json(node):
    cp = node.run("status", "--json")
    assert_no_crash(cp)
    try:
        return cp.returncode, json.loads(cp.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"status --json printed no JSON (exit {cp.returncode}):\n{cp.stdout}\n{cp.stderr}")


def phase(status, name):
    found = [p for p in status["phases"] if p["phase"] == name]
    assert len(found) == 1, f"phase {name} appears {len(found)} times in {status['phases']}"
    return found[0]


_PLAN_HEADER = re.compile(r"(\d+)\. ([a-z-]+)( \(optional\))?:")


def plan_lines(stdout):
    """{phase: [its lines]} from plan's text output, in output order, plus the header lines.
    A phase's first line is its `N. name:` (or `N. name (optional):`) line. The one reader of
    plan's text output; plan_actions() picks the action lines out of it."""
    header, phases, current = [], {}, None
    for line in stdout.splitlines():
        m = _PLAN_HEADER.match(line)
        if m and m.group(2) in PHASES:
            current = m.group(2)
            phases[current] = [line]
        elif current is None:
            header.append(line)
        elif line.strip():
            phases[current].append(line)
    return header, phases


def plan_numbers(stdout):
    """[(N, phase)] of plan's text output's `N. phase:` lines, in output order."""
    return [(m.group(1), m.group(2)) for m in map(_PLAN_HEADER.match, stdout.splitlines()) if m]


def plan_actions(stdout, phase_name):
    """PHASE_NAME's `     - ...` action lines in plan's text output (the text after '- '), and
    its `N. name:` line (None when the phase is not in the output)."""
    lines = plan_lines(stdout)[1].get(phase_name)
    if not lines:
        return None, []
    return lines[0], [line[len("     - "):] for line in lines[1:] if line.startswith("     - ")]


def plan_json(node, *args):
    """`emrboot [ARGS before plan] plan --config CFG --json` as parsed JSON: ARGS are the words
    after `emrboot`, e.g. ("--root", root, "plan", "--config", cfg). Fails on no JSON."""
    cp = node.run(*args, "--json")
    assert_no_crash(cp)
    try:
        return cp.returncode, json.loads(cp.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"plan --json printed no JSON (exit {cp.returncode}):\n{cp.stdout}\n{cp.stderr}")


def planned_actions(doc):
    """{phase: [actions]} of a `plan --json` document, phases that would act only."""
    return {p["phase"]: p["actions"] for p in doc["phases"] if p["result"] == "act"}


def run_bounded(argv, env, timeout=60, prefix=(), preexec_fn=None, cwd=None, what=None):
    """Runs ARGV (emrboot's arguments) with PREFIX (a wrapper such as strace or setpriv) in
    front of the binary; output decoded with replacement, so bytes echoed from a hostile file
    cannot break the test. A run still going after TIMEOUT fails the test, saying whether SIGTERM
    stopped it (it is then killed either way)."""
    exe = bench.emrboot_bin()
    assert exe.is_file(), f"emrboot binary not found at {exe}"
    cmd = [*map(str, prefix), str(exe), *map(str, argv)]
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, encoding="utf-8", errors="replace", preexec_fn=preexec_fn)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.terminate()
        try:
            out, err = p.communicate(timeout=5)
            term = f"SIGTERM stopped it (exit {p.returncode})"
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            term = "SIGTERM did not stop it within 5 s; killed"
        raise AssertionError(f"emrboot {' '.join(map(str, argv))}{' (' + what + ')' if what else ''}: "
                             f"still running after {timeout} s; {term}\n--- stdout\n{out}\n--- stderr\n{err}")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def self_signed_cert(directory):
    """(cert.pem, key.pem) in DIRECTORY: a self-signed certificate for 127.0.0.1, for loopback
    https servers (emrboot trusts it through SSL_CERT_FILE)."""
    if shutil.which("openssl") is None:
        raise AssertionError("openssl is not installed: it is needed to make the test certificate "
                             "(apt-get install openssl)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, capture_output=True, timeout=60)
    return cert, key
