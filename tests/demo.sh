#!/usr/bin/env bash
# `emrboot run` on a simulated EMR master: starts moto and the IMDS emulator (tests/bench),
# seeds an EMR-like VPC, writes the node's info files, runs plan, run, a second run and status
# against a scratch root, then stops everything it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"

bash tests/bench/setup.sh >/dev/null
cargo build --locked -q -p emrboot
EMRBOOT="$REPO/target/debug/emrboot"

D="$(mktemp -d /tmp/emrboot-demo.XXXXXX)"
BENCH_PID=""
cleanup() {
    [[ -n "$BENCH_PID" ]] && kill "$BENCH_PID" 2>/dev/null && wait "$BENCH_PID" 2>/dev/null
    rm -rf "$D"
}
trap cleanup EXIT

.bench/venv/bin/python tests/bench/bench.py up --dir "$D/bench" --role master >"$D/bench.log" 2>&1 &
BENCH_PID=$!
for _ in $(seq 1 150); do
    [[ -f "$D/bench/env" ]] && break
    kill -0 "$BENCH_PID" 2>/dev/null || { cat "$D/bench.log"; exit 1; }
    sleep 0.2
done
[[ -f "$D/bench/env" ]] || { echo "bench did not start"; cat "$D/bench.log"; exit 1; }
# shellcheck disable=SC1091
source "$D/bench/env"

# The node's file system: a scratch root, never this machine's own /etc.
export EMRBOOT_ROOT="$D/root"
mkdir -p "$EMRBOOT_ROOT/etc" "$EMRBOOT_ROOT/usr/share/zoneinfo/Asia"
cp /usr/share/zoneinfo/Asia/Seoul "$EMRBOOT_ROOT/usr/share/zoneinfo/Asia/Seoul" 2>/dev/null \
    || printf 'TZif2' >"$EMRBOOT_ROOT/usr/share/zoneinfo/Asia/Seoul"

cat >"$D/emrboot.toml" <<TOML
[install]
timezone = "Asia/Seoul"
TOML

show() { printf '\n$ emrboot %s\n' "$*"; "$EMRBOOT" "$@"; }
show validate "$D/emrboot.toml"
show role
show plan --config "$D/emrboot.toml"
show run --config "$D/emrboot.toml"
printf '\n%s/etc/localtime -> %s\n' "$EMRBOOT_ROOT" "$(readlink "$EMRBOOT_ROOT/etc/localtime")"
show run --config "$D/emrboot.toml"
show status
