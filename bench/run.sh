#!/usr/bin/env bash
# lethe against the tools an operator would otherwise script: same server, same data, same run.
#
#   bench/run.sh                 # objects, versioned, rows (about 10-15 minutes)
#   bench/run.sh objects rows    # some scenarios
#   bench/run.sh memory          # peak RSS, 10k vs 1M objects (long: seeds a million objects)
#
# Scenarios:
#   objects    SUBJECTS x PER objects of 1 KiB (default 2,000 x 10) under runs/{id}/, unversioned
#   versioned  VSUBJECTS x PER keys (default 1,000 x 10), 2 versions each + a delete marker
#   onedir     one subject of ONEDIR objects (default 20,000) in one directory, unversioned
#   onedir-versioned  one subject of ONEDIR / 2 keys (10,000), 2 versions each + a delete marker
#   rows       ROW_SUBJECTS deleted runs (default 100,000), 20 child rows each, no objects
#   memory     MEM objects (default "10000 1000000"), each over MEM_SUBJECTS (1,000) subjects
#   scaling    SCALE subjects (default "1000 10000 100000") of one object each: time vs backlog
# TOOLS (default "lethe s5cmd rclone boto3 aws-cli floor") picks the tools of the object
# scenarios; `floor` is the server's own floor for the same work (see below);
# `lethe:LETHE_DELETE_BATCH=250,LETHE_DELETE_CONCURRENCY=64` is lethe with those settings, to
# compare settings with each other and with the peers in one run.
# Every tool gets a fresh server holding an identical data set each round (ROUNDS, default 3); after
# each, what is left under the prefix (all versions and markers) is counted. Results go to
# target/bench/results.tsv and a table of medians and ratios is printed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lethe-target}"
ROUNDS="${ROUNDS:-3}"
SUBJECTS="${SUBJECTS:-2000}"
VSUBJECTS="${VSUBJECTS:-1000}"
PER="${PER:-10}"
ROW_SUBJECTS="${ROW_SUBJECTS:-100000}"
MEM="${MEM:-10000 1000000}"
MEM_SUBJECTS="${MEM_SUBJECTS:-1000}"
TOOLS="${TOOLS:-lethe s5cmd rclone boto3 aws-cli floor}"
ONEDIR="${ONEDIR:-20000}"
SCALE="${SCALE:-1000 10000 100000}"
FLOOR_SHAPE="${FLOOR_SHAPE:-100x160}"
scenarios=("$@")
[[ ${#scenarios[@]} -gt 0 ]] || scenarios=(objects versioned rows)

OUT=target/bench
mkdir -p "$OUT"
LOG="$OUT/bench.log"
RESULTS="$OUT/results.tsv"
: >"$LOG"
printf 'scenario\ttool\tround\titems\tseconds\tpeak_rss_kb\tleft_versions\tleft_markers\texit\tserver_cpu_s\n' >"$RESULTS"
say() { printf '==> %s\n' "$*" >&2; }

trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
scripts/services.sh start >&2
eval "$(scripts/services.sh env)"
VENV="${LETHE_CACHE:-$HOME/.cache/lethe}/s3-venv"
"$VENV/bin/python" -c 'import boto3, awscli' 2>/dev/null || "$VENV/bin/pip" install -q boto3 awscli
if ! command -v rclone >/dev/null; then
    if [[ $(id -u) == 0 ]]; then apt-get install -y -q rclone >/dev/null 2>&1 || true; fi
fi
say "building lethe and the bench helper (release)"
cargo build --release --quiet --bin lethe --example lethe-bench
LETHE="$CARGO_TARGET_DIR/release/lethe"
TOOL="$CARGO_TARGET_DIR/release/examples/lethe-bench"
ADMIN="postgres://postgres@127.0.0.1:5432/postgres"
E="$AWS_ENDPOINT_URL"

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@" >>"$LOG" 2>&1; }
db_url() { echo "postgres://postgres@127.0.0.1:5432/$1"; }

# Every tool run gets a brand-new S3 server: SeaweedFS slows down as deleted entries pile up
# in its metadata store (measured: the same purge's verification took 0.8 s on a fresh server
# and 1.9 s three purges later), so a shared server would favour whoever runs first. The data
# set of a round is seeded once and kept as a snapshot of the server's data directory; each
# tool's server starts from a copy of it, so every tool meets byte-identical server state.
# count_left BUCKET: versions and delete markers left. Listing a bucket right after a large
# purge is slow on SeaweedFS (it walks every emptied directory), hence the long time limit.
# A long timeout for counting big buckets (and a lease long enough for the settings check).
count_left() { LETHE_S3_TIMEOUT_SECONDS=600 LETHE_LEASE_SECONDS=86400 "$TOOL" count "$1"; }

fresh_s3() { scripts/services.sh restart-s3 "$@" >>"$LOG" 2>&1; }
SNAPSHOT="$PWD/$OUT/s3-snapshot"

# timed SCENARIO TOOL ROUND ITEMS BUCKET CMD...: runs CMD under GNU time, records a result row.
timed() {
    local scenario=$1 tool=$2 round=$3 items=$4 bucket=$5
    shift 5
    local code=0 ticks cpu
    quiesce
    ticks=$(server_ticks)
    /usr/bin/time -f '%e %M' -o "$OUT/time.txt" "$@" >>"$LOG" 2>&1 || code=$?
    cpu=$(server_cpu_since "$ticks")
    local secs rss left=("-" "-")
    read -r secs rss < <(tail -n 1 "$OUT/time.txt")
    if [[ -n $bucket ]]; then
        read -r -a left < <(count_left "$bucket")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$tool" "$round" "$items" "$secs" "$rss" "${left[0]}" "${left[1]}" "$code" "$cpu" >>"$RESULTS"
    say "$scenario $tool round $round: ${secs}s, ${rss} KiB, S3 server CPU ${cpu}s, left ${left[*]}, exit $code"
}

# A database holding `n` runs deleted 10 days ago (ids 1..n), lethe migrated.
make_run_db() {
    local db=$1 n=$2 children=$3
    psql_q "$ADMIN" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    psql_q "$(db_url "$db")" -f jobs/reference/training-platform.sql
    DATABASE_URL="$(db_url "$db")" "$LETHE" migrate >>"$LOG" 2>&1
    psql_q "$(db_url "$db")" <<SQL
INSERT INTO accounts VALUES (1, 'bench@example.com', 'free', 'active', NULL);
INSERT INTO runs SELECT i, 1, 'r', 'deleted', (extract(epoch FROM now() - interval '10 days') * 1000)::bigint, NULL
FROM generate_series(1, $n) i;
SQL
    if [[ $children == yes ]]; then
        psql_q "$(db_url "$db")" <<SQL
INSERT INTO metrics (run_id, key, value, step) SELECT i, 'loss', 0.5, s FROM generate_series(1, $n) i, generate_series(1, 12) s;
INSERT INTO params SELECT i, 'p' || s, 'v' FROM generate_series(1, $n) i, generate_series(1, 4) s;
INSERT INTO links (destination_type, destination_id, label) SELECT 'RUN', i::text, 'l' || s FROM generate_series(1, $n) i, generate_series(1, 2) s;
INSERT INTO snapshots SELECT i, i, 1, NULL, NULL FROM generate_series(1, $n) i;
INSERT INTO snapshot_files (snapshot_id, path, size_bytes) SELECT i, 'f', 1 FROM generate_series(1, $n) i;
VACUUM ANALYZE;
SQL
    fi
}

jobs_for_bucket() {
    local dir=$OUT/jobs-$1
    rm -rf "$dir" && mkdir -p "$dir"
    sed "s/lethe-artifacts/$1/" jobs/deleted-runs.toml >"$dir/deleted-runs.toml"
    echo "$dir"
}

# object_round SCENARIO ROUND SUBJECTS PER SEED_ARGS...: one round of every tool on fresh data.
object_round() {
    local scenario=$1 round=$2 subjects=$3 per=$4
    shift 4
    local versions_flag=() items
    [[ $scenario == *versioned ]] && versions_flag=(--all-versions)
    # Each round starts one tool later in the list, so no tool always goes first.
    local tools=($TOOLS) order=() k
    for k in "${!tools[@]}"; do order+=("${tools[(k + round - 1) % ${#tools[@]}]}"); done
    local b="bench-$scenario-$round-$RANDOM"
    say "seeding $scenario round $round"
    fresh_s3
    "$TOOL" seed "$b" "$subjects" "$per" "$@" >>"$LOG" 2>&1
    read -r v m < <(count_left "$b")
    items=$((v + m))
    scripts/services.sh snapshot-s3 "$SNAPSHOT" >>"$LOG" 2>&1
    for tool in "${order[@]}"; do
        [[ $tool == rclone ]] && ! command -v rclone >/dev/null && continue
        fresh_s3 "$SNAPSHOT"
        case $tool in
            lethe | lethe:*)
                # lethe:NAME=VALUE,NAME=VALUE runs lethe with those settings, beside the defaults.
                local jobs settings=()
                [[ $tool == lethe:* ]] && IFS=, read -r -a settings <<<"${tool#lethe:}"
                make_run_db lethe_bench_obj "$subjects" no
                jobs=$(jobs_for_bucket "$b")
                timed "$scenario" "$tool" "$round" "$items" "$b" \
                    env DATABASE_URL="$(db_url lethe_bench_obj)" LETHE_JOBS_DIR="$jobs" LETHE_LOG=warn \
                    "${settings[@]}" "$LETHE" run --job deleted-runs ;;
            s5cmd) timed "$scenario" s5cmd "$round" "$items" "$b" s5cmd --endpoint-url "$E" rm "${versions_flag[@]}" "s3://$b/runs/*" ;;
            rclone)
                timed "$scenario" rclone "$round" "$items" "$b" env -u AWS_CA_BUNDLE rclone delete \
                    ":s3,provider=Other,env_auth=true,endpoint='$E':$b/runs" ;;
            boto3) timed "$scenario" boto3 "$round" "$items" "$b" "$VENV/bin/python" bench/peers/boto3_rm.py "$b" runs/ ;;
            aws-cli) timed "$scenario" aws-cli "$round" "$items" "$b" "$VENV/bin/aws" --endpoint-url "$E" s3 rm --recursive --only-show-errors "s3://$b/runs/" ;;
            floor)
                # The server's own floor for the same work: the same deletes by key (keys known
                # in advance, listing untimed) in a tight loop, then one listing of each location,
                # as lethe's verification asks. FLOOR_SHAPE is its keys per request and requests
                # in flight, by default the fastest shape measured on SeaweedFS (100 x 160,
                # against 1,000 x 16: 25% faster). Its server CPU counts the untimed listing too.
                quiesce
                local ticks
                ticks=$(server_ticks)
                LETHE_DELETE_BATCH=${FLOOR_SHAPE%x*} LETHE_DELETE_CONCURRENCY=${FLOOR_SHAPE#*x} \
                    "$TOOL" floor "$b" >"$OUT/floor.json" 2>>"$LOG"
                ticks=$(server_cpu_since "$ticks")
                read -r -a left < <(count_left "$b")
                python3 - "$OUT/floor.json" "$scenario" "$round" "$items" "${left[@]}" "$ticks" >>"$RESULTS" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
print("\t".join([sys.argv[2], "floor", sys.argv[3], sys.argv[4], f"{c['seconds']:.2f}", "-", sys.argv[5], sys.argv[6], "0", sys.argv[7]]))
PY
                say "$scenario floor round $round: $(cat "$OUT/floor.json"), S3 server CPU ${ticks}s with its listing" ;;
        esac
    done
}

