"""`emrboot role`: EMR's info files, the EC2 tag fallback, and malformed files."""
import json
import shutil
from pathlib import Path

import boto3
import pytest

import bench
from helpers import assert_no_crash, emrboot, offline_env

FIXTURES = Path("/work/shared/fixtures/emr-info")
ROLE_TAG = "aws:elasticmapreduce:instance-group-role"


def role_offline(tmp_path, info_dir, *extra_args):
    """emrboot role with no AWS at all: only the info files can answer."""
    cp = emrboot("role", "--info-dir", info_dir, *extra_args, env=offline_env(tmp_path))
    assert_no_crash(cp)
    return cp


def ec2_client(moto):
    return boto3.client("ec2", endpoint_url=moto.url, region_name=bench.REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def copy_info(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for f in Path(src).iterdir():
        shutil.copyfile(f, dst / f.name)
    return dst


# -- the shared fixtures, without moto or IMDS -------------------------------------------------------

@pytest.mark.parametrize("kind,role", [("master-ig", "MASTER"), ("core-ig", "CORE")])
def test_shared_fixture_nodes(tmp_path, kind, role):
    info = copy_info(FIXTURES / kind, tmp_path / "info")
    cp = role_offline(tmp_path, info)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == role


@pytest.mark.parametrize("kind,role", [("master-ig", "MASTER"), ("core-ig", "CORE")])
def test_shared_fixture_nodes_through_env(tmp_path, kind, role):
    """EMRBOOT_INFO_DIR is the same as --info-dir."""
    info = copy_info(FIXTURES / kind, tmp_path / "info")
    cp = emrboot("role", env=offline_env(tmp_path, EMRBOOT_INFO_DIR=str(info)))
    assert_no_crash(cp)
    assert (cp.returncode, cp.stdout.strip()) == (0, role), cp.stderr


# -- every kind the bench writes, with moto and IMDS live ----------------------------------------------

@pytest.mark.parametrize("kind", bench.KINDS)
def test_bench_kinds(node, kind):
    n = node(kind)
    cp = n.run("role")
    assert_no_crash(cp)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == bench.ROLE_OF_KIND[kind].upper()


# -- role strings in any case ------------------------------------------------------------------------

CASES = {"lower": str.lower, "title": str.title, "upper": str.upper}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("role", ["MASTER", "CORE", "TASK"])
def test_extra_instance_data_role_any_case(tmp_path, case, role):
    """A fleet node: only extraInstanceData.json's instanceRole tells (isMaster false)."""
    facts = {"master": {"instance_id": "i-0123456789abcdef0", "private_ip": "172.31.0.4"},
             "region": bench.REGION}
    info = tmp_path / "info"
    bench.write_info_files(info, "fleet-task", facts)
    extra = json.loads((info / "extraInstanceData.json").read_text())
    extra["instanceRole"] = CASES[case](role)
    (info / "extraInstanceData.json").write_text(json.dumps(extra))
    cp = role_offline(tmp_path, info)
    assert (cp.returncode, cp.stdout.strip()) == (0, role), cp.stderr


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("role", ["CORE", "TASK"])
def test_job_flow_instance_role_any_case(tmp_path, case, role):
    """An instance-group node: its instanceGroupId matched in job-flow.json's instanceGroups."""
    info = copy_info(FIXTURES / "core-ig", tmp_path / "info")
    job_flow = json.loads((info / "job-flow.json").read_text())
    group = next(g for g in job_flow["instanceGroups"] if g["instanceGroupId"] == "ig-16NXM94TY33LB")
    group["instanceRole"] = CASES[case](role)
    (info / "job-flow.json").write_text(json.dumps(job_flow))
    cp = role_offline(tmp_path, info)
    assert (cp.returncode, cp.stdout.strip()) == (0, role), cp.stderr


def test_is_master_wins_over_other_files(tmp_path):
    """isMaster=true is the first source, whatever the other files say."""
    info = copy_info(FIXTURES / "master-ig", tmp_path / "info")
    job_flow = json.loads((info / "job-flow.json").read_text())
    for g in job_flow["instanceGroups"]:
        g["instanceRole"] = "Core"
    (info / "job-flow.json").write_text(json.dumps(job_flow))
    (info / "extraInstanceData.json").write_text(json.dumps({"instanceRole": "TASK"}))
    cp = role_offline(tmp_path, info)
    assert (cp.returncode, cp.stdout.strip()) == (0, "MASTER"), cp.stderr


def test_extra_instance_data_wins_over_job_flow(tmp_path):
    info = copy_info(FIXTURES / "core-ig", tmp_path / "info")
    (info / "extraInstanceData.json").write_text(json.dumps({"instanceRole": "task"}))
    cp = role_offline(tmp_path, info)
    assert (cp.returncode, cp.stdout.strip()) == (0, "TASK"), cp.stderr


# -- the EC2 tag, last ---------------------------------------------------------------------------

def test_fleet_node_without_extra_data_uses_the_ec2_tag(node, aws):
    n = node("fleet-core")
    (n.info_dir / "extraInstanceData.json").unlink()
    cp = n.run("role")
    assert_no_crash(cp)
    assert (cp.returncode, cp.stdout.strip()) == (0, "CORE"), cp.stderr


def test_ec2_tag_is_read_live_and_compared_without_case(node, aws, moto):
    """The tag, not a guess from the files: change it to `task` and the answer follows."""
    n = node("fleet-core")
    (n.info_dir / "extraInstanceData.json").unlink()
    ec2_client(moto).create_tags(Resources=[aws["core"]["instance_id"]],
                                 Tags=[{"Key": ROLE_TAG, "Value": "task"}])
    cp = n.run("role")
    assert_no_crash(cp)
    assert (cp.returncode, cp.stdout.strip()) == (0, "TASK"), cp.stderr


def test_no_file_and_no_tag_cannot_tell(node, aws, moto):
    n = node("fleet-core")
    (n.info_dir / "extraInstanceData.json").unlink()
    ec2_client(moto).delete_tags(Resources=[aws["core"]["instance_id"]], Tags=[{"Key": ROLE_TAG}])
    cp = n.run("role")
    assert_no_crash(cp)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert cp.stdout.strip() == ""
    assert "cannot tell this node's role" in cp.stderr


# -- --info-dir ---------------------------------------------------------------------------------------

def test_info_dir_flag_beats_the_environment(tmp_path):
    master = copy_info(FIXTURES / "master-ig", tmp_path / "master")
    core = copy_info(FIXTURES / "core-ig", tmp_path / "core")
    cp = emrboot("role", "--info-dir", core, env=offline_env(tmp_path, EMRBOOT_INFO_DIR=str(master)))
    assert_no_crash(cp)
    assert (cp.returncode, cp.stdout.strip()) == (0, "CORE"), cp.stderr


def test_info_dir_is_the_only_dir_searched(tmp_path):
    """With --info-dir, files elsewhere (even in EMRBOOT_INFO_DIR) are not used."""
    full = copy_info(FIXTURES / "master-ig", tmp_path / "full")
    empty = tmp_path / "empty"
    empty.mkdir()
    cp = emrboot("role", "--info-dir", empty, env=offline_env(tmp_path, EMRBOOT_INFO_DIR=str(full)))
    assert_no_crash(cp)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert cp.stdout.strip() == ""
    assert "instance.json" in cp.stderr and str(empty) in cp.stderr


def test_files_split_between_dirs_are_not_merged_with_info_dir(tmp_path):
    """instance.json in one dir and job-flow.json in another: --info-dir A never reads B."""
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shutil.copyfile(FIXTURES / "core-ig/instance.json", a / "instance.json")
    shutil.copyfile(FIXTURES / "core-ig/job-flow.json", b / "job-flow.json")
    cp = role_offline(tmp_path, a)
    # Without job-flow.json and with IMDS disabled nothing can tell the role.
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert cp.stdout.strip() == ""
    shutil.copyfile(b / "job-flow.json", a / "job-flow.json")
    cp = role_offline(tmp_path, a)
    assert (cp.returncode, cp.stdout.strip()) == (0, "CORE"), cp.stderr


# -- malformed files ---------------------------------------------------------------------------------

def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _sparse(path):
    path.write_bytes(b"")
    with open(path, "r+b") as f:
        f.truncate(100 * 1024 * 1024)  # 100 MB of holes: no disk used


BREAK = {
    "empty": lambda p: p.write_bytes(b""),
    "truncated": _truncate,
    "non-json": lambda p: p.write_text("isMaster: true\n"),
    "non-utf8": lambda p: p.write_bytes(b'{"isMaster": false, "instanceRole": "\xff\xfe\xfd"}'),
    "json-array": lambda p: p.write_text('[{"isMaster": true}]\n'),
    "json-string": lambda p: p.write_text('"MASTER"\n'),
    "sparse-100MB": _sparse,
}
# Which node's files to break so that the broken file is one emrboot must read.
NODE_FOR_FILE = {"instance.json": "core-ig", "job-flow.json": "core-ig",
                 "extraInstanceData.json": "fleet-core"}


def bench_info(tmp_path, kind):
    facts = {"master": {"instance_id": "i-0123456789abcdef0", "private_ip": "172.31.0.4"},
             "region": bench.REGION}
    info = tmp_path / "info"
    bench.write_info_files(info, kind, facts)
    return info


@pytest.mark.parametrize("how", BREAK)
@pytest.mark.parametrize("name", NODE_FOR_FILE)
def test_malformed_file_is_an_error_naming_it(tmp_path, name, how):
    info = bench_info(tmp_path, NODE_FOR_FILE[name])
    path = info / name
    BREAK[how](path)
    cp = role_offline(tmp_path, info)
    assert cp.returncode == 2, f"exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert cp.stdout.strip() == "", "no role may be printed"
    assert str(path) in cp.stderr, f"stderr does not name {path}:\n{cp.stderr}"


@pytest.mark.parametrize("kind", ["master-ig", "core-ig", "fleet-core"])
def test_missing_instance_json_is_an_error_naming_it(tmp_path, kind):
    info = bench_info(tmp_path, kind)
    (info / "instance.json").unlink()
    cp = role_offline(tmp_path, info)
    assert cp.returncode == 2, f"exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert cp.stdout.strip() == ""
    assert "instance.json" in cp.stderr and str(info) in cp.stderr, cp.stderr


def test_info_dir_that_does_not_exist(tmp_path):
    cp = role_offline(tmp_path, tmp_path / "no-such-dir")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert str(tmp_path / "no-such-dir") in cp.stderr


def test_malformed_file_through_the_node_fixture(node):
    """The same with moto and IMDS live: a broken instance.json is not papered over by the tag."""
    n = node("core-ig")
    (n.info_dir / "instance.json").write_text('{"isMaster": fal')
    cp = n.run("role")
    assert_no_crash(cp)
    assert cp.returncode == 2 and cp.stdout.strip() == "", cp.stdout + cp.stderr
    assert str(n.info_dir / "instance.json") in cp.stderr
