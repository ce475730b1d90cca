#!/usr/bin/env bash
# Builds and installs tokbench's three binaries (tokbench, tokbench-worker with CUDA,
# tokbench-coordinator) into ~/.cargo/bin. One build runs on every NVIDIA GPU from Turing on:
# its kernels are PTX for compute 7.5, 8.0, 8.9 and 9.0, and a GPU runs the newest not newer
# than itself.
#
#   scripts/install-gpu.sh                       # for every GPU from Turing (7.5) on
#   CUDA_COMPUTE_CAP=86 scripts/install-gpu.sh   # for one capability only (a shorter build):
#                                                # 75 Turing, 80/86 Ampere, 89 Ada, 90 Hopper
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

if command -v nvidia-smi >/dev/null && gpu=$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>/dev/null | head -1) && [[ -n "$gpu" ]]; then
  log "GPU 0: $gpu"
else
  log "nvidia-smi found no GPU: building anyway (the binaries need the NVIDIA driver to run)"
fi
if [[ -n "${CUDA_COMPUTE_CAP:-}" ]]; then
  export CUDA_COMPUTE_CAP
  for cap in ${CUDA_COMPUTE_CAP//,/ }; do
    cap=${cap//./}
    if ! [[ "$cap" =~ ^[0-9]+$ ]] || (( cap < 75 )); then
      log "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP: each capability must be 75 (Turing) or newer, e.g. 75, 86 or 75,80,90"
      exit 1
    fi
  done
  target="compute ${CUDA_COMPUTE_CAP}"
else
  target="every GPU from compute 7.5 on (PTX for 7.5, 8.0, 8.9, 9.0)"
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

log "building for $target (a clean build takes 10-25 minutes on 2 cores)"
cargo install --locked --path worker --features cuda
cargo install --locked --path coordinator
cargo install --locked --path cli
# Where cargo install puts binaries: CARGO_INSTALL_ROOT, else CARGO_HOME, else ~/.cargo.
bindir="${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin"
log "installed into $bindir: tokbench, tokbench-worker, tokbench-coordinator"
"$bindir/tokbench-worker" doctor || true
