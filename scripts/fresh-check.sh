#!/usr/bin/env bash
# The newcomer's check: clones this repository into an empty directory and runs the README's
# two set-up commands (its first two ```sh blocks) there exactly as written, with empty caches
# of their own (a fresh HOME: no cargo target directory, no SeaweedFS virtualenv), timing each.
# The crate registry (CARGO_HOME) and the toolchain (RUSTUP_HOME) are shared: a fresh machine
# downloads the same crates. Stop services another checkout started first (ports 5432 and 8333
# are shared). Exits non-zero if either command fails.
#
#   bash scripts/fresh-check.sh            # clones HEAD of this checkout
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/lethe-fresh.XXXXXX")"
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
export HOME="$work/home"
unset CARGO_TARGET_DIR
mkdir -p "$HOME"
git clone -q "$src" "$work/lethe"
cd "$work/lethe"

# The first two ```sh blocks of the README, one command each.
mapfile -t commands < <(awk '/^```sh$/ { inside = 1; next } /^```$/ { inside = 0 } inside' README.md | head -n 2)
((${#commands[@]} == 2)) || { echo "fresh-check: the README has no two sh blocks" >&2; exit 1; }

status=0
for cmd in "${commands[@]}"; do
    log="$work/$(tr -c 'a-z0-9' '_' <<<"$cmd" | cut -c1-40).log"
    start=$(date +%s)
    if bash -c "$cmd" >"$log" 2>&1; then result=ok; else result="FAILED (exit $?)"; status=1; fi
    printf 'fresh-check: %-24s %s after %d s (log: %s)\n' "$cmd" "$result" $(($(date +%s) - start)) "$log"
done
echo "fresh-check: clone and caches in $work (remove when done)"
exit $status
