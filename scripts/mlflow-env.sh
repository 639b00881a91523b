#!/usr/bin/env bash
# Installs the pinned MLflow the MLflow pack is tested against (and the bench compares with
# `mlflow gc`) into a virtualenv this project owns, and prints its path. Idempotent: a venv
# already holding exactly these pins is reused.
#
#   scripts/mlflow-env.sh            # install if needed; prints the venv directory
#
# Environment:
#   LETHE_CACHE   where the venv lives (default: ~/.cache/lethe; the venv is mlflow-venv there)
set -euo pipefail

MLFLOW_VERSION=3.17.2
PINS=("mlflow==$MLFLOW_VERSION" "psycopg[binary]==3.3.9" "boto3==1.44.8")

CACHE_DIR="${LETHE_CACHE:-$HOME/.cache/lethe}"
VENV="$CACHE_DIR/mlflow-venv"
STAMP="$VENV/.lethe-pins"

mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/mlflow-venv.lock"
flock 9
if [[ -x "$VENV/bin/mlflow" && -f "$STAMP" && "$(cat "$STAMP")" == "${PINS[*]}" ]]; then
    echo "$VENV"
    exit 0
fi
echo "mlflow-env: installing ${PINS[*]} into $VENV (about 900 MB, a minute or two)" >&2
rm -rf "$VENV"
python3 -m venv "$VENV" || { echo "mlflow-env: python3 -m venv $VENV failed" >&2; exit 1; }
"$VENV/bin/pip" install -q --disable-pip-version-check "${PINS[@]}" >&2 \
    || { echo "mlflow-env: pip install ${PINS[*]} failed" >&2; exit 1; }
"$VENV/bin/mlflow" --version >&2
echo "${PINS[*]}" >"$STAMP"
echo "$VENV"
