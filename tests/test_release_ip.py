"""End to end: the `shutdown-hook` phase's action file and `release-ip`, on the netbench.

moto keeps a reassigned IP on both ENIs (it ignores AllowReassignment); where a test needs moto to
look like EC2 after the takeover, it takes the IP off the reserved ENI itself
(net_helpers.emulate_reassignment), straight in moto, not through the node's counting proxy.
"""
import os
import stat

import bench

from net_helpers import (TEST_PORT, aws_state, connect, ec2_calls, emulate_reassignment, mutating,
                         os_state, start_server, write_config)

ACTION = "emrboot-release-ip.sh"


def take_over(nb):
    cfg = write_config(nb, nb.master)
    nb.master.run("run", "--config", cfg, check=0)
    assert nb.fixed_ip in nb.eni_ips(nb.master.eni_id)
    assert f"{nb.fixed_ip}/32" in nb.master.addresses()
    return cfg


def shutdown_env(node):
    """The node's environment minus the emrboot dirs the action must not depend on: the action
    itself names the state dir."""
    return {k: v for k, v in node.env.items() if k not in ("EMRBOOT_STATE_DIR", "EMRBOOT_INFO_DIR")}


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_shutdown_action_only_execs_the_kept_emrboot(netbench):
    nb, m = netbench, netbench.master
    exe_bytes = bench.emrboot_bin().read_bytes()
    cfg = take_over(nb)
    action = m.shutdown_actions_dir / ACTION
    kept = m.state_dir / "bin" / "emrboot"

    assert action.is_file()
    assert mode(action) == 0o755, oct(mode(action))
    text = action.read_text()
    assert text.startswith("#!/bin/sh\n"), text
    code = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert code == [f"exec '{kept}' --state-dir '{m.state_dir}' release-ip"], text
    # the kept copy is this very binary, executable; the config copy is private
    assert kept.is_file() and mode(kept) == 0o755, oct(mode(kept))
    assert kept.read_bytes() == exe_bytes, "the kept emrboot differs from the binary that ran"
    copy = m.state_dir / "config.toml"
    assert copy.is_file() and mode(copy) == 0o600, oct(mode(copy))
    assert copy.read_text() == cfg.read_text()


def test_the_action_gives_the_ip_back_and_a_second_call_changes_nothing(netbench):
    nb, m = netbench, netbench.master
    fixed, primary = nb.fixed_ip, m.primary_ip
    take_over(nb)
    emulate_reassignment(nb, fixed, m.eni_id)  # as EC2 leaves it: the reserved ENI lost it
    assert fixed not in nb.eni_ips(nb.reserved_eni)
    start_server(nb, m.ns, primary, TEST_PORT, "still here")
    assert connect(nb, nb.lan_ns, fixed, TEST_PORT)[:2] == (0, "still here")
    action = m.shutdown_actions_dir / ACTION
    m.clear_calls()

    cp = m.sh("sh", action, env=shutdown_env(m), timeout=90)

    assert cp.returncode == 0, f"exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert fixed in nb.eni_ips(nb.reserved_eni), nb.enis()
    assert f"{fixed}/32" not in m.addresses(), m.addresses()
    assert f"{primary}/20" in m.addresses()
    assert not m.nat_has("PREROUTING", fixed, primary), m.nat_rules("PREROUTING")
    assert not m.nat_has("OUTPUT", fixed, primary), m.nat_rules("OUTPUT")
    calls = m.actions()
    assert mutating(calls) == {"AssignPrivateIpAddresses": 1}, calls
    (assign,) = ec2_calls(m, "AssignPrivateIpAddresses")
    assert assign["params"].get("NetworkInterfaceId") == nb.reserved_eni, assign
    assert assign["params"].get("PrivateIpAddress.1") == fixed, assign
    assert assign["params"].get("AllowReassignment") == "true", assign
    # the fixed IP no longer leads to this node
    rc, out, _ = connect(nb, nb.lan_ns, fixed, TEST_PORT, timeout=3)
    assert rc != 0, f"{fixed} still answered after release-ip: {out!r}"

    before_aws, before_os = aws_state(nb), os_state(nb, m)
    m.clear_calls()
    cp = m.sh("sh", action, env=shutdown_env(m), timeout=90)
    assert cp.returncode == 0, f"exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    calls = m.actions()
    assert "AssignPrivateIpAddresses" not in calls, calls
    assert mutating(calls) == {}, calls
    assert aws_state(nb) == before_aws
    assert os_state(nb, m) == before_os


def test_release_ip_removes_every_copy_of_the_rules(netbench):
    """The seed's script appended one rule per run: release-ip must leave none behind."""
    nb, m = netbench, netbench.master
    fixed, primary = nb.fixed_ip, m.primary_ip
    take_over(nb)
    for chain in ("PREROUTING", "OUTPUT"):
        m.sh("iptables", "-t", "nat", "-A", chain, "-d", f"{fixed}/32", "-j", "DNAT",
             "--to-destination", primary, check=0)
        assert len(m.nat_rules(chain)) == 2, m.nat_rules(chain)

    m.run("release-ip", check=0)

    assert m.nat_rules("PREROUTING") == [] and m.nat_rules("OUTPUT") == []
    assert f"{fixed}/32" not in m.addresses()


