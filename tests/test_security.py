"""Security: shell metacharacters never reach a shell, file modes under any umask, no secret in any
log or state file, no download over plain http through a redirect, and two runs on one node never
both act.

Shell payloads: every run, plan and validate here runs under `strace -f -e trace=execve,execveat`,
and the tests assert that no shell (sh, bash, dash, ...) was ever executed with the payload among
its arguments, and that the CANARY file the payload would create does not exist. Values that
validation refuses must be refused with exit 2 naming the key; values that are legitimate data
(tag keys and values, a Name, paths) must arrive verbatim where they go (moto's tags, pip's
arguments, the mount point, the shutdown action and the boot unit).
"""
import functools
import http.server
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

import bench
from helpers import assert_no_crash, offline_env, phase, run_bounded, self_signed_cert, status_json
from install_kit import FileServer, make_demo_tarball, make_wheel, s3_client, sha256_file
from net_helpers import emulate_reassignment, write_config

SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "busybox"}
SHA = "0123456789abcdef" * 4


def q(s):
    return json.dumps(s)  # a TOML basic string is a JSON string for these values


# -- payloads and the canary ----------------------------------------------------------------------

@pytest.fixture
def canary(tmp_path):
    """A path no test creates: if it exists, a payload ran."""
    return tmp_path / f"CANARY-{uuid.uuid4().hex[:12]}"


def spaced(canary):
    """Payloads with whitespace: every key that is not free text refuses them."""
    c = str(canary)
    return {"dollar-paren": f"$(touch {c})", "backticks": f"`touch {c}`", "semicolon": f"x; touch {c}",
            "pipe": f"x | touch {c}", "and-and": f"x && touch {c}", "newline": f"x\ntouch {c}\n",
            "quote-break": f"x'; touch {c}; echo '"}


def tight(canary):
    """The same without whitespace (${IFS} instead): what path-like values accept."""
    c = str(canary)
    return {"dollar-paren": f"$(touch${{IFS}}{c})", "backticks": f"`touch${{IFS}}{c}`",
            "semicolon": f";touch${{IFS}}{c};", "pipe": f"|touch${{IFS}}{c}|", "and-and": f"&&touch${{IFS}}{c}&&"}


TIGHT_NAMES = tuple(tight(Path("/x")))


