"""End to end: the fixed IP under interleavings of `run`, `release-ip` and other nodes, on the
netbench (a real netns with iptables, moto through each node's counting proxy, an IMDS emulator).

EC2, not moto, is the model here: moto ignores AllowReassignment and leaves a reassigned IP on
both ENIs, so every test turns on the master proxy's reassignment emulation (countproxy.py moves
the IP off the other ENIs straight in moto once an assign with AllowReassignment succeeds), and
IMDS lag is emulated by pinning the emulator's local-ipv4s (imds.py /_emu/pin).

What every test checks is the state that matters, never an exit code alone: which ENI holds the
IP in moto, the master namespace's /32 and both DNAT rules, the EC2 calls each node made.
"""
import subprocess
import time

import pytest

from net_helpers import ec2_calls, emulate_reassignment, mutating, status, write_config

RELEASE_FLAG = "release-requested"


def take_over(nb):
    """A first run on the master: the IP is on its ENI (and only there), with the /32 and rules."""
    nb.master.proxy.emulate_reassignment(True)
    cfg = write_config(nb, nb.master)
    nb.master.run("run", "--config", cfg, check=0)
    assert_held_by(nb, nb.master.eni_id)
    assert_node_answers(nb, True)
    return cfg


def assert_held_by(nb, eni):
    holders = sorted(e for e, ips in nb.enis().items() if nb.fixed_ip in ips)
    assert holders == [eni], f"{nb.fixed_ip} is on {holders}, expected only {eni}: {nb.enis()}"


def assert_node_answers(nb, yes, node=None):
    """Whether NODE (the master) carries the /32 and both DNAT rules: all of them or none."""
    m = node or nb.master
    got = {"/32": f"{nb.fixed_ip}/32" in m.addresses(),
           "PREROUTING": m.nat_has("PREROUTING", nb.fixed_ip, m.primary_ip),
           "OUTPUT": m.nat_has("OUTPUT", nb.fixed_ip, m.primary_ip)}
    assert got == dict.fromkeys(got, yes), (got, m.addresses(), m.nat_rules("PREROUTING"), m.nat_rules("OUTPUT"))


def released(nb):
    """The end state of a release: EC2 has the IP on the reserved ENI only; the node has nothing."""
    assert_held_by(nb, nb.reserved_eni)
    assert_node_answers(nb, False)


def wait_for(pred, what, proc=None, timeout=30):
    deadline = time.monotonic() + timeout
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"emrboot ended (exit {proc.returncode}) before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def test_release_ip_during_the_runs_assign_wins(netbench):
    """The run's AssignPrivateIpAddresses is in flight when release-ip starts: release-ip waits for
    it, the run gives the IP back itself, and the terminating node ends with nothing."""
    nb, m = netbench, netbench.master
    m.proxy.emulate_reassignment(True)
    cfg = write_config(nb, m)
    m.proxy.faults([{"service": "ec2", "action": "^AssignPrivateIpAddresses$", "fault": "hold", "when": "before"}])
    run = m.start("run", "--config", cfg)
    m.proxy.wait_held(1)
    rel = m.start("release-ip")
    wait_for(lambda: (m.state_dir / RELEASE_FLAG).exists(), "release request", rel)
    time.sleep(1)  # release-ip is now waiting for the run's ip.lock
    assert rel.poll() is None, "release-ip did not wait for the run's assign in flight"
    m.proxy.clear_faults()  # the assign reaches EC2 (and moves the IP to the master)
    rc_run, _, err_run = m.finish(run)
    rc_rel, _, err_rel = m.finish(rel)
    print("--- run\n", err_run, "--- release-ip\n", err_rel)

    assert rc_rel == 0, err_rel
    assert rc_run != 0, f"the run went on after release-ip: {err_run}"
    released(nb)
    st = status(m)
    ip = [p for p in st["phases"] if p["phase"] == "ip-takeover"][0]
    assert ip["outcome"] in ("failed", "interrupted") and "release-ip" in ip["error"], ip
    # What it took, it gave back: exactly one assign to each ENI, in that order.
    assigns = [c["params"]["NetworkInterfaceId"] for c in ec2_calls(m, "AssignPrivateIpAddresses")]
    assert assigns == [m.eni_id, nb.reserved_eni], assigns


def test_release_ip_during_a_rerun_is_not_undone(netbench):
    """A re-run sits in its tag phase (DescribeTags held) when release-ip gives the IP back: the
    re-run must not put back the /32 and rules, and `status` must not say ok."""
    nb, m = netbench, netbench.master
    cfg = take_over(nb)
    m.proxy.faults([{"service": "ec2", "action": "^DescribeTags$", "fault": "hold", "when": "before"}])
    run = m.start("run", "--config", cfg)
    m.proxy.wait_held(1)
    rc_rel, _, err_rel = m.finish(m.start("release-ip"), timeout=60)
    assert rc_rel == 0, err_rel
    released(nb)
    m.proxy.clear_faults()
    rc_run, _, err_run = m.finish(run)

    assert rc_run != 0, err_run
    released(nb)
    assert m.run("status").returncode == 1
    st = status(m)
    assert st["state"] != "ok", st
    ip = [p for p in st["phases"] if p["phase"] == "ip-takeover"][0]
    assert ip["outcome"] != "changed" and ip["outcome"] != "unchanged", ip


