"""install.pip on the host: a requirements file fetched from moto S3 (or a path, or loopback
http), `python3 -m pip install -r FILE --target T PACKAGES`, once per (requirements text,
packages, target); ensurepip when pip is missing.

Offline: the requirements file itself says `--no-index` and `--find-links DIR`, where DIR holds
wheels the test builds (tests/install_kit.make_wheel). pip installs only into the tmp `target`.
A `python3` shim first on PATH records every call before it execs the real interpreter.
"""
import os
import subprocess

import pytest

from helpers import assert_no_crash, phase, plan_json, plan_lines, planned_actions, status_json
from install_kit import FileServer, make_wheel, s3_client, shim, shim_calls

REQ_KEY = "pip/requirements.txt"


def real_python():
    """The interpreter `python3` on PATH resolves to (not a pyenv shim script)."""
    out = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], capture_output=True,
                         text=True, check=True, timeout=60)
    return out.stdout.strip()


class PipBench:
    def __init__(self, tmp_path, moto, aws, node, python=None):
        self.tmp = tmp_path
        self.wheels = tmp_path / "wheels"
        self.target = tmp_path / "site-target"
        self.calls_log = tmp_path / "python3-calls.log"
        self.bin = tmp_path / "shim-bin"
        shim(self.bin, "python3", python or real_python(), self.calls_log)
        self.s3 = s3_client(moto.url)
        self.bucket = aws["bucket"]
        self.node = node("master-ig", extra_env={
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "PIP_CONFIG_FILE": os.devnull,     # the host's pip config must not send pip anywhere
            "PIP_NO_CACHE_DIR": "1",
        })

    def requirements(self, *lines):
        return f"--no-index\n--find-links {self.wheels}\n" + "".join(f"{ln}\n" for ln in lines)

    def upload(self, text, key=REQ_KEY):
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=text.encode())
        return f"s3://{self.bucket}/{key}"

    def config(self, requirements=None, packages=None, target=True, extra=""):
        text = f"[install]\n{extra}[install.pip]\n"
        if requirements:
            text += f'requirements = "{requirements}"\n'
        if packages:
            text += "packages = [" + ", ".join(f'"{p}"' for p in packages) + "]\n"
        if target:
            text += f'target = "{self.target}"\n'
        p = self.tmp / "emrboot.toml"
        p.write_text(text)
        return p

    def run(self, cfg, expect=0):
        cp = self.node.run("run", "--config", cfg, "--only", "install", timeout=600)
        assert_no_crash(cp)
        if expect is not None:
            assert cp.returncode == expect, f"exit {cp.returncode}, expected {expect}\n{cp.stdout}\n{cp.stderr}"
        return cp

    def calls(self):
        return [args for _, args in shim_calls(self.calls_log)]

    def pip_installs(self):
        return [a for a in self.calls() if a[:3] == ["-m", "pip", "install"]]

    def installed_version(self, name="ebtestpkg"):
        init = self.target / name / "__init__.py"
        if not init.is_file():
            return None
        ns = {}
        exec(init.read_text(), ns)
        return ns["__version__"]

    def install_outcome(self):
        code, st = status_json(self.node)
        return phase(st, "install")


@pytest.fixture
def pip_bench(tmp_path, moto, aws, node):
    return PipBench(tmp_path, moto, aws, node)


def option_value(args, name):
    return args[args.index(name) + 1] if name in args else None


def test_requirements_from_s3_into_target(pip_bench):
    b = pip_bench
    make_wheel(b.wheels, "ebtestpkg", "0.1")
    req = b.upload(b.requirements("ebtestpkg==0.1"))
    cfg = b.config(requirements=req)

    cp = b.node.run("plan", "--config", cfg)
    assert_no_crash(cp)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    lines = plan_lines(cp.stdout)[1]["install"]
    assert any(ln.startswith("     - ") and "pip install" in ln and f"-r {req}" in ln for ln in lines), cp.stdout
    assert b.pip_installs() == [], "plan ran pip install"

    b.run(cfg)
    assert b.installed_version() == "0.1"
    assert (b.target / "ebtestpkg-0.1.dist-info" / "METADATA").is_file()
    installs = b.pip_installs()
    assert len(installs) == 1, b.calls()
    args = installs[0]
    assert option_value(args, "--target") == str(b.target), args
    assert "-r" in args, args
    inst = b.install_outcome()
    assert inst["outcome"] == "changed", inst
    assert any("pip" in a for a in inst["actions"]), inst

    # Same requirements: no python3 at all, nothing to report.
    before = b.calls()
    b.run(cfg)
    assert b.calls() == before, f"the re-run ran python3: {b.calls()[len(before):]}"
    inst = b.install_outcome()
    assert inst["outcome"] == "unchanged", inst
    assert not inst.get("actions"), inst
    cp = b.node.run("plan", "--config", cfg)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert not any("pip install" in ln for ln in plan_lines(cp.stdout)[1]["install"]), cp.stdout

    # New requirements text at the same URL: pip runs again.
    make_wheel(b.wheels, "ebtestpkg", "0.2")
    b.upload(b.requirements("ebtestpkg==0.2"))
    b.run(cfg)
    assert len(b.pip_installs()) == 2, b.calls()
    assert b.installed_version() == "0.2"
    assert b.install_outcome()["outcome"] == "changed"


