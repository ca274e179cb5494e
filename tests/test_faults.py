"""AWS faults end to end: a whole master run (tag, ip-takeover, shutdown-hook; the config and pip
requirements from S3) on the netbench while the master's counting proxy (tests/bench/countproxy.py)
throttles, fails, resets, delays or hangs chosen EC2 and S3 requests. Throttling and transient
errors must be retried until the run ends exactly where an unfaulted run ends; a 4xx that is not
throttling must not be retried; a hung endpoint must end the run within a bound, naming the call.

Rates are seeded (the proxy draws from random.Random(seed) per rule), so each test sees the same
sequence of faults on every run.
"""
import json
import subprocess
import time
from collections import Counter

import pytest

import bench
from install_kit import make_wheel, s3_client
from helpers import PHASES as ALL_PHASES
from net_helpers import (SEED_NAME, TAGS_SET, aws_state, config_text, first_run_outcomes, os_state, phase,
                         status)

CONFIG_KEY = "emr-config/emrboot.toml"
REQ_KEY = "emr-config/requirements.txt"
PHASES = tuple(p for p in ALL_PHASES if p not in ("install", "efs-mount"))
# The EC2 requests an unfaulted full master run makes (test_unfaulted_run_is_the_reference).
UNFAULTED_EC2 = {"DescribeTags": 1, "CreateTags": 1, "DescribeNetworkInterfaces": 1,
                 "AssignPrivateIpAddresses": 1}
# What the bounded tests give emrboot per AWS operation (retries included), and the wall bound.
AWS_TIMEOUT_SECS = 8
HANG_BOUND = 60
# A run whose EC2 calls are throttled half the time: with the adaptive retry mode, each throttled
# retry waits for the client-side rate limiter, close to 20 s (README, "The retry policy"), so a
# handful of throttles take minutes, well inside the per-operation bound of 180 s.
THROTTLED_RUN_TIMEOUT = 420


class Run:
    def __init__(self, cp, wall, calls):
        self.cp, self.wall, self.calls = cp, wall, calls
        self.returncode, self.stdout, self.stderr = cp.returncode, cp.stdout, cp.stderr

    def ec2(self):
        return [c for c in self.calls if c["service"] == "ec2"]

    def s3(self):
        return [c for c in self.calls if c["service"] == "s3"]

    def events(self, message):
        """The JSON log records whose message is MESSAGE (see records())."""
        return [r for r in self.records() if r.get("message") == message]

    def records(self):
        """The JSON log records on stderr, each as one flat dict of its fields (the event's own
        fields over those of its spans) plus its level."""
        out = []
        for line in self.stderr.splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict):
                continue
            fields = {}
            for span in rec.get("spans") or []:
                fields.update(span)
            fields.update(rec.get("span") or {})
            fields.update(rec.get("fields") or {})
            fields.setdefault("level", rec.get("level"))
            out.append(fields)
        return out

    def summary(self, name):
        """One line for the report: faulted vs forwarded requests and wall time."""
        def count(calls):
            faults = Counter(c["fault"] for c in calls if c["fault"])
            return f"{len(calls)} requests, {len(calls) - sum(faults.values())} untouched, faults {dict(faults)}"
        return f"[{name}] exit {self.returncode} in {self.wall:.1f} s; EC2: {count(self.ec2())}; S3: {count(self.s3())}"


def upload(nb, key, text):
    """Puts TEXT at KEY of the seeded bucket straight into moto (not through a proxy): its URL."""
    s3_client(nb.moto.url).put_object(Bucket=nb.facts["bucket"], Key=key, Body=text.encode())
    return f"s3://{nb.facts['bucket']}/{key}"


def full_config(nb, pip=None):
    """The netbench config (tags, ip_takeover) plus, with PIP=(requirements URL, target dir), an
    [install.pip] section."""
    text = config_text(address=nb.fixed_ip, reserved_eni=nb.reserved_eni)
    if pip:
        text = f'[install.pip]\nrequirements = "{pip[0]}"\ntarget = "{pip[1]}"\n' + text
    return text


