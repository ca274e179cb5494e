"""Helpers for the tests that run emrboot on the netbench (tag, ip-takeover, shutdown-hook,
release-ip). Not fixtures: the `netbench` fixture is in conftest.py, its classes in
tests/bench/netns.py."""
import json
import sys

from helpers import phase, plan_actions, status_json  # noqa: F401 - re-exported for the net tests

TAGS_SET = {"Project": "EMR-PRACTICE", "Biz Unit": "EMR-PRACTICE-CLUSTER"}
SEED_NAME = "emr-practice"  # the Name tag bench.seed() gives both instances
# Which EC2 actions read only; everything else changes something.
READ_ONLY_PREFIXES = ("Describe", "Get", "List")
TEST_PORT = 8080  # the TCP service behind the fixed IP, inside the master namespace


def toml_str(s):
    return json.dumps(s)  # a TOML basic string is a JSON string for these values


def config_text(address=None, reserved_eni=None, tags=True, ip_takeover=True):
    """The config of the brief: [tags] with name_suffix and two tags (one key with a space),
    [ip_takeover] with the fixed IP and the reserved ENI."""
    out = []
    if tags:
        out += ["[tags]", 'name_suffix = "role"', "[tags.set]"]
        out += [f"{toml_str(k)} = {toml_str(v)}" for k, v in TAGS_SET.items()]
    if ip_takeover:
        out += ["[ip_takeover]", f"address = {toml_str(address)}", f"reserved_eni = {toml_str(reserved_eni)}"]
    return "\n".join(out) + "\n"


def write_config(nb, node, name="emrboot.toml", **kw):
    """Writes the config into NODE's dir (defaults: the seeded fixed IP and reserved ENI)."""
    kw.setdefault("address", nb.fixed_ip)
    kw.setdefault("reserved_eni", nb.reserved_eni)
    path = node.root / name
    path.write_text(config_text(**kw))
    return path


def status(node):
    """`emrboot status --json` of NODE, parsed (helpers.status_json without the exit code)."""
    return status_json(node)[1]


def outcomes(node, *names):
    st = status(node)
    return {n: phase(st, n)["outcome"] for n in names}


def first_run_outcomes(phases):
    """What a node's first full run records for PHASES: "changed" for each, except shutdown-hook,
    whose action ip-takeover writes before it moves the IP (a node never holds the IP without its
    way back), so shutdown-hook finds it in place: "unchanged"."""
    return {p: "unchanged" if p == "shutdown-hook" and "ip-takeover" in phases else "changed" for p in phases}


def mutating(actions):
    """The EC2 actions in {Action: n} that change something."""
    return {a: n for a, n in actions.items() if not str(a).startswith(READ_ONLY_PREFIXES)}


def ec2_calls(node, action):
    """The EC2 requests for ACTION that NODE made since its last clear_calls()."""
    return [c for c in node.calls() if c["service"] == "ec2" and c["action"] == action]


def tags_param(call):
    """{key: value} of the Tag.N.Key/Tag.N.Value parameters of a CreateTags request."""
    p = call["params"]
    out = {}
    n = 1
    while f"Tag.{n}.Key" in p:
        out[p[f"Tag.{n}.Key"]] = p.get(f"Tag.{n}.Value", "")
        n += 1
    return out


def os_state(nb, node):
    """What ip-takeover may change on NODE's OS: its addresses on ens5 and the nat rules."""
    return {"addresses": sorted(node.addresses()),
            "PREROUTING": node.nat_rules("PREROUTING"),
            "OUTPUT": node.nat_rules("OUTPUT")}


def aws_state(nb):
    """What the phases may change in moto: every ENI's IPs and both instances' tags."""
    return {"enis": nb.enis(),
            "master_tags": nb.instance_tags(nb.master.instance_id),
            "core_tags": nb.instance_tags(nb.core.instance_id)}


def emulate_reassignment(nb, ip, to_eni):
    """moto ignores AllowReassignment and leaves IP on every ENI it was ever assigned to; EC2
    moves it. Take IP off every ENI but TO_ENI, straight in moto (not through a node's proxy),
    so that moto's state is what EC2's would be."""
    for eni, ips in nb.enis().items():
        if eni != to_eni and ip in ips:
            nb.ec2.unassign_private_ip_addresses(NetworkInterfaceId=eni, PrivateIpAddresses=[ip])


SERVER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))  # ONLY the given address
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[3].encode())
    c.close()
"""

CLIENT = r"""
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    data = b""
    while True:
        b = c.recv(4096)
        if not b:
            break
        data += b
    sys.stdout.write(data.decode())
except OSError as e:
    sys.stderr.write(f"connect {sys.argv[1]}:{sys.argv[2]}: {e!r}\n")
    sys.exit(3)
"""


def start_server(nb, ns, addr, port, reply):
    """A TCP server in NS bound only to ADDR:PORT that sends REPLY to each client; stopped with
    the netbench."""
    p = nb.popen_in(ns, [sys.executable, "-u", "-c", SERVER, addr, str(port), reply],
                    stdout=__import__("subprocess").PIPE, text=True)
    line = p.stdout.readline()
    assert line == "ready\n", f"test server in {ns} did not start (exit {p.poll()}): {line!r}"
    return p


def connect(nb, ns, addr, port, timeout=5):
    """Connects from NS to ADDR:PORT: (exit code, what the server sent, stderr)."""
    cp = nb.run_in(ns, [sys.executable, "-c", CLIENT, addr, str(port), str(timeout)], timeout=timeout + 30)
    return cp.returncode, cp.stdout, cp.stderr