class Trace:
    """emrboot under strace: every program any process of the run executed."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def prefix(self):
        return ("strace", "-f", "-qq", "-s", "65536", "-e", "trace=execve,execveat", "-o", str(self.path))

    def execs(self):
        """[(program, the whole strace line)] of every execve/execveat, failed ones included."""
        out = []
        if not self.path.exists():
            return out
        for line in self.path.read_text(errors="replace").splitlines():
            m = re.search(r'execve(?:at)?\((?:[^,"]*, )?"((?:[^"\\]|\\.)*)"', line)
            if m:
                out.append((m.group(1), line))
        return out

    def assert_no_shell_got(self, marker, canary):
        execs = self.execs()
        assert execs, f"strace recorded no execve in {self.path}: the trace proves nothing"
        shells = [line for prog, line in execs if os.path.basename(prog) in SHELLS]
        bad = [line for line in shells if marker in line]
        assert not bad, "a shell was executed with the payload:\n" + "\n".join(bad)
        assert not canary.exists(), f"the payload ran: {canary} exists"


def traced(tmp_path, argv, env, name, prefix=(), **kw):
    t = Trace(tmp_path / f"strace-{name}.log")
    cp = run_bounded(argv, env, prefix=(*prefix, *t.prefix), **kw)
    assert_no_crash(cp)
    return cp, t


# -- 1. values validation refuses -----------------------------------------------------------------

def _source(name="demo", url="https://127.0.0.1/demo.tar.gz"):
    return (f"[[install.source]]\nname = {q(name)}\nurl = {q(url)}\nsha256 = {q(SHA)}\n"
            "build = []\ninstall = []\n")


EFS = 'dns_name = "localhost"\nmount_point = "/mnt/efs"\n'
# key -> the config that puts PAYLOAD there; `path` keys take only the whitespace payloads.
REFUSING = {
    "install.packages": (lambda p: f"[install]\npackages = [\"jq\", {q(p)}]\n", False),
    "install.timezone": (lambda p: f"[install]\ntimezone = {q('Asia/' + p)}\n", False),
    "install.pip.packages": (lambda p: f"[install.pip]\npackages = [{q(p)}]\n", False),
    "install.pip.target": (lambda p: f"[install.pip]\npackages = [\"jq\"]\ntarget = {q('/opt/' + p)}\n", True),
    "install.pip.requirements": (lambda p: f"[install.pip]\nrequirements = {q('/opt/' + p)}\n", True),
    "install.source[0].name": (lambda p: _source(name=p), False),
    "install.source[0].url": (lambda p: _source(url="https://127.0.0.1/" + p), True),
    "install.cache.s3": (lambda p: _source() + f"[install.cache]\ns3 = {q('s3://' + p)}\n", False),
    "tags.name_suffix": (lambda p: f"[tags]\nname_suffix = {q(p)}\n", False),
    "efs.mount_point": (lambda p: f"[efs]\ndns_name = \"localhost\"\nmount_point = {q('/mnt/' + p)}\n", True),
    "efs.owner": (lambda p: f"[efs]\n{EFS}owner = {q('hadoop' + p)}\n", False),
    "efs.options": (lambda p: f"[efs]\n{EFS}options = {q('nfsvers=4.1' + p)}\n", False),
    "efs.dns_name": (lambda p: f"[efs]\ndns_name = {q('fs-12345678.efs' + p)}\nmount_point = \"/mnt/efs\"\n", False),
    "efs.file_system_id": (lambda p: f"[efs]\nfile_system_id = {q('fs-12345678' + p)}\nmount_point = \"/x\"\n", False),
    "ip_takeover.address": (lambda p: f"[ip_takeover]\naddress = {q('10.0.0.10' + p)}\n"
                                      "reserved_eni = \"eni-0123456789abcdef0\"\n", False),
    "ip_takeover.reserved_eni": (lambda p: "[ip_takeover]\naddress = \"10.0.0.10\"\n"
                                           f"reserved_eni = {q('eni-0123456789abcdef0' + p)}\n", False),
}


def assert_refused_naming(cp, key):
    text = cp.stdout + cp.stderr
    assert cp.returncode == 2, f"exit {cp.returncode}, expected 2\n{text}"
    assert f"`{key}`" in text or f"{key}:" in text or f"{key} " in text, f"the error does not name `{key}`:\n{text}"


@pytest.mark.parametrize("key", REFUSING)
def test_validate_refuses_payloads_naming_the_key(tmp_path, canary, key):
    make, pathlike = REFUSING[key]
    cases = dict(spaced(canary))
    if not pathlike:
        cases.update({f"tight-{k}": v for k, v in tight(canary).items()})
    env = offline_env(tmp_path)
    for name, payload in cases.items():
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(make(payload))
        cp, t = traced(tmp_path, ["validate", cfg], env, f"validate-{name}")
        assert_refused_naming(cp, key)
        t.assert_no_shell_got(canary.name, canary)


def all_refused(p):
    """One config with the payload in every key that must refuse it."""
    return ("[install]\n"
            f"packages = [{q(p)}]\ntimezone = {q('Asia/' + p)}\n"
            f"[install.pip]\npackages = [{q(p)}]\ntarget = {q('/opt/' + p)}\nrequirements = {q('/opt/' + p)}\n"
            f"[[install.source]]\nname = {q(p)}\nurl = {q('https://127.0.0.1/' + p)}\nsha256 = {q(SHA)}\n"
            "build = []\ninstall = []\n"
            f"[tags]\nname_suffix = {q(p)}\n"
            f"[efs]\ndns_name = {q('fs' + p)}\nmount_point = {q('/mnt/' + p)}\n"
            f"owner = {q('hadoop' + p)}\noptions = {q('hard' + p)}\n"
            f"[ip_takeover]\naddress = {q('10.0.0.10' + p)}\nreserved_eni = {q('eni-0123456789abcdef0' + p)}\n")


ALL_REFUSED_KEYS = ("install.packages", "install.timezone", "install.pip.packages", "install.pip.target",
                    "install.pip.requirements", "install.source[0].name", "install.source[0].url",
                    "tags.name_suffix", "efs.dns_name", "efs.mount_point", "efs.owner", "efs.options",
                    "ip_takeover.address", "ip_takeover.reserved_eni")


@pytest.mark.parametrize("cmd", ["run", "plan"])
@pytest.mark.parametrize("payload", list(spaced(Path("/x"))))
def test_run_and_plan_refuse_payloads_before_anything(node, tmp_path, scratch_root, canary, cmd, payload):
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root)})
    cfg = tmp_path / "emrboot.toml"
    cfg.write_text(all_refused(spaced(canary)[payload]))
    cp, t = traced(tmp_path, [cmd, "--config", cfg], n.env, cmd)
    for key in ALL_REFUSED_KEYS:
        assert_refused_naming(cp, key)
    t.assert_no_shell_got(canary.name, canary)
    assert not (n.state_dir / "status.json").exists()
    assert not (scratch_root / "etc/localtime").exists()


# -- 2. values that are data: verbatim where they go ----------------------------------------------

def test_tag_payloads_reach_ec2_verbatim(node, aws, moto, tmp_path, scratch_root, canary):
    """Tag values, tag keys and the current Name carry every payload: validate, plan and run
    (under strace) run no shell with them, and moto holds them byte for byte."""
    ec2 = bench._clients(moto.url, bench.REGION)[0]
    iid = aws["master"]["instance_id"]
    payloads = {**spaced(canary), **{f"tight-{k}": v for k, v in tight(canary).items()}}
    name = "emr" + payloads["dollar-paren"]
    ec2.create_tags(Resources=[iid], Tags=[{"Key": "Name", "Value": name}])
    want = {f"value-{k}": v for k, v in payloads.items()}
    want.update({v: f"key-{k}" for k, v in payloads.items()})
    assert len(want) + 1 <= 50
    cfg = tmp_path / "emrboot.toml"
    cfg.write_text('[tags]\nname_suffix = "role"\n[tags.set]\n' + "".join(f"{q(k)} = {q(v)}\n" for k, v in want.items()))
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root)})

    cp, t = traced(tmp_path, ["validate", cfg], offline_env(tmp_path), "validate")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    t.assert_no_shell_got(canary.name, canary)
    cp, t = traced(tmp_path, ["plan", "--config", cfg], n.env, "plan")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    t.assert_no_shell_got(canary.name, canary)
    cp, t = traced(tmp_path, ["run", "--config", cfg, "--only", "tag"], n.env, "run")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    t.assert_no_shell_got(canary.name, canary)

    got = {x["Key"]: x["Value"] for x in
           ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]}
    for k, v in want.items():
        assert got.get(k) == v, f"tag {k!r}: moto has {got.get(k)!r}, the config says {v!r}"
    assert got["Name"] == name + "-MASTER", got["Name"]


@pytest.fixture
def real_python3(tmp_path):
    """A PATH dir whose python3 is a symlink to the real interpreter: a pyenv shim is a bash
    script, which would put every pip argument into a shell's argv and blur the trace."""
    real = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()
    d = tmp_path / "real-python-bin"
    d.mkdir()
    (d / "python3").symlink_to(os.path.realpath(real))
    return d


