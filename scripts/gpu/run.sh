#!/usr/bin/env bash
# Runs on the GPU machine (device tool), from the repository root, with the packed binaries in
# .gpu/ (scripts/gpu/package.sh). Usage: scripts/gpu/run.sh STEP...   STEP: parity decode chain modes prefill epilogue bench
# nsys e2e profile oom hf hf-quick twogpu. Everything it makes goes to $OUT/results-<steps>.tgz, logs print.
set -uo pipefail
ROOT=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=/tmp/tb; mkdir -p $B
for f in tokbench-worker tokbench-coordinator tokbench gpu_parity gpu_decode gemv_chain; do
  # xz, or Python's lzma where xz is not installed
  [ -x $B/$f ] && [ $B/$f -nt .gpu/$f.xz ] && continue  # unpacked by an earlier call on this machine
  [ -f .gpu/$f.xz ] && { { xz -dc .gpu/$f.xz 2>/dev/null || python3 -c "import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)" .gpu/$f.xz; } > $B/$f; chmod +x $B/$f; }
  [ -f .gpu/$f.gz ] && { gunzip -c .gpu/$f.gz > $B/$f; chmod +x $B/$f; }
done
export PATH=$B:$PATH
NSYS=/opt/nvidia/nsight-compute/2025.3.1/host/target-linux-x64/nsys
NSYSLIB=$ROOT/.gpu/nsys-libs
PY=/opt/torch/.venv/bin/python3
W=/tmp/work; mkdir -p $W; cd $W
MODELS="opt-125m opt-350m opt-1.3b gpt2 gpt2-medium gpt2-large distilgpt2"
log() { echo "=== $(date -u +%H:%M:%S) $*"; }

# ttft_ab TAG FLAG ON OFF: TTFT p50 and engine peak memory of short benchmarks with the bench flag
# FLAG (a kernel option, e.g. --lt-epilogue) true (default) and false, side by side (files *_1 and
# *_0). PREFILL_SPECS: "model batch" pairs separated by commas.
ttft_ab() {
  local tag=$1 flag=$2 on=$3 off=$4
  IFS=, read -ra SPECS <<< "${PREFILL_SPECS:-opt-125m 1,gpt2 1,opt-1.3b 1,opt-125m 32,gpt2 32,opt-1.3b 8,opt-1.3b 32}"
  for spec in "${SPECS[@]}"; do set -- $spec; for v in 1 0; do
    local val=true; [ $v = 0 ] && val=false
    tokbench-worker bench --model $1 --weights synthetic --device cuda:0 --dtype f16 --batch-size $2 --num-prompts $2 $flag $val \
      --input-len 128 --max-tokens 8 --warmup 1 --repetitions 5 --json ${tag}_$1_b$2_$v.json --quiet 2> ${tag}_$1_b$2_$v.err \
      || { echo "FAILED $1 b$2 $flag $val"; tail -5 ${tag}_$1_b$2_$v.err; }
  done; done
  TAG=$tag ON=$on OFF=$off $PY - <<'PYEOF'
import json,glob,os
tag,on,off=os.environ["TAG"],os.environ["ON"],os.environ["OFF"]
print(f"{'model':9s} {'bs':>3s} {'TTFT p50 ms '+on:>22s} {off:>9s} {off+'/'+on:>17s} {'peak MiB '+on:>18s} {off:>9s}")
for f in sorted(glob.glob(f"{tag}_*_1.json")):
    g=f[:-len("_1.json")]+"_0.json"
    if not os.path.exists(g): continue
    a=json.load(open(f)); b=json.load(open(g))
    ta=a["inference_metrics"]["ttft_ms"]["p50"]; tb=b["inference_metrics"]["ttft_ms"]["p50"]
    ma=a["gpu_metrics"].get("engine_peak_allocated_mb") or 0; mb=b["gpu_metrics"].get("engine_peak_allocated_mb") or 0
    print(f"{a['model']:9s} {a['workload']['batch_size']:3d} {ta:22.2f} {tb:9.2f} {tb/ta:16.2f}x {ma:18.0f} {mb:9.0f}")
PYEOF
}

nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu --format=csv > gpu.csv 2>&1; cat gpu.csv
echo "commit $(cat $ROOT/.gpu/COMMIT 2>/dev/null)"

for step in "$@"; do case $step in
parity)
  log "f16/bf16 GPU vs f32 CPU logits"
  TOKBENCH_REPO=$ROOT gpu_parity --nocapture --test-threads 1 2>&1 | tee parity.log | grep -E "GPU_PARITY|test result|panicked|FAILED" ;;
