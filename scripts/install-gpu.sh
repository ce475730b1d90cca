#!/usr/bin/env bash
# Builds and installs tokbench's three binaries (tokbench, tokbench-worker with CUDA,
# tokbench-coordinator) into ~/.cargo/bin for the GPU of this machine.
#
#   scripts/install-gpu.sh                 # the GPU's compute capability from nvidia-smi
#   CUDA_COMPUTE_CAP=75 scripts/install-gpu.sh   # or say which (75 Turing, 80/86 Ampere, 89 Ada, 90 Hopper)
#
# Needs: the NVIDIA driver (580 or newer: the CUDA 13.0 runtime), Rust 1.85+ (rustup), gcc,
# libclang (the nvtx crate runs bindgen) and, when no CUDA toolkit (nvcc 12.x or 13.0) is
# installed, python3 with pip: the toolkit then comes from PyPI (scripts/cuda-toolkit.sh, ~1.3 GB
# in ~/.cache/cuda-pypi). The CUDA libraries the worker loads at run time (cuBLAS, cudart,
# cuRAND) are found through an rpath to that toolkit, so no LD_LIBRARY_PATH is needed.
# Ends with `tokbench-worker doctor`.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "install-gpu.sh: $*" >&2; }

command -v cargo >/dev/null || { log "cargo not found: install Rust with https://rustup.rs, then open a new shell"; exit 1; }
command -v cc >/dev/null || { log "no C compiler: sudo apt-get install -y build-essential"; exit 1; }
if ! ldconfig -p 2>/dev/null | grep -q 'libclang' && [[ -z "${LIBCLANG_PATH:-}" ]]; then
  log "libclang not found (the nvtx crate's bindgen needs it): sudo apt-get install -y libclang-dev, or set LIBCLANG_PATH"
  exit 1
fi

if [[ -z "${CUDA_COMPUTE_CAP:-}" ]]; then
  if command -v nvidia-smi >/dev/null && cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1) && [[ -n "$cap" ]]; then
    CUDA_COMPUTE_CAP=${cap//./}
    log "GPU 0: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), compute capability $cap"
  else
    log "nvidia-smi found no GPU: set CUDA_COMPUTE_CAP to your GPU's (e.g. 75, 80, 86, 89, 90) to build without one"
    exit 1
  fi
fi
export CUDA_COMPUTE_CAP
if (( CUDA_COMPUTE_CAP < 75 )); then
  log "compute capability ${CUDA_COMPUTE_CAP} is older than Turing (7.5), which tokbench needs"
  exit 1
fi

# A system CUDA toolkit (nvcc 12.x or 13.0) if there is one, else CUDA 13.0 from PyPI.
nvcc_bin=$(command -v nvcc || true)
[[ -z "$nvcc_bin" && -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]] && nvcc_bin="${CUDA_HOME:-/usr/local/cuda}/bin/nvcc"
nvcc_version=""
[[ -n "$nvcc_bin" ]] && nvcc_version=$("$nvcc_bin" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
if [[ "$nvcc_version" =~ ^(12\.[0-9]+|13\.0)$ ]]; then
  export CUDA_HOME=$(cd "$(dirname "$nvcc_bin")/.." && pwd)
  export PATH="$CUDA_HOME/bin:$PATH"
  log "using the CUDA $nvcc_version toolkit at $CUDA_HOME"
else
  [[ -n "$nvcc_version" ]] && log "nvcc $nvcc_version at $nvcc_bin is not 12.x or 13.0 (13.1+ emits PTX a 580 driver cannot load): using CUDA 13.0 from PyPI"
  eval "$(scripts/cuda-toolkit.sh)"
fi
libdir="$CUDA_HOME/lib64"; [[ -d "$libdir" ]] || libdir="$CUDA_HOME/lib"
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,$libdir"

log "building for compute ${CUDA_COMPUTE_CAP} (a clean build takes 10-25 minutes on 2 cores)"
cargo install --locked --path worker --features cuda
cargo install --locked --path coordinator
cargo install --locked --path cli
# Where cargo install puts binaries: CARGO_INSTALL_ROOT, else CARGO_HOME, else ~/.cargo.
bindir="${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin"
log "installed into $bindir: tokbench, tokbench-worker, tokbench-coordinator"
"$bindir/tokbench-worker" doctor || true
