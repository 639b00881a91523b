#!/usr/bin/env bash
# The project's whole test command: formatting, lints, one debug build, then every test
# against a real PostgreSQL and a real S3 server (started here, stopped on exit).
#
#   scripts/test.sh                 # everything
#   scripts/test.sh some_test_name  # extra args are passed to `cargo test`
#   scripts/test.sh foo -- --nocapture   # args after `--` go to the test binaries
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The build directory is cargo's own (./target) unless CARGO_TARGET_DIR says otherwise, so that
# `cargo run -- demo` and this script build the dependency tree once between them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

stage() { printf '\n==> %s\n' "$*"; }

trap 'scripts/services.sh stop' EXIT

stage "services: start PostgreSQL and SeaweedFS S3"
scripts/services.sh start
eval "$(scripts/services.sh env)"

# Debian packages some tests need: headless Chromium checks the HTML report in a real browser;
# libfaketime skews lethe's process clock in the clock tests.
debian_install() {
    if [[ $(id -u) == 0 ]]; then
        apt-get install -y -q "$@" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
    else
        sudo apt-get install -y -q "$@" >/dev/null
    fi
}
if ! command -v chromium >/dev/null; then
    stage "installing Debian's chromium (for the HTML report test)"
    debian_install chromium
fi
if ! command -v openssl >/dev/null; then
    stage "installing Debian's openssl (the TLS test makes its own CA)"
    debian_install openssl
fi
if [[ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ]]; then
    stage "installing Debian's libfaketime (for the clock tests)"
    debian_install libfaketime
fi
if [[ ! -x /usr/sbin/pgbouncer ]]; then
    stage "installing Debian's pgbouncer (lethe behind a connection pooler)"
    debian_install pgbouncer
fi

stage "cargo fmt --all -- --check"
cargo fmt --all -- --check

stage "the crate's layers: every import points down (scripts/layers.sh)"
bash scripts/layers.sh

stage "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

stage "cargo build --all-targets"
cargo build --all-targets

stage "deploy/: systemd units, manifests, JSON, Dockerfile"
scripts/lint-deploy.sh

# promtool comes with Debian's prometheus package; only promtool is used.
stage "deploy/prometheus, deploy/grafana: alert rules, their unit tests, the dashboard's queries"
if ! command -v promtool >/dev/null; then
    debian_install prometheus
fi
scripts/lint-monitoring.sh

# Split extra args: before `--` for cargo (e.g. a test name filter), after it for libtest.
cargo_args=()
test_args=()
while (($#)); do
    if [[ "$1" == -- ]]; then
        shift
        test_args=("$@")
        break
    fi
    cargo_args+=("$1")
    shift
done
stage "cargo test --all-targets ${cargo_args[*]} -- --test-threads=4 ${test_args[*]}"
cargo test --all-targets "${cargo_args[@]}" -- --test-threads=4 "${test_args[@]}"

stage "all stages passed"
