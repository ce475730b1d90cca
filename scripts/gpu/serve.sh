#!/usr/bin/env bash
# Issue 23 on the GPU machine: tokbench's OpenAI-compatible server against `transformers serve`
# (continuous batching), on the same weights (one exported synthetic checkpoint with a word-level
# tokenizer, `export-weights --word-tokenizer`), the same prompts and the same load, each driven by
# tokbench's load generator (`tokbench sweep --local --mode serve --endpoint`). The servers run one
# after the other, never together.
#   PACK=i23 bash scripts/gpu/serve.sh
# Packs: .gpu/$PACK/{tokbench-worker,tokbench}.xz; .gpu/wheels/*.whl: what `transformers serve`
# needs beyond the GPU machine's torch venv (fastapi, uvicorn, openai, ...), installed with
# --no-deps into /tmp/serve-py only when missing there.
# Knobs: SERVE_MODEL (catalog name), SERVE_DTYPE, SERVE_IN/SERVE_OUT (tokens), SERVERS ("tokbench
# transformers"; also tokbench-eager, tokbench-gathered: tokbench's other decode paths), TB_RATES /
# TB2_RATES (the other tokbench paths) / HF_RATES (req/s lists), TB_N / TB2_N / HF_N (requests per
# level), SLO.
set -uo pipefail
ROOT=$PWD
PACK=${PACK:-i23}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PY:-/opt/torch/.venv/bin/python3}; command -v $PY >/dev/null || PY=python3
B=${BIN_DIR:-/tmp/tb-$PACK}; mkdir -p $B
for f in tokbench-worker tokbench; do
  [ -x $B/$f ] || { { xz -dc .gpu/$PACK/$f.xz 2>/dev/null || $PY -c "import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)" .gpu/$PACK/$f.xz; } > $B/$f; chmod +x $B/$f; }