rows_round() {
    local round=$1
    psql_q "$ADMIN" -c "DROP DATABASE IF EXISTS lethe_bench_rows WITH (FORCE)" -c "CREATE DATABASE lethe_bench_rows TEMPLATE lethe_bench_rows_tpl"
    timed rows lethe "$round" "$ROW_SUBJECTS" "" \
        env DATABASE_URL="$(db_url lethe_bench_rows)" LETHE_JOBS_DIR=bench/jobs-rows LETHE_LOG=lethe=info \
        "$LETHE" run --job deleted-runs
    grep -o 'duration_ms=[0-9]*' "$LOG" | cut -d= -f2 | sort -n | tail -n 1 | sed "s/^/rows lethe round $round: slowest transaction ms: /" >&2
    : >"$LOG"
    psql_q "$ADMIN" -c "DROP DATABASE IF EXISTS lethe_bench_rows WITH (FORCE)" -c "CREATE DATABASE lethe_bench_rows TEMPLATE lethe_bench_rows_tpl"
    # Raw SQL baseline: child-first DELETE ... = ANY($1) in batches of the same size, one session.
    psql -X -q -At "$(db_url lethe_bench_rows)" >"$OUT/baseline.sql" <<SQL
SELECT format(
  'BEGIN; DELETE FROM snapshot_files WHERE snapshot_id IN (SELECT id FROM snapshots WHERE run_id = ANY(%1\$L::bigint[]));
   DELETE FROM metrics WHERE run_id = ANY(%1\$L::bigint[]); DELETE FROM params WHERE run_id = ANY(%1\$L::bigint[]);
   DELETE FROM snapshots WHERE run_id = ANY(%1\$L::bigint[]);
   DELETE FROM links WHERE destination_type = ''RUN'' AND destination_id = ANY(%1\$L::text[]);
   DELETE FROM runs WHERE id = ANY(%1\$L::bigint[]); COMMIT;', ids)
FROM (SELECT array_agg(id ORDER BY id) AS ids FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / ${LETHE_BATCH_SUBJECTS:-2000} AS g
      FROM runs WHERE lifecycle_stage = 'deleted') s GROUP BY g ORDER BY g) b;
SQL
    timed rows raw-sql "$round" "$ROW_SUBJECTS" "" psql -X -q -v ON_ERROR_STOP=1 -f "$OUT/baseline.sql" "$(db_url lethe_bench_rows)"
    local left
    left=$(psql -X -At "$(db_url lethe_bench_rows)" -c "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM metrics)")
    [[ $left == 0 ]] || say "raw-sql left $left rows"
}

