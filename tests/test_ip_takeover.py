"""End to end: the `ip-takeover` phase (with `tag` and `shutdown-hook` in the same run) on the
netbench: emrboot runs inside the master's network namespace, whose ens5 has the master ENI's MAC
and primary IP, against moto (through a counting proxy) and an IMDS emulator computed live from
moto. A client in the LAN namespace then reaches a server bound only to the master's primary IP
through the fixed IP.
"""
import os
import shlex

import pytest

from helpers import PHASES as ALL_PHASES
from net_helpers import (SEED_NAME, TAGS_SET, TEST_PORT, aws_state, connect, ec2_calls, first_run_outcomes,
                         mutating, os_state, outcomes, phase, plan_actions, start_server, status, tags_param,
                         write_config)

PHASES = tuple(p for p in ALL_PHASES if p not in ("install", "efs-mount"))


def first_run(nb):
    cfg = write_config(nb, nb.master)
    nb.master.clear_calls()
    cp = nb.master.run("run", "--config", cfg, check=0)
    return cfg, cp


def test_first_run_moves_the_fixed_ip_to_the_master(netbench):
    nb, m = netbench, netbench.master
    fixed, primary = nb.fixed_ip, m.primary_ip
    assert fixed not in nb.eni_ips(m.eni_id)  # the seed: the reserved ENI holds it
    assert f"{fixed}/32" not in m.addresses()

    first_run(nb)

    # EC2 (moto): the fixed IP is on the master's ENI
    assert fixed in nb.eni_ips(m.eni_id), nb.enis()
    # tags: one Name suffix, the configured tags, the key with a space intact
    tags = nb.instance_tags(m.instance_id)
    assert tags["Name"] == f"{SEED_NAME}-MASTER", tags
    for k, v in TAGS_SET.items():
        assert tags.get(k) == v, tags
    # the OS inside the master namespace: the /32 and both DNAT rules
    assert f"{fixed}/32" in m.addresses(), m.addresses()
    assert f"{primary}/20" in m.addresses()
    assert m.nat_has("PREROUTING", fixed, primary), m.nat_rules("PREROUTING")
    assert m.nat_has("OUTPUT", fixed, primary), m.nat_rules("OUTPUT")
    assert outcomes(m, *PHASES) == first_run_outcomes(PHASES)
    assert (m.shutdown_actions_dir / "emrboot-release-ip.sh").is_file()


def test_first_run_ec2_calls(netbench):
    nb, m = netbench, netbench.master
    first_run(nb)
    calls = m.actions()
    print("EC2 calls on the first run:", calls)
    assert calls.get("DescribeTags") == 1, calls
    assert calls.get("CreateTags") == 1, calls
    assert calls.get("DescribeNetworkInterfaces") == 1, calls
    assert calls.get("AssignPrivateIpAddresses") == 1, calls
    assert "UnassignPrivateIpAddresses" not in calls, calls
    assert "DescribeInstances" not in calls, calls  # the node's network comes from IMDS
    assert sum(calls.values()) <= 4, calls
    assert all(c["status"] == 200 for c in m.calls()), m.calls()

    # What went over the wire (moto ignores AllowReassignment, the proxy does not)
    (assign,) = ec2_calls(m, "AssignPrivateIpAddresses")
    assert assign["params"].get("NetworkInterfaceId") == m.eni_id, assign
    assert assign["params"].get("PrivateIpAddress.1") == nb.fixed_ip, assign
    assert "PrivateIpAddress.2" not in assign["params"], assign
    assert assign["params"].get("AllowReassignment") == "true", assign
    (create,) = ec2_calls(m, "CreateTags")
    assert create["params"].get("ResourceId.1") == m.instance_id, create
    assert "ResourceId.2" not in create["params"], create
    assert tags_param(create) == {**TAGS_SET, "Name": f"{SEED_NAME}-MASTER"}, create


def test_fixed_ip_reaches_a_server_bound_only_to_the_primary_ip(netbench):
    nb, m = netbench, netbench.master
    fixed, primary = nb.fixed_ip, m.primary_ip
    start_server(nb, m.ns, primary, TEST_PORT, "hello from the master")
    # the server works on its own address, from the LAN
    assert connect(nb, nb.lan_ns, primary, TEST_PORT)[:2] == (0, "hello from the master")
    # before the takeover nobody answers for the fixed IP
    rc, out, err = connect(nb, nb.lan_ns, fixed, TEST_PORT, timeout=3)
    assert rc != 0, f"the fixed IP answered before the takeover: {out!r}"

    first_run(nb)

    rc, out, err = connect(nb, nb.lan_ns, fixed, TEST_PORT)
    assert (rc, out) == (0, "hello from the master"), f"LAN client -> {fixed}:{TEST_PORT}: {err}"
    # from the node itself: only the OUTPUT rule sends it to the primary IP
    rc, out, err = connect(nb, m.ns, fixed, TEST_PORT)
    assert (rc, out) == (0, "hello from the master"), f"master -> {fixed}:{TEST_PORT}: {err}"


