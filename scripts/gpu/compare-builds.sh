#!/usr/bin/env bash
# Runs on the GPU machine (device tool) from the repository root: the same workloads with two
# builds of tokbench-worker, interleaved, in one call, so a refactor's "no change in speed" is
# measured on one card. .gpu/tokbench-worker.xz is the new build (scripts/gpu/package.sh),
# .gpu/old/tokbench-worker.xz the old one. Usage: scripts/gpu/compare-builds.sh [ROUNDS]
# Old builds took engine switches from TOKBENCH_* environment variables, new ones take flags;
# the "paths" part runs each non-default path both ways to show the flags reach the engine.
set -uo pipefail
ROOT=$PWD
ROUNDS=${1:-2}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=/tmp/cmp; mkdir -p $B
unpack() { { xz -dc "$1" 2>/dev/null || python3 -c "import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)" "$1"; } > "$2"; chmod +x "$2"; }
unpack .gpu/tokbench-worker.xz $B/new
unpack .gpu/old/tokbench-worker.xz $B/old
PY=/opt/torch/.venv/bin/python3; command -v $PY >/dev/null || PY=python3
W=/tmp/cmpwork; mkdir -p $W; cd $W
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "new $(cat $ROOT/.gpu/COMMIT 2>/dev/null)  old $(cat $ROOT/.gpu/old/COMMIT 2>/dev/null)"

# run TAG BUILD ENV FLAGS model batch in out
run() {
  local tag=$1 build=$2 envs=$3 flags=$4 m=$5 bs=$6 in=$7 out=$8
  env $envs $B/$build bench --model $m --weights synthetic --device cuda:0 --dtype f16 --batch-size $bs --num-prompts $bs \
    --input-len $in --max-tokens $out --warmup 1 --repetitions 5 $flags --json ${tag}.json --quiet 2> ${tag}.err \
    || { echo "FAILED $tag"; tail -5 ${tag}.err; }
}
for r in $(seq 1 $ROUNDS); do
  for spec in "gpt2 1 128 32" "gpt2 32 128 128" "opt-125m 32 128 128" "opt-1.3b 1 128 128" "opt-1.3b 32 128 128"; do
    set -- $spec
    # Alternate which build goes first, so warm-up order does not favour one.
    if [ $((r % 2)) = 1 ]; then order="old new"; else order="new old"; fi
    for b in $order; do run "default_${1}_b${2}_${3}x${4}_${b}_r$r" $b "" "" $1 $2 $3 $4; done
  done
done
# Non-default paths: old build by environment variable, new build by flag (gpt2 and opt-1.3b, batch 1).
for m in gpt2 opt-1.3b; do
  run "path_${m}_eager_old" old "TOKBENCH_DECODE=eager" "" $m 1 128 32
  run "path_${m}_eager_new" new "" "--decode eager" $m 1 128 32
  run "path_${m}_fused_old" old "TOKBENCH_DECODE=fused" "" $m 1 128 32
  run "path_${m}_fused_new" new "" "--decode fused" $m 1 128 32
  run "path_${m}_nogemv_old" old "TOKBENCH_GEMV=0" "" $m 1 128 32
  run "path_${m}_nogemv_new" new "" "--gemv-max-rows 0" $m 1 128 32
  run "path_${m}_nopdl_old" old "TOKBENCH_PDL=0" "" $m 1 128 32
  run "path_${m}_nopdl_new" new "" "--pdl false" $m 1 128 32
  run "path_${m}_noattn_old" old "TOKBENCH_PREFILL_ATTENTION=0" "" $m 1 128 32
  run "path_${m}_noattn_new" new "" "--fused-prefill-attention false" $m 1 128 32
  run "path_${m}_nolt_old" old "TOKBENCH_LT_EPILOGUE=0" "" $m 1 128 32
  run "path_${m}_nolt_new" new "" "--lt-epilogue false" $m 1 128 32
done
$PY - <<'PYEOF'
import json, glob, re, statistics, collections
def load(f):
    try: return json.load(open(f))
    except Exception: return None
print("\n== default paths: median over rounds of each run's median (f16, synthetic weights)")
print(f"{'workload':28s} {'tok/s old':>10s} {'new':>10s} {'new/old':>8s} {'TTFT p50 ms old':>16s} {'new':>7s} {'ITL p50 ms old':>15s} {'new':>7s}")
groups = collections.defaultdict(lambda: {"old": [], "new": []})
for f in glob.glob("default_*.json"):
    m = re.match(r"default_(.+)_(old|new)_r\d+\.json", f); r = load(f)
    if m and r: groups[m.group(1)][m.group(2)].append(r["inference_metrics"])
for k in sorted(groups):
    g = groups[k]
    if not g["old"] or not g["new"]: print(k, "missing"); continue
    med = lambda side, key: statistics.median(x[key] if not isinstance(x[key], dict) else x[key]["p50"] for x in g[side])
    to, tn = med("old", "tokens_per_second"), med("new", "tokens_per_second")
    print(f"{k:28s} {to:10.1f} {tn:10.1f} {tn/to:8.3f} {med('old','ttft_ms'):16.2f} {med('new','ttft_ms'):7.2f} {med('old','inter_token_latency_ms'):15.3f} {med('new','inter_token_latency_ms'):7.3f}")
print("\n== non-default paths (batch 1, 128/32): old by env var, new by flag")
print(f"{'model path':24s} {'tok/s old':>10s} {'new':>10s} {'TTFT old':>9s} {'new':>7s}  new report's path / kernel options")
for f in sorted(glob.glob("path_*_old.json")):
    o, n = load(f), load(f.replace("_old.json", "_new.json"))
    k = f[len("path_"):-len("_old.json")]
    if not o or not n: print(k, "missing"); continue
    mo, mn = o["inference_metrics"], n["inference_metrics"]
    print(f"{k:24s} {mo['tokens_per_second']:10.1f} {mn['tokens_per_second']:10.1f} {mo['ttft_ms']['p50']:9.2f} {mn['ttft_ms']['p50']:7.2f}  {mn.get('decode_path')} {json.dumps(mn.get('kernel_options'))} | {mn.get('decode_kernels')}")
PYEOF
cd /tmp && tar czf "$OUT/compare-builds.tgz" -C /tmp cmpwork 2>/dev/null; ls -la "$OUT"
