#!/usr/bin/env bash
# Coordinator overhead benchmark (not a test): jobs/s and queued->leased latency with 1 and 16
# workers, on this machine. See coordinator/examples/overhead.rs for what is measured.
#   scripts/coordinator-overhead.sh                 # null engine (queue only), 1024 jobs
#   ENGINE=real JOBS=128 scripts/coordinator-overhead.sh  # real engine: tiny-opt/tiny-gpt2, 8-token prompt, 1 token, cold load per job
#   ENGINE=real REUSE=1 JOBS=512 scripts/coordinator-overhead.sh  # real engine, tiny-opt kept loaded across jobs (--reuse-model)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -p tokbench-coordinator --example overhead -- \
  --jobs "${JOBS:-1024}" --workers "${WORKERS:-1,16}" --engine "${ENGINE:-null}" ${REUSE:+--reuse-model}