def test_second_run_changes_nothing(netbench):
    nb, m = netbench, netbench.master
    fixed, primary = nb.fixed_ip, m.primary_ip
    cfg, _ = first_run(nb)
    tags_after_first = nb.instance_tags(m.instance_id)
    enis_after_first = nb.enis()

    m.clear_calls()
    m.run("run", "--config", cfg, check=0)
    calls = m.actions()
    print("EC2 calls on the second run:", calls)
    assert mutating(calls) == {}, calls
    # IMDS already lists the IP: ip-takeover makes no EC2 call at all; tag reads once
    assert "DescribeNetworkInterfaces" not in calls, calls
    assert calls.get("DescribeTags") == 1, calls
    assert nb.instance_tags(m.instance_id) == tags_after_first
    assert nb.instance_tags(m.instance_id)["Name"] == f"{SEED_NAME}-MASTER"
    assert nb.enis() == enis_after_first
    # exactly one copy of the address and of each rule
    assert m.addresses().count(f"{fixed}/32") == 1, m.addresses()
    rule = f"-d {fixed}/32 -j DNAT --to-destination {primary}"
    for chain in ("PREROUTING", "OUTPUT"):
        rules = m.nat_rules(chain)
        assert sum(1 for r in rules if r == f"-A {chain} {rule}") == 1, rules
        assert len(rules) == 1, rules
    assert outcomes(m, *PHASES) == {p: "unchanged" for p in PHASES}


# -- refusals: exit 2, nothing changed, not even the tags (every check runs before any change) --

UNRELATED_IP = "172.31.9.99"


@pytest.mark.parametrize("case", ["outside-subnet", "own-primary-ip", "held-by-another-eni",
                                  "reserved-eni-missing", "reserved-eni-is-own-eni",
                                  "reserved-eni-primary-ip"])
def test_refusals_change_nothing(netbench, case):
    nb, m = netbench, netbench.master
    address, reserved, expect = nb.fixed_ip, nb.reserved_eni, None
    if case == "outside-subnet":
        address, expect = "10.9.9.9", "outside"
    elif case == "own-primary-ip":
        address, expect = m.primary_ip, "primary IP"
    elif case == "held-by-another-eni":
        assert UNRELATED_IP not in {ip for ips in nb.enis().values() for ip in ips}
        other = nb.create_eni(UNRELATED_IP)
        address, expect = UNRELATED_IP, other
    elif case == "reserved-eni-missing":
        reserved, expect = "eni-0000000000000000f", "eni-0000000000000000f"
    elif case == "reserved-eni-is-own-eni":
        reserved, expect = m.eni_id, m.eni_id
    elif case == "reserved-eni-primary-ip":
        # EC2 never moves an ENI's primary IP: AssignPrivateIpAddresses would fail after the
        # tags were set. A config error, found by the checks (DescribeNetworkInterfaces shows
        # which IP is primary), like the node's own primary IP.
        address = nb.eni_ips(nb.reserved_eni)[0]
        expect = address
    cfg = write_config(nb, m, address=address, reserved_eni=reserved)
    before_aws, before_os = aws_state(nb), os_state(nb, m)
    m.clear_calls()

    cp = m.run("run", "--config", cfg, check=2)

    assert "panicked" not in cp.stderr
    assert expect in cp.stdout + cp.stderr, cp.stderr
    calls = m.actions()
    assert mutating(calls) == {}, calls
    assert aws_state(nb) == before_aws
    assert os_state(nb, m) == before_os
    assert not (m.shutdown_actions_dir / "emrboot-release-ip.sh").exists()
    st = status(m)
    assert st.get("exit_code") == 2, st
    ip = phase(st, "ip-takeover")
    assert ip["outcome"] == "failed" and expect in (ip.get("error") or ""), ip
    assert phase(st, "tag")["outcome"] in ("pending", "not-run", "skipped"), st