# lethe_alone SCENARIO ROUND SUBJECTS PER ITEMS: one lethe purge of SUBJECTS x PER objects on a
# fresh server, recorded as ITEMS items.
lethe_alone() {
    local scenario=$1 round=$2 subjects=$3 per=$4 items=$5
    local b="bench-$scenario-$round-$RANDOM" jobs
    fresh_s3
    say "seeding $subjects subjects x $per objects for $scenario"
    "$TOOL" seed "$b" "$subjects" "$per" >>"$LOG" 2>&1
    make_run_db lethe_bench_alone "$subjects" no
    jobs=$(jobs_for_bucket "$b")
    timed "$scenario" lethe "$round" "$items" "$b" \
        env DATABASE_URL="$(db_url lethe_bench_alone)" LETHE_JOBS_DIR="$jobs" LETHE_LOG=warn "$LETHE" run --job deleted-runs
}

# Time against backlog size: SCALE subjects (default 1k, 10k, 100k) of one object each.
scaling_round() {
    local n
    for n in $SCALE; do lethe_alone "scaling-$n" "$1" "$n" 1 "$n"; done
}

# Peak RSS against the number of objects: each of MEM objects over MEM_SUBJECTS subjects, so
# the batch of subjects (which memory also scales with, up to LETHE_BATCH_SUBJECTS) stays the same.
memory_round() {
    local n
    for n in $MEM; do lethe_alone "memory-$n" "$1" "$MEM_SUBJECTS" $((n / MEM_SUBJECTS)) "$n"; done
}