def test_a_run_after_a_release_takes_the_ip_again(netbench):
    """The later command wins: an operator re-running emrboot after a release wants the IP."""
    nb, m = netbench, netbench.master
    cfg = take_over(nb)
    m.run("release-ip", check=0)
    released(nb)
    m.run("run", "--config", cfg, check=0)
    assert_held_by(nb, m.eni_id)
    assert_node_answers(nb, True)
    assert not (m.state_dir / RELEASE_FLAG).exists()


def test_an_ip_another_node_holds_is_not_pulled_back(netbench):
    """EC2 moved the IP to another node's ENI (a new cluster's master); IMDS here still lists it.
    release-ip must not assign it to the reserved ENI (that takes it off the other node); it only
    clears this node."""
    nb, m, other = netbench, netbench.master, netbench.core
    take_over(nb)
    nb.ec2.assign_private_ip_addresses(NetworkInterfaceId=other.eni_id, PrivateIpAddresses=[nb.fixed_ip],
                                       AllowReassignment=True)
    emulate_reassignment(nb, nb.fixed_ip, other.eni_id)
    m.imds.pin_local_ipv4s(m.facts["mac"], [m.primary_ip, nb.fixed_ip])  # IMDS lags EC2
    m.clear_calls()

    cp = m.run("release-ip")

    assert cp.returncode == 0, cp.stderr
    assert mutating(m.actions()) == {}, m.actions()
    assert_held_by(nb, other.eni_id)
    assert_node_answers(nb, False)
    assert f"not on this node's ENI {m.eni_id} in EC2" in cp.stderr, cp.stderr


@pytest.mark.parametrize("fault", [
    {"fault": "error", "status": 400, "code": "InvalidNetworkInterfaceID.NotFound",
     "message": "The networkInterface ID does not exist"},
    {"fault": "throttle"},
], ids=["not-found", "throttled-every-try"])
def test_a_failed_reserved_eni_lookup_still_clears_the_node(netbench, fault):
    nb, m = netbench, netbench.master
    take_over(nb)
    m.proxy.faults([{"service": "ec2", "action": "^DescribeNetworkInterfaces$", **fault}])
    m.clear_calls()
    t0 = time.monotonic()

    cp = m.run("release-ip", timeout=90)

    took = time.monotonic() - t0
    assert cp.returncode == 1, (cp.returncode, cp.stderr)
    assert "DescribeNetworkInterfaces" in cp.stderr and nb.reserved_eni in cp.stderr, cp.stderr
    assert_node_answers(nb, False)  # the local cleanup happened anyway
    assert mutating(m.actions()) == {}, m.actions()
    assert_held_by(nb, m.eni_id)  # EC2 untouched: the IP could not be given back
    print(f"release-ip with {fault['fault']}: exit 1 after {took:.1f} s")


def test_two_release_ip_at_once_both_succeed(netbench):
    """EMR's shutdown action and the poweroff unit can both run at termination."""
    nb, m = netbench, netbench.master
    cfg = take_over(nb)
    for i in range(5):
        if i:
            m.run("run", "--config", cfg, check=0)
            assert_node_answers(nb, True)
        a, b = m.start("release-ip"), m.start("release-ip")
        (ra, _, ea), (rb, _, eb) = m.finish(a), m.finish(b)
        assert (ra, rb) == (0, 0), f"round {i}: exits {ra}, {rb}\n--- a\n{ea}\n--- b\n{eb}"
        released(nb)


def test_a_full_state_dir_fails_before_the_ip_moves(netbench):
    """The state dir cannot hold the kept binary (a tiny tmpfs): the run fails before any
    AssignPrivateIpAddresses, so the node never holds an IP it has no way to give back; `status`
    does not claim success; once there is room, a run converges."""
    nb, m = netbench, netbench.master
    m.proxy.emulate_reassignment(True)
    cfg = write_config(nb, m)
    m.state_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "emrboot-test", m.state_dir], check=True)
    try:
        m.clear_calls()
        cp = m.run("run", "--config", cfg)
        assert cp.returncode != 0, cp.stderr
        assert "AssignPrivateIpAddresses" not in m.actions(), m.actions()
        assert_held_by(nb, nb.reserved_eni)
        assert_node_answers(nb, False)
        assert m.run("status").returncode == 1
    finally:
        subprocess.run(["umount", m.state_dir], check=True)
    m.run("run", "--config", cfg, check=0)
    assert_held_by(nb, m.eni_id)
    assert_node_answers(nb, True)
    assert m.run("status").returncode == 0