def test_core_gets_tags_but_not_the_ip(netbench):
    nb, c = netbench, netbench.core
    cfg = write_config(nb, c)
    core_ips = nb.eni_ips(c.eni_id)
    c.clear_calls()

    c.run("run", "--config", cfg, check=0)

    tags = nb.instance_tags(c.instance_id)
    assert tags["Name"] == f"{SEED_NAME}-CORE", tags
    for k, v in TAGS_SET.items():
        assert tags.get(k) == v, tags
    assert nb.eni_ips(c.eni_id) == core_ips
    assert nb.fixed_ip in nb.eni_ips(nb.reserved_eni)
    calls = c.actions()
    assert "AssignPrivateIpAddresses" not in calls and "DescribeNetworkInterfaces" not in calls, calls
    assert mutating(calls) == {"CreateTags": 1}, calls
    assert c.addresses() == [f"{c.primary_ip}/20"]
    assert c.nat_rules("PREROUTING") == [] and c.nat_rules("OUTPUT") == []
    assert not (c.shutdown_actions_dir / "emrboot-release-ip.sh").exists()
    st = status(c)
    assert phase(st, "ip-takeover")["outcome"] == "skipped", st
    assert phase(st, "shutdown-hook")["outcome"] == "skipped", st

    plan = c.run("plan", "--config", cfg, check=0).stdout
    assert "4. ip-takeover: skip: runs on MASTER only; this node is CORE" in plan.splitlines(), plan
    assert "5. shutdown-hook: skip: runs on MASTER only; this node is CORE" in plan.splitlines(), plan


def test_plan_on_a_fresh_master_lists_the_exact_actions_and_changes_nothing(netbench):
    nb, m = netbench, netbench.master
    fixed, primary = nb.fixed_ip, m.primary_ip
    cfg = write_config(nb, m)
    before_aws, before_os = aws_state(nb), os_state(nb, m)
    m.clear_calls()

    out = m.run("plan", "--config", cfg, check=0).stdout

    _, tag = plan_actions(out, "tag")
    assert tag == [f'ec2:CreateTags {m.instance_id}: "Biz Unit"="EMR-PRACTICE-CLUSTER", '
                   f'"Name"="emr-practice-MASTER", "Project"="EMR-PRACTICE"'], out
    header, ipt = plan_actions(out, "ip-takeover")
    assert header == "4. ip-takeover:", out
    want = [
        f"ec2:AssignPrivateIpAddresses {fixed} to {m.eni_id} from {nb.reserved_eni}, AllowReassignment=true",
        f"add {fixed}/32 to ens5 (netlink)",
        f"iptables -t nat -A PREROUTING -d {fixed}/32 -j DNAT --to-destination {primary}",
        f"iptables -t nat -A OUTPUT -d {fixed}/32 -j DNAT --to-destination {primary}",
    ]
    for line in want:
        assert line in ipt, f"{line!r} not in ip-takeover's plan:\n{out}"
    order = [ipt.index(line) for line in want]
    assert order == sorted(order), out
    # The release action is listed once, where the run writes it: in ip-takeover, before the
    # assign (a node never holds the IP without its way back); shutdown-hook then has nothing.
    action = [i for i, a in enumerate(ipt) if "emrboot-release-ip.sh" in a]
    assert len(action) == 1 and action[0] < order[0], out
    header, hook = plan_actions(out, "shutdown-hook")
    assert (header, hook) == ("5. shutdown-hook: nothing to do (converged)", []), out

    assert mutating(m.actions()) == {}, m.actions()
    assert aws_state(nb) == before_aws
    assert os_state(nb, m) == before_os
    assert not (m.shutdown_actions_dir / "emrboot-release-ip.sh").exists()
    assert not (m.state_dir / "bin" / "emrboot").exists()


def test_ha_secondary_master_does_not_take_the_ip(netbench):
    nb, m = netbench, netbench.master
    m.write_info("ha-master-secondary")
    cfg = write_config(nb, m)
    master_ips = nb.eni_ips(m.eni_id)
    m.clear_calls()

    m.run("run", "--config", cfg, check=0)

    st = status(m)
    for name in ("ip-takeover", "shutdown-hook"):
        p = phase(st, name)
        assert p["outcome"] == "skipped", p
        assert "primary master" in (p.get("reason") or ""), p
    calls = m.actions()
    assert "AssignPrivateIpAddresses" not in calls, calls
    assert nb.eni_ips(m.eni_id) == master_ips
    assert f"{nb.fixed_ip}/32" not in m.addresses()
    assert m.nat_rules("PREROUTING") == [] and m.nat_rules("OUTPUT") == []
    assert not (m.shutdown_actions_dir / "emrboot-release-ip.sh").exists()
    # the tag phase still runs on every master
    assert nb.instance_tags(m.instance_id)["Name"] == f"{SEED_NAME}-MASTER"

    plan = m.run("plan", "--config", cfg, check=0).stdout
    for n, name in ((4, "ip-takeover"), (5, "shutdown-hook")):
        line = next((l for l in plan.splitlines() if l.startswith(f"{n}. {name}:")), "")
        assert line.startswith(f"{n}. {name}: skip:") and "primary master" in line, plan