def run_emrboot(node, proxy, src, env=None, timeout=120):
    """`emrboot --log-format json run --config SRC` on NODE (a NetNode or a conftest Node) whose
    AWS endpoint is PROXY: a Run with the proxy's records of this run."""
    node.env.update(env or {})
    proxy.clear()
    t0 = time.monotonic()
    try:
        cp = node.run("--log-format", "json", "run", "--config", src, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"emrboot run did not end within {timeout} s (stderr so far: {e.stderr!r})",
                    pytrace=False)
    wall = time.monotonic() - t0
    # A request emrboot gave up on is recorded once the proxy sees the connection go away.
    deadline = time.monotonic() + 10
    while proxy.held() and time.monotonic() < deadline:
        time.sleep(0.05)
    run = Run(cp, wall, proxy.calls())
    print(run.summary(src))
    return run


def run_master(nb, src, env=None, timeout=120):
    return run_emrboot(nb.master, nb.master.proxy, src, env, timeout)


def before_state(nb):
    return aws_state(nb), os_state(nb, nb.master)


def assert_converged(nb, before, run):
    """The state an unfaulted full master run leaves, from the state BEFORE it: the fixed IP added
    to the master's ENI (moto leaves it on the reserved ENI too), the tags set once, the /32 and
    one DNAT rule in each chain, the shutdown action written, every phase changed."""
    m = nb.master
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    aws_before, _ = before
    enis = dict(aws_before["enis"])
    enis[m.eni_id] = sorted(enis[m.eni_id] + [nb.fixed_ip])
    want_aws = {"enis": enis,
                "master_tags": {**aws_before["master_tags"], **TAGS_SET, "Name": f"{SEED_NAME}-MASTER"},
                "core_tags": aws_before["core_tags"]}
    assert aws_state(nb) == want_aws
    rule = f"-d {nb.fixed_ip}/32 -j DNAT --to-destination {m.primary_ip}"
    assert os_state(nb, m) == {"addresses": sorted([f"{m.primary_ip}/20", f"{nb.fixed_ip}/32"]),
                               "PREROUTING": [f"-A PREROUTING {rule}"], "OUTPUT": [f"-A OUTPUT {rule}"]}
    assert (m.shutdown_actions_dir / "emrboot-release-ip.sh").is_file()
    st = status(m)
    assert st.get("exit_code") == 0, st
    assert {p: phase(st, p)["outcome"] for p in PHASES} == first_run_outcomes(PHASES), st


def converging_run(nb, rules, pip=None, timeout=120, slow=False):
    """A full master run, the config from S3, under the proxy's fault RULES; asserts that it
    ends where an unfaulted run ends and that every call still went through exactly once.
    SLOW: the faults may delay the run past ip-takeover's 30 s freshness of its checks, after
    which it asks EC2 again who holds the IP before the assign (one more
    DescribeNetworkInterfaces, by design)."""
    src = upload(nb, CONFIG_KEY, full_config(nb, pip))
    before = before_state(nb)
    nb.master.proxy.faults(rules)
    run = run_master(nb, src, timeout=timeout)
    assert_converged(nb, before, run)
    got = forwarded(run.ec2())
    if slow and got.get("DescribeNetworkInterfaces") == 2:
        got["DescribeNetworkInterfaces"] = 1
    assert got == UNFAULTED_EC2, run.ec2()
    return run


def forwarded(calls):
    """{Action: n} of the requests that reached moto untouched (or only delayed) and succeeded."""
    return dict(Counter(c["action"] for c in calls if c["fault"] in (None, "delay") and c["status"] == 200))


def assert_each_fault_followed_by_success(calls):
    """Every faulted request is followed, later in the log, by an untouched request of the same
    call (same service and action, and for S3 the same method and path) that succeeded."""
    key = lambda c: (c["service"], c["action"], c["method"] if c["action"] is None else None,  # noqa: E731
                     c["path"] if c["action"] is None else None)
    pending = Counter()
    for c in calls:
        if c["fault"] and c["fault"] != "delay":
            pending[key(c)] += 1
        elif c["status"] in (200, 204, 206):
            pending.pop(key(c), None)
    assert not pending, f"faulted calls never followed by a success: {dict(pending)}\n{calls}"


