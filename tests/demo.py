"""`emrboot run` on a simulated EMR master (see tests/demo.sh): moto and the IMDS emulator on
loopback, the master in its own network namespace with the ENI's MAC and primary IP, a scratch
root for its files. Shows plan, run, a second run and status, then what changed, and removes
everything it made."""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
import bench  # noqa: E402
import netns  # noqa: E402


def show(node, *args):
    print(f"\n$ emrboot {' '.join(map(str, args))}", flush=True)
    cp = node.run(*args)
    sys.stdout.write(cp.stdout)
    sys.stdout.write(cp.stderr)
    print(f"(exit {cp.returncode})", flush=True)
    return cp


def main():
    with tempfile.TemporaryDirectory(prefix="emrboot-demo-") as d:
        d = Path(d)
        moto = bench.start_moto(d / "moto")
        try:
            facts = bench.seed(moto.url)
            nb = netns.NetBench.create(moto, facts, d / "net")
            try:
                m = nb.master
                zi = m.fs_root / "usr/share/zoneinfo/Asia"
                zi.mkdir(parents=True, exist_ok=True)
                host_zone = Path("/usr/share/zoneinfo/Asia/Seoul")
                if host_zone.is_file():
                    shutil.copy(host_zone, zi / "Seoul")
                else:
                    (zi / "Seoul").write_bytes(b"TZif2")
                cfg = d / "emrboot.toml"
                cfg.write_text(f"""[install]
timezone = "Asia/Seoul"

[tags]
name_suffix = "role"
[tags.set]
Project = "EMR-PRACTICE"
"Biz Unit" = "EMR-PRACTICE-CLUSTER"

[ip_takeover]
address = "{nb.fixed_ip}"
reserved_eni = "{nb.reserved_eni}"
""")
                print(f"simulated master {m.instance_id} in network namespace {m.ns}; config:\n{cfg.read_text()}")
                show(m, "validate", cfg)
                show(m, "role")
                show(m, "plan", "--config", cfg)
                m.clear_calls()
                show(m, "run", "--config", cfg)
                print("\nEC2 calls:", json.dumps(m.actions(), sort_keys=True))
                m.clear_calls()
                show(m, "run", "--config", cfg)
                print("\nEC2 calls on the second run:", json.dumps(m.actions(), sort_keys=True))
                show(m, "status")
                print(f"\nmoto: {nb.fixed_ip} on the master's ENI: {nb.fixed_ip in nb.eni_ips(m.eni_id)}")
                print(f"moto: tags {json.dumps(nb.instance_tags(m.instance_id), sort_keys=True)}")
                print(f"{m.ns}: ens5 {m.addresses()}")
                for chain in ("PREROUTING", "OUTPUT"):
                    print(f"{m.ns}: nat {chain} {m.nat_rules(chain)}")
                print(f"{m.fs_root}/etc/localtime -> {(m.fs_root / 'etc/localtime').readlink()}")
            finally:
                nb.close()
        finally:
            moto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