def test_the_interface_is_found_by_mac_whatever_its_name(netbench):
    nb, m = netbench, netbench.master
    m.sh("ip", "link", "set", "dev", "ens5", "down", check=0)
    m.sh("ip", "link", "set", "dev", "ens5", "name", "eth7", check=0)
    m.sh("ip", "link", "set", "dev", "eth7", "up", check=0)
    assert f"{m.primary_ip}/20" in m.addresses("eth7")
    cfg = write_config(nb, m)
    plan = m.run("plan", "--config", cfg, check=0).stdout
    assert f"add {nb.fixed_ip}/32 to eth7 (netlink)" in plan_actions(plan, "ip-takeover")[1], plan

    m.run("run", "--config", cfg, check=0)

    assert f"{nb.fixed_ip}/32" in m.addresses("eth7"), m.addresses("eth7")
    assert m.nat_has("PREROUTING", nb.fixed_ip, m.primary_ip)


def test_an_address_or_rule_already_there_is_kept_and_not_duplicated(netbench):
    """amazon-ec2-net-utils adds the /32 by itself; a rule may be left from an earlier run."""
    nb, m = netbench, netbench.master
    fixed, primary = nb.fixed_ip, m.primary_ip
    m.sh("ip", "addr", "add", f"{fixed}/32", "dev", "ens5", check=0)
    m.sh("iptables", "-t", "nat", "-A", "PREROUTING", "-d", f"{fixed}/32", "-j", "DNAT",
         "--to-destination", primary, check=0)
    cfg = write_config(nb, m)
    _, planned = plan_actions(m.run("plan", "--config", cfg, check=0).stdout, "ip-takeover")
    assert not any(a.startswith("add ") for a in planned), planned
    assert not any("PREROUTING" in a for a in planned), planned
    assert any("-A OUTPUT" in a for a in planned), planned

    m.run("run", "--config", cfg, check=0)

    assert m.addresses().count(f"{fixed}/32") == 1, m.addresses()
    assert len(m.nat_rules("PREROUTING")) == 1, m.nat_rules("PREROUTING")
    assert len(m.nat_rules("OUTPUT")) == 1, m.nat_rules("OUTPUT")
    assert m.nat_has("OUTPUT", fixed, primary)
    assert fixed in nb.eni_ips(m.eni_id)
    ip = phase(status(m), "ip-takeover")
    assert ip["outcome"] == "changed", ip
    assert not any(a.startswith("add ") or "PREROUTING" in a for a in ip.get("actions", [])), ip


def test_an_address_held_by_no_eni_is_assigned(netbench):
    nb, m = netbench, netbench.master
    free = "172.31.9.77"
    assert free not in {ip for ips in nb.enis().values() for ip in ips}
    cfg = write_config(nb, m, address=free)
    _, planned = plan_actions(m.run("plan", "--config", cfg, check=0).stdout, "ip-takeover")
    assert f"ec2:AssignPrivateIpAddresses {free} to {m.eni_id} (held by no ENI), AllowReassignment=true" \
        in planned, planned
    m.clear_calls()

    m.run("run", "--config", cfg, "--only", "ip-takeover", check=0)

    assert free in nb.eni_ips(m.eni_id), nb.enis()
    assert f"{free}/32" in m.addresses()
    assert m.nat_has("PREROUTING", free, m.primary_ip) and m.nat_has("OUTPUT", free, m.primary_ip)
    calls = m.actions()
    assert mutating(calls) == {"AssignPrivateIpAddresses": 1}, calls
    (assign,) = ec2_calls(m, "AssignPrivateIpAddresses")
    assert assign["params"].get("NetworkInterfaceId") == m.eni_id, assign
    assert assign["params"].get("AllowReassignment") == "true", assign


def test_ha_primary_master_takes_the_ip(netbench):
    nb, m = netbench, netbench.master
    m.write_info("ha-master-primary")
    cfg = write_config(nb, m)

    m.run("run", "--config", cfg, check=0)

    assert nb.fixed_ip in nb.eni_ips(m.eni_id)
    assert f"{nb.fixed_ip}/32" in m.addresses()
    assert outcomes(m, *PHASES) == first_run_outcomes(PHASES)
    assert (m.shutdown_actions_dir / "emrboot-release-ip.sh").is_file()