def test_release_ip_with_an_explicit_config(netbench):
    """`release-ip --config SRC` reads SRC, not the copy in the state dir."""
    nb, m = netbench, netbench.master
    fixed, primary = nb.fixed_ip, m.primary_ip
    take_over(nb)
    emulate_reassignment(nb, fixed, m.eni_id)
    (m.state_dir / "config.toml").write_text("this is not TOML [\n")  # must not be read
    other = write_config(nb, m, name="release.toml", tags=False)
    m.clear_calls()

    m.run("release-ip", "--config", other, check=0)

    assert fixed in nb.eni_ips(nb.reserved_eni), nb.enis()
    assert f"{fixed}/32" not in m.addresses()
    assert not m.nat_has("PREROUTING", fixed, primary) and not m.nat_has("OUTPUT", fixed, primary)
    assert mutating(m.actions()) == {"AssignPrivateIpAddresses": 1}, m.actions()


def test_the_action_works_with_a_state_dir_that_needs_quoting(netbench):
    nb, m = netbench, netbench.master
    fixed = nb.fixed_ip
    m.state_dir = m.root / "state dir's $HOME"
    m.state_dir.mkdir()
    m.env["EMRBOOT_STATE_DIR"] = str(m.state_dir)
    take_over(nb)
    emulate_reassignment(nb, fixed, m.eni_id)
    action = m.shutdown_actions_dir / ACTION
    assert (m.state_dir / "bin" / "emrboot").is_file()

    cp = m.sh("sh", action, env=shutdown_env(m), timeout=90)

    assert cp.returncode == 0, f"exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert fixed in nb.eni_ips(nb.reserved_eni)
    assert f"{fixed}/32" not in m.addresses()
    assert not m.nat_has("PREROUTING", fixed, m.primary_ip)


def test_release_ip_is_bounded_when_ec2_hangs(node, aws, moto, tmp_path):
    """EMR gives a shutdown action 60 s. With an EC2 endpoint that accepts connections and never
    answers, release-ip must give up on its own and say so (exit 1), not hang. Runs on the host:
    the hung DescribeNetworkInterfaces comes before anything that touches the network stack.
    The fixed IP is put on the master in moto first, so that IMDS lists it and release-ip has
    something of its own to give back (it makes no EC2 call for an IP it does not hold)."""
    import socket
    import subprocess

    import boto3

    ec2 = boto3.client("ec2", endpoint_url=moto.url, region_name=aws["region"],
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    ec2.assign_private_ip_addresses(NetworkInterfaceId=aws["master"]["eni_id"],
                                    PrivateIpAddresses=[aws["fixed_ip"]], AllowReassignment=True)
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    try:
        n = node("master-ig", extra_env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{hole.getsockname()[1]}"})
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[ip_takeover]\naddress = "{aws["fixed_ip"]}"\nreserved_eni = "{aws["reserved_eni_id"]}"\n')
        try:
            cp = n.run("release-ip", "--config", cfg, timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("release-ip was still running after 60 s with EC2 hung")
        assert cp.returncode == 1, cp.stderr
        assert "DescribeNetworkInterfaces" in cp.stderr or "within" in cp.stderr, cp.stderr
    finally:
        hole.close()


def fake_systemctl(tmp, jobs):
    """A `systemctl` that answers `list-jobs` as systemd does during a shutdown (JOB UNIT TYPE
    STATE) and records its arguments: emrboot asks it, as the poweroff unit's ExecStop does, whether
    the node is rebooting. systemd itself cannot run in the bench."""
    bin_dir = tmp / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp / "systemctl.args"
    script = bin_dir / "systemctl"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> '{log}'\ncat <<'JOBS'\n{jobs}JOBS\n")
    script.chmod(0o755)
    return bin_dir, log


def unit_env(node, bin_dir):
    env = shutdown_env(node)
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    return env


def test_the_poweroff_unit_keeps_the_ip_when_the_node_reboots(netbench, tmp_path):
    nb, m = netbench, netbench.master
    take_over(nb)
    bin_dir, log = fake_systemctl(tmp_path, "1204 reboot.target start waiting\n"
                                            "1210 systemd-reboot.service start waiting\n")
    before_aws, before_os = aws_state(nb), os_state(nb, m)
    m.clear_calls()

    cp = m.sh(bench.emrboot_bin(), "--state-dir", m.state_dir, "release-ip", "--not-on-reboot",
              env=unit_env(m, bin_dir), timeout=90)

    assert cp.returncode == 0, f"exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert "list-jobs" in log.read_text()
    assert "rebooting" in cp.stderr, cp.stderr
    assert m.actions() == {}, "no AWS call when the node reboots"
    assert aws_state(nb) == before_aws
    assert os_state(nb, m) == before_os
    assert f"{nb.fixed_ip}/32" in m.addresses()


def test_the_poweroff_unit_releases_the_ip_at_poweroff(netbench, tmp_path):
    nb, m = netbench, netbench.master
    take_over(nb)
    emulate_reassignment(nb, nb.fixed_ip, m.eni_id)
    bin_dir, log = fake_systemctl(tmp_path, "1304 poweroff.target start waiting\n"
                                            "1311 emrboot-release-ip.service stop running\n")
    m.clear_calls()

    cp = m.sh(bench.emrboot_bin(), "--state-dir", m.state_dir, "release-ip", "--not-on-reboot",
              env=unit_env(m, bin_dir), timeout=90)

    assert cp.returncode == 0, f"exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert "list-jobs" in log.read_text()
    assert nb.fixed_ip in nb.eni_ips(nb.reserved_eni), nb.enis()
    assert f"{nb.fixed_ip}/32" not in m.addresses()
    assert mutating(m.actions()) == {"AssignPrivateIpAddresses": 1}