def pip_env(n, bindir):
    n.env.update({"PATH": f"{bindir}:{os.environ['PATH']}", "PIP_CONFIG_FILE": os.devnull,
                  "PIP_NO_CACHE_DIR": "1"})


@pytest.mark.parametrize("payload", TIGHT_NAMES)
def test_path_payloads_reach_pip_as_arguments(node, tmp_path, scratch_root, canary, real_python3, payload):
    """The --config path, the requirements path and pip's target hold the payload: pip gets the
    target verbatim as one argument, no shell sees it, the package lands in that very dir."""
    p = tight(canary)[payload]
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "ebtestpkg", "0.1")
    target = Path(f"{tmp_path}/target{p}")
    req = Path(f"{tmp_path}/req{p}/requirements.txt")
    req.parent.mkdir(parents=True)
    req.write_text(f"--no-index\n--find-links {wheels}\nebtestpkg==0.1\n")
    cfg = Path(f"{tmp_path}/cfg{p}/emrboot.toml")
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f"[install.pip]\nrequirements = {q(str(req))}\ntarget = {q(str(target))}\n")
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root)})
    pip_env(n, real_python3)

    cp, t = traced(tmp_path, ["run", "--config", cfg, "--only", "install"], n.env, "run", timeout=300)

    assert cp.returncode == 0, cp.stdout + cp.stderr
    t.assert_no_shell_got(canary.name, canary)
    assert (target / "ebtestpkg" / "__init__.py").is_file(), "pip did not install into the target as given"
    pip_lines = [line for prog, line in t.execs() if "python" in os.path.basename(prog) and '"pip"' in line
                 and '"install"' in line]
    assert any(q(str(target)) in line for line in pip_lines), \
        "no pip install with the target as one argument:\n" + "\n".join(pip_lines)