def test_after_a_reboot_the_address_and_rules_come_back_without_ec2_calls(netbench):
    """A reboot drops the /32 and the rules but not the EC2 assignment: what the boot unit's
    `run --only efs-mount,ip-takeover` then does."""
    nb, m = netbench, netbench.master
    fixed, primary = nb.fixed_ip, m.primary_ip
    cfg, _ = first_run(nb)
    m.sh("ip", "addr", "del", f"{fixed}/32", "dev", "ens5", check=0)
    m.sh("iptables", "-t", "nat", "-F", check=0)
    assert f"{fixed}/32" not in m.addresses() and not m.nat_has("OUTPUT", fixed, primary)
    m.clear_calls()

    m.run("run", "--config", m.state_dir / "config.toml", "--only", "efs-mount,ip-takeover", check=0)

    assert m.actions() == {}, m.actions()  # IMDS lists the IP: no EC2 call at all
    assert m.addresses().count(f"{fixed}/32") == 1, m.addresses()
    assert m.nat_has("PREROUTING", fixed, primary) and m.nat_has("OUTPUT", fixed, primary)
    assert outcomes(m, "ip-takeover") == {"ip-takeover": "changed"}


def unit_exec_start(unit_text):
    lines = [l for l in unit_text.splitlines() if l.startswith("ExecStart=")]
    assert len(lines) == 1, unit_text
    # systemd's ExecStart quoting ("…" words) reads like the shell's for these paths.
    return shlex.split(lines[0][len("ExecStart="):])


@pytest.mark.parametrize("state_subdir", ["state", "var/lib/emrboot-blue"])
def test_boot_unit_execs_the_kept_binary_with_this_state_dir(netbench, state_subdir):
    """ip-takeover installs the boot unit under the node's root; its ExecStart must name the kept
    emrboot and this node's state dir, whatever that dir is called (also when its path contains
    the template's /var/lib/emrboot)."""
    nb, m = netbench, netbench.master
    if state_subdir != "state":
        m.state_dir = m.root / state_subdir
        m.state_dir.mkdir(parents=True)
        m.env["EMRBOOT_STATE_DIR"] = str(m.state_dir)
    first_run(nb)
    unit = m.fs_root / "etc/systemd/system/emrboot-boot.service"
    link = m.fs_root / "etc/systemd/system/multi-user.target.wants/emrboot-boot.service"
    assert unit.is_file()
    assert link.is_symlink() and os.readlink(link) == "/etc/systemd/system/emrboot-boot.service"

    argv = unit_exec_start(unit.read_text())
    kept = m.state_dir / "bin" / "emrboot"
    assert argv[0] == str(kept), argv
    assert kept.is_file() and os.access(kept, os.X_OK)
    assert argv[argv.index("--state-dir") + 1] == str(m.state_dir), argv
    assert argv[argv.index("--config") + 1] == str(m.state_dir / "config.toml"), argv
    assert "ip-takeover" in argv[argv.index("--only") + 1].split(","), argv
    cond = [l for l in unit.read_text().splitlines() if l.startswith("ConditionPathExists=")]
    assert cond == [f"ConditionPathExists={m.state_dir / 'config.toml'}"], cond


def test_the_run_takes_exactly_the_actions_plan_listed(netbench):
    """plan --json on a fresh master, then run: each phase's recorded actions are the planned
    ones; then plan on the converged node lists nothing for any phase."""
    from helpers import plan_json, planned_actions
    nb, m = netbench, netbench.master
    m.proxy.emulate_reassignment(True)
    cfg = write_config(nb, m)
    rc, before = plan_json(m, "plan", "--config", cfg)
    assert rc == 0, before
    want = planned_actions(before)
    assert set(want) == {"tag", "ip-takeover"}, before  # shutdown-hook: ip-takeover writes its action

    m.run("run", "--config", cfg, check=0)

    st = status(m)
    got = {p["phase"]: p["actions"] for p in st["phases"] if p.get("actions")}
    assert got == want, f"plan listed {want}\nthe run did {got}"
    rc, after = plan_json(m, "plan", "--config", cfg)
    assert rc == 0 and planned_actions(after) == {}, after
    assert {p["phase"]: p["result"] for p in after["phases"]} == {
        "install": "skip", "tag": "converged", "efs-mount": "skip", "ip-takeover": "converged",
        "shutdown-hook": "converged"}, after
