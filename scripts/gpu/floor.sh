#!/usr/bin/env bash
# Issue 21 on the GPU machine: the rotary families' decode step against the memory floor, a new
# build against an old one in the same call.
#   PACK=i21 OLD=i19 bash scripts/gpu/floor.sh tests steps
# Packs: .gpu/$PACK/*.xz (new build: tokbench-worker, gpu_decode, gpu_parity), .gpu/$OLD/tokbench-worker.xz
# (the baseline build; OLD empty: none). Steps:
#   tests  gpu_parity and gpu_decode of the new build (numerics and decode-path equality on the GPU),
#          on the kernel paths of each of TEST_CAPS (native 75 80)
#   steps  per workload (STEP_WORKLOADS="model:dtype:batch:in:out ..."), old and new build interleaved
#          (NEW_ARGS: extra flags for the new build's runs, e.g. "--fused-rotary-prefill true"),
#          1 warm-up + 3 repetitions each: ITL p50 (the decode step, ms), tokens/s, TTFT p50, engine peak;
#          the floor = bytes a batch-1 step reads (weights, without an untied embedding table) / the
#          device-to-device copy rate measured in this call (read + write bytes per second).
#   profile  per-kernel GPU time of a batch-1 step under nsys (PROFILE_MODELS)
#   arch   the new build on the compute 7.5 / 8.0 / 9.0 kernel paths (--kernel-compute-cap), and bf16 refused on 7.5
#   hf     the new build against transformers (default cache, reused static cache): HF_WORKLOADS
#   doctor `tokbench-worker doctor` of the new build (the kernel paths this GPU gets)
#   small  the demo's 4 GB-card models (SMALL_MODELS: opt-1.3b gpt2-large) at batch 1 in f16: the
#          memory the check before loading computes, the engine's peak, and the process's peak
#          (NVML, CUDA context included) against a 4 GB card's 4096 MiB
set -uo pipefail
ROOT=$PWD
PACK=${PACK:-i21}
OLD=${OLD:-}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=/opt/torch/.venv/bin/python3; command -v $PY >/dev/null || PY=python3
unpack() {  # pack name -> directory with its binaries
  local d=/tmp/tb-$1; mkdir -p $d
  for f in tokbench-worker gpu_parity gpu_decode; do
    [ -x $d/$f ] && continue
    [ -f .gpu/$1/$f.xz ] && { { xz -dc .gpu/$1/$f.xz 2>/dev/null || $PY -c "import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)" .gpu/$1/$f.xz; } > $d/$f; chmod +x $d/$f; }
  done
  echo $d
}
B=$(unpack $PACK)
BO=""; [ -n "$OLD" ] && BO=$(unpack $OLD)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "new build $(cat .gpu/$PACK/COMMIT 2>/dev/null)${OLD:+; old build $(cat .gpu/$OLD/COMMIT 2>/dev/null)}"
log() { echo "=== $(date -u +%H:%M:%S) $*"; }
W=/tmp/work-floor; mkdir -p $W

for step in "$@"; do case $step in
tests)
  # TEST_CAPS: the kernel paths to run the tests on ("native" = the GPU's own; 75 / 80 force the
  # compute_75 / compute_80 builds of tokbench's kernels, JIT-compiled here: worker/tests/gpu_common).
  for cap in ${TEST_CAPS:-native}; do
    [ $cap = native ] && unset TOKBENCH_TEST_KERNEL_COMPUTE_CAP || export TOKBENCH_TEST_KERNEL_COMPUTE_CAP=$cap
    log "gpu_parity (kernel paths: $cap)"
    TOKBENCH_REPO=$ROOT timeout ${TEST_TIMEOUT:-200} $B/gpu_parity --nocapture --test-threads 1 2>&1 | tee $W/parity_$cap.log | grep -E "GPU_PARITY|GPU_TEST|^test |test result|panicked|FAILED|assert"
    log "gpu_decode (kernel paths: $cap)"
    timeout ${TEST_TIMEOUT:-200} $B/gpu_decode --nocapture --test-threads 1 2>&1 | tee $W/decode_$cap.log | grep -E "GPU_DECODE|GPU_TEST|^test |test result|panicked|FAILED|assert"
  done
  unset TOKBENCH_TEST_KERNEL_COMPUTE_CAP
  cp $W/parity_*.log $W/decode_*.log "$OUT"/ 2>/dev/null
  ;;
