#!/usr/bin/env bash
# Checks lethe's monitoring files (deploy/prometheus/, deploy/grafana/):
#   rules        promtool check rules on the one source, deploy/prometheus/lethe-rules.yaml
#   manifest     the PrometheusRule is what gen-prometheus-rule.py makes of it (--check), and
#                its spec, parsed, equals the rules file, parsed
#   unit tests   promtool test rules deploy/prometheus/tests/*.yaml, and every alert has a
#                case where it fires and one where it must not
#   dashboard    JSON; every query is PromQL that parses (template variables filled in), and
#                none filters or groups on `job` (lethe's label is `lethe_job`)
#
#   scripts/lint-monitoring.sh
#
# Needs promtool (Debian's `prometheus` package; scripts/test.sh installs it) and a python3 with
# PyYAML: the services' virtualenv, first on PATH after `eval "$(scripts/services.sh env)"`, as
# in scripts/test.sh, or else found in its usual place.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() { printf 'lint-monitoring: %s\n' "$*" >&2; exit 1; }

command -v promtool >/dev/null \
    || fail "promtool not found: install Debian's prometheus package (apt-get install prometheus)"
PYTHON=python3
if ! "$PYTHON" -c 'import yaml' 2>/dev/null; then
    PYTHON="${LETHE_CACHE:-$HOME/.cache/lethe}/s3-venv/bin/python"
    [[ -x $PYTHON ]] && "$PYTHON" -c 'import yaml' 2>/dev/null \
        || fail "no python3 with PyYAML: run scripts/services.sh start (it installs one), then eval \"\$(scripts/services.sh env)\""
fi

RULES=deploy/prometheus/lethe-rules.yaml
TESTS=(deploy/prometheus/tests/*.yaml)

out=$(promtool check rules "$RULES" 2>&1) || fail "promtool check rules $RULES:"$'\n'"$out"
echo "lint-monitoring: $(promtool --version 2>&1 | head -n 1): check rules: $(grep -o 'SUCCESS.*' <<<"$out")"

"$PYTHON" deploy/prometheus/gen-prometheus-rule.py --check >/dev/null \
    || fail "deploy/prometheus/prometheus-rule.yaml is stale (the diff is above)"

out=$(promtool test rules "${TESTS[@]}" 2>&1) || fail "promtool test rules:"$'\n'"$out"
echo "lint-monitoring: test rules: ${#TESTS[@]} file(s) pass"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" - "$RULES" "$tmp/dashboard-rules.yaml" "${TESTS[@]}" <<'PY'
import json, pathlib, re, sys
import yaml

def fail(msg):
    print(f"lint-monitoring: {msg}", file=sys.stderr)
    sys.exit(1)

rules_path, dash_rules_path, *test_paths = sys.argv[1:]
rules = yaml.safe_load(pathlib.Path(rules_path).read_text())
manifest = yaml.safe_load(pathlib.Path("deploy/prometheus/prometheus-rule.yaml").read_text())
if manifest.get("apiVersion") != "monitoring.coreos.com/v1" or manifest.get("kind") != "PrometheusRule":
    fail("prometheus-rule.yaml: expected apiVersion monitoring.coreos.com/v1, kind PrometheusRule")
if not manifest.get("metadata", {}).get("name"):
    fail("prometheus-rule.yaml: metadata.name is missing")
if manifest.get("spec") != rules:
    fail(f"prometheus-rule.yaml: its spec differs from {rules_path}: run python3 deploy/prometheus/gen-prometheus-rule.py")

# Every alert: a severity the README documents, a summary and a description; a per-job alert
# names its job in both.
alerts = {}
for group in rules["groups"]:
    for rule in group["rules"]:
        if "alert" not in rule:
            continue
        name = rule["alert"]
        if name in alerts:
            fail(f"{rules_path}: alert {name} defined twice")
        alerts[name] = rule
        if rule.get("labels", {}).get("severity") not in ("critical", "warning"):
            fail(f"{rules_path}: {name}: severity must be critical or warning")
        ann = rule.get("annotations", {})
        for key in ("summary", "description"):
            if not ann.get(key):
                fail(f"{rules_path}: {name}: no {key} annotation")
            if "lethe_job" in rule["expr"] and "$labels.lethe_job" not in ann[key]:
                fail(f"{rules_path}: {name}: its {key} should name the job ({{{{ $labels.lethe_job }}}})")
        if re.search(r"\bjob\s*(=|!=|=~|!~)", rule["expr"]):
            fail(f"{rules_path}: {name}: filters on `job`, the scrape target's label; lethe's is `lethe_job`")

# Every alert is tested firing and tested quiet.
fires, quiet = set(), set()
for p in test_paths:
    for test in yaml.safe_load(pathlib.Path(p).read_text()).get("tests", []):
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
for name in alerts:
    if name not in fires:
        fail(f"deploy/prometheus/tests: no case where {name} fires")
    if name not in quiet:
        fail(f"deploy/prometheus/tests: no case where {name} must stay quiet")
unknown = sorted((fires | quiet) - set(alerts))
if unknown:
    fail(f"deploy/prometheus/tests: cases for alerts that do not exist: {unknown}")
print(f"lint-monitoring: PrometheusRule spec equals the rules file; {len(alerts)} alerts, each tested firing and quiet")

# The dashboard: its queries as recording rules, for promtool to parse.
dash_path = pathlib.Path("deploy/grafana/lethe-dashboard.json")
try:
    dash = json.loads(dash_path.read_text())
except json.JSONDecodeError as e:
    fail(f"{dash_path}: not JSON: {e}")
ids = [p["id"] for p in dash["panels"]]
if len(ids) != len(set(ids)):
    fail(f"{dash_path}: panel ids repeat: {sorted(ids)}")
variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
if "lethe_job" not in variables:
    fail(f"{dash_path}: no lethe_job template variable")
fill = {"$lethe_job": ".*", "${lethe_job}": ".*", "$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d"}
records = []
for p in dash["panels"]:
    for t in p.get("targets", []):
        expr = t.get("expr")
        if not expr:
            fail(f"{dash_path}: panel {p['title']!r} has a target without expr")
        if re.search(r"\bjob\s*(=|!=|=~|!~)|\bby\s*\([^)]*\bjob\b|\{\{\s*job\s*\}\}", expr + t.get("legendFormat", "")):
            fail(f"{dash_path}: panel {p['title']!r} uses `job`; lethe's label is `lethe_job`: {expr}")
        for k, v in fill.items():
            expr = expr.replace(k, v)
        if "$" in expr:
            fail(f"{dash_path}: panel {p['title']!r}: unknown template variable in {expr}")
        records.append({"record": f"dashboard:panel_{p['id']}:{t['refId']}", "expr": expr})
pathlib.Path(dash_rules_path).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
print(f"lint-monitoring: {dash_path} is JSON with {len(records)} queries")
PY

out=$(promtool check rules "$tmp/dashboard-rules.yaml" 2>&1) \
    || fail "deploy/grafana/lethe-dashboard.json: a query does not parse:"$'\n'"$out"
echo "lint-monitoring: the dashboard's queries parse"
