"""Writes deploy/prometheus/prometheus-rule.yaml, a PrometheusRule for the Prometheus Operator,
from deploy/prometheus/lethe-rules.yaml, the one source of lethe's alerts.

    python3 deploy/prometheus/gen-prometheus-rule.py           # write it
    python3 deploy/prometheus/gen-prometheus-rule.py --check   # exit 1 if the committed file differs

A PrometheusRule's `spec` is a rules file (`groups:`), so the manifest is the rules file's text,
its header comment left out, indented under `spec:`: comments and layout survive, the output
depends on nothing but the input, and no YAML library is needed. scripts/lint-monitoring.sh
also parses both and compares the spec with the rules file.
"""

import difflib
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE / "lethe-rules.yaml"
TARGET = HERE / "prometheus-rule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/lethe-rules.yaml by
#   python3 deploy/prometheus/gen-prometheus-rule.py
# Do not edit: edit lethe-rules.yaml and run that again (scripts/lint-monitoring.sh fails when
# this file is out of date). How to load it: deploy/prometheus/README.md.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: lethe
  labels:
    app.kubernetes.io/name: lethe
    # The Operator loads the PrometheusRules its Prometheus's `ruleSelector` matches; the
    # kube-prometheus-stack chart selects `release: <its Helm release name>`. Adjust to yours.
    release: kube-prometheus-stack
spec:
"""


def fail(msg):
    print(f"gen-prometheus-rule: {msg}", file=sys.stderr)
    sys.exit(1)


def render(source_text):
    lines = source_text.splitlines()
    # Leave out the header comment (and blank lines) before the first YAML line.
    start = 0
    while start < len(lines) and (not lines[start].strip() or lines[start].lstrip().startswith("#")):
        start += 1
    body = lines[start:]
    if not body or body[0] != "groups:":
        fail(f"{SOURCE}: expected `groups:` as the first line after the header comment")
    for n, line in enumerate(body, start + 1):
        # A second document or a tab would not survive being indented under `spec:`.
        if line.startswith("---") or line.startswith("...") or "\t" in line:
            fail(f"{SOURCE}:{n}: one YAML document, indented with spaces, please")
    return HEADER + "".join(f"  {line}\n" if line else "\n" for line in body)


def main(argv):
    if argv not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    want = render(SOURCE.read_text(encoding="utf-8"))
    if argv == ["--check"]:
        have = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if have != want:
            sys.stderr.writelines(
                difflib.unified_diff(
                    have.splitlines(keepends=True),
                    want.splitlines(keepends=True),
                    str(TARGET.relative_to(HERE.parent.parent)),
                    "generated from lethe-rules.yaml",
                )
            )
            fail(
                f"{TARGET.name} is out of date with lethe-rules.yaml: "
                "run python3 deploy/prometheus/gen-prometheus-rule.py"
            )
        print(f"gen-prometheus-rule: {TARGET.name} is up to date")
        return 0
    TARGET.write_text(want, encoding="utf-8")
    print(f"gen-prometheus-rule: wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
