"""`emrboot run` with the install phase (time zone, the only part built so far): convergence,
status, markers, the config copy, config sources (path, s3://, https://), failures."""
import functools
import http.server
import json
import os
import shutil
import ssl
import stat
import subprocess
import threading

import boto3
import pytest

import bench
from helpers import assert_no_crash, phase, snapshot, status_json

SEOUL = '[install]\ntimezone = "Asia/Seoul"\n'
SEOUL_ACTION = "link /etc/localtime -> /usr/share/zoneinfo/Asia/Seoul"
OTHERS = ("tag", "efs-mount", "ip-takeover", "shutdown-hook")
TABLE = {"tag": "tags", "efs-mount": "efs", "ip-takeover": "ip_takeover", "shutdown-hook": "ip_takeover"}


@pytest.fixture
def master(node, scratch_root):
    """The simulated master, acting on the scratch root."""
    return node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root)})


@pytest.fixture
def cfg(tmp_path):
    def write(text, name="emrboot.toml"):
        p = tmp_path / "configs" / name
        p.parent.mkdir(exist_ok=True)
        p.write_text(text)
        return p
    return write


def localtime(root):
    return root / "etc/localtime"


def markers(n, instance_id):
    d = n.state_dir / "markers" / instance_id
    return sorted(d.glob("*.json")) if d.is_dir() else []


def run(n, *args, **kw):
    cp = n.run("run", *args, **kw)
    assert_no_crash(cp)
    return cp


# -- the time zone ------------------------------------------------------------------------------

def test_run_sets_the_time_zone(master, aws, cfg, scratch_root):
    cp = run(master, "--config", cfg(SEOUL), "--only", "install")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert os.readlink(localtime(scratch_root)) == "/usr/share/zoneinfo/Asia/Seoul"
    code, st = status_json(master)
    assert code == 0
    assert st["state"] == "ok" and st["exit_code"] == 0
    assert st["role"] == "MASTER" and st["instance_id"] == aws["master"]["instance_id"]
    assert [p["phase"] for p in st["phases"]] == ["install", *OTHERS]
    inst = phase(st, "install")
    assert inst["outcome"] == "changed", inst
    assert inst["actions"] == [SEOUL_ACTION]
    assert inst["required"] is True
    assert "started_at" in inst and isinstance(inst.get("duration_ms"), int)
    for name in OTHERS:  # no table for them, and not selected: either reason will do
        p = phase(st, name)
        assert p["outcome"] == "skipped", p
        assert p["reason"] in ("not selected by --only", f"no [{TABLE[name]}] table in the config"), p
    for key in ("started_at", "finished_at", "pid", "config"):
        assert key in st, key


def test_the_log_has_one_line_per_action(master, cfg):
    cp = run(master, "--config", cfg(SEOUL), "--only", "install")
    assert cp.returncode == 0, cp.stderr
    for text in (cp.stderr, master.log_file.read_text()):
        lines = [ln for ln in text.splitlines() if SEOUL_ACTION in ln]
        assert len(lines) == 1, text
        assert "install" in lines[0] and "changed" in lines[0]


def test_second_run_is_unchanged(master, aws, cfg, scratch_root):
    c = cfg(SEOUL)
    assert run(master, "--config", c, "--only", "install").returncode == 0
    first = markers(master, aws["master"]["instance_id"])
    cp = run(master, "--config", c, "--only", "install")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert os.readlink(localtime(scratch_root)) == "/usr/share/zoneinfo/Asia/Seoul"
    code, st = status_json(master)
    assert code == 0 and st["state"] == "ok"
    inst = phase(st, "install")
    assert inst["outcome"] == "unchanged", inst
    assert not inst.get("actions")
    assert markers(master, aws["master"]["instance_id"]) == first