decode)
  # The f32 tests run every kernel variant themselves (KernelOptions in code): the defaults (GEMV
  # at 1 row, arena, PDL on Hopper), cuBLAS instead of the GEMV (gemv_max_rows 0), no PDL, and
  # the GEMV up to 8 rows.
  log "fused / CUDA-graph decode vs candle eager decode (tokens): defaults and the f32 kernel variants"
  gpu_decode --nocapture --test-threads 1 2>&1 | tee decode.log | grep -E "GPU_DECODE|test result|panicked|FAILED|WARN" ;;
chain)
  log "the batch-1 decode step's kernels alone (bench/gemv_chain.cu): opt-1.3b, then gpt2"
  gemv_chain 2>&1 | tee chain_opt-1.3b.log
  gemv_chain 12 768 3072 50257 12 2>&1 | tee chain_gpt2.log ;;
modes)
  log "decode paths side by side: gpt2 and opt-1.3b, f16, 128 in / 128 out, batch 1 and 32"
  # graph: the default (CUDA graph, GEMV at 1 row, PDL on Hopper); nopdl: --pdl false;
  # cublas: --gemv-max-rows 0 (cuBLAS + separate norm/bias kernels); fused: no graph; eager: candle ops.
  for m in ${MODES_MODELS:-gpt2 opt-1.3b}; do for bs in ${MODES_BATCHES:-1 32}; do for mode in ${MODES:-graph nopdl cublas fused}; do
    case $mode in
      gemv8) FLAGS="--decode graph --gemv-max-rows 8" ;;
      nopdl) FLAGS="--decode graph --pdl false" ;;
      cublas) FLAGS="--decode graph --gemv-max-rows 0" ;;
      cublas-nopdl) FLAGS="--decode graph --gemv-max-rows 0 --pdl false" ;;
      *) FLAGS="--decode $mode" ;;
    esac
    tokbench-worker bench --model $m --weights synthetic --device cuda:0 --dtype f16 --batch-size $bs --num-prompts $bs $FLAGS \
      --input-len 128 --max-tokens 128 --warmup 1 --repetitions 5 --json modes_${m}_b${bs}_$mode.json --quiet 2> modes_${m}_b${bs}_$mode.err \
      || { echo "FAILED $m b$bs $mode"; tail -5 modes_${m}_b${bs}_$mode.err; }
  done; done; done
  $PY - <<'PYEOF'
import json,glob
print(f"{'model':9s} {'bs':>3s} {'mode':6s} {'path':11s} {'ttft ms':>8s} {'step ms':>8s} {'tok/s':>9s} {'engine MiB':>10s} {'need MiB':>8s}")
for f in sorted(glob.glob("modes_*.json")):
    r=json.load(open(f)); im=r["inference_metrics"]; gm=r["gpu_metrics"]
    print(f"{r['model']:9s} {r['workload']['batch_size']:3d} {f.split('_')[-1][:-5]:6s} {im.get('decode_path',''):11s} {im['ttft_ms']['p50']:8.2f} {im['inter_token_latency_ms']['p50']:8.3f} {im['tokens_per_second']:9.1f} {gm.get('engine_peak_allocated_mb') or 0:10.0f} {gm.get('workload_memory_needed_mb') or 0:8.0f}")
PYEOF
  ;;
prefill)
  log "prefill attention fused (default) vs unfused (--fused-prefill-attention false): TTFT, f16, 128-token prompts"
  ttft_ab pa --fused-prefill-attention fused unfused ;;
epilogue)
  log "prefill GEMMs with bias/activation/residual in cuBLASLt's epilogue (default) vs cuBLAS + bias kernels (--lt-epilogue false): TTFT, f16, 128-token prompts"
  ttft_ab lt --lt-epilogue cublaslt separate ;;
kern)
  log "where a decode step and a prefill spend GPU time (nsys, fused path without graph so each kernel shows)"
  # KERN_SPECS: "model batch max_tokens" triples separated by commas; KERN_TAG names the outputs;
  # KERN_FLAGS go to the bench command, e.g. "--gemv-max-rows 0" or "--pdl false" (no PDL keeps
  # kernel times free of early-start waits).
  IFS=, read -ra SPECS <<< "${KERN_SPECS:-gpt2 1 32,opt-1.3b 1 32,opt-1.3b 32 2}"
  for spec in "${SPECS[@]}"; do set -- $spec; K=kern_$1_b$2${KERN_TAG:+_$KERN_TAG}
    LD_LIBRARY_PATH=$NSYSLIB $NSYS profile -o $K --force-overwrite true -t cuda,nvtx -s none --cpuctxsw=none \
      tokbench-worker bench --decode fused ${KERN_FLAGS:-} --model $1 --weights synthetic --device cuda:0 --dtype f16 --batch-size $2 --num-prompts $2 --input-len 128 --max-tokens $3 \
      --warmup 1 --repetitions 2 --json $K.json --quiet > $K.log 2>&1
    echo "--- $1 batch $2, 128 in / $3 out ${KERN_TAG:-}: kernels by total GPU time"
    LD_LIBRARY_PATH=$NSYSLIB $NSYS stats --force-export=true --format csv --report cuda_gpu_kern_sum --output - $K.nsys-rep 2>/dev/null > $K.csv
    $PY -c "
