#!/usr/bin/env bash
# Data-subject requests: lethe's `request export` and `request erase` + `run --all` on an
# account of 10,000 runs, against what an operator would script (bench/peers/account.py: boto3
# with 64 threads and psql), same server, same data, same run.
#
#   bench/requests.sh            # ROUNDS rounds (default 3; about 10-15 minutes)
#   ROUNDS=1 bench/requests.sh   # a quick check
#
# The world (jobs/reference/training-platform.sql): account 1 (active, free, one API key) owns
# runs 1..RUNS (default 10,000), all live, each with 3 metrics, 2 params and a RUN link, every
# 10th with a snapshot of 2 files; its neighbour account 2 owns the next NEIGHBOUR_RUNS (2,000)
# runs the same way. Every run has 2 objects of 1 KiB under runs/{id}/.
# Each round, each tool gets a fresh database and a fresh S3 server holding the identical world:
# export (timed), checked; then erase (timed), checked. lethe's erase is `request erase` then
# `run --all`, timed together and the run alone. Results go to target/bench/requests.tsv and a
# table of medians and ratios is printed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh disable=SC1091 # followed with shellcheck -x
source bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lethe-target}"
ROUNDS="${ROUNDS:-3}"
RUNS="${RUNS:-10000}"
NEIGHBOUR_RUNS="${NEIGHBOUR_RUNS:-2000}"
PER=2
ALL_RUNS=$((RUNS + NEIGHBOUR_RUNS))

OUT=target/bench
mkdir -p "$OUT"
LOG="$OUT/requests.log"
RESULTS="$OUT/requests.tsv"
: >"$LOG"
printf 'op\ttool\tround\tseconds\tpeak_rss_kb\texit\tserver_cpu_s\tcheck\n' >"$RESULTS"
say() { printf '==> %s\n' "$*" >&2; }

trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
scripts/services.sh start >&2
eval "$(scripts/services.sh env)"
VENV="${LETHE_CACHE:-$HOME/.cache/lethe}/s3-venv"
"$VENV/bin/python" -c 'import boto3' 2>/dev/null || "$VENV/bin/pip" install -q boto3
say "building lethe and the bench helper (release)"
cargo build --release --quiet --bin lethe --example lethe-bench
LETHE="$CARGO_TARGET_DIR/release/lethe"
TOOL="$CARGO_TARGET_DIR/release/examples/lethe-bench"
ADMIN="postgres://postgres@127.0.0.1:5432/postgres"
TEMPLATE=lethe_req_tpl
DB=lethe_req
SNAPSHOT="$PWD/$OUT/requests-s3-snapshot"
EXPORT_DIR="$PWD/$OUT/requests-export"

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@" >>"$LOG" 2>&1; }
db_url() { echo "postgres://postgres@127.0.0.1:5432/$1"; }
sql() { psql -X -At -v ON_ERROR_STOP=1 "$(db_url "$DB")" -c "$1"; }
fresh_s3() { scripts/services.sh restart-s3 "$@" >>"$LOG" 2>&1; }
# Counting a bucket right after a large purge is slow on SeaweedFS, hence the long time limit.
count_left() { LETHE_S3_TIMEOUT_SECONDS=600 LETHE_LEASE_SECONDS=86400 "$TOOL" count "$1"; }

# The world, migrated, as a template database every tool's round is cloned from.
make_template() {
    psql_q "$ADMIN" -c "DROP DATABASE IF EXISTS $TEMPLATE WITH (FORCE)" -c "CREATE DATABASE $TEMPLATE"
    psql_q "$(db_url "$TEMPLATE")" -f jobs/reference/training-platform.sql
    DATABASE_URL="$(db_url "$TEMPLATE")" "$LETHE" migrate >>"$LOG" 2>&1
    psql_q "$(db_url "$TEMPLATE")" <<SQL
INSERT INTO accounts VALUES (1, 'one@example.com', 'free', 'active', NULL), (2, 'two@example.com', 'free', 'active', NULL);
INSERT INTO api_keys (account_id, key_hash) VALUES (1, 'hash-1'), (2, 'hash-2');
INSERT INTO runs SELECT i, CASE WHEN i <= $RUNS THEN 1 ELSE 2 END, 'run-' || i, 'active', NULL, NULL
FROM generate_series(1, $ALL_RUNS) i;
INSERT INTO metrics (run_id, key, value, step) SELECT i, 'm' || s, 0.5, s FROM generate_series(1, $ALL_RUNS) i, generate_series(1, 3) s;
INSERT INTO params SELECT i, 'p' || s, 'v' FROM generate_series(1, $ALL_RUNS) i, generate_series(1, 2) s;
INSERT INTO links (destination_type, destination_id, label) SELECT 'RUN', i::text, 'l' FROM generate_series(1, $ALL_RUNS) i;
INSERT INTO snapshots SELECT i, i, CASE WHEN i <= $RUNS THEN 1 ELSE 2 END, NULL, NULL FROM generate_series(10, $ALL_RUNS, 10) i;
INSERT INTO snapshot_files (snapshot_id, path, size_bytes) SELECT i, 'f' || s, 1 FROM generate_series(10, $ALL_RUNS, 10) i, generate_series(1, 2) s;
VACUUM ANALYZE;
SQL
}