def test_full_run_without_only_on_a_converged_node(master, cfg, scratch_root):
    """Only [install] in the config: the other phases are skipped for want of a table."""
    c = cfg(SEOUL)
    assert run(master, "--config", c).returncode == 0
    cp = run(master, "--config", c)
    assert cp.returncode == 0, cp.stderr
    _, st = status_json(master)
    assert phase(st, "install")["outcome"] == "unchanged"
    assert phase(st, "tag")["reason"] == "no [tags] table in the config"
    assert phase(st, "ip-takeover")["outcome"] == "skipped"


def test_marker_is_written_after_success(master, aws, cfg):
    assert markers(master, aws["master"]["instance_id"]) == []
    assert run(master, "--config", cfg(SEOUL), "--only", "install").returncode == 0
    found = markers(master, aws["master"]["instance_id"])
    assert len(found) == 1 and found[0].name.startswith("install-"), found
    body = json.loads(found[0].read_text())
    assert body["phase"] == "install"
    assert stat.S_IMODE(found[0].stat().st_mode) == 0o600


def test_a_different_zone_gets_a_different_marker(master, aws, cfg, scratch_root):
    assert run(master, "--config", cfg(SEOUL), "--only", "install").returncode == 0
    cp = run(master, "--config", cfg('[install]\ntimezone = "Europe/Paris"\n', "paris.toml"),
             "--only", "install")
    assert cp.returncode == 0, cp.stderr
    assert os.readlink(localtime(scratch_root)) == "/usr/share/zoneinfo/Europe/Paris"
    assert len(markers(master, aws["master"]["instance_id"])) == 2
    assert phase(status_json(master)[1], "install")["outcome"] == "changed"


def test_a_regular_localtime_file_becomes_the_symlink(master, cfg, scratch_root):
    shutil.copyfile(scratch_root / "usr/share/zoneinfo/UTC", localtime(scratch_root))
    cp = run(master, "--config", cfg(SEOUL), "--only", "install")
    assert cp.returncode == 0, cp.stderr
    assert localtime(scratch_root).is_symlink()
    assert os.readlink(localtime(scratch_root)) == "/usr/share/zoneinfo/Asia/Seoul"


def test_unknown_zone_changes_nothing(master, aws, cfg, scratch_root):
    localtime(scratch_root).symlink_to("/usr/share/zoneinfo/UTC")
    before = snapshot(scratch_root)
    cp = run(master, "--config", cfg('[install]\ntimezone = "Asia/Atlantis"\n'), "--only", "install")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "Asia/Atlantis" in cp.stderr
    assert snapshot(scratch_root) == before
    assert os.readlink(localtime(scratch_root)) == "/usr/share/zoneinfo/UTC"
    assert markers(master, aws["master"]["instance_id"]) == []


def test_unknown_zone_without_localtime(master, aws, cfg, scratch_root):
    cp = run(master, "--config", cfg('[install]\ntimezone = "Mars/Olympus_Mons"\n'))
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "Mars/Olympus_Mons" in cp.stderr
    assert not os.path.lexists(localtime(scratch_root))
    assert markers(master, aws["master"]["instance_id"]) == []


def test_install_for_core_only_is_skipped_on_master(master, cfg, scratch_root):
    cp = run(master, "--config", cfg(SEOUL + 'roles = ["CORE"]\n'))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert not os.path.lexists(localtime(scratch_root))
    _, st = status_json(master)
    inst = phase(st, "install")
    assert inst["outcome"] == "skipped" and inst["reason"] == "runs on CORE only; this node is MASTER", inst


def test_status_text_shows_each_phase(master, cfg):
    assert run(master, "--config", cfg(SEOUL), "--only", "install").returncode == 0
    cp = master.run("status")
    assert_no_crash(cp)
    assert cp.returncode == 0
    rows = {ln.split()[0]: ln.split()[1] for ln in cp.stdout.splitlines()
            if ln.split() and ln.split()[0] in ("install", *OTHERS)}
    assert rows == {"install": "changed", **{name: "skipped" for name in OTHERS}}, cp.stdout


