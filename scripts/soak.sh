#!/usr/bin/env bash
# The fault suites, over and over with fresh seeds: the soak variant of what CI runs once.
#
#   scripts/soak.sh          # 20 rounds
#   ROUNDS=200 scripts/soak.sh
#
# Each round runs the fault, crash, clock, hostile-spec and boundary tests with a new random
# seed (printed). The first failing round stops the soak and prints its seed; rerun that round
# with `LETHE_TEST_SEED=<seed> scripts/test.sh <test name>`. Services are started here and
# stopped on exit, as in scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lethe-target}"
ROUNDS="${ROUNDS:-20}"
LOG=target/soak
mkdir -p "$LOG"

trap 'scripts/services.sh stop' EXIT
scripts/services.sh start
eval "$(scripts/services.sh env)"
cargo build --tests --quiet
for round in $(seq 1 "$ROUNDS"); do
    seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
    start=$(date +%s)
    if ! LETHE_TEST_SEED=$seed cargo test --quiet --test it -- --test-threads=4 \
        faults:: crash:: clocks:: hostile:: one_second_either_side >"$LOG/round-$round.log" 2>&1; then
        grep -E "panicked|seed|violations" "$LOG/round-$round.log" | head -20 >&2
        echo "soak: round $round failed with LETHE_TEST_SEED=$seed (log: $LOG/round-$round.log)" >&2
        exit 1
    fi
    echo "soak: round $round/$ROUNDS passed in $(($(date +%s) - start)) s (seed $seed)"
done