steps)
  BW=$($PY - <<'EOF'
import torch, statistics
n = 1 << 30
a = torch.empty(n, dtype=torch.uint8, device="cuda"); b = torch.empty_like(a); a.random_(0, 255)
for _ in range(3): b.copy_(a)
torch.cuda.synchronize(); ts = []
for _ in range(10):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); b.copy_(a); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e) / 1e3)
print("%.1f" % (2 * n / statistics.median(ts) / 1e9))
EOF
)
  log "device-to-device copy rate: $BW GB/s"
  for wl in ${STEP_WORKLOADS:-llama-3.2-1b:bf16:1:32:128 llama-3.2-1b:f16:1:32:128}; do
    IFS=: read -r m dt bs il ol <<< "$wl"
    for build in new old; do
      bin=$B; [ $build = old ] && { [ -n "$BO" ] || continue; bin=$BO; }
      j=$W/${m}_${dt}_b${bs}_${il}_${ol}_$build.json
      timeout 150 $bin/tokbench-worker bench --model $m --weights synthetic --device cuda:0 --dtype $dt --batch-size $bs --num-prompts $bs \
        --input-len $il --max-tokens $ol --warmup 1 --repetitions 3 --json $j --quiet $([ $build = new ] && echo ${NEW_ARGS:-}) 2> $j.err \
        || { echo "FAILED $wl $build"; tail -5 $j.err; continue; }
      BW=$BW $PY - "$j" "$wl" "$build" <<'EOF'
import json, os, sys
r = json.load(open(sys.argv[1])); im = r["inference_metrics"]; g = r["gpu_metrics"]; mp = r["model_properties"]
cfg = mp["config"]; el = 4 if mp["dtype"] == "f32" else 2
step_bytes = mp["model_size_mb"] * 2**20
if not cfg.get("tie_word_embeddings", False):
    step_bytes -= mp["vocab_size"] * mp["hidden_size"] * el  # the embedding table: one row read per token
floor_ms = step_bytes / (float(os.environ["BW"]) * 1e9) * 1e3
itl = im["inter_token_latency_ms"]["p50"]
print("STEP %-32s %-3s ITL p50 %.3f ms  floor %.3f ms  ratio %.3f  tok/s %.1f  TTFT p50 %.2f ms  peak %.0f MiB  needed %s MiB  process peak %s MiB  path %s  kernels %s" % (
    sys.argv[2], sys.argv[3], itl, floor_ms, itl / floor_ms, im["tokens_per_second"], im["ttft_ms"]["p50"],
    g.get("peak_memory_allocated_mb") or 0, g.get("workload_memory_needed_mb"), g.get("process_memory_peak_mb"), im.get("decode_path"), im.get("decode_kernels")))
EOF
    done
  done
  cp $W/*.json "$OUT"/ 2>/dev/null
  ;;
profile)
  # Per-kernel GPU time of the decode step (nsys, CUDA graph nodes traced): 1 pass, batch 1, 32/128.
  NSYS=$(ls /opt/nvidia/nsight-compute/*/host/target-linux-x64/nsys 2>/dev/null | tail -1)
  [ -n "$NSYS" ] || { echo "no nsys"; continue; }
  for m in ${PROFILE_MODELS:-qwen3-0.6b llama-3.2-1b}; do
    log "nsys $m"
    LD_LIBRARY_PATH=$ROOT/.gpu/nsys-libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} timeout 200 $NSYS profile --cuda-graph-trace=node --trace=cuda,nvtx \
      --force-overwrite true -o $W/prof_$m $B/tokbench-worker bench --model $m --weights synthetic --device cuda:0 --dtype f16 \
      --batch-size 1 --num-prompts 1 --input-len 32 --max-tokens 128 --warmup 1 --repetitions 1 --json $W/prof_$m.json --quiet > $W/prof_$m.log 2>&1 \
      || { echo "nsys failed"; tail -5 $W/prof_$m.log; continue; }
    LD_LIBRARY_PATH=$ROOT/.gpu/nsys-libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} $NSYS stats --report cuda_gpu_kern_sum --format csv -o $W/kern_$m $W/prof_$m.nsys-rep > /dev/null 2>&1
    $PY - $W/kern_${m}_cuda_gpu_kern_sum.csv $W/prof_$m.json <<'EOF'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
r = json.load(open(sys.argv[2])); im = r["inference_metrics"]
steps = 2 * 127  # warm-up + timed pass, 127 decode steps each
print("ITL p50 %.3f ms; per decode step (kernel time / %d steps):" % (im["inter_token_latency_ms"]["p50"], steps))
tot = 0.0
for x in rows[:14]:
    n, total, avg = int(x["Instances"]), float(x["Total Time (ns)"]), float(x["Avg (ns)"])
    tot += total
    print("  %-60s %6d launches  avg %7.2f us  %7.1f us/step" % (x["Name"][:60], n, avg / 1e3, total / steps / 1e3))