def test_relative_config_path(master, tmp_path, scratch_root):
    (tmp_path / "rel.toml").write_text(SEOUL)
    cp = subprocess.run([str(bench.emrboot_bin()), "run", "--config", "rel.toml", "--only", "install"],
                        env=master.env, cwd=tmp_path, text=True, capture_output=True, timeout=60,
                        stdin=subprocess.DEVNULL)
    assert_no_crash(cp)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert os.readlink(localtime(scratch_root)) == "/usr/share/zoneinfo/Asia/Seoul"
    assert (master.state_dir / "config.toml").read_text() == SEOUL


# -- the state dir -----------------------------------------------------------------------------------

def test_config_copy_is_private_and_verbatim(master, cfg):
    text = "# kept for release-ip\n" + SEOUL
    assert run(master, "--config", cfg(text), "--only", "install").returncode == 0
    copy = master.state_dir / "config.toml"
    assert copy.read_text() == text
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    status = master.state_dir / "status.json"
    assert stat.S_IMODE(status.stat().st_mode) == 0o600


def test_a_new_state_dir_is_created_0700(node, scratch_root, tmp_path, cfg):
    state = tmp_path / "fresh" / "emrboot-state"
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root), "EMRBOOT_STATE_DIR": str(state)})
    assert run(n, "--config", cfg(SEOUL), "--only", "install").returncode == 0
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "config.toml").stat().st_mode) == 0o600


def test_invalid_config_leaves_no_trace(master, cfg, scratch_root):
    before_state, before_root = snapshot(master.state_dir), snapshot(scratch_root)
    c = cfg('[install]\ntimezone = "Asia/Seoul"\npackges = ["jq"]\n')
    cp = run(master, "--config", c)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert f"{c}:3:1:" in cp.stdout + cp.stderr, cp.stdout + cp.stderr
    assert not (master.state_dir / "status.json").exists()
    assert not (master.state_dir / "config.toml").exists()
    assert snapshot(master.state_dir) == before_state
    assert snapshot(scratch_root) == before_root


def test_missing_config_file_is_exit_2(master, tmp_path):
    cp = run(master, "--config", tmp_path / "nope.toml")
    assert cp.returncode == 2
    assert "nope.toml" in cp.stderr
    assert not (master.state_dir / "status.json").exists()


def test_status_without_a_run(master):
    cp = master.run("status")
    assert_no_crash(cp)
    assert cp.returncode == 1
    cp = master.run("status", "--json")
    assert cp.returncode == 1


# -- a phase whose check fails ---------------------------------------------------------------

# efs-mount with an owner the node does not have: its check fails before anything changes, and
# before any DNS lookup or network traffic.
BAD_EFS, BAD_PHASE = ('\n[efs]\nfile_system_id = "fs-12345678"\nmount_point = "/practice-efs"\n'
                      'owner = "no-such-user-xyz:root"\n'), "efs-mount"


def test_a_failed_check_of_a_required_phase_changes_nothing(master, cfg, scratch_root):
    cp = run(master, "--config", cfg(SEOUL + BAD_EFS))
    assert cp.returncode == 2, cp.stdout + cp.stderr
    code, st = status_json(master)
    assert code == 1 and st["state"] == "failed" and st["exit_code"] == 2
    failed = phase(st, BAD_PHASE)
    assert failed["outcome"] == "failed" and "no-such-user-xyz" in failed.get("error", ""), failed
    assert phase(st, "install")["outcome"] == "not-run"
    assert not os.path.lexists(localtime(scratch_root)), "install ran although a check failed"


def test_a_failed_check_is_said_on_stderr_and_in_the_log(master, cfg):
    cp = run(master, "--config", cfg(SEOUL + BAD_EFS))
    for where, text in (("stderr", cp.stderr), ("log file", master.log_file.read_text())):
        lines = [ln for ln in text.splitlines() if "no-such-user-xyz" in ln]
        assert lines, f"the {BAD_PHASE} failure is not in the {where}:\n{text}"
        assert any(BAD_PHASE in ln for ln in lines), f"the {where} does not say which phase failed:\n{text}"


