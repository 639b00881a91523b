#!/usr/bin/env bash
# Idle cost of `lethe daemon` between runs: CPU time and wakeups over IDLE_SECONDS (default 60)
# once its start-up catch-up run is over, with every job scheduled daily. The peer is
# `sleep`, a process that does nothing, measured the same way in the same run.
#
#   bench/idle.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lethe-target}"
IDLE_SECONDS="${IDLE_SECONDS:-60}"
trap 'kill "${daemon:-}" "${peer:-}" 2>/dev/null || true; scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
scripts/services.sh start >&2
eval "$(scripts/services.sh env)"
cargo build --release --quiet --bin lethe
LETHE="$CARGO_TARGET_DIR/release/lethe"
ADMIN="postgres://postgres@127.0.0.1:5432/postgres"
DB="postgres://postgres@127.0.0.1:5432/lethe_bench_idle"
psql -X -q "$ADMIN" -c "DROP DATABASE IF EXISTS lethe_bench_idle WITH (FORCE)" -c "CREATE DATABASE lethe_bench_idle"
psql -X -q "$DB" -f jobs/reference/training-platform.sql >/dev/null
DATABASE_URL="$DB" "$LETHE" migrate 2>/dev/null
aws_bucket() { "$HOME/.cache/lethe/s3-venv/bin/python" -c "import boto3,os; boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL']).create_bucket(Bucket='$1')" 2>/dev/null || true; }
aws_bucket lethe-artifacts

# ticks: utime+stime of a pid (and its threads), in clock ticks; wakeups: context switches.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
measure() {
    local pid=$1 t0 c0 t1 c1 hz
    hz=$(getconf CLK_TCK)
    t0=$(cpu_ticks "$pid"); c0=$(switches "$pid")
    sleep "$IDLE_SECONDS"
    t1=$(cpu_ticks "$pid"); c1=$(switches "$pid")
    python3 -c "print(f'{($t1 - $t0) / $hz:.3f} s CPU, {($c1 - $c0) / $IDLE_SECONDS:.1f} context switches/s (all threads)')"
}

DATABASE_URL="$DB" LETHE_LOG=warn "$LETHE" daemon 2>/dev/null &
daemon=$!
sleep 10 # start-up and the catch-up run
sleep $((IDLE_SECONDS + 5)) &
peer=$!
measure "$daemon" >"$CARGO_TARGET_DIR/idle-lethe.txt" &
measure "$peer" >"$CARGO_TARGET_DIR/idle-peer.txt"
wait %3 2>/dev/null || true
sleep 1
echo "lethe daemon, idle ${IDLE_SECONDS}s: $(cat "$CARGO_TARGET_DIR/idle-lethe.txt")"
echo "sleep (peer), same ${IDLE_SECONDS}s: $(cat "$CARGO_TARGET_DIR/idle-peer.txt")"
