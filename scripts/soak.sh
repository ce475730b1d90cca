#!/usr/bin/env bash
# Soak test of the coordinator + workers (not run in CI).
# Long sweeps of the tiny models with 3 workers; meanwhile SIGKILL a random worker (and restart
# it) WORKER_KILLS times and the coordinator (restarted on the same database and port)
# COORD_KILLS times, at random moments. Then checks the database: every job succeeded exactly
# once, no run without a job, no job without its run, PRAGMA integrity_check ok.
#
#   scripts/soak.sh                          # 100 worker kills, 20 coordinator kills
#   WORKER_KILLS=10 COORD_KILLS=3 SWEEPS=4 scripts/soak.sh    # short version
set -euo pipefail
cd "$(dirname "$0")/.."

WORKER_KILLS=${WORKER_KILLS:-100}
COORD_KILLS=${COORD_KILLS:-20}
SWEEPS=${SWEEPS:-400}         # 16 jobs each (2 tiny models x batch 1..8, 8 new tokens): long enough that a release build is still running jobs when the kills end
PORT=${PORT:-50651}
PROFILE=${PROFILE:-release}
LEASE_MS=${LEASE_MS:-2000}

flag=""; [ "$PROFILE" = release ] && flag="--release"
cargo build $flag -p tokbench-coordinator -p tokbench-worker --bins
cargo build $flag -p tokbench-coordinator --example soak
BIN=target/$PROFILE
SOAK=$BIN/examples/soak

WORK=$(mktemp -d /tmp/tokbench-soak.XXXXXX)
DB=$WORK/soak.db
URL=http://127.0.0.1:$PORT
echo "work dir: $WORK"

declare -a WPIDS
COORD=""
start_coord() {
  $BIN/tokbench-coordinator --listen 127.0.0.1:$PORT --database "$DB" --lease-ms "$LEASE_MS" --max-attempts 50 \
    >>"$WORK/coordinator.out" 2>>"$WORK/coordinator.log" &
  COORD=$!
}
start_worker() {  # $1 = index
  $BIN/tokbench-worker serve --coordinator "$URL" --device cpu --worker-id "soak-w$1" >/dev/null 2>>"$WORK/worker$1.log" &
  WPIDS[$1]=$!
}
cleanup() {
  for p in "${WPIDS[@]}" $COORD; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

start_coord
sleep 1
for i in 0 1 2; do start_worker $i; done
$SOAK submit "$URL" "$SWEEPS" | tail -1

wk=0; ck=0
total=$((WORKER_KILLS + COORD_KILLS))
while [ $((wk + ck)) -lt $total ]; do
  sleep "0.$((RANDOM % 10))$((RANDOM % 10))"
  # Pick the coordinator with probability COORD_KILLS left / kills left.
  left=$((total - wk - ck))
  if [ $((RANDOM % left)) -lt $((COORD_KILLS - ck)) ]; then
    kill -9 "$COORD"; wait "$COORD" 2>/dev/null || true
    ck=$((ck + 1))
    sleep "0.$((RANDOM % 10))"
    start_coord
  else
    i=$((RANDOM % 3))
    kill -9 "${WPIDS[$i]}"; wait "${WPIDS[$i]}" 2>/dev/null || true
    wk=$((wk + 1))
    start_worker "$i"
  fi
  if [ $(((wk + ck) % 10)) -eq 0 ]; then echo "kills so far: workers $wk, coordinator $ck"; fi
done
echo "done killing: workers $wk, coordinator $ck; waiting for the sweeps to finish"
$SOAK wait "$URL" 1800
# Stop cleanly so the WAL is checkpointed, then check the file.
for p in "${WPIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
kill -TERM "$COORD"; wait "$COORD" 2>/dev/null || true
$SOAK check "$DB"
# What the kills hit. A worker restarted under its id gets the job it held back at once (same
# attempt, so jobs_retried above stays 0 for those); a result that met a dead coordinator was kept
# and sent again.
strip() { sed 's/\x1b\[[0-9;]*m//g' "$@"; }
echo "jobs in flight when their worker was killed, handed back to it on restart: $(strip "$WORK/coordinator.log" | grep 'handing it out again' | grep -o 'job_id=[0-9a-f-]*' | sort -u | wc -l)"
echo "jobs whose lease expired and that went back to the queue: $(strip "$WORK/coordinator.log" | grep 'lease expired' | grep -o 'job_id=[0-9a-f-]*' | sort -u | wc -l)"
echo "results kept by a worker while the coordinator was down, then delivered: $(strip "$WORK"/worker*.log | grep -c 'keeping the result and retrying' || true)"