fresh_db() {
    psql_q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB TEMPLATE $TEMPLATE"
}

JOBS="$OUT/requests-jobs"
jobs_for_bucket() {
    rm -rf "$JOBS" && mkdir -p "$JOBS"
    local j
    for j in closed-accounts deleted-runs deleted-snapshots; do
        sed "s/lethe-artifacts/$1/" "jobs/$j.toml" >"$JOBS/$j.toml"
    done
}

# timed OP TOOL ROUND CMD...: runs CMD under GNU time (stdout to $OUT/stdout.txt, both streams
# appended to the log), sets SECS, RSS and CODE, prints a line.
timed() {
    local op=$1 tool=$2 round=$3 ticks
    shift 3
    CODE=0
    quiesce
    ticks=$(server_ticks)
    /usr/bin/time -f '%e %M' -o "$OUT/time.txt" "$@" >"$OUT/stdout.txt" 2>>"$LOG" || CODE=$?
    CPU=$(server_cpu_since "$ticks")
    cat "$OUT/stdout.txt" >>"$LOG"
    read -r SECS RSS < <(tail -n 1 "$OUT/time.txt")
    say "$op $tool round $round: ${SECS}s, ${RSS} KiB, S3 server CPU ${CPU}s, exit $CODE"
}

record() { # OP TOOL ROUND SECS RSS CODE CPU CHECK
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"
}

# What the export left in EXPORT_DIR: object files, and lines of the runs file.
export_check() {
    local files lines
    files=$(find "$EXPORT_DIR/objects" -type f 2>/dev/null | wc -l)
    lines=$(wc -l <"$EXPORT_DIR/rows/runs.jsonl" 2>/dev/null || echo 0)
    CHECK="files=$files runs_lines=$lines"
    if [[ $files != $((RUNS * PER)) || $lines != "$RUNS" ]]; then
        CHECK="$CHECK FAILED"
        say "export check FAILED: $CHECK (want files=$((RUNS * PER)) runs_lines=$RUNS)"
    fi
}

