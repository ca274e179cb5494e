"""End to end: `[report]` and `emrboot cluster`, with several simulated nodes against one moto S3.

Each simulated node is the built binary with its own instance (created in moto), its own IMDS
emulator impersonating it, its own counting proxy (to hold or fail its AWS calls) and its own
info/state dirs. One node succeeds, one fails its checks, one is SIGKILLed while its CreateTags
is held, one is still running (held) when `cluster` looks.
"""
import json
import re
import signal
import subprocess
import time
from html.parser import HTMLParser

import pytest

import bench
from helpers import assert_no_crash
from node import EmrbootNode
from net_helpers import status

REPORT = "reports/"


class SimNode(EmrbootNode):
    def __init__(self, tmp, moto, aws, name, kind, instance_id, config_text):
        self.name, self.kind, self.instance_id = name, kind, instance_id
        self.label = name
        self.root = tmp / name
        self.imds = bench.start_imds(moto.url, instance_id, self.root / "imds")
        self.proxy = bench.start_countproxy(moto.url, self.root / "proxy")
        bench.write_info_files(self.root / "info", kind, aws)
        (self.root / "state").mkdir(parents=True)
        (self.root / "root" / "etc").mkdir(parents=True)
        self.config = self.root / "emrboot.toml"
        self.config.write_text(config_text)
        self.env = bench.node_env(self.proxy, self.imds, self.root / "info", self.root / "state",
                                  {"EMRBOOT_ROOT": str(self.root / "root")})
        self.procs = []

    def spawn(self, argv, env):
        """Kept, and killed by close() if the test leaves it running."""
        p = super().spawn(argv, env)
        self.procs.append(p)
        return p

    def run(self, *args, timeout=120):
        cp = super().run(*args, timeout=timeout)
        assert_no_crash(cp)
        return cp

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for s in (self.proxy, self.imds):
            s.stop()


def config(aws, prefix=REPORT, extra=""):
    return (f'[tags]\nname_suffix = "role"\n[tags.set]\nProject = "EMR-PRACTICE"\n{extra}\n'
            f'[report]\ns3 = "s3://{aws["bucket"]}/{prefix}"\n')


def new_instance(aws, moto):
    ec2 = bench._clients(moto.url, bench.REGION)[0]
    return ec2.run_instances(ImageId=bench.AMI, InstanceType="m5.xlarge", MinCount=1, MaxCount=1,
                             SubnetId=aws["subnet_id"])["Instances"][0]["InstanceId"]


@pytest.fixture
def sim(tmp_path, moto, aws):
    nodes = []

    def make(name, kind, instance_id=None, text=None):
        n = SimNode(tmp_path, moto, aws, name, kind, instance_id or new_instance(aws, moto),
                    text if text is not None else config(aws))
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.close()


def cluster(node, aws, *args, prefix=REPORT, timeout=120):
    return node.run("cluster", "--cluster-id", bench.JOB_FLOW_ID, "--report", f"s3://{aws['bucket']}/{prefix}",
                    *args, timeout=timeout)


def cluster_json(node, aws, *args, **kw):
    cp = cluster(node, aws, "--json", *args, **kw)
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    return doc, {n["instance_id"]: n for n in doc["nodes"]}


def hold_create_tags(node):
    node.proxy.faults([{"service": "ec2", "action": "^CreateTags$", "fault": "hold", "when": "before"}])


