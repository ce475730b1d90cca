#!/usr/bin/env bash
# CPU throughput of tokbench-worker vs HF transformers on torch, same architecture and workload
# (see scripts/bench_cpu_vs_torch.py). Not a test: prints tokens/s of both and their ratio.
#   PYTHON=/path/to/venv/bin/python scripts/bench-cpu.sh
# PYTHON needs torch + transformers (scripts/requirements-fixtures.txt; default: the fixtures venv
# /root/venvs/fixtures if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p tokbench-worker --bin tokbench-worker
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x /root/venvs/fixtures/bin/python ]]; then PYTHON=/root/venvs/fixtures/bin/python; else PYTHON=python3; fi
fi
TOKBENCH_WORKER="${TOKBENCH_WORKER:-$(cargo metadata --format-version 1 --no-deps | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/tokbench-worker}" \
    exec "$PYTHON" scripts/bench_cpu_vs_torch.py "$@"