def test_requirements_path_plus_packages_and_a_change_of_packages(pip_bench):
    b = pip_bench
    make_wheel(b.wheels, "ebtestpkg", "0.1")
    make_wheel(b.wheels, "ebtestextra", "1.0")
    make_wheel(b.wheels, "ebtestextra", "1.1")
    req = b.tmp / "requirements.txt"
    req.write_text(b.requirements("ebtestpkg==0.1"))
    b.run(b.config(requirements=req, packages=["ebtestextra==1.0"]))
    assert b.installed_version() == "0.1"
    assert b.installed_version("ebtestextra") == "1.0"
    assert len(b.pip_installs()) == 1
    assert "ebtestextra==1.0" in b.pip_installs()[0]

    b.run(b.config(requirements=req, packages=["ebtestextra==1.0"]))
    assert len(b.pip_installs()) == 1, "same requirements and packages: pip must not run"

    # The packages are part of the marker's key.
    b.run(b.config(requirements=req, packages=["ebtestextra==1.1"]))
    assert len(b.pip_installs()) == 2, b.calls()
    assert b.installed_version("ebtestextra") == "1.1"


def test_requirements_over_loopback_http_with_allow_http(pip_bench):
    b = pip_bench
    make_wheel(b.wheels, "ebtestpkg", "0.1")
    with FileServer(b.tmp / "www") as srv:
        (srv.dir / "requirements.txt").write_text(b.requirements("ebtestpkg==0.1"))
        b.run(b.config(requirements=f"{srv.url}/requirements.txt", extra="allow_http = true\n"))
        assert srv.gets("/requirements.txt"), srv.requests
    assert b.installed_version() == "0.1"


def test_a_failing_pip_leaves_no_marker(pip_bench):
    b = pip_bench
    make_wheel(b.wheels, "ebtestpkg", "0.1")
    cfg = b.config(requirements=b.upload(b.requirements("ebtestpkg==9.9")))
    cp = b.run(cfg, expect=1)
    assert "ebtestpkg" in cp.stderr, cp.stderr  # pip's own complaint is streamed
    inst = b.install_outcome()
    assert inst["outcome"] == "failed", inst
    assert b.installed_version() is None
    # Not marked done: the next run tries again (and fails again).
    b.run(cfg, expect=1)
    assert len(b.pip_installs()) == 2, b.calls()


def test_missing_requirements_object_is_an_error_naming_it(pip_bench):
    b = pip_bench
    url = f"s3://{b.bucket}/pip/absent.txt"
    cp = b.run(b.config(requirements=url), expect=None)
    assert cp.returncode in (1, 2), cp.stdout + cp.stderr
    assert url in cp.stderr, cp.stderr
    assert b.pip_installs() == []


@pytest.fixture
def pipless_python(tmp_path):
    """A venv without pip (its python3 has ensurepip): what a node without pip looks like."""
    venv = tmp_path / "nopip-venv"
    subprocess.run([real_python(), "-m", "venv", "--without-pip", str(venv)],
                   check=True, capture_output=True, timeout=120)
    py = venv / "bin" / "python3"
    probe = subprocess.run([str(py), "-m", "pip", "--version"], capture_output=True, timeout=60)
    assert probe.returncode != 0, "the venv was meant to have no pip"
    return venv


def test_ensurepip_when_pip_is_missing(tmp_path, moto, aws, node, pipless_python):
    b = PipBench(tmp_path, moto, aws, node, python=pipless_python / "bin" / "python3")
    make_wheel(b.wheels, "ebtestpkg", "0.1")
    cfg = b.config(requirements=b.upload(b.requirements("ebtestpkg==0.1")))
    rc, doc = plan_json(b.node, "plan", "--config", cfg)
    planned = planned_actions(doc).get("install", [])
    assert rc == 0 and planned[:1] == ["pip: python3 -m ensurepip"], doc
    assert b.calls() and not [a for a in b.calls() if a[:2] == ["-m", "ensurepip"]], "plan ran ensurepip"
    b.run(cfg)
    assert b.install_outcome()["actions"] == planned, b.install_outcome()
    calls = b.calls()
    ensure = [i for i, a in enumerate(calls) if a[:2] == ["-m", "ensurepip"]]
    installs = [i for i, a in enumerate(calls) if a[:3] == ["-m", "pip", "install"]]
    assert len(ensure) == 1 and len(installs) == 1 and ensure[0] < installs[0], calls
    assert b.installed_version() == "0.1"
    probe = subprocess.run([str(pipless_python / "bin" / "python3"), "-m", "pip", "--version"],
                           capture_output=True, timeout=60)
    assert probe.returncode == 0, "ensurepip did not leave pip behind"