for s in "${scenarios[@]}"; do
    case $s in
        objects) for r in $(seq "$ROUNDS"); do object_round objects "$r" "$SUBJECTS" "$PER"; done ;;
        versioned) for r in $(seq "$ROUNDS"); do object_round versioned "$r" "$VSUBJECTS" "$PER" --versions 2 --markers; done ;;
        onedir) for r in $(seq "$ROUNDS"); do object_round onedir "$r" 1 "$ONEDIR"; done ;;
        onedir-versioned) for r in $(seq "$ROUNDS"); do object_round onedir-versioned "$r" 1 $((ONEDIR / 2)) --versions 2 --markers; done ;;
        rows)
            say "building the row data set: $ROW_SUBJECTS runs x 20 child rows"
            make_run_db lethe_bench_rows_tpl "$ROW_SUBJECTS" yes
            for r in $(seq "$ROUNDS"); do rows_round "$r"; done ;;
        memory) for r in $(seq "$ROUNDS"); do memory_round "$r"; done ;;
        scaling) for r in $(seq "$ROUNDS"); do scaling_round "$r"; done ;;
        *) echo "unknown scenario $s (objects, versioned, onedir, onedir-versioned, rows, memory, scaling)" >&2; exit 2 ;;
    esac
done

python3 bench/report.py "$RESULTS"