import csv,io
lines=open('$K.csv').read().splitlines()  # nsys prints progress lines before the CSV header
start=[i for i,l in enumerate(lines) if l.startswith('Time (%)')][:1]
rows=list(csv.DictReader(io.StringIO(chr(10).join(lines[start[0]:])))) if start else []
tot=sum(float(r['Total Time (ns)']) for r in rows)
print(f'total kernel time {tot/1e6:.2f} ms')
for r in rows[:${KERN_ROWS:-18}]: print(f\"{float(r['Time (%)']):5.1f}% {float(r['Total Time (ns)'])/1e6:8.2f} ms {int(r['Instances']):6d} x {float(r['Avg (ns)'])/1e3:7.2f} us  {r['Name'][:90]}\")
"
  done ;;
ncu)
  log "Nsight Compute on the decode GEMV (opt-1.3b batch 1, f16; 4 launches after 200)"
  ncu --clock-control none -k "regex:${NCU_KERNEL:-gemv_small_m1}" -s 200 -c 4 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats --section LaunchStats \
    tokbench-worker bench --decode fused --pdl false --model opt-1.3b --weights synthetic --device cuda:0 --dtype f16 --batch-size 1 --num-prompts 1 \
    --input-len 128 --max-tokens 8 --warmup 0 --repetitions 1 --json ncu_bench.json --quiet > ncu_gemv.txt 2>&1
  grep -E "gemv_small|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Grid Size|Stall|Warp Cycles Per Issued|L2 Hit|Mem Busy|Max Bandwidth" ncu_gemv.txt | head -80 ;;
bench)
  log "standalone bench of the seven models (f16, synthetic, 128 in / 128 out, batch 1 and 32)"
  for m in $MODELS; do for bs in 1 32; do
    tokbench-worker bench --model $m --weights synthetic --device cuda:0 --dtype f16 --batch-size $bs --num-prompts $bs \
      --input-len 128 --max-tokens 128 --warmup 1 --repetitions 3 --json bench_${m}_b${bs}.json --quiet 2> bench_${m}_b${bs}.err \
      || { echo "FAILED $m b$bs"; tail -5 bench_${m}_b${bs}.err; }
  done; done
  $PY - <<'PYEOF'
import json,glob
print(f"{'model':12s} {'bs':>3s} {'load s':>7s} {'ttft ms':>8s} {'itl ms':>7s} {'tok/s':>9s} {'cv%':>5s} {'peak MiB':>9s} {'alloc MiB':>9s} {'weights MiB':>11s}")
for f in sorted(glob.glob("bench_*.json")):
    r=json.load(open(f)); im=r["inference_metrics"]; gm=r["gpu_metrics"]
    print(f"{r['model']:12s} {r['workload']['batch_size']:3d} {im['model_load_time_seconds']:7.2f} {im['ttft_ms']['p50']:8.2f} {im['inter_token_latency_ms']['p50']:7.3f} {im['tokens_per_second']:9.1f} {100*im['tokens_per_second_cv']:5.1f} {gm['peak_memory_allocated_mb'] or 0:9.0f} {gm['gpu_memory_allocated_mb'] or 0:9.0f} {r['model_properties']['model_size_mb']:11.1f}")
PYEOF
  ;;
nsys)
  log "the demo's workflow: nsys profile of tokbench-worker bench"
  LD_LIBRARY_PATH=$NSYSLIB $NSYS profile -o profile_facebook_opt-125m --force-overwrite true -t cuda,nvtx -s none --cpuctxsw=none \
    tokbench-worker bench --model opt-125m --device cuda:0 --weights synthetic --json nsys_bench.json --quiet > nsys_profile.log 2>&1
  tail -3 nsys_profile.log; ls -la profile_facebook_opt-125m.* 
  for r in nvtx_sum cuda_gpu_kern_sum cuda_gpu_mem_time_sum cuda_api_sum; do
    LD_LIBRARY_PATH=$NSYSLIB $NSYS stats --force-export=true --format csv --report $r --output - profile_facebook_opt-125m.nsys-rep > nsys_$r.csv 2> nsys_$r.err
  done
  LD_LIBRARY_PATH=$NSYSLIB $NSYS stats --force-export=true --report nvtx_sum profile_facebook_opt-125m.nsys-rep 2>/dev/null | head -30
  $PY -c "import json;r=json.load(open('nsys_bench.json'));im=r['inference_metrics'];print('worker inference time (median s):',im['total_inference_time_seconds'],'reps:',[x['total_inference_time_seconds'] for x in r['repetitions']])"
  ;;
