"""IMDS misbehaving: emrboot retries, re-fetches its token, gives up within its deadline, and never
writes a token anywhere."""
import os

import pytest

from bench import http
from helpers import assert_no_crash, status_json

SEOUL = '[install]\ntimezone = "Asia/Seoul"\n'
TOKEN_PATH = "/latest/api/token"


@pytest.fixture
def master(node, scratch_root, imds, tmp_path):
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root)})
    n.config = tmp_path / "emrboot.toml"
    n.config.write_text(SEOUL)
    http("DELETE", imds.url + "/_emu/log")
    return n


def run_install(n, timeout=60):
    cp = n.run("run", "--config", n.config, "--only", "install", timeout=timeout)
    assert_no_crash(cp)
    return cp


def assert_installed(n, cp, scratch_root):
    assert cp.returncode == 0, f"exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert os.readlink(scratch_root / "etc/localtime") == "/usr/share/zoneinfo/Asia/Seoul"
    code, st = status_json(n)
    assert code == 0 and st["state"] == "ok"


def token_puts(log):
    return [r for r in log if r["method"] == "PUT" and r["path"] == TOKEN_PATH]


def test_token_refused_twice_then_granted(master, imds, scratch_root):
    imds.faults(refuse_token=2)
    cp = run_install(master)
    assert_installed(master, cp, scratch_root)
    puts = token_puts(imds.requests())
    assert [p["status"] for p in puts[:3]] == [401, 401, 200], imds.requests()


def test_401_on_a_get_drops_the_token_and_fetches_a_new_one(master, imds, scratch_root):
    imds.faults(refuse_token=1, paths="^/latest/meta-data/")
    cp = run_install(master)
    assert_installed(master, cp, scratch_root)
    log = imds.requests()
    first_401 = next(i for i, r in enumerate(log) if r["status"] == 401 and r["method"] == "GET")
    assert token_puts(log[:first_401]), log
    assert any(r["status"] == 200 for r in token_puts(log[first_401 + 1:])), (
        f"no new token PUT after the GET that got 401: {log}")


def test_imds_restart_forgets_tokens(master, imds, scratch_root):
    """As after an IMDS restart: the token emrboot holds is no longer valid (every GET with it
    gets 401) until it fetches a new one."""
    imds.faults(revoke_tokens=1, paths="^/latest/meta-data/")
    master.env["EMRBOOT_IMDS_DEADLINE_SECS"] = "10"
    cp = run_install(master)
    assert_installed(master, cp, scratch_root)
    log = imds.requests()
    revoked = next(i for i, r in enumerate(log) if "revoke_tokens" in r.get("faults", []))
    assert any(r["status"] == 200 for r in token_puts(log[revoked + 1:])), log


def test_server_errors_are_retried(master, imds, scratch_root):
    imds.faults(fail_500=3)
    cp = run_install(master)
    assert_installed(master, cp, scratch_root)
    statuses = [r["status"] for r in imds.requests()]
    assert statuses[:3] == [500, 500, 500] and 200 in statuses[3:], statuses


def test_slow_imds_beyond_the_sdk_default_timeout(master, imds, scratch_root):
    """aws-config's IMDS client defaults to 1 s timeouts; emrboot is configured for a slow IMDS."""
    imds.faults(delay_s=1.5, delay_n=-1)
    cp = run_install(master)
    assert_installed(master, cp, scratch_root)
    assert all("delay_s" in r.get("faults", []) for r in imds.requests()), imds.requests()


def test_imds_that_never_answers_is_exit_2_within_the_deadline(master, imds, scratch_root):
    imds.faults(drop=-1)
    master.env["EMRBOOT_IMDS_DEADLINE_SECS"] = "3"
    cp = run_install(master, timeout=60)  # a hang fails the test with TimeoutExpired
    assert cp.returncode == 2, f"exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert "IMDS" in cp.stderr, cp.stderr
    assert not os.path.lexists(scratch_root / "etc/localtime")
    assert not (master.state_dir / "status.json").exists()
    assert any("drop" in r.get("faults", []) for r in imds.requests())


def test_role_with_imds_down_on_a_node_that_needs_the_tag(node, imds):
    """A fleet node without extraInstanceData.json needs IMDS for its instance id: exit 2, said."""
    n = node("fleet-core")
    (n.info_dir / "extraInstanceData.json").unlink()
    imds.faults(drop=-1)
    n.env["EMRBOOT_IMDS_DEADLINE_SECS"] = "3"
    cp = n.run("role", timeout=60)
    assert_no_crash(cp)
    assert cp.returncode == 2 and cp.stdout.strip() == "", cp.stdout + cp.stderr
    assert "IMDS" in cp.stderr


@pytest.mark.parametrize("level", [None, "debug", "trace"])
def test_no_token_in_logs_or_output(master, imds, scratch_root, level):
    master.env.pop("EMRBOOT_LOG", None)
    if level:
        master.env["EMRBOOT_LOG"] = level
    # A 401 and a retry as well, so that the token-handling paths log what they log.
    imds.faults(refuse_token=1, paths="^/latest/meta-data/")
    cp = run_install(master)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cp2 = master.run("status", "--json")
    tokens = imds.issued_tokens()
    assert tokens, "the emulator handed out no token: the check below would prove nothing"
    texts = {"stdout": cp.stdout, "stderr": cp.stderr, "log file": master.log_file.read_text(),
             "status": cp2.stdout, "status.json": (master.state_dir / "status.json").read_text()}
    for where, text in texts.items():
        leaked = [t for t in tokens if t in text]
        assert not leaked, f"IMDS token written to the {where} (EMRBOOT_LOG={level})"