print("  top kernels sum %.1f us/step" % (tot / steps / 1e3))
EOF
    cp $W/kern_${m}_cuda_gpu_kern_sum.csv "$OUT"/ 2>/dev/null
  done
  ;;
arch)
  # The older GPUs' kernel paths on this GPU (--kernel-compute-cap: tokbench's compute_75 / compute_80
  # PTX, JIT-compiled here), a benchmark each, and bf16 refused on the 7.5 paths.
  for cap in 75 80 90; do
    j=$W/arch_$cap.json
    timeout 150 $B/tokbench-worker bench --model ${ARCH_MODEL:-llama-3.2-1b} --weights synthetic --device cuda:0 --dtype f16 --batch-size 1 --num-prompts 1 \
      --input-len 128 --max-tokens 128 --warmup 1 --repetitions 3 --kernel-compute-cap $cap --json $j --quiet 2> $j.err || { echo "FAILED cap $cap"; tail -5 $j.err; continue; }
    $PY -c "import json,sys; r=json.load(open(sys.argv[1])); im=r['inference_metrics']; print('ARCH %s: ITL p50 %.3f ms  TTFT p50 %.2f ms  tok/s %.1f  path %s  kernels: %s' % (sys.argv[2], im['inter_token_latency_ms']['p50'], im['ttft_ms']['p50'], im['tokens_per_second'], im.get('decode_path'), im.get('decode_kernels')))" $j $cap
  done
  timeout 100 $B/tokbench-worker bench --model ${ARCH_MODEL:-llama-3.2-1b} --weights synthetic --device cuda:0 --dtype bf16 --batch-size 1 --num-prompts 1 \
    --input-len 16 --max-tokens 4 --kernel-compute-cap 75 --quiet > /dev/null 2> $W/arch_bf16.err; echo "ARCH bf16 on the 7.5 paths: exit $? -- $(grep -m1 -i bf16 $W/arch_bf16.err)"
  ;;
hf)
  # tokbench against transformers' default cache and its reused static cache (the strongest
  # transformers setup measured so far), same exported weights and prompt ids: bench/gpu_vs_hf.py.
  TOKBENCH_WORKER=$B/tokbench-worker BENCH_REPS=${BENCH_REPS:-3} BENCH_ENGINES=${BENCH_ENGINES:-tokbench,hf_dynamic,hf_static_reuse} \
    BENCH_WORKLOADS=${HF_WORKLOADS:-llama-3.2-1b:bf16:1:32:128,qwen3-0.6b:bf16:1:32:128,llama-3.2-1b:bf16:32:128:128} \
    timeout ${HF_TIMEOUT:-500} $PY bench/gpu_vs_hf.py "$OUT/hf" 2>&1 | grep -vE "^\s*$|^[VIW][0-9]{4} " | tail -30 ;;
doctor)
  $B/tokbench-worker doctor 2>&1 | tee "$OUT/doctor.txt" ;;
small)
  for m in ${SMALL_MODELS:-opt-1.3b gpt2-large}; do
    j=$W/small_$m.json
    timeout 150 $B/tokbench-worker bench --model $m --weights synthetic --device cuda:0 --dtype f16 --batch-size 1 --num-prompts 1 \
      --input-len 128 --max-tokens 128 --warmup 1 --repetitions 3 --json $j --quiet 2> $j.err || { echo "FAILED $m"; tail -5 $j.err; continue; }
    $PY - $j $m <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); im = r["inference_metrics"]; g = r["gpu_metrics"]
proc = g.get("process_memory_peak_mb")
print("SMALL %s f16 b1 128/128: workload needs (weights + KV + logits) %s MiB, engine peak %.0f MiB, process peak (NVML) %s MiB -> %s a 4096 MiB card; ITL p50 %.3f ms, tok/s %.1f" % (
    sys.argv[2], g.get("workload_memory_needed_mb"), g.get("peak_memory_allocated_mb") or 0, proc,
    "fits" if proc and proc <= 4096 else "DOES NOT FIT" if proc else "unknown for", im["inter_token_latency_ms"]["p50"], im["tokens_per_second"]))
EOF
  done
  cp $W/small_*.json "$OUT"/ 2>/dev/null ;;
*) echo "unknown step $step"; exit 2;;
esac; done
