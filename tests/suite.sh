#!/usr/bin/env bash
# The whole test suite: lint, unit tests, the release build (static x86_64 + aarch64 binaries,
# RPMs), the fuzzers, then the release x86_64 binary against the test bench (moto, the IMDS
# emulator, network namespaces, the VM). Installs what it needs; safe on a fresh machine.
#   FUZZ_SECONDS=N  fuzz each parser N s (default 30 here; 0 skips the fuzzers)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }

step "bench setup"
bash tests/bench/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit)"
cargo test --workspace --locked

step "release build: packaging/build.sh --check-aarch64 (static musl x86_64 + aarch64, RPMs)"
# --check-aarch64: aarch64 unoptimised, to keep the suite in its time budget; a release omits it.
bash packaging/build.sh --check-aarch64

export FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
if [[ "$FUZZ_SECONDS" != 0 ]]; then
    step "fuzz the config and info-file parsers"
    bash tests/fuzz.sh
fi

step "bench tests (the release x86_64 binary against moto, IMDS emulator, netns, VM)"
export EMRBOOT_BIN="$PWD/dist/emrboot-x86_64"
export EMRBOOT_STATIC_BIN="$EMRBOOT_BIN"
# -n 3 (pytest-xdist): most bench tests wait on moto, timeouts, throttling or the VM rather
# than the CPU, so three workers on two cores take about a third of the serial time. Every
# fixture is safe for it: free ports, namespaces named by worker pid, chroot and stand-in
# builds under a file lock. --dist worksteal: an idle worker takes queued tests from a busy one,
# so the two-minute tests do not leave the run waiting on one worker at the end. --durations:
# the slowest tests in the log, for the time budget.
.bench/venv/bin/pytest tests -q -p no:cacheprovider -n 3 --dist worksteal --durations=30 "$@"
