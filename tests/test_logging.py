"""Logs: `--log-format json` gives one JSON object per line on stderr and in the log file, with
the phase and outcome of each action."""
import json



def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def test_json_logs_name_phase_and_outcome(node, scratch_root, tmp_path):
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root)})
    cfg = tmp_path / "c.toml"
    cfg.write_text('[install]\ntimezone = "Asia/Seoul"\n')
    cp = n.run("--log-format", "json", "run", "--config", cfg, check=0)
    for where, text in (("stderr", cp.stderr), ("log file", n.log_file.read_text())):
        records = [json.loads(line) for line in _lines(text)]  # every line is one JSON object
        assert records, f"no log lines in {where}"
        done = [r for r in records if r.get("fields", {}).get("phase") == "install"
                and r["fields"].get("outcome") == "changed"]
        assert done, f"no install/changed record in {where}: {records}"
        assert all("level" in r and "timestamp" in r for r in records)
        # The runner's span: every line the phase logs while it works carries that phase, its
        # own field (where it has one) agreeing. (The runner's "phase done" line comes after,
        # outside the span; it names the phase in its own field.)
        own = [r for r in done if r.get("target") != "emrboot_runner::run"]
        assert own and all(r.get("span", {}).get("phase") == "install" for r in own), done
        in_span = [r for r in records if r.get("span", {}).get("name") == "phase"]
        assert all(r["fields"].get("phase", r["span"]["phase"]) == r["span"]["phase"]
                   for r in in_span), in_span


def test_text_logs_go_to_stderr_and_the_file(node, scratch_root, tmp_path):
    n = node("master-ig", extra_env={"EMRBOOT_ROOT": str(scratch_root)})
    cfg = tmp_path / "c.toml"
    cfg.write_text('[install]\ntimezone = "Asia/Seoul"\n')
    cp = n.run("run", "--config", cfg, check=0)
    log = n.log_file.read_text()
    for text in (cp.stderr, log):
        assert 'phase="install"' in text or "phase=install" in text
        assert "phase{phase=install}" in text, "the runner's span names the phase"
        assert "\x1b[" not in text, "no colour codes when not on a terminal"
    assert oct(n.log_file.stat().st_mode & 0o777) in ("0o640", "0o600")
