"""`emrboot plan` (and `run --dry-run`): the role, then each phase in order; changes nothing."""

import boto3
import pytest

import bench
from helpers import PHASES, assert_no_crash, plan_json, plan_lines, plan_numbers, snapshot

SEOUL_LINK = "- link /etc/localtime -> /usr/share/zoneinfo/Asia/Seoul"


def full_config(aws, install_extra=""):
    return (f'[install]\ntimezone = "Asia/Seoul"\n{install_extra}\n'
            '[tags]\nname_suffix = "role"\n[tags.set]\nProject = "EMR-PRACTICE"\nCustomer = "acme"\n\n'
            # localhost resolves from /etc/hosts: no DNS query leaves the machine.
            '[efs]\ndns_name = "localhost"\nmount_point = "/practice-efs"\n\n'
            f'[ip_takeover]\naddress = "{aws["fixed_ip"]}"\nreserved_eni = "{aws["reserved_eni_id"]}"\n')


@pytest.fixture
def config_file(tmp_path):
    def write(text, name="emrboot.toml"):
        p = tmp_path / name
        p.write_text(text)
        return p
    return write


def ec2_state(moto, aws):
    """What a mutating EC2 call would change: tags and ENI addresses of the seeded cluster."""
    ec2 = boto3.client("ec2", endpoint_url=moto.url, region_name=bench.REGION,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    tags = sorted((t["ResourceId"], t["Key"], t["Value"]) for t in ec2.describe_tags()["Tags"])
    enis = sorted((e["NetworkInterfaceId"], tuple(sorted(a["PrivateIpAddress"] for a in e["PrivateIpAddresses"])))
                  for e in ec2.describe_network_interfaces()["NetworkInterfaces"])
    return tags, enis


def plan(n, cfg, root, *extra):
    cp = n.run("--root", root, "plan", "--config", cfg, *extra)
    assert_no_crash(cp)
    return cp


def assert_plan_exit(cp):
    """0, or 2 when some phase's config does not fit this node (plan says `would fail:` then):
    ip-takeover needs an interface with the node's MAC, which the bench host may not have."""
    if cp.returncode == 2:
        assert "would fail:" in cp.stdout, cp.stdout + cp.stderr
    else:
        assert cp.returncode == 0, cp.stdout + cp.stderr


def test_master_plan_lists_five_phases_in_order(node, aws, config_file, scratch_root):
    n = node("master-ig")
    cp = plan(n, config_file(full_config(aws)), scratch_root)
    assert_plan_exit(cp)
    header, phases = plan_lines(cp.stdout)
    assert header[0].startswith("role: MASTER ("), cp.stdout
    assert "instance.json" in header[0]
    assert header[1] == f"instance: {aws['master']['instance_id']}"
    assert plan_numbers(cp.stdout) == [(str(i), p) for i, p in enumerate(PHASES, 1)], cp.stdout
    # install: a header line, then its one action.
    assert phases["install"][0] == "1. install:", cp.stdout
    assert [ln.strip() for ln in phases["install"][1:]] == [SEOUL_LINK]
    assert phases["install"][1].startswith("     - ")
    # On a master every table applies: nothing is skipped.
    for name in PHASES:
        assert "skip:" not in phases[name][0], cp.stdout
    # Phases not built yet say so instead of pretending.
    for name in ("tag", "efs-mount", "ip-takeover", "shutdown-hook"):
        line = phases[name][0]
        assert "would fail:" in line or len(phases[name]) > 1 or "nothing to do" in line, cp.stdout


def test_core_plan_skips_master_only_phases(node, aws, config_file, scratch_root):
    n = node("core-ig")
    cp = plan(n, config_file(full_config(aws)), scratch_root)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    header, phases = plan_lines(cp.stdout)
    assert header[0].startswith("role: CORE ("), cp.stdout
    assert header[1] == f"instance: {aws['core']['instance_id']}"
    assert plan_numbers(cp.stdout) == [(str(i), p) for i, p in enumerate(PHASES, 1)], cp.stdout
    for name in ("ip-takeover", "shutdown-hook"):
        assert phases[name][0].endswith(": skip: runs on MASTER only; this node is CORE"), cp.stdout
    for name in ("install", "tag", "efs-mount"):
        assert "skip:" not in phases[name][0], cp.stdout
    assert [ln.strip() for ln in phases["install"][1:]] == [SEOUL_LINK]


@pytest.mark.parametrize("kind,role", [("task-ig", "TASK"), ("fleet-task", "TASK"), ("fleet-core", "CORE")])
def test_non_master_kinds_skip_ip_takeover(node, aws, config_file, scratch_root, kind, role):
    n = node(kind)
    cp = plan(n, config_file(full_config(aws)), scratch_root)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    _, phases = plan_lines(cp.stdout)
    assert phases["ip-takeover"][0] == f"4. ip-takeover: skip: runs on MASTER only; this node is {role}"
    assert phases["shutdown-hook"][0] == f"5. shutdown-hook: skip: runs on MASTER only; this node is {role}"


def test_only_tag_marks_the_others(node, aws, config_file, scratch_root):
    n = node("master-ig")
    cp = plan(n, config_file(full_config(aws)), scratch_root, "--only", "tag")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    _, phases = plan_lines(cp.stdout)
    assert list(phases) == list(PHASES)
    for name in PHASES:
        if name != "tag":
            assert phases[name] == [f"{PHASES.index(name) + 1}. {name}: skip: not selected by --only"]
    assert "skip:" not in phases["tag"][0]


def test_only_several_phases(node, aws, config_file, scratch_root):
    n = node("master-ig")
    cp = plan(n, config_file(full_config(aws)), scratch_root, "--only", "install,ip-takeover")
    assert_plan_exit(cp)
    _, phases = plan_lines(cp.stdout)
    assert [ln.strip() for ln in phases["install"][1:]] == [SEOUL_LINK]
    assert "skip:" not in phases["ip-takeover"][0]
    for name in ("tag", "efs-mount", "shutdown-hook"):
        assert phases[name][0].endswith("skip: not selected by --only"), cp.stdout


def test_only_with_an_unknown_phase_is_a_usage_error(node, aws, config_file, scratch_root):
    n = node("master-ig")
    cp = plan(n, config_file(full_config(aws)), scratch_root, "--only", "instal")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "instal" in cp.stderr


def test_missing_tables_are_skipped_with_reason(node, aws, config_file, scratch_root):
    n = node("master-ig")
    cp = plan(n, config_file('[install]\ntimezone = "Asia/Seoul"\n'), scratch_root)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    _, phases = plan_lines(cp.stdout)
    assert phases["tag"] == ["2. tag: skip: no [tags] table in the config"]
    assert phases["efs-mount"] == ["3. efs-mount: skip: no [efs] table in the config"]
    assert phases["ip-takeover"] == ["4. ip-takeover: skip: no [ip_takeover] table in the config"]
    assert phases["shutdown-hook"][0].startswith("5. shutdown-hook: skip: no [ip_takeover] table")


def test_converged_install_says_nothing_to_do(node, aws, config_file, scratch_root):
    n = node("master-ig")
    (scratch_root / "etc/localtime").symlink_to("/usr/share/zoneinfo/Asia/Seoul")
    cp = plan(n, config_file('[install]\ntimezone = "Asia/Seoul"\n'), scratch_root)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    _, phases = plan_lines(cp.stdout)
    assert phases["install"] == ["1. install: nothing to do (converged)"], cp.stdout


def test_roles_core_on_install_skips_it_on_master(node, aws, config_file, scratch_root):
    n = node("master-ig")
    cfg = config_file(full_config(aws, install_extra='roles = ["CORE"]\n'))
    cp = plan(n, cfg, scratch_root)
    assert_plan_exit(cp)
    _, phases = plan_lines(cp.stdout)
    assert phases["install"] == ["1. install: skip: runs on CORE only; this node is MASTER"], cp.stdout
    # ...and the same config still installs on a core node.
    core = node("core-ig")
    cp = plan(core, cfg, scratch_root)
    _, phases = plan_lines(cp.stdout)
    assert [ln.strip() for ln in phases["install"][1:]] == [SEOUL_LINK], cp.stdout


def test_plan_changes_nothing(node, aws, moto, config_file, scratch_root):
    n = node("master-ig")
    cfg = config_file(full_config(aws))
    before_root, before_state, before_ec2 = snapshot(scratch_root), snapshot(n.state_dir), ec2_state(moto, aws)
    for args in (["plan", "--config", cfg], ["run", "--dry-run", "--config", cfg],
                 ["plan", "--config", cfg, "--only", "install"]):
        cp = n.run("--root", scratch_root, *args)
        assert_no_crash(cp)
        assert_plan_exit(cp)
        assert "1. install:" in cp.stdout, cp.stdout + cp.stderr
    assert snapshot(scratch_root) == before_root
    assert not (scratch_root / "etc/localtime").exists()
    assert snapshot(n.state_dir) == before_state
    assert not (n.state_dir / "status.json").exists()
    assert not (n.state_dir / "config.toml").exists()
    assert ec2_state(moto, aws) == before_ec2
    assert not n.shutdown_actions_dir.exists() or not any(n.shutdown_actions_dir.iterdir())
    # No run was recorded.
    assert n.run("status").returncode == 1


def test_dry_run_prints_the_plan(node, aws, config_file, scratch_root):
    n = node("master-ig")
    cfg = config_file(full_config(aws))
    p = plan(n, cfg, scratch_root)
    d = n.run("--root", scratch_root, "run", "--dry-run", "--config", cfg)
    assert_no_crash(d)
    assert (d.returncode, d.stdout) == (p.returncode, p.stdout), d.stderr


def test_plan_of_an_invalid_config_is_exit_2(node, aws, config_file, scratch_root):
    n = node("master-ig")
    cfg = config_file('[install]\ntimezone = 5\n')
    cp = plan(n, cfg, scratch_root)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert f"{cfg}:2:12:" in cp.stdout + cp.stderr


def test_plan_with_an_unknown_zone_is_exit_2(node, aws, config_file, scratch_root):
    """The zone must exist under ROOT/usr/share/zoneinfo: a config that does not fit this node."""
    n = node("master-ig")
    cp = plan(n, config_file('[install]\ntimezone = "Asia/Atlantis"\n'), scratch_root)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "Asia/Atlantis" in cp.stdout + cp.stderr
    assert not (scratch_root / "etc/localtime").exists()


def test_plan_json_is_the_text_plan_as_data(node, aws, config_file, scratch_root):
    for kind, role in (("master-ig", "MASTER"), ("core-ig", "CORE")):
        n = node(kind)
        cfg = config_file(full_config(aws))
        text = plan(n, cfg, scratch_root)
        rc, doc = plan_json(n, "--root", scratch_root, "plan", "--config", cfg)
        assert rc == text.returncode, (rc, text.returncode)
        assert doc["role"] == role and doc["instance_id"] in text.stdout, doc
        assert [p["phase"] for p in doc["phases"]] == list(PHASES), doc
        _, lines = plan_lines(text.stdout)
        for p in doc["phases"]:
            assert set(p) == {"phase", "required", "result", "actions", "skip_reason", "error"}, p
            head, rest = lines[p["phase"]][0], [ln.strip()[2:] for ln in lines[p["phase"]][1:]]
            assert p["actions"] == rest, (p, lines[p["phase"]])
            if p["result"] == "skip":
                assert head.endswith(f"skip: {p['skip_reason']}") and p["actions"] == [], (p, head)
            elif p["result"] == "would-fail":
                assert head.endswith(f"would fail: {p['error']}"), (p, head)
            elif p["result"] == "converged":
                assert head.endswith("nothing to do (converged)"), (p, head)
            else:
                assert p["result"] == "act" and p["actions"], p
        if role == "CORE":
            by = {p["phase"]: p for p in doc["phases"]}
            assert by["ip-takeover"]["result"] == "skip" and "MASTER" in by["ip-takeover"]["skip_reason"], by


def test_plan_json_of_a_converged_install(node, aws, config_file, scratch_root):
    n = node("master-ig")
    (scratch_root / "etc/localtime").symlink_to("/usr/share/zoneinfo/Asia/Seoul")
    rc, doc = plan_json(n, "--root", scratch_root, "plan", "--config", config_file('[install]\ntimezone = "Asia/Seoul"\n'))
    assert rc == 0, doc
    install = doc["phases"][0]
    assert (install["phase"], install["result"], install["actions"]) == ("install", "converged", []), doc
    assert all(p["result"] == "skip" for p in doc["phases"][1:]), doc