# What the erase left: rows of account 1 (every table), account 2's rows, objects in the bucket.
erase_check() {
    local bucket=$1 mine theirs left
    mine=$(sql "SELECT (SELECT count(*) FROM accounts WHERE id = 1) + (SELECT count(*) FROM api_keys WHERE account_id = 1)
        + (SELECT count(*) FROM runs WHERE id <= $RUNS OR account_id = 1) + (SELECT count(*) FROM metrics WHERE run_id <= $RUNS)
        + (SELECT count(*) FROM params WHERE run_id <= $RUNS) + (SELECT count(*) FROM snapshots WHERE id <= $RUNS)
        + (SELECT count(*) FROM snapshot_files WHERE snapshot_id <= $RUNS)
        + (SELECT count(*) FROM links WHERE destination_type = 'RUN' AND destination_id::bigint <= $RUNS)")
    theirs=$(sql "SELECT (SELECT count(*) FROM runs WHERE account_id = 2) || '/' || (SELECT count(*) FROM metrics WHERE run_id > $RUNS)
        || '/' || (SELECT count(*) FROM snapshot_files WHERE snapshot_id > $RUNS) || '/' || (SELECT count(*) FROM accounts WHERE id = 2)")
    read -r left _ < <(count_left "$bucket")
    CHECK="acct1_rows=$mine acct2_runs/metrics/snapfiles/account=$theirs objects_left=$left"
    local want_theirs="$NEIGHBOUR_RUNS/$((NEIGHBOUR_RUNS * 3))/$(((ALL_RUNS / 10 - RUNS / 10) * 2))/1"
    if [[ $mine != 0 || $theirs != "$want_theirs" || $left != $((NEIGHBOUR_RUNS * PER)) ]]; then
        CHECK="$CHECK FAILED"
        say "erase check FAILED: $CHECK (want acct1_rows=0, $want_theirs, objects_left=$((NEIGHBOUR_RUNS * PER)))"
    fi
}

lethe_round() {
    local round=$1 bucket=$2 id total_secs total_rss run_secs run_rss verdict
    local env=(env DATABASE_URL="$(db_url "$DB")" LETHE_JOBS_DIR="$JOBS" LETHE_LOG=warn)
    rm -rf "$EXPORT_DIR"
    timed export lethe "$round" "${env[@]}" "$LETHE" request export --account 1 --out "$EXPORT_DIR" --reason bench --by bench
    export_check
    record export lethe "$round" "$SECS" "$RSS" "$CODE" "$CPU" "$CHECK"
    say "export lethe round $round: $CHECK"

    rm -f "$OUT/erase.id" "$OUT/erase.run"
    # request erase, then run --all, under one timer; the run has its own timer inside.
    # shellcheck disable=SC2016 # expanded by the inner bash
    timed erase lethe "$round" bash -c '"$@" request erase --account 1 --reason bench --by bench >"$0.id" || exit
        /usr/bin/time -f "%e %M" -o "$0.run" "$@" run --all' "$OUT/erase" "${env[@]}" "$LETHE"
    total_secs=$SECS total_rss=$RSS
    id=$(cat "$OUT/erase.id" 2>/dev/null || true)
    read -r run_secs run_rss < <(tail -n 1 "$OUT/erase.run" 2>/dev/null || echo "- -")
    erase_check "$bucket"
    verdict=$("${env[@]}" "$LETHE" report --request "${id:-1}" --format jsonl 2>>"$LOG" | head -n 1 | jq -r '.verdict // empty' || true)
    [[ $verdict == fulfilled* ]] || { CHECK="$CHECK FAILED"; say "erase check FAILED: verdict '$verdict'"; }
    CHECK="$CHECK request=${id:-?} verdict=${verdict// /_}"
    record erase lethe "$round" "$total_secs" "$total_rss" "$CODE" "$CPU" "$CHECK"
    record run lethe "$round" "$run_secs" "$run_rss" "$CODE" "-" "-"
    say "erase lethe round $round: run alone ${run_secs}s ${run_rss} KiB; $CHECK"
}

peer_round() {
    local round=$1 bucket=$2
    rm -rf "$EXPORT_DIR"
    timed export peer "$round" "$VENV/bin/python" bench/peers/account.py export "$bucket" "$(db_url "$DB")" 1 "$EXPORT_DIR"
    export_check
    record export peer "$round" "$SECS" "$RSS" "$CODE" "$CPU" "$CHECK"
    say "export peer round $round: $CHECK"
    timed erase peer "$round" "$VENV/bin/python" bench/peers/account.py erase "$bucket" "$(db_url "$DB")" 1
    erase_check "$bucket"
    record erase peer "$round" "$SECS" "$RSS" "$CODE" "$CPU" "$CHECK"
    say "erase peer round $round: $CHECK"
}

say "building the world: account 1 with $RUNS runs, account 2 with $NEIGHBOUR_RUNS"
make_template
for round in $(seq "$ROUNDS"); do
    bucket="bench-requests-$round-$RANDOM"
    say "round $round: seeding $ALL_RUNS runs x $PER objects in $bucket"
    fresh_s3
    "$TOOL" seed "$bucket" "$ALL_RUNS" "$PER" >>"$LOG" 2>&1
    scripts/services.sh snapshot-s3 "$SNAPSHOT" >>"$LOG" 2>&1
    jobs_for_bucket "$bucket"
    # Odd rounds lethe first, even rounds the peer first.
    tools=(lethe peer)
    ((round % 2 == 0)) && tools=(peer lethe)
    for tool in "${tools[@]}"; do
        fresh_s3 "$SNAPSHOT"
        fresh_db
        "${tool}_round" "$round" "$bucket"
    done
    rm -rf "$SNAPSHOT"
done
rm -rf "$EXPORT_DIR"

python3 - "$RESULTS" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def med(op, tool, col="seconds"):
    v = [float(r[col]) for r in rows if r["op"] == op and r["tool"] == tool and r[col] not in ("-", "")]
    return statistics.median(v) if v else None
print(f"\n{'operation':<28}{'lethe s':>10}{'peer s':>10}{'lethe/peer':>12}")
for op, label, peer_op in [("export", "export", "export"), ("erase", "erase (request + run)", "erase"),
                           ("run", "run --all alone", "erase")]:
    l, p = med(op, "lethe"), med(peer_op, "peer")
    ratio = f"{l / p:.2f}" if l and p else "-"
    print(f"{label:<28}{l if l is not None else '-':>10}{p if p is not None else '-':>10}{ratio:>12}")
rss = [int(r["peak_rss_kb"]) for r in rows if r["op"] == "export" and r["tool"] == "lethe"]
if rss:
    print(f"\nlethe export peak RSS: median {statistics.median(rss) / 1024:.1f} MiB, max {max(rss) / 1024:.1f} MiB")
bad = [r for r in rows if r["exit"] not in ("0", "") or "FAILED" in r["check"]]
for r in bad:
    print(f"! {r['op']} {r['tool']} round {r['round']}: exit {r['exit']}, {r['check']}")
print(f"rounds: {len({r['round'] for r in rows})}; results in {sys.argv[1]}")
PY