def retry_groups(calls, fault):
    """[(action, attempts)] of each operation that met FAULT and then succeeded, from the proxy's
    log: attempts = the faulted requests in a row + the one that went through."""
    pending, groups = Counter(), []
    for c in calls:
        if c["fault"] == fault:
            pending[c["action"]] += 1
        elif c["fault"] is None and pending[c["action"]]:
            groups.append((c["action"], pending.pop(c["action"]) + 1))
    return groups


@pytest.fixture
def pip_kit(netbench, tmp_path):
    """Requirements in S3 (a local wheel, --no-index) and a target dir for [install.pip]; pip
    in the master's namespace sees no config of the host's. (requirements URL, target dir)."""
    wheels, target = tmp_path / "wheels", tmp_path / "site-target"
    make_wheel(wheels, "ebtestpkg", "0.1")
    url = upload(netbench, REQ_KEY, f"--no-index\n--find-links {wheels}\nebtestpkg==0.1\n")
    netbench.master.env.update({"PIP_CONFIG_FILE": "/dev/null", "PIP_NO_CACHE_DIR": "1"})
    return url, target


# -- the reference: no fault -----------------------------------------------------------------------

def test_unfaulted_run_is_the_reference(netbench):
    """The run every faulted one is compared with: the state assert_converged() describes and
    the EC2 calls of UNFAULTED_EC2, none faulted."""
    nb = netbench
    run = converging_run(nb, [])
    assert all(c["fault"] is None for c in run.calls)
    assert [(c["method"], c["path"]) for c in run.s3()] == [("GET", f"/{nb.facts['bucket']}/{CONFIG_KEY}")]
    assert run.events("aws call retried") == []


# -- retried faults: the run converges --------------------------------------------------------------

def test_half_of_ec2_throttled_converges_and_logs_one_line_per_retried_attempt(netbench):
    """Half of the EC2 requests throttled: the run converges, and the retry log contract holds:
    each retried attempt logs "aws call retried" (service, operation, attempt, error), each
    operation that then succeeded "aws call succeeded after retries" (attempts, elapsed_ms);
    checked against what the proxy did. One test, as the run takes about two minutes."""
    run = converging_run(netbench, [{"service": "ec2", "fault": "throttle", "rate": 0.5, "seed": 1}],
                         timeout=THROTTLED_RUN_TIMEOUT, slow=True)

    ec2 = run.ec2()
    throttled = [c for c in ec2 if c["fault"] == "throttle"]
    assert throttled and all(c["status"] == 503 for c in throttled), ec2
    assert_each_fault_followed_by_success(ec2)
    assert all(c["fault"] is None for c in run.s3())

    retried = [e for e in run.events("aws call retried") if str(e.get("service")).lower() == "ec2"]
    assert len(retried) == len(throttled) > 0, (
        f"{len(throttled)} EC2 requests throttled, {len(retried)} 'aws call retried' lines for ec2:\n{run.stderr}")
    assert Counter(str(e.get("operation")).split(":")[-1] for e in retried) == \
        Counter(c["action"] for c in throttled), retried
    groups = retry_groups(run.ec2(), "throttle")
    # attempt: the number of the attempt about to be made (2 after one failure)
    assert sorted((str(e.get("operation")).split(":")[-1], int(e.get("attempt"))) for e in retried) == \
        sorted((action, n) for action, attempts in groups for n in range(2, attempts + 1)), retried
    succeeded = run.events("aws call succeeded after retries")
    assert sorted(int(e.get("attempts")) for e in succeeded) == sorted(n for _, n in groups), (succeeded, groups)
    assert all(int(e.get("elapsed_ms")) >= 0 for e in succeeded), succeeded
    # error: the service's error code, as the proxy sent it
    assert [e.get("error") for e in retried] == ["RequestLimitExceeded"] * len(retried), retried


