#!/usr/bin/env bash
# Build the CUDA binaries on this (GPU-less) machine and pack them small for the GPU machine:
# .gpu/{tokbench-worker,tokbench-coordinator,tokbench,gpu_parity,gpu_decode}.xz (xz: half gzip's size, under the
# device tool's 64 MiB carry limit) + .gpu/nsys-libs/.
# (.gpu/ is git-ignored; pass it to the device call with carry=[".gpu"].) See docs/cuda.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(scripts/cuda-toolkit.sh)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-cuda}
cargo build --release -p tokbench-worker -p tokbench-coordinator -p tokbench-cli --features tokbench-worker/cuda
mkdir -p .gpu
for b in tokbench-worker tokbench-coordinator tokbench; do
  strip -o .gpu/$b "$CARGO_TARGET_DIR/release/$b"; xz -9ef -T2 .gpu/$b
done
# The CUDA-only tests (numerics, fused/graph decode), as executables.
for t in gpu_parity gpu_decode; do
  test_exe=$(cargo test --release -p tokbench-worker --features cuda --test $t --no-run --message-format=json 2>/dev/null \
    | T=$t python3 -c 'import sys,json,os
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["name"]==os.environ["T"]: print(m["executable"])' | tail -1)
  strip -o .gpu/$t "$test_exe"; xz -9ef -T2 .gpu/$t
done
# The standalone microbenchmark of the batch-1 decode step's kernels (bench/gemv_chain.cu).
nvcc -O3 -std=c++17 -arch=sm_90 -DTOKBENCH_PDL bench/gemv_chain.cu -o .gpu/gemv_chain && xz -9ef -T2 .gpu/gemv_chain
scripts/gpu/nsys-libs.sh .gpu/nsys-libs
git rev-parse HEAD > .gpu/COMMIT
ls -la .gpu