def test_cluster_shows_every_nodes_true_state(sim, aws, moto, tmp_path):
    ok = sim("master", "master-ig", aws["master"]["instance_id"])
    bad = sim("core", "core-ig", aws["core"]["instance_id"],
              config(aws, extra='[install]\ntimezone = "No/Such_Zone"\n'))
    killed, running = sim("task1", "task-ig"), sim("task2", "task-ig")

    assert ok.run("run", "--config", ok.config).returncode == 0
    assert bad.run("run", "--config", bad.config).returncode == 2
    hold_create_tags(killed)
    k = killed.start("run", "--config", killed.config)
    killed.proxy.wait_held(1)
    k.send_signal(signal.SIGKILL)
    k.wait()
    killed.proxy.clear_faults()
    time.sleep(6)  # the killed node's last update ages past --lost-after 4
    hold_create_tags(running)
    r = running.start("run", "--config", running.config)
    running.proxy.wait_held(1)

    doc, by = cluster_json(ok, aws, "--lost-after", "4")
    assert set(by) == {ok.instance_id, bad.instance_id, killed.instance_id, running.instance_id}, by.keys()
    assert by[ok.instance_id]["state"] == "ok" and by[ok.instance_id]["role"] == "MASTER"
    assert by[bad.instance_id]["state"] == "failed" and by[bad.instance_id]["phase"] == "install", by[bad.instance_id]
    assert "No/Such_Zone" in by[bad.instance_id]["error"]
    assert (by[killed.instance_id]["state"], by[killed.instance_id]["phase"]) == ("lost", "tag"), by[killed.instance_id]
    assert (by[running.instance_id]["state"], by[running.instance_id]["phase"]) == ("running", "tag")
    assert by[ok.instance_id]["group"] == bench.GROUPS["Master"]
    assert by[ok.instance_id]["record"]["cluster_id"] == bench.JOB_FLOW_ID
    s = doc["summary"]
    assert s["by_role"]["MASTER"] == {"ok": 1} and s["by_role"]["TASK"] == {"lost": 1, "running": 1}, s
    groups = {f["error"]: f["instances"] for f in s["failures"]}
    assert any("No/Such_Zone" in e and v == [bad.instance_id] for e, v in groups.items()), groups
    assert "tag" in s["phases"] and s["phases"]["tag"]["n"] >= 1, s
    # the failed run's record carries its last log lines
    assert by[bad.instance_id]["record"]["log_tail"], by[bad.instance_id]["record"]

    text = cluster(ok, aws, "--lost-after", "4")
    assert text.returncode == 0, text.stderr
    for inst, state in ((ok.instance_id, "ok"), (bad.instance_id, "failed"), (killed.instance_id, "lost"),
                        (running.instance_id, "running")):
        line = [ln for ln in text.stdout.splitlines() if ln.startswith(inst)]
        assert len(line) == 1 and f" {state} " in line[0], text.stdout

    # --wait while a node runs: 2 after its timeout
    w = cluster(ok, aws, "--wait", "--timeout", "3", "--lost-after", "60")
    assert w.returncode == 2, (w.returncode, w.stderr)
    running.proxy.clear_faults()
    out, err = r.communicate(timeout=120)
    assert r.returncode == 0, err
    # every node finished, one failed, one lost: 1
    w = cluster(ok, aws, "--wait", "--timeout", "60", "--lost-after", "4")
    assert w.returncode == 1, (w.returncode, w.stdout, w.stderr)

    # the page: a row per node, a bar per started phase, nothing fetched from anywhere
    page = tmp_path / "cluster.html"
    assert cluster(ok, aws, "--html", page, "--lost-after", "4").returncode == 0
    rows, bars, refs = parse_page(page.read_text())
    assert set(rows) == set(by), rows
    for inst, n in by.items():
        started = [p["phase"] for p in n["record"]["run"]["phases"] if p.get("started_at")]
        assert sorted(bars.get(inst, [])) == sorted(started), (inst, bars.get(inst), started)
    assert refs == [], refs


def test_wait_is_0_when_every_node_succeeded_and_2_short_of_expect(sim, aws):
    a = sim("master", "master-ig", aws["master"]["instance_id"], config(aws, prefix="ok/"))
    assert a.run("run", "--config", a.config).returncode == 0
    w = cluster(a, aws, "--wait", "--timeout", "30", prefix="ok/")
    assert w.returncode == 0, (w.stdout, w.stderr)
    w = cluster(a, aws, "--wait", "--timeout", "2", "--expect", "2", prefix="ok/")
    assert w.returncode == 2, (w.stdout, w.stderr)


