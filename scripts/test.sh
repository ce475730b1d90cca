#!/usr/bin/env bash
# Runs every test of the workspace (unit, integration, end-to-end on loopback) on the CPU.
# Binaries are built first because the integration tests start real worker and coordinator
# processes from target/debug/. Ends with one summary line over all test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/check-module-cycles.py
cargo build --workspace --bins --locked
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
