#!/usr/bin/env bash
# `emrboot run` on a simulated EMR master: starts moto and the IMDS emulator (tests/bench),
# seeds an EMR-like VPC, puts the master in a network namespace with its ENI's MAC and IP,
# runs validate, role, plan, run, a second run and status (install's time zone on a scratch
# root, tag, ip-takeover, shutdown-hook), shows what changed, then removes everything it made.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tests/bench/setup.sh >/dev/null
cargo build --locked -q -p emrboot

exec .bench/venv/bin/python tests/demo.py