def test_only_install_ignores_a_bad_phase_elsewhere_in_the_config(master, cfg, scratch_root):
    cp = run(master, "--config", cfg(SEOUL + BAD_EFS), "--only", "install")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert os.readlink(localtime(scratch_root)) == "/usr/share/zoneinfo/Asia/Seoul"
    _, st = status_json(master)
    assert phase(st, BAD_PHASE)["outcome"] == "skipped"
    assert phase(st, "install")["outcome"] == "changed"


def test_optional_phase_failure_does_not_fail_the_run(master, cfg, scratch_root):
    cp = run(master, "--config", cfg(SEOUL + BAD_EFS + "required = false\n"))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    _, st = status_json(master)
    failed = phase(st, BAD_PHASE)
    assert failed["outcome"] == "failed" and failed["required"] is False, failed
    assert phase(st, "install")["outcome"] == "changed"
    assert os.readlink(localtime(scratch_root)) == "/usr/share/zoneinfo/Asia/Seoul"


# -- config sources ------------------------------------------------------------------------------

def s3_client(moto):
    return boto3.client("s3", endpoint_url=moto.url, region_name=bench.REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def test_config_from_s3(master, aws, moto, scratch_root):
    text = "# from S3\n" + SEOUL
    s3_client(moto).put_object(Bucket=aws["bucket"], Key="emr-config/emrboot.toml", Body=text.encode())
    src = f"s3://{aws['bucket']}/emr-config/emrboot.toml"
    cp = run(master, "--config", src, "--only", "install")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert os.readlink(localtime(scratch_root)) == "/usr/share/zoneinfo/Asia/Seoul"
    assert (master.state_dir / "config.toml").read_text() == text
    _, st = status_json(master)
    assert st["config"] == src


def test_config_from_s3_missing_key(master, aws, scratch_root):
    src = f"s3://{aws['bucket']}/emr-config/absent.toml"
    cp = run(master, "--config", src, "--only", "install")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert src in cp.stderr
    assert not os.path.lexists(localtime(scratch_root))
    assert not (master.state_dir / "status.json").exists()


@pytest.fixture
def https_server(tmp_path):
    """An https server on 127.0.0.1 serving tmp_path/www, with a self-signed certificate; yields
    (base_url, cert_path). Stopped after the test."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed: it is needed to make the test certificate "
                    "(apt-get install openssl)", pytrace=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, capture_output=True, timeout=60)
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert, www
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_config_from_https(node, scratch_root, https_server):
    base, cert, www = https_server
    text = "# from https\n" + SEOUL
    (www / "emrboot.toml").write_text(text)
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root), "SSL_CERT_FILE": str(cert)})
    cp = run(n, "--config", f"{base}/emrboot.toml", "--only", "install")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert os.readlink(localtime(scratch_root)) == "/usr/share/zoneinfo/Asia/Seoul"
    assert (n.state_dir / "config.toml").read_text() == text


def test_config_from_https_with_an_untrusted_certificate(node, scratch_root, https_server):
    base, cert, www = https_server
    (www / "emrboot.toml").write_text(SEOUL)
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root)})
    n.env.pop("SSL_CERT_FILE", None)
    n.env.pop("SSL_CERT_DIR", None)
    cp = run(n, "--config", f"{base}/emrboot.toml", "--only", "install")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert not os.path.lexists(localtime(scratch_root))
    assert not (n.state_dir / "config.toml").exists()


def test_config_from_https_404(node, scratch_root, https_server):
    base, cert, _ = https_server
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root), "SSL_CERT_FILE": str(cert)})
    cp = run(n, "--config", f"{base}/absent.toml", "--only", "install")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "404" in cp.stderr
    assert not os.path.lexists(localtime(scratch_root))


def test_config_from_plain_http_is_refused(master, scratch_root):
    cp = run(master, "--config", "http://127.0.0.1:9/emrboot.toml", "--only", "install")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "http://127.0.0.1:9/emrboot.toml" in cp.stderr
    assert not os.path.lexists(localtime(scratch_root))
    assert not (master.state_dir / "status.json").exists()
