#!/usr/bin/env bash
# The rotary families on the GPU machine (device tool), from the repository root, with a packed
# build in .gpu/$PACK (default i18: tokbench-worker, gpu_parity, gpu_decode, tokbench,
# tokbench-coordinator as .xz; see scripts/gpu/package.sh for how they are built).
# Usage: scripts/gpu/families.sh STEP...   STEP: tests bench profile
#   tests    f16/bf16 logits against CPU f32 (gpu_parity) and CUDA greedy decode (gpu_decode)
#   bench    llama-3.2-1b and qwen3-0.6b at batch 1 and 32, 128 in / 128 out, f16, synthetic weights:
#            tokbench with the CUDA-graph decode (default) and candle's eager ops (--decode eager),
#            then transformers generate() on each graph run's workload (scripts/gpu/hf_vs_tokbench.py)
#   profile  coordinator + CUDA worker + profiled sweep of smollm2-135m qwen3-0.6b llama-3.2-1b, report
set -uo pipefail
ROOT=$PWD
PACK=${PACK:-i18}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=/tmp/tb-$PACK; mkdir -p $B
for f in tokbench-worker tokbench-coordinator tokbench gpu_parity gpu_decode; do
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
tests)
  log "gpu_parity"
  TOKBENCH_REPO=$ROOT $B/gpu_parity --nocapture --test-threads 1 2>&1 | grep -E "GPU_PARITY|^test |test result|panicked|FAILED"
  log "gpu_decode"
  $B/gpu_decode --nocapture --test-threads 1 2>&1 | grep -E "GPU_DECODE|^test |test result|panicked|FAILED"
  ;;
bench)
  cd $W
  for m in llama-3.2-1b qwen3-0.6b; do for bs in 1 32; do for mode in graph eager; do
    log "$m b$bs $mode"
    tokbench-worker bench --model $m --weights synthetic --device cuda:0 --dtype f16 --batch-size $bs --num-prompts $bs \
      --input-len 128 --max-tokens 128 --warmup 1 --repetitions 3 --decode $mode --json ${m}_b${bs}_${mode}.json --quiet 2> ${m}_b${bs}_${mode}.err \
      || { echo "FAILED $m b$bs $mode"; tail -5 ${m}_b${bs}_${mode}.err; }
    $PY -c "import json,sys;r=json.load(open(sys.argv[1]));im=r['inference_metrics'];g=r['gpu_metrics'];print('TOKBENCH',sys.argv[1],'tok/s %.1f TTFT p50 %.2f ms ITL p50 %.3f ms decode_path %s peak %.0f MiB params %d' % (im['tokens_per_second'],im['ttft_ms']['p50'],im['inter_token_latency_ms']['p50'],im.get('decode_path'),g.get('peak_memory_allocated_mb') or 0,r['model_properties']['total_parameters']))" ${m}_b${bs}_${mode}.json
  done; done; done
  log "transformers on the same workloads"
  $PY $ROOT/scripts/gpu/hf_vs_tokbench.py *_graph.json
  cp *.json "$OUT"/ 2>/dev/null
  cd $ROOT
  ;;
profile)
  cd $W; rm -f tb.db*
  tokbench-coordinator --listen 127.0.0.1:50061 --database tb.db > coordinator.log 2>&1 & CO=$!
  sleep 1
  tokbench-worker serve --coordinator http://127.0.0.1:50061 --device cuda:0 ${NSYS:+--nsys $NSYS} --nsys-libs $ROOT/.gpu/nsys-libs > worker.log 2>&1 & WK=$!
  log "profiled sweep of three rotary-family models"
  tokbench --coordinator http://127.0.0.1:50061 sweep ${PROFILE_MODELS:-smollm2-135m qwen3-0.6b llama-3.2-1b} --batch-sizes 1 --input-len 128 --max-tokens 32 \
    --repetitions 2 --dtype f16 --weights synthetic --backend cuda --profile --label families-profiled > sweep.log 2>&1
  tail -15 sweep.log
  tokbench --coordinator http://127.0.0.1:50061 report --latest --out plots > report.log 2>&1; tail -12 report.log
  tokbench --coordinator http://127.0.0.1:50061 artifact list > artifacts.log 2>&1; head -12 artifacts.log
  kill $WK $CO; sleep 0.5
  tar czf "$OUT/families-profile.tgz" plots sweep.log report.log artifacts.log worker.log 2>/dev/null
  cd $ROOT
  ;;
*) echo "unknown step $step"; exit 2;;
esac; done