def test_s3_slowdown_on_half_of_s3_requests(netbench, pip_kit):
    nb = netbench
    req_url, target = pip_kit
    # seed 7 draws throttle, throttle, pass, throttle, pass: both GETs meet SlowDown
    run = converging_run(nb, [{"service": "s3", "fault": "throttle", "rate": 0.5, "seed": 7}],
                         pip=(req_url, target), timeout=300)

    assert (target / "ebtestpkg" / "__init__.py").read_text() == '__version__ = "0.1"\n'
    assert phase(status(nb.master), "install")["outcome"] == "changed"
    s3 = run.s3()
    slowed = [c for c in s3 if c["fault"] == "throttle"]
    assert slowed and all(c["status"] == 503 for c in slowed), s3
    assert {c["path"] for c in slowed} == {f"/{nb.facts['bucket']}/{k}" for k in (CONFIG_KEY, REQ_KEY)}, s3
    assert_each_fault_followed_by_success(s3)


def test_500s_on_the_first_three_ec2_requests(netbench):
    run = converging_run(netbench, [{"service": "ec2", "fault": "error500", "first": 3}])

    ec2 = run.ec2()
    assert [(c["status"], c["fault"]) for c in ec2[:3]] == [(500, "error500")] * 3, ec2
    assert all(c["fault"] is None for c in ec2[3:]), ec2
    assert_each_fault_followed_by_success(ec2)


@pytest.mark.parametrize("seed", [8, 49])
def test_connection_resets_on_30_percent_of_requests(netbench, seed):
    """The proxy resets the connection (SO_LINGER 0) before answering. Inside the namespace
    emrboot reaches the proxy through socat, which turns the RST into a close without an
    answer: what a middlebox dropping the connection looks like."""
    run = converging_run(netbench, [{"fault": "reset", "rate": 0.3, "seed": seed}])

    resets = [c for c in run.calls if c["fault"] == "reset"]
    assert resets and all(c["status"] is None for c in resets), run.calls
    assert_each_fault_followed_by_success(run.calls)


@pytest.fixture
def host_master(node, moto, tmp_path):
    """A master node run on the host (no namespace, so only the tag phase), its AWS endpoint a
    countproxy of its own: the proxy's RST reaches emrboot itself. (Node, CountProxy)."""
    proxy = bench.start_countproxy(moto.url, tmp_path / "host-proxy")
    try:
        yield node("master-ig", extra_env={"AWS_ENDPOINT_URL": proxy.url}), proxy
    finally:
        proxy.stop()


def test_connection_resets_reaching_emrboot_directly(host_master, moto, aws):
    """The same 30 % of resets without socat in between: emrboot's own socket gets the RST."""
    n, proxy = host_master
    src = f"s3://{aws['bucket']}/{CONFIG_KEY}"
    s3_client(moto.url).put_object(Bucket=aws["bucket"], Key=CONFIG_KEY,
                                   Body=config_text(ip_takeover=False).encode())
    ec2 = bench._clients(moto.url, bench.REGION)[0]
    tag_desc = lambda: ec2.describe_tags(  # noqa: E731
        Filters=[{"Name": "resource-id", "Values": [aws["master"]["instance_id"]]}])["Tags"]
    tags_before = {t["Key"]: t["Value"] for t in tag_desc()}
    proxy.faults([{"fault": "reset", "rate": 0.3, "seed": 51}])

    run = run_emrboot(n, proxy, src)

    assert run.returncode == 0, run.stderr
    assert {t["Key"]: t["Value"] for t in tag_desc()} == \
        {**tags_before, **TAGS_SET, "Name": f"{SEED_NAME}-MASTER"}
    resets = [c for c in run.calls if c["fault"] == "reset"]
    assert resets and all(c["status"] is None for c in resets), run.calls
    assert forwarded(run.ec2()) == {"DescribeTags": 1, "CreateTags": 1}, run.ec2()
    assert_each_fault_followed_by_success(run.calls)
    assert phase(status(n), "tag")["outcome"] == "changed"


def test_two_seconds_of_latency_on_every_ec2_call(netbench):
    run = converging_run(netbench, [{"service": "ec2", "fault": "delay", "seconds": 2}])

    ec2 = run.ec2()  # slow is not failed: each call once, nothing retried
    assert ec2 and all(c["fault"] == "delay" and c["status"] == 200 for c in ec2), ec2
    assert run.wall >= 2 * len(ec2)


