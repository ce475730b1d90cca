#!/usr/bin/env bash
# Issue 23's `--profile` on the GPU machine, through the service: tokbench-coordinator, a CUDA
# `tokbench-worker serve` with nsys, and `tokbench sweep --mode serve --profile` of one load level
# of tokbench's own server (the worker runs `nsys profile ... tokbench-worker serve-openai` in a
# child for the level), beside the same level unprofiled (nsys's overhead), then the report, the
# run's nsight summary and its .nsys-rep fetched back with `tokbench artifact get`.
#   PACK=i26 bash scripts/gpu/serve-profile.sh
# Packs: .gpu/$PACK/{tokbench-worker,tokbench,tokbench-coordinator}.xz; .gpu/nsys-libs
# (scripts/gpu/nsys-libs.sh). Knobs: PROF_MODEL, PROF_DTYPE, PROF_RATE (req/s), PROF_N (requests),
# PROF_IN/PROF_OUT (tokens).
set -uo pipefail
ROOT=$PWD
PACK=${PACK:-i26}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PY:-/opt/torch/.venv/bin/python3}; command -v $PY >/dev/null || PY=python3
B=${BIN_DIR:-/tmp/tb-$PACK}; mkdir -p $B
for f in tokbench-worker tokbench tokbench-coordinator; do
  [ -x $B/$f ] || { { xz -dc .gpu/$PACK/$f.xz 2>/dev/null || $PY -c "import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)" .gpu/$PACK/$f.xz; } > $B/$f; chmod +x $B/$f; }
done
export PATH=$B:$PATH
NSYS=${NSYS:-$(ls -d /opt/nvidia/nsight-compute/*/host/target-linux-x64/nsys 2>/dev/null | sort -V | tail -1)}
NSYSLIB=$ROOT/.gpu/nsys-libs
MODEL=${PROF_MODEL:-llama-3.2-1b}; DT=${PROF_DTYPE:-bf16}
RATE=${PROF_RATE:-32}; N=${PROF_N:-256}; IN=${PROF_IN:-256}; OL=${PROF_OUT:-128}
W=/tmp/work-serve-profile; rm -rf $W; mkdir -p $W; cd $W
log() { echo "=== $(date -u +%H:%M:%S) $*"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "build $(cat $ROOT/.gpu/$PACK/COMMIT 2>/dev/null); nsys $NSYS"

tokbench-coordinator --listen 127.0.0.1:50051 --database serve.db > coordinator.log 2>&1 & CO=$!
sleep 1
tokbench-worker serve --coordinator http://127.0.0.1:50051 --device ${PROF_DEVICE:-cuda:0} --nsys $NSYS --nsys-libs $NSYSLIB > worker.log 2>&1 & WK=$!
sleep 2
COMMON=(--mode serve --request-rate $RATE --num-prompts $N --warmup 8 --input-len $IN --max-tokens $OL --dtype $DT --weights synthetic --backend ${PROF_BACKEND:-cuda} --goodput "ttft:200 tpot:20" --seed 1)
log "$MODEL at $RATE req/s, unprofiled"
tokbench sweep $MODEL "${COMMON[@]}" --label serve-unprofiled > sweep_plain.log 2>&1; echo "exit $?"; tail -8 sweep_plain.log
log "$MODEL at $RATE req/s under nsys (--profile)"
tokbench sweep $MODEL "${COMMON[@]}" --profile --label serve-profiled > sweep_profiled.log 2>&1; echo "exit $?"; tail -8 sweep_profiled.log
log "runs, report, artifact"
tokbench runs --json > runs.json 2>runs.err; tail -2 runs.err
RUNS=$($PY -c "
import json; d=json.load(open('runs.json')); rs=d if isinstance(d,list) else d.get('runs',[])
print(' '.join((r.get('summary') or r).get('run_id','') for r in rs))")
echo "runs: $RUNS"
for run in $RUNS; do tokbench show $run --json > show_$run.json 2>&1; done
$PY - <<'PYEOF'
import json, glob
for f in sorted(glob.glob("show_*.json")):
    try: d = json.load(open(f))
    except Exception as e: print(f, "not json:", open(f).read()[:400]); continue
    r = d.get("report", d)
    s = r.get("serve") or {}
    m = s.get("metrics") or {}
    nm = r.get("nsight_metrics") or {}
    def g(k, q): return (m.get(k) or {}).get(q)
    print(f"{f}: label={d.get('label') or r.get('label')} endpoint={s.get('endpoint')}")
    print(f"  completed={m.get('completed')} failed={m.get('failed')} achieved={s.get('achieved_request_rate')} req/s "
          f"out_tok/s={m.get('output_throughput')} TTFT p50/p99={g('ttft_ms','median')}/{g('ttft_ms','p99')} TPOT p50/p99={g('tpot_ms','median')}/{g('tpot_ms','p99')} goodput={m.get('goodput') or m.get('request_goodput')}")
    print(f"  profile_file={nm.get('profile_file')} scope={nm.get('summary_scope')} notes={str(nm.get('notes'))[:200]}")
    for k in (nm.get("kernels") or [])[:10]:
        print(f"    {k.get('time_percent', 0):5.1f}%  {k.get('total_time_ns', 0) / 1e6:9.2f} ms  {k.get('instances')} x {k.get('avg_ns', 0) / 1e3:.2f} us  {k.get('category')}  {str(k.get('name'))[:90]}")
    for key in ("gpu_time_split", "nvtx"):
        if nm.get(key): print(f"  {key}:", json.dumps(nm.get(key))[:600])
PYEOF
for run in $RUNS; do tokbench artifact get $run --out artifacts/ 2>&1 | tail -2; done
ls -la artifacts/ 2>/dev/null
for rep in artifacts/*.nsys-rep; do
  [ -f "$rep" ] || continue
  log "nsys stats of the fetched $rep (graph nodes traced)"
  LD_LIBRARY_PATH=$NSYSLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} $NSYS stats --force-export=true --report cuda_gpu_kern_sum --format csv --output - "$rep" 2>/dev/null | head -12 | cut -c1-220
done
tokbench report --latest --out plots > report.log 2>&1; tail -12 report.log
kill $WK $CO 2>/dev/null; sleep 1
tail -5 worker.log
tar czf "$OUT/serve-profile.tgz" plots *.log runs.json show_*.json 2>/dev/null
ls -la "$OUT"