e2e)
  log "coordinator + CUDA worker + sweep of the seven models"
  rm -f tb.db*
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu,power.draw --format=csv -lms 100 > smi.csv 2>/dev/null & SMI=$!
  tokbench-coordinator --listen 127.0.0.1:50051 --database tb.db > coordinator.log 2>&1 & CO=$!
  sleep 1
  tokbench-worker serve --coordinator http://127.0.0.1:50051 --device cuda:0 --nsys $NSYS --nsys-libs $NSYSLIB > worker.log 2>&1 & WK=$!
  tokbench sweep $MODELS --batch-sizes 1,32 --input-len 128 --max-tokens 128 --repetitions 3 --dtype f16 --weights synthetic --backend cuda --label h100-e2e > sweep.log 2>&1
  tail -25 sweep.log
  tokbench report --latest --out plots > report.log 2>&1; tail -15 report.log
  tokbench export --out export > export.log 2>&1; tail -3 export.log
  tokbench runs --json > runs.json 2>/dev/null
  tokbench workers > workers.log 2>&1; cat workers.log
  kill $SMI; sleep 0.5
  ;;
profile)
  log "profiled jobs through the service"
  tokbench sweep opt-125m gpt2 --batch-sizes 1 --input-len 128 --max-tokens 32 --repetitions 2 --dtype f16 --weights synthetic --backend cuda --profile --label profiled > sweep_profile.log 2>&1
  tail -12 sweep_profile.log
  tokbench report --latest --out plots_profile > report_profile.log 2>&1; tail -8 report_profile.log
  for run in $(tokbench runs --json 2>/dev/null | $PY -c "import sys,json;d=json.load(sys.stdin);rs=d if isinstance(d,list) else d.get('runs',[]);print(' '.join((r.get('summary') or r).get('run_id','') for r in rs[:2]))"); do
    tokbench artifact get $run --out artifacts/ 2>&1 | tail -2
  done
  ls -la artifacts/ 2>/dev/null
  ;;
twogpu)
  log "two GPUs: a second worker on cuda:1 beside the one on cuda:0, one sweep"
  if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
    tokbench-worker serve --coordinator http://127.0.0.1:50051 --device cuda:1 --nsys $NSYS --nsys-libs $NSYSLIB > worker1.log 2>&1 & WK1=$!
    sleep 2
    tokbench sweep opt-125m opt-350m gpt2 gpt2-medium distilgpt2 opt-1.3b --batch-sizes 1,32 --input-len 128 --max-tokens 128 --repetitions 3 --dtype f16 --weights synthetic --backend cuda --label two-gpus > sweep_2gpu.log 2>&1
    tail -16 sweep_2gpu.log
    tokbench workers 2>&1 | tail -5
    tokbench report --latest --group-by gpu --out plots_2gpu > report_2gpu.log 2>&1; tail -6 report_2gpu.log
    tokbench runs --sweep latest --json > runs_2gpu.json 2>/dev/null
    $PY -c "import json,collections;d=json.load(open('runs_2gpu.json'));rs=d if isinstance(d,list) else d.get('runs',[]);print('runs per device:',collections.Counter((r.get('summary') or r).get('device') for r in rs))"
  else echo "only one GPU here"; fi ;;
stop)
  kill $WK $CO 2>/dev/null; sleep 1 ;;
oom)
  log "out of GPU memory: the process reports needed vs free and survives"
  tokbench-worker bench --model opt-1.3b --weights synthetic --device cuda:0 --batch-size 1024 --num-prompts 1024 --input-len 1024 --max-tokens 1024 --repetitions 1 --json oom.json 2>&1 | tail -3; echo "exit code $?"
  ;;
hf-quick)
  log "tokbench vs transformers (quick)"
  BENCH_QUICK=1 BENCH_REPS=5 TOKBENCH_WORKER=$B/tokbench-worker $PY $ROOT/bench/gpu_vs_hf.py hf 2>&1 | grep -vE "^ROW|Warning|warn" | tail -20 ;;
hf)
  log "tokbench vs transformers (full)"
  BENCH_REPS=5 TOKBENCH_WORKER=$B/tokbench-worker $PY $ROOT/bench/gpu_vs_hf.py hf 2>&1 | grep -vE "^ROW|Warning|warn" | tail -25 ;;
esac; done

kill %1 %2 %3 2>/dev/null
[ -f $W/profile_facebook_opt-125m.nsys-rep ] && cp $W/profile_facebook_opt-125m.nsys-rep "$OUT/"
cd /tmp && tar czf "$OUT/results-$(echo "$@" | tr ' ' '-').tgz" --exclude='*.safetensors' --exclude='weights' --exclude='*.nsys-rep' --exclude='*.sqlite' --exclude='*.qdstrm' -C /tmp work 2>/dev/null
ls -la "$OUT"
