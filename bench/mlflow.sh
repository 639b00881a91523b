#!/usr/bin/env bash
# lethe's MLflow pack against `mlflow gc --older-than 30d` on the same MLflow world, plain and
# versioned bucket, start-up included on both sides.
#
#   bench/mlflow.sh                    # RUNS=2000 PURGE=470, ROUNDS=3, plain and versioned
#   ROUNDS=5 bench/mlflow.sh plain     # one variant
#   BASE_BIN=DIR bench/mlflow.sh       # also DIR/lethe (an older build), paired in each round
#
# Each round also times the S3 server's own floor for the objects of the same purge
# (`lethe-bench floor --prefixes`: the purged directories' versions listed untimed, then the same
# deletes by key and one listing of each directory, from a tight client; no database work), so
# the figures read as a share of what the server can do; "floor listed" adds that untimed
# listing, which a tool that does not know the keys in advance must do.
#
# The world (bench/peers/mlflow_world.py: MLflow's own schema from `mlflow db upgrade`, runs with
# metrics, params, tags, inputs, and 5 artifacts each in MLflow's layout; then, through MLflow's
# client, a deleted experiment with runs, models and traces, and logged models, some deleted, so
# all three jobs of the pack have work) is seeded once per
# variant; every timed command gets a copy of that database (CREATE DATABASE ... TEMPLATE) and a
# fresh S3 server started from a copy of the seeded data directory, so both tools meet identical
# state. The order alternates by round. After each command, what is left of the purged runs is
# counted (rows in runs, metrics, inputs and input_tags, logged models and their params, the
# deleted experiment and its traces; object versions and delete markers under their
# directories). Results: target/bench/mlflow.tsv; medians and the paired ratio at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lethe-target}"
ROUNDS="${ROUNDS:-3}"
RUNS="${RUNS:-2000}"
PURGE="${PURGE:-470}"
variants=("$@")
[[ ${#variants[@]} -gt 0 ]] || variants=(plain versioned)

OUT=target/bench
mkdir -p "$OUT"
LOG="$OUT/mlflow.log"
RESULTS="$OUT/mlflow.tsv"
: >"$LOG"
printf 'variant\ttool\tround\tseconds\tpeak_rss_kb\tleft_rows\tleft_versions\texit\tfirst_delete_ms\n' >"$RESULTS"
say() { printf '==> %s\n' "$*" >&2; }

trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
scripts/services.sh start >&2
eval "$(scripts/services.sh env)"
MLVENV="$(bash scripts/mlflow-env.sh)"
export MLFLOW_S3_ENDPOINT_URL="$AWS_ENDPOINT_URL" MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
say "building lethe (release)"
cargo build --release --quiet --bin lethe --example lethe-bench
LETHE="$CARGO_TARGET_DIR/release/lethe"
TOOL="$CARGO_TARGET_DIR/release/examples/lethe-bench"
ADMIN="postgres://postgres@127.0.0.1:5432/postgres"
SNAPSHOT="$PWD/$OUT/mlflow-s3-snapshot"
pg() { psql -X -q -v ON_ERROR_STOP=1 "$@" >>"$LOG" 2>&1; }
url() { echo "postgres://postgres@127.0.0.1:5432/$1"; }

# purged_prefixes DB: the directories of everything the purge must remove, one a line.
purged_prefixes() {
    psql -X -At "$(url "$1")" -c "SELECT experiment_id || '/' || run_uuid || '/' FROM lethe_bench_purged
        UNION ALL SELECT experiment_id || '/models/' || model_id || '/' FROM lethe_bench_purged_models
        UNION ALL SELECT experiment_id || '/' FROM lethe_bench_purged_experiments"
}

# left DB BUCKET: rows and object versions (with markers) of the purged runs still there.
left() {
    local rows
    rows=$(psql -X -At "$(url "$1")" -c "
        WITH gone AS (SELECT run_uuid FROM lethe_bench_purged)
        SELECT (SELECT count(*) FROM runs WHERE run_uuid IN (SELECT * FROM gone))
             + (SELECT count(*) FROM metrics WHERE run_uuid IN (SELECT * FROM gone))
             + (SELECT count(*) FROM inputs WHERE destination_id IN (SELECT * FROM gone))
             + (SELECT count(*) FROM input_tags WHERE input_uuid IN (SELECT 'in' || run_uuid FROM gone))
             + (SELECT count(*) FROM logged_models WHERE model_id IN (SELECT model_id FROM lethe_bench_purged_models))
             + (SELECT count(*) FROM logged_model_params WHERE model_id IN (SELECT model_id FROM lethe_bench_purged_models))
             + (SELECT count(*) FROM experiments WHERE lifecycle_stage = 'deleted')
             + (SELECT count(*) FROM trace_info WHERE experiment_id IN (SELECT experiment_id FROM lethe_bench_purged_experiments))")
    local versions
    versions=$(purged_prefixes "$1" |
        "$MLVENV/bin/python" -c '
import sys, boto3, os
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
n = 0
for prefix in sys.stdin.read().split():
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=sys.argv[1], Prefix=prefix):
        n += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
print(n)' "$2")
    echo "$rows $versions"
}

# first_delete FILE START_US: milliseconds from START_US (microseconds since the epoch) to the
# first "purging objects" line of lethe's log in FILE (its timestamps are UTC), or "-".
first_delete() {
    python3 - "$1" "$2" <<'PY'
import re, sys, datetime
start = int(sys.argv[2]) / 1e6
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"(\S+Z)\s", line)
    if m and "purging objects" in line:
        t = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
        print(round((t - start) * 1000))
        break
else:
    print("-")
PY
}

# timed VARIANT TOOL ROUND DB BUCKET CMD...
timed() {
    local variant=$1 tool=$2 round=$3 db=$4 bucket=$5 code=0 secs rss start first
    shift 5
    quiesce
    start=${EPOCHREALTIME/./}
    /usr/bin/time -f '%e %M' -o "$OUT/time.txt" "$@" >"$OUT/mlflow-one.log" 2>&1 || code=$?
    cat "$OUT/mlflow-one.log" >>"$LOG"
    first=$(first_delete "$OUT/mlflow-one.log" "$start")
    read -r secs rss < <(tail -n 1 "$OUT/time.txt")
    read -r rows versions < <(left "$db" "$bucket")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$tool" "$round" "$secs" "$rss" "$rows" "$versions" "$code" "$first" >>"$RESULTS"
    say "$variant $tool round $round: ${secs}s (first delete at ${first} ms), ${rss} KiB, left $rows rows and $versions versions, exit $code"
}

for variant in "${variants[@]}"; do
    flag=()
    [[ $variant == versioned ]] && flag=(--versioned)
    bucket="mlflow-bench-$variant-$RANDOM"
    world="mlflow_bench_world"
    say "seeding the $variant world: $RUNS runs, $PURGE to purge"
    scripts/services.sh restart-s3 >>"$LOG" 2>&1
    "$MLVENV/bin/python" - "$bucket" "$variant" <<'PY' >>"$LOG" 2>&1
import sys, os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
s3.create_bucket(Bucket=sys.argv[1])
if sys.argv[2] == "versioned":
    s3.put_bucket_versioning(Bucket=sys.argv[1], VersioningConfiguration={"Status": "Enabled"})
PY
    pg "$ADMIN" -c "DROP DATABASE IF EXISTS $world WITH (FORCE)" -c "CREATE DATABASE $world"
    "$MLVENV/bin/mlflow" db upgrade "postgresql+psycopg://postgres@127.0.0.1:5432/$world" >>"$LOG" 2>&1
    "$MLVENV/bin/python" bench/peers/mlflow_world.py "postgresql://postgres@127.0.0.1:5432/$world" \
        "$bucket" "$RUNS" "$PURGE" "${flag[@]}" >&2
    DATABASE_URL="$(url "$world")" "$LETHE" migrate >>"$LOG" 2>&1
    # What should go, kept in a table of its own so the count after each command can name it.
    pg "$(url "$world")" -c "CREATE TABLE lethe_bench_purged AS SELECT run_uuid, experiment_id FROM runs
        WHERE lifecycle_stage = 'deleted' AND deleted_time < (extract(epoch FROM now()) * 1000)::bigint - 30::bigint * 86400000" \
        -c "CREATE TABLE lethe_bench_purged_experiments AS SELECT experiment_id FROM experiments WHERE lifecycle_stage = 'deleted'" \
        -c "CREATE TABLE lethe_bench_purged_models AS SELECT model_id, experiment_id FROM logged_models
        WHERE lifecycle_stage = 'deleted' OR experiment_id IN (SELECT experiment_id FROM lethe_bench_purged_experiments)"
    jobs="$OUT/mlflow-jobs-$variant"
    rm -rf "$jobs" && mkdir -p "$jobs"
    for f in jobs/packs/mlflow/*.toml; do sed "s/mlflow-artifacts/$bucket/g" "$f" >"$jobs/$(basename "$f")"; done
    scripts/services.sh snapshot-s3 "$SNAPSHOT" >>"$LOG" 2>&1
    for round in $(seq 1 "$ROUNDS"); do
        order=(lethe gc ${BASE_BIN:+base} floor)
        ((round % 2 == 0)) && order=(floor ${BASE_BIN:+base} gc lethe)
        for tool in "${order[@]}"; do
            db="mlflow_bench_run"
            pg "$ADMIN" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db TEMPLATE $world"
            # A database in use, as MLflow's is: the first session of a new database builds its
            # catalog cache (about 40 ms here), which neither tool should be timed for.
            pg "$(url "$db")" -c "SELECT count(*) FROM runs"
            scripts/services.sh restart-s3 "$SNAPSHOT" >>"$LOG" 2>&1
            case $tool in
                lethe | base)
                    bin="$LETHE"
                    [[ $tool == base ]] && bin="$BASE_BIN/lethe"
                    timed "$variant" "$tool" "$round" "$db" "$bucket" env DATABASE_URL="$(url "$db")" \
                        LETHE_JOBS_DIR="$jobs" LETHE_LOG=warn,lethe::pipeline=info NO_COLOR=1 "$bin" run --all ;;
                floor)
                    purged_prefixes "$db" >"$OUT/mlflow-prefixes.txt"
                    quiesce
                    "$TOOL" floor "$bucket" --prefixes "$OUT/mlflow-prefixes.txt" >"$OUT/floor.json" 2>>"$LOG"
                    read -r secs listed < <(python3 -c 'import json, sys; f = json.load(open(sys.argv[1]))
print("%.2f %.2f" % (f["seconds"], f["seconds"] + f["list_seconds"]))' "$OUT/floor.json")
                    read -r rows versions < <(left "$db" "$bucket")
                    printf '%s\tfloor\t%s\t%s\t-\t-\t%s\t0\t-\n' "$variant" "$round" "$secs" "$versions" >>"$RESULTS"
                    # With the listing a purge that does not know the keys must do first.
                    printf '%s\tfloor listed\t%s\t%s\t-\t-\t%s\t0\t-\n' "$variant" "$round" "$listed" "$versions" >>"$RESULTS"
                    say "$variant floor round $round: $(cat "$OUT/floor.json")" ;;
                gc)
                    sa="postgresql+psycopg://postgres@127.0.0.1:5432/$db"
                    timed "$variant" "mlflow gc" "$round" "$db" "$bucket" env MLFLOW_TRACKING_URI="$sa" \
                        "$MLVENV/bin/mlflow" gc --older-than 30d --backend-store-uri "$sa" ;;
            esac
        done
    done
done

python3 - "$RESULTS" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
for variant in sorted({r["variant"] for r in rows}):
    by = lambda tool: {r["round"]: r for r in rows if r["variant"] == variant and r["tool"] == tool}
    lethe, gc, base, floor, listed = by("lethe"), by("mlflow gc"), by("base"), by("floor"), by("floor listed")
    ratios = [float(gc[k]["seconds"]) / float(lethe[k]["seconds"]) for k in lethe if k in gc]
    med = lambda d: statistics.median(float(r["seconds"]) for r in d.values())
    first = lambda d: statistics.median(int(r["first_delete_ms"]) for r in d.values() if r["first_delete_ms"] != "-")
    left = lambda d: sorted({(r["left_rows"], r["left_versions"]) for r in d.values()})
    print(f"{variant}: lethe median {med(lethe):.2f} s, first delete at {first(lethe)} ms (left rows, versions: "
          f"{left(lethe)}), mlflow gc median {med(gc):.2f} s (left {left(gc)}); lethe is "
          f"{statistics.median(ratios):.1f}x faster (per round: {', '.join(f'{x:.1f}' for x in ratios)})")
    if floor:
        share = [float(floor[k]["seconds"]) / float(lethe[k]["seconds"]) for k in lethe if k in floor]
        bound = [float(gc[k]["seconds"]) / float(floor[k]["seconds"]) for k in gc if k in floor]
        print(f"{variant}: the S3 server's floor for the same objects median {med(floor):.2f} s "
              f"(left {sorted({r['left_versions'] for r in floor.values()})} versions); lethe reaches "
              f"{statistics.median(share):.2f} of it (per round: {', '.join(f'{x:.2f}' for x in share)}); "
              f"gc / floor, the most a tool that knew every key could be ahead of gc here: {statistics.median(bound):.1f}x")
    if listed:
        bound = [float(gc[k]["seconds"]) / float(listed[k]["seconds"]) for k in gc if k in listed]
        print(f"{variant}: the floor with the listing of those directories first (32 in flight) median "
              f"{med(listed):.2f} s; gc / that: {statistics.median(bound):.1f}x")
    if base:
        pair = [float(base[k]["seconds"]) / float(lethe[k]["seconds"]) for k in lethe if k in base]
        print(f"{variant}: previous binary median {med(base):.2f} s, first delete at {first(base)} ms "
              f"(left {left(base)}); this one is {statistics.median(pair):.2f}x its speed "
              f"(per round: {', '.join(f'{x:.2f}' for x in pair)})")
PY