def test_wait_fetches_only_the_records_that_changed_since_its_last_poll(sim, aws):
    """--wait polls; at 500 nodes most records are the same from one poll to the next, so each
    poll lists (ListObjectsV2) and GETs only the objects whose ETag changed."""
    done = sim("master", "master-ig", aws["master"]["instance_id"], config(aws, prefix="poll/"))
    held = sim("task", "task-ig", text=config(aws, prefix="poll/"))
    assert done.run("run", "--config", done.config).returncode == 0
    hold_create_tags(held)
    r = held.start("run", "--config", held.config)
    held.proxy.wait_held(1)
    done.proxy.clear()
    done.env = {**done.env, "EMRBOOT_CLUSTER_POLL_SECS": "1"}
    w = cluster(done, aws, "--wait", "--timeout", "5", prefix="poll/")
    assert w.returncode == 2, (w.returncode, w.stderr)  # the held node never finishes
    s3 = [c for c in done.proxy.calls() if c["service"] == "s3" and c["method"] == "GET"]
    lists = [c for c in s3 if c["path"].split("?")[0] == f"/{aws['bucket']}/"]  # ListObjectsV2
    gets = [c["path"] for c in s3 if c["path"].split("?")[0].endswith(".json")]
    assert len(lists) >= 3, s3
    assert len(gets) == 2 and len(set(gets)) == 2, f"unchanged records fetched again on a poll: {gets}"
    # the held node's state was read all the same, on every poll
    assert "running" in w.stdout and held.instance_id in w.stdout, w.stdout
    held.proxy.clear_faults()
    assert held.finish(r)[0] == 0


def test_wait_fetches_again_a_record_whose_get_failed(sim, aws):
    """A GET that failed (here a 403 on the first one; throttling or a 5xx past the SDK's
    retries alike) is not kept: the next poll fetches that record again, and the wait ends."""
    a = sim("master", "master-ig", aws["master"]["instance_id"], config(aws, prefix="flaky/"))
    assert a.run("run", "--config", a.config).returncode == 0
    a.proxy.faults([{"service": "s3", "method": "GET", "path": r"\.json$", "fault": "error", "status": 403,
                     "code": "AccessDenied", "first": 1}])
    a.proxy.clear()
    a.env = {**a.env, "EMRBOOT_CLUSTER_POLL_SECS": "1"}
    w = cluster(a, aws, "--wait", "--timeout", "30", prefix="flaky/")
    assert w.returncode == 0, (w.returncode, w.stdout, w.stderr)
    gets = [c for c in a.proxy.calls() if c["method"] == "GET" and c["path"].split("?")[0].endswith(".json")]
    assert [c["status"] for c in gets] == [403, 200], gets


@pytest.mark.parametrize("fault", [
    {"fault": "error", "status": 403, "code": "AccessDenied", "message": "Access Denied"},
    {"fault": "error500"},
    {"fault": "hang"},
], ids=["denied", "failing", "hung"])
def test_report_failures_change_nothing_about_the_run(sim, aws, fault):
    n = sim("master", "master-ig", aws["master"]["instance_id"])
    n.proxy.faults([{"service": "s3", "method": "PUT", **fault}])
    cp = n.run("run", "--config", n.config)
    n.proxy.clear_faults()
    assert cp.returncode == 0, cp.stderr
    st = status(n)
    assert st["state"] == "ok" and st.get("report_error"), st
    assert cp.stderr.count("cannot publish this node's record") == 1, cp.stderr
    assert n.run("status").returncode == 0
    ec2 = bench._clients(n.env["AWS_ENDPOINT_URL"], bench.REGION)[0]
    tags = {t["Key"]: t["Value"] for t in
            ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [n.instance_id]}])["Tags"]}
    assert tags.get("Project") == "EMR-PRACTICE", tags  # the run's work was done