@pytest.fixture
def nfs_port_listener():
    """127.0.0.1:2049 accepting and closing connections, so that efs-mount gets past its TCP wait
    and really runs mount (which then fails: nothing speaks NFS here)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", 2049))
    except OSError as e:
        s.close()
        pytest.fail(f"127.0.0.1:2049 is busy ({e}): the mount-point test needs it", pytrace=False)
    s.listen(16)
    stop = threading.Event()

    def serve():
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = s.accept()
                c.close()
            except OSError:
                pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    yield
    stop.set()
    th.join(5)
    s.close()


def test_mount_point_payload_reaches_mount_as_one_argument(node, tmp_path, scratch_root, canary, nfs_port_listener):
    p = "".join(tight(canary).values())
    mount_point = f"/efs{p}"
    cfg = tmp_path / "emrboot.toml"
    cfg.write_text(f'[efs]\ndns_name = "127.0.0.1"\nmount_point = {q(mount_point)}\ntimeout_secs = 3\n')
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root)})

    cp, t = traced(tmp_path, ["run", "--config", cfg, "--only", "efs-mount"], n.env, "run", timeout=120)

    t.assert_no_shell_got(canary.name, canary)
    mounts = [line for prog, line in t.execs() if os.path.basename(prog) == "mount"]
    assert mounts, f"mount never ran (exit {cp.returncode}):\n{cp.stderr}"
    where = q(str(scratch_root) + mount_point)
    assert all(where in line for line in mounts), "\n".join(mounts)
    assert cp.returncode == 1, f"exit {cp.returncode}: nothing serves NFS, the mount must fail\n{cp.stderr}"


# -- the state dir's path in the shutdown action and the boot unit (netbench) ---------------------

def systemd_exec_argv(value):
    """ExecStart= as systemd.service(5) splits it: %% -> %, $$ -> $, ${VAR} -> the variable's
    value (the unit sets none: empty), then words with double quotes and backslash escapes.
    ($VAR as a word of its own is also expanded by systemd; no value here has one.)"""
    value = value.replace("%%", "\0pct\0")
    value = value.replace("$$", "\0dollar\0")
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "", value)
    value = value.replace("\0pct\0", "%").replace("\0dollar\0", "$")
    words, cur, quoted, i, started = [], "", False, 0, False
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            cur += value[i + 1]
            i += 2
            started = True
            continue
        if c == '"':
            quoted = not quoted
            started = True
        elif c.isspace() and not quoted:
            if started:
                words.append(cur)
            cur, started = "", False
        else:
            cur += c
            started = True
        i += 1
    if started:
        words.append(cur)
    return words


TEMPLATE = (bench.REPO / "systemd" / "emrboot-boot.service").read_text()


def shutdown_env(m):
    return {k: v for k, v in m.env.items() if k not in ("EMRBOOT_STATE_DIR", "EMRBOOT_INFO_DIR")}


@pytest.mark.parametrize("with_newline", [False, True], ids=["tight", "newline"])
def test_state_dir_payload_in_the_action_and_the_unit(netbench, canary, with_newline):
    nb, m = netbench, netbench.master
    p = "".join(tight(canary).values()) + ("\nExecStartPre=/bin/touch " + str(canary) if with_newline else "")
    m.state_dir = Path(f"{m.root}/state{p}")
    m.state_dir.mkdir(parents=True)
    m.env["EMRBOOT_STATE_DIR"] = str(m.state_dir)
    cfg = write_config(nb, m)
    enis_before = nb.enis()
    cp, t = traced(m.root, ["run", "--config", cfg], m.env, "run", prefix=("ip", "netns", "exec", m.ns), timeout=120)
    t.assert_no_shell_got(canary.name, canary)
    if with_newline:
        # a unit file is line-based: such a state dir is refused before anything changes
        assert cp.returncode == 2, cp.stdout + cp.stderr
        assert "--state-dir" in cp.stderr and "control character" in cp.stderr, cp.stderr
        assert nb.enis() == enis_before
        assert not (m.fs_root / "etc/systemd/system/emrboot-boot.service").exists()
        assert not (m.shutdown_actions_dir / "emrboot-release-ip.sh").exists()
        return
    assert cp.returncode == 0, cp.stdout + cp.stderr
    kept = m.state_dir / "bin" / "emrboot"

    # the shutdown action, run by sh as EMR does
    emulate_reassignment(nb, nb.fixed_ip, m.eni_id)
    action = m.shutdown_actions_dir / "emrboot-release-ip.sh"
    t2 = Trace(m.root / "strace-action.log")
    cp = m.sh(*t2.prefix, "sh", action, env=shutdown_env(m), timeout=120)
    assert cp.returncode == 0, f"exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    t2.assert_no_shell_got(canary.name, canary)
    emrboots = [line for prog, line in t2.execs() if prog == q(str(kept))[1:-1]]  # as strace escapes it
    assert emrboots and q(str(m.state_dir)) in emrboots[0], "\n".join(line for _, line in t2.execs())
    assert nb.fixed_ip in nb.eni_ips(nb.reserved_eni), nb.enis()

    # the boot unit: the template's lines, one each, ExecStart exec'ing the kept binary with this state dir
    unit = (m.fs_root / "etc/systemd/system/emrboot-boot.service").read_text()
    keys = lambda text: [ln.split("=", 1)[0] for ln in text.splitlines()]  # noqa: E731
    assert keys(unit) == keys(TEMPLATE), f"the unit's lines are not the template's:\n{unit}"
    (exec_start,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    argv = systemd_exec_argv(exec_start[len("ExecStart="):])
    assert argv[:3] == [str(kept), "--state-dir", str(m.state_dir)], f"systemd would run {argv}\n{exec_start}"
    (cond,) = [ln for ln in unit.splitlines() if ln.startswith("ConditionPathExists=")]
    assert cond == f"ConditionPathExists={m.state_dir}/config.toml".replace("%", "%%"), cond


# -- 3. file modes under any umask (netbench master: tag, ip-takeover, shutdown-hook) --------------

def _mode(p):
    return stat.S_IMODE(os.lstat(p).st_mode)


def _tree(top):
    top = Path(top)
    return [top, *sorted(top.rglob("*"))] if top.exists() else []


@pytest.mark.parametrize("umask", [0o000, 0o077], ids=["umask000", "umask077"])
def test_file_modes_whatever_the_umask(netbench, umask):
    nb, m = netbench, netbench.master
    shutil.rmtree(m.state_dir)  # emrboot makes it
    before = {p for p in _tree(m.root)}
    cfg = write_config(nb, m)
    cp = run_bounded(["run", "--config", cfg], m.env, prefix=("ip", "netns", "exec", m.ns), timeout=120,
                     preexec_fn=lambda: os.umask(umask))
    assert_no_crash(cp)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    st, iid = m.state_dir, m.instance_id

    exact = {st: 0o700, st / "status.json": 0o600, st / "config.toml": 0o600, st / "lock": 0o600,
             m.shutdown_actions_dir / "emrboot-release-ip.sh": 0o755,
             m.fs_root / "etc/systemd/system/emrboot-boot.service": 0o644}
    markers = sorted((st / "markers" / iid).glob("*.json"))
    assert len(markers) == 3, markers  # tag, ip-takeover, shutdown-hook
    exact.update({mk: 0o600 for mk in markers})
    wrong = {str(p): oct(_mode(p)) for p, want in exact.items() if _mode(p) != want}
    assert _mode(m.log_file) in (0o600, 0o640), oct(_mode(m.log_file))
    kept = st / "bin" / "emrboot"
    assert os.stat(kept).st_uid == 0 and _mode(kept) & 0o022 == 0, (os.stat(kept).st_uid, oct(_mode(kept)))

    created = [p for p in _tree(m.root) if p not in before and not p.is_symlink()]
    writable = {str(p): oct(_mode(p)) for p in created if _mode(p) & 0o022}
    private = {str(p): oct(_mode(p)) for p in _tree(st) if p.is_file() and p != kept and _mode(p) & 0o077}
    assert not wrong, f"umask {umask:03o}: modes differ from the contract: {wrong}"
    assert not writable, f"umask {umask:03o}: emrboot made group/world-writable paths: {writable}"
    assert not private, f"umask {umask:03o}: state files readable by others: {private}"


def test_the_kept_binary_belongs_to_root_whoever_owns_the_download(netbench, tmp_path, monkeypatch):
    """EMR downloads the bootstrap action as `hadoop`; the copy that root execs at shutdown and
    at boot must not be a file another user can rewrite (a hard link shares its owner)."""
    nb, m = netbench, netbench.master
    dl = tmp_path / "bootstrap-actions" / "1"
    dl.mkdir(parents=True)
    exe = dl / "emrboot"
    shutil.copyfile(bench.emrboot_bin(), exe)
    os.chown(exe, 65534, 65534)
    exe.chmod(0o755)
    monkeypatch.setenv("EMRBOOT_BIN", str(exe))
    cp = run_bounded(["run", "--config", write_config(nb, m)], m.env, prefix=("ip", "netns", "exec", m.ns),
                     timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    kept = m.state_dir / "bin" / "emrboot"
    s = os.stat(kept)
    assert (s.st_uid, _mode(kept) & 0o022) == (0, 0), (
        f"{kept}: owner uid {s.st_uid}, mode {oct(_mode(kept))}"
        f"{' (a hard link to ' + str(exe) + ')' if s.st_ino == os.stat(exe).st_ino else ''}")


# -- 4. secrets: credentials, the IMDS token, passwords in URLs --------------------------------------

def everything_written(n, *cps):
    """{where: text} of every output and every file emrboot wrote."""
    out = {}
    for i, cp in enumerate(cps):
        out[f"stdout#{i}"], out[f"stderr#{i}"] = cp.stdout, cp.stderr
    if n.log_file.exists():
        out["log file"] = n.log_file.read_text(errors="replace")
    for p in _tree(n.state_dir):
        if p.is_file() and p.name != "emrboot":
            out[str(p)] = p.read_bytes().decode(errors="replace")
    return out


def assert_nothing_leaked(texts, secrets):
    leaks = []
    for where, text in texts.items():
        for name, secret in secrets.items():
            if secret in text:
                line = next(ln for ln in text.splitlines() if secret in ln)
                leaks.append(f"{name} in {where}, e.g.: {line[:400]}")
    assert not leaks, "secrets written:\n" + "\n".join(leaks)


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("level", [None, "debug", "trace"])
def test_no_credential_or_token_in_any_output(node, aws, moto, imds, tmp_path, scratch_root, level, fmt):
    tag = uuid.uuid4().hex
    creds = {"AWS_ACCESS_KEY_ID": f"AKIACANARY{tag[:10].upper()}", "AWS_SECRET_ACCESS_KEY": f"secret-canary-{tag}",
             "AWS_SESSION_TOKEN": f"session-canary-{tag}"}
    text = '[install]\ntimezone = "Asia/Seoul"\n[tags]\nname_suffix = "role"\n[tags.set]\nProject = "p"\n'
    s3_client(moto.url).put_object(Bucket=aws["bucket"], Key="cfg/emrboot.toml", Body=text.encode())
    src = f"s3://{aws['bucket']}/cfg/emrboot.toml"
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root), "EMRBOOT_LOG_FORMAT": fmt, **creds})
    n.env.pop("EMRBOOT_LOG", None)
    if level:
        n.env["EMRBOOT_LOG"] = level
    imds.faults(refuse_token=1, paths="^/latest/meta-data/")  # the 401 path logs what it logs
    runs = [run_bounded(["plan", "--config", src], n.env), run_bounded(["run", "--config", src], n.env),
            run_bounded(["status", "--json"], n.env)]
    for cp in runs:
        assert_no_crash(cp)
    assert runs[1].returncode == 0, runs[1].stdout + runs[1].stderr
    tokens = imds.issued_tokens()
    assert tokens, "the emulator issued no token: the check would prove nothing"
    secrets = {**creds, **{f"IMDS token #{i}": t for i, t in enumerate(tokens)}}
    assert_nothing_leaked(everything_written(n, *runs), secrets)


# -- https servers that redirect ----------------------------------------------------------------------

class TlsServer:
    """https on 127.0.0.1 (self-signed, trusted through SSL_CERT_FILE) serving DIR; a path
    /to/<target>/REST answers 302 to TARGETS[target] + /REST. .requests: (method, path)."""

    def __init__(self, tmp_path, targets=None):
        self.dir = tmp_path / "tls-www"
        self.dir.mkdir()
        self.cert, key = self_signed_cert(tmp_path / "tls")
        self.targets = targets if targets is not None else {}
        self.requests = []
        srv = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def send_head(self):
                srv.requests.append((self.command, self.path))
                m = re.match(r"^/to/([^/]+)(/.*)$", self.path)
                if m and m.group(1) in srv.targets:
                    self.send_response(302)
                    # the path only: a query of the request is not handed on
                    self.send_header("Location", srv.targets[m.group(1)] + m.group(2).split("?")[0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return super().send_head()

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, key)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(self.dir)))
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.targets.setdefault("https", self.url)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def servers(tmp_path):
    """(https server, plain http server): the https one redirects /to/http/X to the http one's /X
    and /to/https/X to its own /X. Both serve the same files."""
    plain = FileServer(tmp_path / "http-www")
    try:
        tls = TlsServer(tmp_path, {"http": plain.url})
    except BaseException:
        plain.stop()
        raise
    tls.plain = plain
    try:
        yield tls, plain
    finally:
        tls.stop()
        plain.stop()


def publish(servers, name, data):
    tls, plain = servers
    for d in (tls.dir, plain.dir):
        (d / name).write_bytes(data)


@pytest.mark.parametrize("case", ["200", "404", "redirect-to-http"])
def test_no_password_from_a_config_url(node, tmp_path, scratch_root, servers, case):
    tls, _ = servers
    publish(servers, "emrboot.toml", b'[install]\ntimezone = "Asia/Seoul"\n')
    password, signature = f"pw-canary-{uuid.uuid4().hex}", f"sig-canary-{uuid.uuid4().hex}"
    path = {"200": "/emrboot.toml", "404": "/absent.toml", "redirect-to-http": "/to/http/emrboot.toml"}[case]
    url = f"https://ops:{password}@{tls.url[len('https://'):]}{path}?X-Amz-Signature={signature}"
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root), "SSL_CERT_FILE": str(tls.cert),
                                     "EMRBOOT_LOG": "debug"})
    cp = run_bounded(["run", "--config", url], n.env)
    assert_no_crash(cp)
    assert cp.returncode == (0 if case == "200" else 2), cp.stdout + cp.stderr
    st = run_bounded(["status", "--json"], n.env)
    assert_nothing_leaked(everything_written(n, cp, st), {"the password": password, "the signature": signature})


def test_no_password_from_a_requirements_url(node, tmp_path, scratch_root, servers, real_python3):
    """The same for install.pip.requirements, whose fetch fails (404): the error goes to the log,
    stderr and status.json."""
    tls, _ = servers
    password = f"pw-canary-{uuid.uuid4().hex}"
    url = f"https://ops:{password}@{tls.url[len('https://'):]}/absent/requirements.txt"
    cfg = tmp_path / "emrboot.toml"
    cfg.write_text(f"[install.pip]\nrequirements = {q(url)}\ntarget = {q(str(tmp_path / 'target'))}\n")
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root), "SSL_CERT_FILE": str(tls.cert)})
    pip_env(n, real_python3)
    cp = run_bounded(["run", "--config", cfg, "--only", "install"], n.env)
    assert_no_crash(cp)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    st = run_bounded(["status", "--json"], n.env)
    texts = everything_written(n, cp, st)
    texts.pop(str(n.state_dir / "config.toml"))  # the config itself holds it, privately (0600)
    assert_nothing_leaked(texts, {"the password": password})


# -- 5. no plain http through a redirect; https -> https is followed --------------------------------

class Downloads:
    """What each kind of download needs: the file on both servers, the config, what success
    leaves behind."""

    def __init__(self, tmp_path, servers, n, real_python3):
        self.tmp, self.servers, self.n = tmp_path, servers, n
        tls, _ = servers
        self.wheels = tmp_path / "wheels"
        make_wheel(self.wheels, "ebtestpkg", "0.1")
        self.target = tmp_path / "pip-target"
        publish(servers, "requirements.txt", f"--no-index\n--find-links {self.wheels}\nebtestpkg==0.1\n".encode())
        tarball = make_demo_tarball(tmp_path / "demo-1.0.tar.gz")
        self.sha = sha256_file(tarball)
        publish(servers, "demo-1.0.tar.gz", tarball.read_bytes())
        publish(servers, "emrboot.toml", b'[install]\ntimezone = "Asia/Seoul"\n')
        self.root = Path(n.env["EMRBOOT_ROOT"])
        pip_env(n, real_python3)
        n.env["SSL_CERT_FILE"] = str(tls.cert)

    def argv(self, kind, via):
        base = f"{self.servers[0].url}/to/{via}"
        if kind == "config":
            return ["run", "--config", f"{base}/emrboot.toml", "--only", "install"]
        cfg = self.tmp / f"{kind}.toml"
        if kind == "requirements":
            cfg.write_text(f"[install.pip]\nrequirements = {q(base + '/requirements.txt')}\n"
                           f"target = {q(str(self.target))}\n")
        else:
            cfg.write_text(f'[[install.source]]\nname = "demo"\nurl = {q(base + "/demo-1.0.tar.gz")}\n'
                           f"sha256 = {q(self.sha)}\nbuild = ['./build.sh']\n"
                           "install = ['mkdir -p \"$DESTDIR/usr/local/share/demo\"', "
                           "'cp demo.out \"$DESTDIR/usr/local/share/demo/\"']\n")
        return ["run", "--config", cfg, "--only", "install"]

    def done(self, kind):
        return {"config": lambda: os.path.islink(self.root / "etc/localtime"),
                "requirements": lambda: (self.target / "ebtestpkg/__init__.py").is_file(),
                "source": lambda: (self.root / "usr/local/share/demo/demo.out").is_file()}[kind]()


@pytest.fixture
def downloads(node, tmp_path, scratch_root, servers, real_python3):
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root)})
    return Downloads(tmp_path, servers, n, real_python3)


@pytest.mark.parametrize("kind", ["config", "requirements", "source"])
def test_a_redirect_to_plain_http_is_refused(downloads, servers, kind):
    tls, plain = servers
    cp = run_bounded(downloads.argv(kind, "http"), downloads.n.env, timeout=300)
    assert_no_crash(cp)
    text = cp.stdout + cp.stderr
    assert cp.returncode in (1, 2), f"exit {cp.returncode}\n{text}"
    assert plain.requests == [], f"the plain http server was asked for {plain.requests}"
    assert any(p.startswith("/to/http/") for _, p in tls.requests), tls.requests
    assert re.search(r"redirect to http://\S+.*not https|refus\w* .*redirect.*http://", text), \
        f"the error does not say that the redirect to http was refused:\n{text}"
    assert not downloads.done(kind)


@pytest.mark.parametrize("kind", ["config", "requirements", "source"])
def test_a_redirect_to_https_is_followed(downloads, servers, kind):
    tls, plain = servers
    cp = run_bounded(downloads.argv(kind, "https"), downloads.n.env, timeout=300)
    assert_no_crash(cp)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert downloads.done(kind)
    paths = [p for _, p in tls.requests]
    assert any(p.startswith("/to/https/") for p in paths) and any(not p.startswith("/to/") for p in paths), paths
    assert plain.requests == []


# -- 6. two runs on one node at once (netbench master) ----------------------------------------------

def test_two_runs_at_once_never_both_act(netbench, tmp_path):
    """The first run holds the lock through a 5 s build step; the second starts meanwhile. It
    must either wait and then find nothing to do, or stop with a message naming the lock and the
    other run's pid. Either way: one build, one CreateTags, one AssignPrivateIpAddresses."""
    nb, m = netbench, netbench.master
    marks = tmp_path / "build.log"
    tarball = make_demo_tarball(tmp_path / "demo-1.0.tar.gz")
    bucket = nb.facts["bucket"]
    s3_client(nb.moto.url).put_object(Bucket=bucket, Key="sources/demo-1.0.tar.gz", Body=tarball.read_bytes())
    cfg = write_config(nb, m)
    cfg.write_text(f'[[install.source]]\nname = "demo"\nurl = "s3://{bucket}/sources/demo-1.0.tar.gz"\n'
                   f"sha256 = {q(sha256_file(tarball))}\n"
                   f"build = ['./build.sh', 'echo build >> {marks}', 'sleep 5']\n"
                   "install = ['mkdir -p \"$DESTDIR/usr/local/share/demo\"', "
                   "'cp demo.out \"$DESTDIR/usr/local/share/demo/\"']\n\n" + cfg.read_text())
    m.clear_calls()
    exe = str(bench.emrboot_bin())
    start = lambda: nb.popen_in(m.ns, [exe, "run", "--config", str(cfg)], env=m.env,  # noqa: E731
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = start()
    deadline = time.monotonic() + 120
    while not (marks.exists() and marks.read_text()):
        assert first.poll() is None, f"the first run ended before its build step: {first.communicate()}"
        assert time.monotonic() < deadline, "the first run never reached its build step"
        time.sleep(0.1)
    second = start()  # the first is in its `sleep 5`, holding the lock
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=700)

    assert first.returncode == 0, f"first run: exit {first.returncode}\n{err1}"
    if second.returncode != 0:
        assert "lock" in err2 and str(first.pid) in err2, \
            f"second run: exit {second.returncode} without naming the lock and pid {first.pid}:\n{err2}"
    else:
        # it said whom it waited for
        assert f"another emrboot run (pid {first.pid}) holds" in err2 and "waiting" in err2, err2
        _, st = status_json(m)  # the last run's status: the second's
        assert st["pid"] == second.pid, st
        for name in ("install", "tag", "ip-takeover", "shutdown-hook"):
            assert phase(st, name)["outcome"] == "unchanged", phase(st, name)
    assert marks.read_text().splitlines() == ["build"], "the build ran more than once"
    calls = m.actions()
    assert calls.get("CreateTags") == 1 and calls.get("AssignPrivateIpAddresses") == 1, calls
