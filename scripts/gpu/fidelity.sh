#!/usr/bin/env bash
# Issue 19's device checks (measurement fidelity), on the GPU machine (device tool), from the
# repository root, with a packed build in .gpu/$PACK (default i19: tokbench-worker, gpu_decode,
# profile as .xz; built like scripts/gpu/package.sh).
# Usage: scripts/gpu/fidelity.sh STEP...   STEP: profile decode memory hf
#   profile  the real nsys end to end (worker/tests/profile.rs real_nsys_end_to_end): gpt2 batch 1
#            profiled; the summary must cover the timed passes only, the top kernels must be the
#            decode step's, and the NVTX per-pass time must match the worker's within 1%
#   decode   gpu_decode: CUDA-graph/fused decode vs eager, and one capture per batch shape
#   memory   the memory figures (engine pools now/peak, NVML process, computed need) of a job
#            whose prompt count is not a multiple of the batch size, and of opt-1.3b batch 1
#   hf       bench/gpu_vs_hf.py: tokbench vs transformers (dynamic and static cache), interleaved
set -uo pipefail
ROOT=$PWD
PACK=${PACK:-i19}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=/tmp/tb-$PACK; mkdir -p $B
for f in tokbench-worker gpu_decode profile; do
  [ -x $B/$f ] && continue
  [ -f .gpu/$PACK/$f.xz ] && { { xz -dc .gpu/$PACK/$f.xz 2>/dev/null || python3 -c "import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)" .gpu/$PACK/$f.xz; } > $B/$f; chmod +x $B/$f; }
done
export PATH=$B:$PATH
PY=/opt/torch/.venv/bin/python3; command -v $PY >/dev/null || PY=python3
NSYS=$(ls /opt/nvidia/nsight-compute/*/host/target-linux-x64/nsys 2>/dev/null | tail -1)
W=/tmp/work-$PACK; mkdir -p $W
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "build $(cat .gpu/$PACK/COMMIT 2>/dev/null)"
log() { echo "=== $(date -u +%H:%M:%S) $*"; }

for step in "$@"; do case $step in
profile)
  log "real nsys end to end (gpt2 b1)"
  TOKBENCH_NSYS=$NSYS TOKBENCH_CUDA_WORKER=$B/tokbench-worker TOKBENCH_NSYS_LIBS=$ROOT/.gpu/nsys-libs \
    $B/profile --ignored real_nsys_end_to_end --nocapture 2>&1 | tee $W/profile.log | grep -E "PROFILE_E2E|^test |test result|panicked|assert" | head -40
  cp $W/profile.log "$OUT"/ ;;
decode)
  log "gpu_decode"
  $B/gpu_decode --nocapture --test-threads 1 2>&1 | grep -E "GPU_DECODE|^test |test result|panicked|FAILED" | tail -30 ;;
memory)
  cd $W
  for spec in "gpt2 4 10 128 64" "opt-1.3b 1 1 128 128" "llama-3.2-1b 8 20 512 64"; do set -- $spec
    log "memory $1 batch $2 prompts $3 in $4 out $5"
    tokbench-worker bench --model $1 --weights synthetic --device cuda:0 --dtype f16 --batch-size $2 --num-prompts $3 \
      --input-len $4 --max-tokens $5 --warmup 1 --repetitions 3 --json mem_$1_b$2.json 2> mem_$1_b$2.err \
      | grep -E "tokens per s|memory|engine memory" ; grep -iE "warn" mem_$1_b$2.err | head -3
    $PY -c "import json,sys;g=json.load(open(sys.argv[1]))['gpu_metrics'];print({k:g.get(k) for k in ['gpu_memory_allocated_mb','peak_memory_allocated_mb','gpu_memory_reserved_mb','process_memory_peak_mb','workload_memory_needed_mb']})" mem_$1_b$2.json
  done
  cp mem_*.json "$OUT"/ 2>/dev/null; cd $ROOT ;;
hf)
  log "tokbench vs transformers (dynamic + static cache)"
  # Written straight into $OUT (the JSON is rewritten after every workload), so a run cut short
  # by HF_TIMEOUT keeps its finished workloads.
  TOKBENCH_WORKER=$B/tokbench-worker BENCH_REPS=${BENCH_REPS:-3} BENCH_WORKLOADS=${HF_WORKLOADS:-gpt2:f16:1:128:32} \
    timeout ${HF_TIMEOUT:-500} $PY bench/gpu_vs_hf.py "$OUT/hf" 2>&1 | grep -vE "^\s*$" | tail -45 ;;
*) echo "unknown step $step"; exit 2;;
esac; done
