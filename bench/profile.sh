#!/usr/bin/env bash
# One lethe purge with its stage timings, for profiling (not a comparison; see bench/run.sh).
#
#   bench/profile.sh [SUBJECTS [PER [SEED_ARGS...]]]   # default 2,000 subjects x 10 objects
#
# Seeds a fresh bucket and a database `lethe_prof` of SUBJECTS deleted runs, runs
# `lethe run --job deleted-runs` with info logs, and prints the wall time and each batch's
# `stages_ms` line (manifest, claim, holds, ownership, locks, objects, verify, rows).
# LIVE_RUNS (default 0) adds that many live runs beside them, each with an `artifact_uri` of
# its own, so the ownership proof has a platform-sized table to ask. Extra environment (for
# example LETHE_DELETE_CONCURRENCY=32) is passed through to lethe. PROFILE_WRAP runs lethe under
# a profiler: PROFILE_WRAP="heaptrack -o target/bench/heap", then heaptrack_print.
# PROFILE_BIN=DIR takes `lethe` and `lethe-bench` from DIR instead of building them (an older
# build, to compare against). The S3 server is restarted empty first; the services stay running
# when they were already up.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lethe-target}"
SUBJECTS="${1:-2000}"
PER="${2:-10}"
shift $(($# > 2 ? 2 : $#))

if ! curl -s -o /dev/null http://127.0.0.1:8333; then
    trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
fi
scripts/services.sh start >&2
scripts/services.sh restart-s3 >&2 # a fresh server each time: see bench/run.sh
eval "$(scripts/services.sh env)"
if [[ -n ${PROFILE_BIN:-} ]]; then
    LETHE="$PROFILE_BIN/lethe"
    TOOL="$PROFILE_BIN/lethe-bench"
else
    cargo build --release --quiet --bin lethe --example lethe-bench
    LETHE="$CARGO_TARGET_DIR/release/lethe"
    TOOL="$CARGO_TARGET_DIR/release/examples/lethe-bench"
fi
OUT=target/bench
mkdir -p "$OUT"
DB=postgres://postgres@127.0.0.1:5432/lethe_prof
bucket="prof-$RANDOM$RANDOM"

"$TOOL" seed "$bucket" "$SUBJECTS" "$PER" "$@" >&2
psql -X -q -v ON_ERROR_STOP=1 postgres://postgres@127.0.0.1:5432/postgres \
    -c "DROP DATABASE IF EXISTS lethe_prof WITH (FORCE)" -c "CREATE DATABASE lethe_prof"
psql -X -q -v ON_ERROR_STOP=1 "$DB" -f jobs/reference/training-platform.sql
psql -X -q -v ON_ERROR_STOP=1 "$DB" <<SQL
INSERT INTO accounts VALUES (1, 'prof@example.com', 'free', 'active', NULL);
INSERT INTO runs SELECT i, 1, 'r', 'deleted', (extract(epoch FROM now() - interval '10 days') * 1000)::bigint,
    's3://$bucket/runs/' || i || '/artifacts/'
FROM generate_series(1, $SUBJECTS) i;
INSERT INTO runs SELECT i, 1, 'r', 'active', NULL, 's3://$bucket/live/' || i || '/artifacts/'
FROM generate_series($SUBJECTS + 1, $SUBJECTS + ${LIVE_RUNS:-0}) i;
ANALYZE runs;
SQL
DATABASE_URL="$DB" "$LETHE" migrate >&2
jobs="$OUT/jobs-prof"
rm -rf "$jobs" && mkdir -p "$jobs"
sed "s/lethe-artifacts/$bucket/" jobs/deleted-runs.toml >"$jobs/deleted-runs.toml"

quiesce
ticks=$(server_ticks)
start=${EPOCHREALTIME/./}
code=0
DATABASE_URL="$DB" LETHE_JOBS_DIR="$jobs" LETHE_LOG="${LETHE_LOG:-lethe=info}" \
    /usr/bin/time -f 'lethe cpu: user %U s, sys %S s, peak RSS %M KiB' -o "$OUT/profile.time" ${PROFILE_WRAP:-} "$LETHE" run --job deleted-runs >"$OUT/profile.out" 2>"$OUT/profile.log" || code=$?
end=${EPOCHREALTIME/./}
printf 'S3 server cpu: %s s\n' "$(server_cpu_since "$ticks")"
grep -o 'stages_ms=.*' "$OUT/profile.log" || true
cat "$OUT/profile.time"
printf 'wall %.2fs, exit %s, left (versions markers): %s\n' \
    "$(echo "($end - $start) / 1000000" | bc -l)" "$code" "$(LETHE_S3_TIMEOUT_SECONDS=600 LETHE_LEASE_SECONDS=86400 "$TOOL" count "$bucket")"
