#!/usr/bin/env bash
# Lints every file under deploy/ that no integration test exercises (the PostgreSQL role script
# is applied by tests/it/deploy.rs):
#   systemd units   systemd-analyze verify (the binary path pointed at a real build)
#   Kubernetes      YAML parse, and the fields each kind needs
#   JSON            parse; the dashboard's metrics exist in lethe's /metrics output
#   Dockerfile      the stages and the binary it copies
#
#   scripts/lint-deploy.sh [path/to/lethe]   # default: $CARGO_TARGET_DIR/debug/lethe
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${1:-${CARGO_TARGET_DIR:-target}/debug/lethe}"
[[ -x $BIN ]] || { echo "lint-deploy: build lethe first ($BIN not found)" >&2; exit 2; }
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for unit in deploy/systemd/*.service deploy/systemd/*.timer; do
    sed "s#/usr/local/bin/lethe#$BIN#; s#^EnvironmentFile=/etc/lethe/env#EnvironmentFile=-/etc/lethe/env#" "$unit" >"$tmp/$(basename "$unit")"
done
if command -v systemd-analyze >/dev/null; then
    # verify checks syntax, directives and that ExecStart is executable.
    out=$(cd "$tmp" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no ./*.service ./*.timer 2>&1 || true)
    # In a container without a running systemd only "not booted" style noise may remain.
    bad=$(printf '%s\n' "$out" | grep -v -e '^$' -e 'not booted' -e 'Failed to connect' -e 'Cannot find unit' -e 'No such file or directory' || true)
    if [[ -n $bad ]]; then
        printf 'lint-deploy: systemd-analyze verify:\n%s\n' "$bad" >&2
        exit 1
    fi
    echo "lint-deploy: systemd units verified"
else
    echo "lint-deploy: systemd-analyze not installed; units not verified" >&2
    exit 1
fi

python3 - "$BIN" <<'PY'
import json, pathlib, re, subprocess, sys
import yaml

def fail(msg):
    print(f"lint-deploy: {msg}", file=sys.stderr)
    sys.exit(1)

need = {
    "ConfigMap": ["data"],
    "Deployment": ["spec.selector", "spec.template.spec.containers"],
    "CronJob": ["spec.schedule", "spec.jobTemplate.spec.template.spec.containers"],
    "Secret": ["stringData"],
}
def get(d, path):
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d

specs = {}
for p in sorted(pathlib.Path("deploy/kubernetes").glob("*.yaml")):
    for doc in yaml.safe_load_all(p.read_text()):
        for field in ("apiVersion", "kind", "metadata"):
            if field not in doc:
                fail(f"{p}: missing {field}")
        for path in need.get(doc["kind"], []):
            if get(doc, path) is None:
                fail(f"{p}: {doc['kind']} needs {path}")
        if doc["kind"] == "ConfigMap":
            specs.update(doc["data"])
        for c in get(doc, "spec.template.spec.containers") or get(doc, "spec.jobTemplate.spec.template.spec.containers") or []:
            if not c.get("image") or not c.get("args"):
                fail(f"{p}: container {c.get('name')} needs image and args")
            if c["args"][0] not in ("daemon", "run"):
                fail(f"{p}: unexpected lethe command {c['args']}")
# The ConfigMap's specs parse as TOML with the fields lethe requires.
import tomllib
for name, text in specs.items():
    t = tomllib.loads(text)
    for field in ("schedule", "subject", "window"):
        if field not in t:
            fail(f"ConfigMap {name}: missing {field}")
print(f"lint-deploy: Kubernetes manifests parsed ({len(specs)} spec(s) in the ConfigMap)")

for p in pathlib.Path("deploy").rglob("*.json"):
    json.loads(p.read_text())
policy = json.loads(pathlib.Path("deploy/s3/iam-policy.json").read_text())
actions = {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}
for a in ("s3:ListBucketVersions", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload"):
    if a not in actions:
        fail(f"iam-policy.json: lethe needs {a}")

# Every metric the dashboard queries is one lethe exports (names from the source).
src = pathlib.Path("src/daemon/metrics.rs").read_text()
exported = set(re.findall(r'"(lethe_[a-z_]+)"', src))
dash = pathlib.Path("deploy/grafana/lethe-dashboard.json").read_text()
used = set(re.findall(r"lethe_[a-z_]+", dash)) - {"lethe_overview"}
missing = sorted(m for m in used if m not in exported)
if missing:
    fail(f"the dashboard queries metrics lethe does not export: {missing}")
print(f"lint-deploy: JSON parsed; the dashboard's {len(used)} metrics all exist")

docker = pathlib.Path("deploy/Dockerfile").read_text()
if len(re.findall(r"^FROM ", docker, re.M)) < 2 or "COPY --from=build" not in docker or "ENTRYPOINT" not in docker:
    fail("Dockerfile: expected a build stage, a runtime stage copying the binary, and an ENTRYPOINT")
print("lint-deploy: Dockerfile checked")
PY
