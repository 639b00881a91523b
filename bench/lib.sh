# Shared by bench/run.sh and bench/profile.sh.

# quiesce: waits (at most 30 s) until the S3 server and PostgreSQL have used under 5% of a
# core for a whole second, so every timed command starts on an idle machine rather than
# paying for the previous one's background work (SeaweedFS compacts its metadata store after a
# bulk load, for instance).
quiesce() {
    local weed_pid pids ticks_per_s deadline=$((SECONDS + 30))
    weed_pid=$(cat "${LETHE_STATE_DIR:-$PWD/target/services}/seaweedfs.pid" 2>/dev/null || true)
    ticks_per_s=$(getconf CLK_TCK)
    busy_ticks() {
        local total=0 p
        for p in $weed_pid $(pgrep -x postgres || true); do
            [[ -r /proc/$p/stat ]] || continue
            # utime and stime are fields 14 and 15; the command name (field 2) has no spaces here.
            total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
        done
        echo "$total"
    }
    local before after
    while ((SECONDS < deadline)); do
        before=$(busy_ticks)
        sleep 1
        after=$(busy_ticks)
        if (((after - before) * 100 < 5 * ticks_per_s)); then
            return 0
        fi
    done
    echo "quiesce: services still busy after 30 s; timing anyway" >&2
}

# server_ticks: CPU time (clock ticks) the S3 server has used so far.
server_ticks() {
    local pid
    pid=$(cat "${LETHE_STATE_DIR:-$PWD/target/services}/seaweedfs.pid" 2>/dev/null || true)
    if [[ -r /proc/$pid/stat ]]; then awk '{print $14 + $15}' "/proc/$pid/stat"; else echo 0; fi
}

# server_cpu_since TICKS: seconds of CPU the S3 server has used since server_ticks gave TICKS.
server_cpu_since() {
    echo "scale=2; ($(server_ticks) - $1) / $(getconf CLK_TCK)" | bc
}
