#!/usr/bin/env bash
# Install the part of the CUDA 13.0 toolkit that `cargo build --features cuda` needs
# (candle-core 0.11 -> cudarc 0.19 + candle-kernels/cudaforge) from PyPI wheels into a cache
# folder, on a machine with no GPU and no CUDA installed. Prints `export` lines:
#
#   eval "$(scripts/cuda-toolkit.sh [CACHE_DIR])"   # default CACHE_DIR: ~/.cache/cuda-pypi
#   cargo build --release --features cuda
#
# CUDA_COMPUTE_CAP is left as it is: unset, the build has kernels for every GPU from Turing (7.5)
# on; set (90, or 75,80), for those capabilities only (third_party/candle-kernels).
# Idempotent: a finished install with the same package list is reused. Progress goes to
# stderr, only `export` lines go to stdout. Needs python3 -m pip and gcc. Disk: about 1.3 GB.
#
# Why 13.0 and not 12.x: a driver 580 supports CUDA <= 13.0, and PyTorch 2.11
# there ships cu13 libraries (libcublas.so.13 ...), which the binary then uses at run time.
# The nvidia-cuda-nvcc-cu12 wheels (12.9.86) contain only ptxas/libnvvm, no `nvcc`, so 12.x
# cannot be built from PyPI anyway. Newer nvcc (13.1+) emits PTX the 580 driver cannot JIT.
#
# The versions pinned below are the ones PyTorch 2.11.0+cu130 depends on (cuBLAS 13.1.0.3,
# cudart 13.0.96, NVRTC 13.0.88, cuRAND 10.4.0.35); they are only linked against here.
# The driver library is replaced at link time by a generated stub lib/stubs/libcuda.so
# (SONAME libcuda.so.1); the real one comes with the driver on the GPU machine.
set -euo pipefail

CACHE_DIR="${1:-${CUDA_PYPI_CACHE:-$HOME/.cache/cuda-pypi}}"
log() { echo "cuda-toolkit.sh: $*" >&2; }

PKGS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
      nvidia-curand==10.4.0.35 nvidia-cublas==13.1.0.3)

WHEELS="$CACHE_DIR/wheels-13.0"
ROOT="$CACHE_DIR/cuda-13.0"
STAMP="$ROOT/.complete"
WANT="${PKGS[*]}"

if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  command -v gcc >/dev/null || { log "gcc is needed (apt-get install gcc)"; exit 1; }
  mkdir -p "$CACHE_DIR"
  rm -rf "$WHEELS" "$ROOT"
  log "installing ${PKGS[*]} into $WHEELS"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
      --target "$WHEELS" "${PKGS[@]}" >&2
  # The cu13 wheels all unpack into nvidia/cu13/{bin,include,lib,nvvm}: one CUDA root.
  # Hard-link it into $ROOT so that the pip tree stays untouched.
  mkdir -p "$ROOT"
  for sub in bin include lib nvvm; do
    mkdir -p "$ROOT/$sub"
    cp -alf "$WHEELS/nvidia/cu13/$sub/." "$ROOT/$sub/"
  done
  ln -sfn lib "$ROOT/lib64"
  # Unversioned names for the linker (-lcublas -lcublasLt -lcurand -lnvrtc -lcudart)
  for f in "$ROOT"/lib/lib*.so.*; do
    b=$(basename "$f"); base="${b%%.so.*}"
    [[ "$b" == *.alt.* || "$b" == *builtins* ]] && continue
    [[ -e "$ROOT/lib/$base.so" ]] || ln -s "$b" "$ROOT/lib/$base.so"
  done
  # Link-time stub for the driver library: every cu* function name in cuda.h, raw and after
  # macro expansion (cuMemAlloc -> cuMemAlloc_v2 ...).
  mkdir -p "$ROOT/lib/stubs"
  echo '#include <cuda.h>' > "$ROOT/lib/stubs/h.c"
  { grep -ohE '\bcu[A-Z][A-Za-z0-9_]*' "$ROOT/include/cuda.h"
    gcc -E -I"$ROOT/include" "$ROOT/lib/stubs/h.c" | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[ ]*\(' | tr -d ' ('
  } | sort -u | awk '{print "void " $1 "(void) {}"}' > "$ROOT/lib/stubs/libcuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$ROOT/lib/stubs/libcuda.so" "$ROOT/lib/stubs/libcuda_stub.c"
  rm -f "$ROOT/lib/stubs/h.c"
  "$ROOT/bin/nvcc" --version | tail -2 >&2
  echo "$WANT" > "$STAMP"
fi

# The `nvtx` crate (2.x) runs bindgen at build time: it needs libclang and clang's headers
# (Debian: apt-get install libclang1-14 libclang-common-14-dev, or libclang-dev).
if ! ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang-*.so* >/dev/null 2>&1; then
  log "note: no libclang found; the nvtx crate will not build (apt-get install libclang-dev)"
fi

cat <<EOT
export CUDA_ROOT="$ROOT"
export CUDA_PATH="$ROOT"
export CUDA_HOME="$ROOT"
export CUDA_TOOLKIT_ROOT_DIR="$ROOT"
export NVCC="$ROOT/bin/nvcc"
export PATH="$ROOT/bin:\$PATH"
export LIBRARY_PATH="$ROOT/lib:$ROOT/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
EOT