def test_without_report_nothing_is_published(sim, aws):
    n = sim("master", "master-ig", aws["master"]["instance_id"],
            '[tags]\nname_suffix = "role"\n[tags.set]\nProject = "EMR-PRACTICE"\n')
    assert n.run("run", "--config", n.config).returncode == 0
    assert [c for c in n.proxy.calls() if c["service"] == "s3"] == []


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.bars, self.refs, self.cur = [], {}, [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href", "action"):
            if k in a:
                self.refs.append((tag, k, a[k]))
        if tag in ("script", "link", "img", "iframe"):
            self.refs.append((tag,))
        cls = (a.get("class") or "").split()
        if "node" in cls:
            self.cur = a["data-instance"]
            self.rows.append(self.cur)
        if "bar" in cls:
            self.bars.setdefault(self.cur, []).append(a["data-phase"])


def parse_page(text):
    p = _Page()
    p.feed(text)
    refs = p.refs + (["url("] if "url(" in text else [])
    return p.rows, p.bars, refs


CHROMIUM_OWN = r"^(GET|POST|CONNECT) (https?://)?[a-z0-9.-]*(google\.com|googleapis\.com|gvt1\.com|gstatic\.com)[:/]"


class _Listener:
    """A TCP listener counting connections: chromium's proxy, so any request the page makes
    (to any host) lands here."""

    def __init__(self):
        import socket
        import threading
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.targets = []
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            c.settimeout(2)
            try:
                self.targets.append(c.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace"))
            except OSError:
                pass
            c.close()

    def close(self):
        self.sock.close()


def chromium(args, page, tmp, timeout=120):
    """Headless Debian chromium on PAGE with every request sent to a counting proxy."""
    exe = "/usr/bin/chromium"
    import os
    if not os.path.exists(exe):
        pytest.fail("no /usr/bin/chromium: tests/bench/setup.sh installs Debian's chromium", pytrace=False)
    proxy = _Listener()
    try:
        cp = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             f"--user-data-dir={tmp / 'chromium-profile'}", f"--proxy-server=127.0.0.1:{proxy.port}",
                             "--proxy-bypass-list=<-loopback>", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync", "--disable-features=Translate,MediaRouter",
                             *args, page.as_uri()], capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    finally:
        proxy.close()
    return cp, proxy.targets


@pytest.mark.parametrize("n", [3, 500])
def test_the_page_in_a_real_browser(sim, aws, moto, tmp_path, n):
    import cluster_records
    a = sim("master", "master-ig", aws["master"]["instance_id"])
    s3 = bench._clients(moto.url, bench.REGION)[1]
    failed, running = {1}, {2}
    ids = cluster_records.put_records(s3, aws["bucket"], "synthetic/", bench.JOB_FLOW_ID, n,
                                      failed=failed, running=running)
    page = tmp_path / f"cluster-{n}.html"
    cp = cluster(a, aws, "--html", page, prefix="synthetic/")
    assert cp.returncode == 0, cp.stderr
    shot = tmp_path / f"cluster-{n}.png"
    dom, requests = chromium(["--dump-dom", "--virtual-time-budget=2000"], page, tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows, bars, refs = parse_page(dom.stdout)
    assert sorted(rows) == sorted(ids), (len(rows), len(ids))
    assert refs == [], refs
    doc, by = cluster_json(a, aws, prefix="synthetic/")
    for inst, node in by.items():
        started = [p["phase"] for p in node["record"]["run"]["phases"] if p.get("started_at")]
        assert sorted(bars.get(inst, [])) == sorted(started), inst
    failed_bars = dom.stdout.count('data-outcome="failed"')
    assert failed_bars == len(failed), failed_bars
    shot_cp, shot_requests = chromium([f"--screenshot={shot}", "--window-size=1400,1800", "--hide-scrollbars"],
                                      page, tmp_path)
    assert shot_cp.returncode == 0 and shot.stat().st_size > 10_000, shot_cp.stderr[-2000:]
    # The proxy (on loopback: nothing leaves the machine) sees chromium's own service traffic
    # (its clock check to clients2.google.com, component updates), never a request of the page.
    page_requests = [r for r in requests + shot_requests if not re.search(CHROMIUM_OWN, r)]
    assert page_requests == [], page_requests
    keep = bench.REPO / ".bench" / "screenshots"
    keep.mkdir(parents=True, exist_ok=True)
    (keep / shot.name).write_bytes(shot.read_bytes())  # for a person to look at


def test_release_ip_publishes_over_the_runs_record(sim, aws):
    n = sim("master", "master-ig", aws["master"]["instance_id"])
    assert n.run("run", "--config", n.config).returncode == 0
    cp = n.run("release-ip")
    assert cp.returncode == 0, cp.stderr
    _, by = cluster_json(n, aws)
    rec = by[n.instance_id]["record"]
    assert rec["release"]["exit_code"] == 0 and rec["run"]["exit_code"] == 0, rec
    assert by[n.instance_id]["state"] == "ok" and by[n.instance_id]["released"] is True


def test_on_a_node_cluster_needs_no_flags(sim, aws):
    """The cluster id from job-flow.json, the report location from the config copy run kept."""
    n = sim("master", "master-ig", aws["master"]["instance_id"])
    assert n.run("run", "--config", n.config).returncode == 0
    cp = n.run("cluster", "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["cluster_id"] == bench.JOB_FLOW_ID and [x["instance_id"] for x in doc["nodes"]] == [n.instance_id]
    bad = n.run("cluster", "--cluster-id", "not-a-cluster")
    assert bad.returncode == 2 and "--cluster-id" in bad.stderr, bad.stderr
