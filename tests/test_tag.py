"""End to end: the `tag` phase on the netbench, counting its EC2 calls through the node's proxy.
(`tag` needs no namespace of its own; the netbench is used for its per-node counting proxy.)"""
from net_helpers import SEED_NAME, TAGS_SET, ec2_calls, mutating, outcomes, phase, status, tags_param, write_config


def run_tag(nb, node, cfg, check=0):
    node.clear_calls()
    return node.run("run", "--config", cfg, "--only", "tag", check=check)


def test_all_tags_in_one_create_tags_call(netbench):
    nb, m = netbench, netbench.master
    cfg = write_config(nb, m)

    run_tag(nb, m, cfg)

    calls = m.actions()
    assert calls == {"DescribeTags": 1, "CreateTags": 1}, calls
    (create,) = ec2_calls(m, "CreateTags")
    assert create["params"].get("ResourceId.1") == m.instance_id, create
    assert tags_param(create) == {**TAGS_SET, "Name": f"{SEED_NAME}-MASTER"}, create
    tags = nb.instance_tags(m.instance_id)
    assert tags["Name"] == f"{SEED_NAME}-MASTER"
    assert tags["Biz Unit"] == TAGS_SET["Biz Unit"] and tags["Project"] == TAGS_SET["Project"], tags
    # the EMR tags are left alone
    assert tags["aws:elasticmapreduce:instance-group-role"] == "MASTER", tags
    st = status(m)
    assert phase(st, "tag")["outcome"] == "changed"
    assert phase(st, "ip-takeover")["outcome"] == "skipped"


def test_a_converged_node_gets_no_create_tags(netbench):
    nb, m = netbench, netbench.master
    cfg = write_config(nb, m)
    run_tag(nb, m, cfg)
    tags = nb.instance_tags(m.instance_id)

    run_tag(nb, m, cfg)

    assert m.actions() == {"DescribeTags": 1}, m.actions()
    assert nb.instance_tags(m.instance_id) == tags
    assert outcomes(m, "tag") == {"tag": "unchanged"}


def test_a_name_already_suffixed_is_kept(netbench):
    nb, m = netbench, netbench.master
    nb.ec2.create_tags(Resources=[m.instance_id], Tags=[{"Key": "Name", "Value": f"{SEED_NAME}-MASTER"}])
    cfg = write_config(nb, m)

    run_tag(nb, m, cfg)

    assert nb.instance_tags(m.instance_id)["Name"] == f"{SEED_NAME}-MASTER"
    (create,) = ec2_calls(m, "CreateTags")  # the other tags were missing
    assert tags_param(create).get("Name", f"{SEED_NAME}-MASTER") == f"{SEED_NAME}-MASTER", create


def test_a_changed_tag_value_is_set_and_the_name_stays_suffixed_once(netbench):
    nb, m = netbench, netbench.master
    cfg = write_config(nb, m)
    run_tag(nb, m, cfg)
    cfg.write_text(cfg.read_text().replace('"EMR-PRACTICE"', '"EMR-PRACTICE-2"'))

    run_tag(nb, m, cfg)

    assert mutating(m.actions()) == {"CreateTags": 1}, m.actions()
    tags = nb.instance_tags(m.instance_id)
    assert tags["Project"] == "EMR-PRACTICE-2", tags
    assert tags["Name"] == f"{SEED_NAME}-MASTER", tags


def test_core_name_gets_the_core_suffix(netbench):
    nb, c = netbench, netbench.core
    cfg = write_config(nb, c)

    run_tag(nb, c, cfg)

    assert nb.instance_tags(c.instance_id)["Name"] == f"{SEED_NAME}-CORE"
    assert nb.instance_tags(nb.master.instance_id)["Name"] == SEED_NAME  # the other node untouched
    assert nb.master.actions() == {}