# -- not retried ---------------------------------------------------------------------------------

@pytest.mark.parametrize("status_code,code", [(400, "InvalidParameterValue"), (403, "UnauthorizedOperation")])
def test_a_4xx_on_create_tags_is_not_retried(netbench, status_code, code):
    nb, m = netbench, netbench.master
    cfg = m.root / "emrboot.toml"
    cfg.write_text(full_config(nb))
    tags_before = nb.instance_tags(m.instance_id)
    m.proxy.faults([{"service": "ec2", "action": "^CreateTags$", "fault": "error",
                     "status": status_code, "code": code}])

    run = run_master(nb, cfg)

    assert run.returncode == 1, f"exit {run.returncode}\n{run.stderr}"
    creates = [c for c in run.ec2() if c["action"] == "CreateTags"]
    assert [(c["status"], c["fault"]) for c in creates] == [(status_code, "error")], creates
    assert "CreateTags" in run.stderr and code in run.stderr, run.stderr
    assert "panicked" not in run.stderr
    assert not [e for e in run.events("aws call retried") if "CreateTags" in str(e.get("operation"))]
    assert nb.instance_tags(m.instance_id) == tags_before
    tag = phase(status(m), "tag")
    assert tag["outcome"] == "failed" and code in (tag.get("error") or ""), tag


# -- hung endpoints: bounded -----------------------------------------------------------------------

@pytest.mark.parametrize("action", [None, "^DescribeNetworkInterfaces$"], ids=["every-call", "one-call"])
def test_hung_ec2_ends_the_run_within_the_bound(netbench, action):
    nb = netbench
    cfg = nb.master.root / "emrboot.toml"
    cfg.write_text(full_config(nb))
    nb.master.proxy.faults([{"service": "ec2", "action": action, "fault": "hang"}])

    run = run_master(nb, cfg, env={"EMRBOOT_AWS_TIMEOUT_SECS": str(AWS_TIMEOUT_SECS)},
                     timeout=HANG_BOUND + 30)

    assert run.wall < HANG_BOUND, f"took {run.wall:.0f} s"
    assert run.returncode in (1, 2), f"exit {run.returncode}\n{run.stderr}"
    assert "panicked" not in run.stderr
    hung = {c["action"] for c in run.ec2() if c["fault"] == "hang"}
    assert hung, run.calls  # each released when emrboot gave up and closed its connection
    assert nb.master.proxy.held() == []
    # the failed phase's error names the call that hung
    failed = [r for r in run.records() if r.get("outcome") == "failed"]
    assert failed, run.stderr
    for r in failed:
        assert any(f"ec2:{a}" in r["message"] for a in hung), (hung, r)
    if action:  # only ip-takeover's call hung: the tags were still set
        assert hung == {"DescribeNetworkInterfaces"}
        assert nb.instance_tags(nb.master.instance_id)["Name"] == f"{SEED_NAME}-MASTER"
        assert {p: phase(status(nb.master), p)["outcome"] for p in ("tag", "ip-takeover")} == \
            {"tag": "changed", "ip-takeover": "failed"}


def test_hung_s3_config_fetch_ends_the_run_within_the_bound(netbench):
    nb = netbench
    src = upload(nb, CONFIG_KEY, full_config(nb))
    before = before_state(nb)
    nb.master.proxy.faults([{"service": "s3", "fault": "hang"}])

    run = run_master(nb, src, env={"EMRBOOT_AWS_TIMEOUT_SECS": str(AWS_TIMEOUT_SECS)},
                     timeout=HANG_BOUND + 30)

    assert run.wall < HANG_BOUND, f"took {run.wall:.0f} s"
    assert run.returncode == 2, f"exit {run.returncode}\n{run.stderr}"
    assert src in run.stderr, run.stderr
    assert "panicked" not in run.stderr
    assert [c["fault"] for c in run.s3()] and all(c["fault"] == "hang" for c in run.s3()), run.s3()
    assert run.ec2() == []  # nothing was done without the config
    assert before_state(nb) == before