done
MODEL=${SERVE_MODEL:-llama-3.2-1b}; DT=${SERVE_DTYPE:-bf16}
IN=${SERVE_IN:-256}; OL=${SERVE_OUT:-128}
SLO=${SLO:-ttft:200 tpot:20}
W=/tmp/work-serve; mkdir -p $W; cd $W
log() { echo "=== $(date -u +%H:%M:%S) $*"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "build $(cat $ROOT/.gpu/$PACK/COMMIT 2>/dev/null)"

if ! $PY -c "import fastapi, uvicorn, openai, requests, accelerate" 2>/dev/null; then
  log "installing transformers serve's dependencies from .gpu/wheels into /tmp/serve-py"
  $PY -m pip install --quiet --no-deps --no-index --target /tmp/serve-py $ROOT/.gpu/wheels/*.whl 2>&1 | tail -2
  export PYTHONPATH=/tmp/serve-py${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -c "import transformers, torch; from transformers.utils.import_utils import is_serve_available as f; print('transformers', transformers.__version__, 'torch', torch.__version__, 'serve available:', f())"

M=$W/$MODEL
if [ ! -f $M/tokenizer.json ]; then
  log "export synthetic $MODEL weights + word-level tokenizer"
  $B/tokbench-worker export-weights --model $MODEL --out $M --word-tokenizer 2>&1 | tail -2
fi

wait_up() {  # URL PID: until the URL answers or the process dies (at most 300 s)
  for i in $(seq 1 300); do
    curl -sf -m 2 "$1" > /dev/null && return 0
    kill -0 $2 2>/dev/null || return 1
    sleep 1
  done; return 1
}
one() {  # URL NAME: one greedy completion, to compare the two servers' tokens on the same weights
  curl -s -m 120 $1/v1/completions -H 'content-type: application/json' \
    -d "{\"model\":\"$2\",\"prompt\":\"the quick brown fox jumps over the lazy dog\",\"max_tokens\":12,\"stream\":false}"
  echo
}

for server in ${SERVERS:-tokbench transformers}; do
  case $server in
  tokbench|tokbench-eager|tokbench-gathered)
    # tokbench: the default decode (paged attention kernel, CUDA graphs per batch bucket);
    # tokbench-eager: the same kernels launched one by one; tokbench-gathered: candle's ops over
    # KV blocks gathered per step (the path before the paged kernel).
    PORT=8100; NAME=$MODEL; RATES=${TB_RATES:-4,8,16,32,64,128}; N=${TB_N:-64}; EXTRA=""
    [ $server = tokbench-eager ] && { EXTRA="--cuda-graphs false"; RATES=${TB2_RATES:-$RATES}; N=${TB2_N:-$N}; }
    [ $server = tokbench-gathered ] && { EXTRA="--paged-attention false"; RATES=${TB2_RATES:-$RATES}; N=${TB2_N:-$N}; }
    $B/tokbench-worker serve-openai --model $M --weights real --dtype $DT --device ${SERVE_DEVICE:-cuda:0} --listen 127.0.0.1:$PORT \
      --served-model-name $NAME $EXTRA > server_$server.log 2>&1 & SP=$!
    ;;
  transformers)
    PORT=8200; NAME=$M; RATES=${HF_RATES:-2,4,8,16,32}; N=${HF_N:-32}
    HFDT=bfloat16; [ $DT = f16 ] && HFDT=float16; [ $DT = f32 ] && HFDT=float32
    $(dirname $PY)/transformers serve $M --continuous-batching --device ${SERVE_DEVICE:-cuda:0} --dtype $HFDT \
      --host 127.0.0.1 --port $PORT ${HF_SERVE_ARGS:-} > server_$server.log 2>&1 & SP=$!
    ;;
  esac
  rm -rf $W/plots_$server
  log "$server server (pid $SP) starting"
  T0=$(date +%s.%N)
  if ! wait_up http://127.0.0.1:$PORT/health $SP; then echo "$server server did not come up"; tail -20 server_$server.log; kill $SP 2>/dev/null; continue; fi
  echo "$server up after $(awk "BEGIN{print $(date +%s.%N) - $T0}") s"
  one http://127.0.0.1:$PORT $NAME | tee greedy_$server.json
  log "$server: load at $RATES req/s, $N requests each (+1 warm-up), synthetic $IN in / $OL out, SLO $SLO"
  timeout ${SWEEP_TIMEOUT:-300} $B/tokbench sweep --local --database $W/serve.db --out $W/plots_$server --mode serve \
    --endpoint http://127.0.0.1:$PORT --served-model $NAME local:$M --request-rate $RATES --num-prompts $N --warmup 1 \
    --input-len $IN --max-tokens $OL --stop-at-eos --goodput "$SLO" --label "$server" > sweep_$server.log 2>&1
  echo "sweep exit $?"; grep -E "req/s|succeeded|failed" sweep_$server.log | tail -12
  curl -s -m 5 http://127.0.0.1:$PORT/metrics 2>/dev/null | grep -E "^tokbench_decode_steps_total|^tokbench_num_preemptions_total"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader 2>/dev/null
  kill -INT $SP 2>/dev/null; sleep 3; kill -9 $SP 2>/dev/null; wait $SP 2>/dev/null
  tail -4 server_$server.log
done

log "summary"
SLO="$SLO" $PY - <<'EOF'
import glob, json, os
slo = dict(x.split(":") for x in os.environ["SLO"].split())
rows = []
for f in glob.glob("plots_*/serve_report_*.json"):
    d = json.load(open(f))
    for r in (d if isinstance(d, list) else d.get("runs", d.get("rows", []))):
        rows.append((f.split("/")[0][6:], r))
print("%-12s %6s %8s %5s %5s %9s %9s %9s %9s %10s %8s %9s" % ("server", "rate", "achieved", "done", "fail", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "out tok/s", "goodput", "late p99"))
best = {}
nan = float("nan")
st = lambda r, k, q: (r.get(k) or {}).get(q, nan)
for server, r in sorted(rows, key=lambda x: (x[0], float(x[1].get("request_rate") or 1e9))):
    print("%-12s %6s %8.2f %5d %5d %9.1f %9.1f %9.2f %9.2f %10.1f %8.2f %9.3f" % (server, r.get("request_rate"), r.get("achieved_request_rate") or nan, r.get("completed") or 0, r.get("failed") or 0,
          st(r, "ttft_ms", "median"), st(r, "ttft_ms", "p99"), st(r, "tpot_ms", "median"), st(r, "tpot_ms", "p99"), r.get("output_throughput") or nan, r.get("request_goodput") or 0, st(r, "arrival_error_ms", "p99")))
    ok = r.get("failed") == 0 and st(r, "ttft_ms", "p99") <= float(slo.get("ttft", 1e9)) and st(r, "tpot_ms", "p99") <= float(slo.get("tpot", 1e9))
    if ok:
        best[server] = max(best.get(server, 0.0), r.get("achieved_request_rate") or 0.0)
for s in sorted(set(x[0] for x in rows)):
    print("SATURATION %s: highest achieved rate with p99 TTFT and TPOT within %s: %s req/s" % (s, os.environ["SLO"], "%.2f" % best[s] if s in best else "none of the levels"))
if "tokbench" in best and best.get("transformers"):
    print("RATIO tokbench / transformers: %.2fx" % (best["tokbench"] / best["transformers"]))
EOF
cp -r $W/plots_* $W/*.log $W/greedy_*.json "$OUT"/ 2>/dev/null
cp $W/serve.db "$OUT"/ 2>/dev/null
ls "$OUT"
