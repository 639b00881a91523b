#!/usr/bin/env bash
# Lints what under deploy/ no integration test runs (tests/it/deploy.rs runs `lethe check` on
# the ConfigMap's specs, checks the LETHE_* names, and applies the PostgreSQL role script):
#   ConfigMap       generated from jobs/*.toml (scripts/deploy-manifests.sh --check)
#   systemd units   systemd-analyze verify (the binary path pointed at a real build); the
#                   hardening of lethe.service and lethe-run.service is the same and scores
#                   at most 2.0 in `systemd-analyze security`; restart and anchor rules
#   Kubernetes      YAML parse, the fields each kind needs, pod security, probes, the
#                   disruption budget, the CronJob's deadline and failure policy, and that
#                   names, paths and ports agree between the manifests
#   JSON            parse; the IAM policy allows what lethe needs
#   Dockerfile      stages, the binary it copies is the one the build makes, a non-root user,
#                   no specs baked in; .dockerignore leaves out target/ and .git but nothing
#                   the build reads. (No image is built: no base image can be pulled here.)
#
#   scripts/lint-deploy.sh [path/to/lethe]   # default: $CARGO_TARGET_DIR/debug/lethe
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${1:-${CARGO_TARGET_DIR:-target}/debug/lethe}"
[[ -x $BIN ]] || { echo "lint-deploy: build lethe first ($BIN not found)" >&2; exit 2; }
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

scripts/deploy-manifests.sh --check

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for unit in deploy/systemd/*.service deploy/systemd/*.timer; do
    sed "s#/usr/local/bin/lethe#$BIN#; s#^EnvironmentFile=/etc/lethe/env#EnvironmentFile=-/etc/lethe/env#" "$unit" >"$tmp/$(basename "$unit")"
done
command -v systemd-analyze >/dev/null || { echo "lint-deploy: systemd-analyze not installed; units not verified" >&2; exit 1; }
# verify checks syntax, directives and that ExecStart is executable.
out=$(cd "$tmp" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no ./*.service ./*.timer 2>&1 || true)
# In a container without a running systemd only "not booted" style noise may remain.
bad=$(printf '%s\n' "$out" | grep -v -e '^$' -e 'not booted' -e 'Failed to connect' -e 'Cannot find unit' -e 'No such file or directory' || true)
if [[ -n $bad ]]; then
    printf 'lint-deploy: systemd-analyze verify:\n%s\n' "$bad" >&2
    exit 1
fi
# The exposure score (0 best, 10 worst); --threshold is in tenths.
for unit in "$tmp"/*.service; do
    if ! score=$(cd "$tmp" && systemd-analyze security --offline=yes --threshold=20 --no-pager "./${unit##*/}" 2>&1); then
        printf 'lint-deploy: %s is exposed above 2.0 in systemd-analyze security:\n%s\n' "${unit##*/}" "$score" >&2
        exit 1
    fi
done
echo "lint-deploy: systemd units verified; exposure at most 2.0"

python3 - <<'PY'
import json, os, pathlib, re, sys
import tomllib
import yaml

def fail(msg):
    print(f"lint-deploy: {msg}", file=sys.stderr)
    sys.exit(1)

# ---------------------------------------------------------------- systemd
def service_section(path):
    """The [Service] directives of a unit, in order, as (key, value)."""
    out, section = [], None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out

# What a unit runs and how it is restarted differ between the two; everything else in
# [Service] is its sandbox and must be the same in both.
RUNS = {"Type", "ExecStart", "Environment", "EnvironmentFile", "KillSignal", "TimeoutStopSec",
        "TimeoutStartSec", "Restart", "RestartSec", "RestartPreventExitStatus", "SuccessExitStatus"}
daemon_path = pathlib.Path("deploy/systemd/lethe.service")
oneshot_path = pathlib.Path("deploy/systemd/lethe-run.service")
daemon, oneshot = service_section(daemon_path), service_section(oneshot_path)
hard = {p: sorted(kv for kv in s if kv[0] not in RUNS) for p, s in ((daemon_path, daemon), (oneshot_path, oneshot))}
for a, b in ((daemon_path, oneshot_path), (oneshot_path, daemon_path)):
    missing = [f"{k}={v}" for k, v in hard[a] if (k, v) not in hard[b]]
    if missing:
        fail(f"{b} lacks the hardening of {a}: {', '.join(missing)} (keep the two blocks the same)")
# The issue's floor (#23): these must be among them.
keys = {k for k, _ in hard[daemon_path]}
for k in ("NoNewPrivileges", "ProtectSystem", "ProtectKernelTunables", "ProtectControlGroups",
          "SystemCallFilter", "CapabilityBoundingSet", "MemoryMax", "StateDirectory"):
    if k not in keys:
        fail(f"the units lack {k}=")
prevent = dict(daemon).get("RestartPreventExitStatus", "").split()
if "2" not in prevent:
    fail(f"{daemon_path}: RestartPreventExitStatus must include 2 (a configuration error does not heal by restarting)")
# A file anchor must be in the state directory, the only place the units may write; anchors
# are plain paths or s3:// (src/anchor.rs), never file:// URLs.
state = "/var/lib/" + dict(hard[daemon_path])["StateDirectory"].split()[0] + "/"
for p in sorted(pathlib.Path("deploy/systemd").iterdir()):
    for m in re.finditer(r"LETHE_AUDIT_ANCHOR=(\S+)", p.read_text()):
        v = m.group(1)
        if not (v.startswith("s3://") or v.startswith(state)):
            fail(f"{p}: LETHE_AUDIT_ANCHOR={v} is neither s3://BUCKET/PREFIX nor a file under {state}")
print(f"lint-deploy: both units carry the same {len(hard[daemon_path])} hardening directives")

# ---------------------------------------------------------------- Kubernetes
def get(d, path, default=None):
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d

need = {
    "ConfigMap": ["data"],
    "Deployment": ["spec.selector.matchLabels", "spec.replicas", "spec.template.spec.containers"],
    "CronJob": ["spec.schedule", "spec.jobTemplate.spec.template.spec.containers"],
    "PodDisruptionBudget": ["spec.selector.matchLabels", "spec.minAvailable"],
    "NetworkPolicy": ["spec.podSelector.matchLabels", "spec.ingress"],
    "Secret": ["stringData"],
}
docs = {}
for p in sorted(pathlib.Path("deploy/kubernetes").glob("*.yaml")):
    for doc in yaml.safe_load_all(p.read_text()):
        for field in ("apiVersion", "kind", "metadata"):
            if field not in doc:
                fail(f"{p}: missing {field}")
        kind = doc["kind"]
        if kind not in need:
            fail(f"{p}: unexpected kind {kind}")
        for path in need[kind]:
            if get(doc, path) is None:
                fail(f"{p}: {kind} needs {path}")
        if kind in docs:
            fail(f"{p}: a second {kind}")
        docs[kind] = (p, doc)
for kind in need:
    if kind not in docs:
        fail(f"deploy/kubernetes has no {kind}")

docker = pathlib.Path("deploy/Dockerfile").read_text()
user = re.findall(r"^USER\s+(\S+)", docker, re.M)
image_uid = user[-1].split(":")[0] if user else "0"
cm_name = docs["ConfigMap"][1]["metadata"]["name"]
secret_name = docs["Secret"][1]["metadata"]["name"]
images = set()

def pod_checks(p, kind, pod):
    """What every lethe pod needs, and that its names and paths agree with the other files."""
    where = f"{p} ({kind})"
    if pod.get("automountServiceAccountToken") is not False:
        fail(f"{where}: automountServiceAccountToken must be false (lethe never calls the API)")
    sc = pod.get("securityContext", {})
    if get(sc, "seccompProfile.type") != "RuntimeDefault":
        fail(f"{where}: securityContext.seccompProfile.type must be RuntimeDefault")
    if sc.get("runAsNonRoot") is not True or str(sc.get("runAsUser")) != image_uid:
        fail(f"{where}: runAsNonRoot true and runAsUser {image_uid} (the Dockerfile's USER)")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    containers = pod["containers"]
    if len(containers) != 1:
        fail(f"{where}: one container expected")
    c = containers[0]
    images.add(c.get("image"))
    if not c.get("image") or not c.get("args") or c["args"][0] not in ("daemon", "run"):
        fail(f"{where}: container {c.get('name')} needs an image and args starting with daemon or run")
    csc = c.get("securityContext", {})
    if csc.get("allowPrivilegeEscalation") is not False or csc.get("readOnlyRootFilesystem") is not True \
            or "ALL" not in get(csc, "capabilities.drop", []):
        fail(f"{where}: the container needs allowPrivilegeEscalation false, readOnlyRootFilesystem true, capabilities.drop [ALL]")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    jobs_dir = env.get("LETHE_JOBS_DIR")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    if jobs_dir not in mounts or get(volumes.get(mounts[jobs_dir]["name"], {}), "configMap.name") != cm_name:
        fail(f"{where}: LETHE_JOBS_DIR={jobs_dir} must be where the ConfigMap {cm_name} is mounted")
    refs = [get(e, "secretRef.name") for e in c.get("envFrom", [])]
    if secret_name not in refs:
        fail(f"{where}: envFrom must read the Secret {secret_name} (secret.example.yaml)")
    return c, env

p, dep = docs["Deployment"]
pod = dep["spec"]["template"]["spec"]
c, env = pod_checks(p, "Deployment", pod)
labels = dep["spec"]["template"]["metadata"]["labels"]
if dep["spec"]["replicas"] < 2:
    fail(f"{p}: two replicas or more, so that a drain or a crash does not stop the schedule")
port = int(env.get("LETHE_LISTEN", ":0").rsplit(":", 1)[1])
ports = {pt.get("name"): pt["containerPort"] for pt in c.get("ports", [])}
if port not in ports.values():
    fail(f"{p}: LETHE_LISTEN's port {port} is not a containerPort")
if str(port) != get(dep, "spec.template.metadata.annotations", {}).get("prometheus.io/port"):
    fail(f"{p}: the prometheus.io/port annotation is not LETHE_LISTEN's port {port}")
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
    got = get(c, f"{probe}.httpGet", {})
    if got.get("path") != path or ports.get(got.get("port"), got.get("port")) != port:
        fail(f"{p}: {probe} must GET {path} on LETHE_LISTEN's port {port}")
grace = pod.get("terminationGracePeriodSeconds", 30)
if int(env.get("LETHE_SHUTDOWN_SECONDS") or 30) >= grace:
    fail(f"{p}: LETHE_SHUTDOWN_SECONDS must stay under terminationGracePeriodSeconds ({grace})")

p, pdb = docs["PodDisruptionBudget"]
sel = pdb["spec"]["selector"]["matchLabels"]
if not sel.items() <= labels.items():
    fail(f"{p}: the selector {sel} does not select the Deployment's pods {labels}")
if not 1 <= pdb["spec"]["minAvailable"] < dep["spec"]["replicas"]:
    fail(f"{p}: minAvailable must be at least 1 and below the Deployment's replicas")

p, netpol = docs["NetworkPolicy"]
if not netpol["spec"]["podSelector"]["matchLabels"].items() <= labels.items():
    fail(f"{p}: the NetworkPolicy does not select the Deployment's pods {labels}")
if "Ingress" not in netpol["spec"].get("policyTypes", []):
    fail(f"{p}: the NetworkPolicy must restrict Ingress")
for rule in netpol["spec"]["ingress"]:
    if not rule.get("from"):
        fail(f"{p}: an ingress rule without `from` admits everyone to the metrics port")

p, cron = docs["CronJob"]
job = cron["spec"]["jobTemplate"]["spec"]
pod = job["template"]["spec"]
c, env = pod_checks(p, "CronJob", pod)
if sel.items() <= job["template"].get("metadata", {}).get("labels", {}).items():
    fail(f"{p}: the PodDisruptionBudget's selector also selects the CronJob's pods")
if cron["spec"].get("concurrencyPolicy") != "Forbid":
    fail(f"{p}: concurrencyPolicy must be Forbid")
deadline = job.get("activeDeadlineSeconds")
if not deadline:
    fail(f"{p}: the Job needs activeDeadlineSeconds")
budget = int(env.get("LETHE_RUN_BUDGET_SECONDS") or 0)
if budget and budget >= deadline:
    fail(f"{p}: LETHE_RUN_BUDGET_SECONDS ({budget}) must end before activeDeadlineSeconds ({deadline})")
if pod.get("restartPolicy") != "Never":
    fail(f"{p}: restartPolicy must be Never (podFailurePolicy requires it)")
no_retry = set()
for rule in get(job, "podFailurePolicy.rules", []):
    codes = rule.get("onExitCodes", {})
    if rule.get("action") == "FailJob" and codes.get("operator") == "In" \
            and codes.get("containerName", c["name"]) == c["name"]:
        no_retry |= set(codes.get("values", []))
for code, why in ((2, "a configuration error"), (4, "the clock guard"), (5, "a hold changed outside lethe")):
    if code not in no_retry:
        fail(f"{p}: podFailurePolicy must FailJob on exit {code} ({why}: a retry cannot help)")
if len(images) != 1:
    fail(f"the Deployment and the CronJob run different images: {sorted(images)}")
print("lint-deploy: Kubernetes manifests checked (" + ", ".join(sorted(docs)) + ")")

# ---------------------------------------------------------------- JSON
for p in pathlib.Path("deploy").rglob("*.json"):
    json.loads(p.read_text())
policy = json.loads(pathlib.Path("deploy/s3/iam-policy.json").read_text())
actions = {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}
for a in ("s3:ListBucketVersions", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload"):
    if a not in actions:
        fail(f"iam-policy.json: lethe needs {a}")
print("lint-deploy: JSON parsed")

# ---------------------------------------------------------------- Dockerfile
stages = re.split(r"^(?=FROM\s)", docker, flags=re.M)[1:]
if len(stages) < 2:
    fail("Dockerfile: expected a build stage and a runtime stage")
build, final = stages[0], stages[-1]
m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", build, re.I)
workdir = re.findall(r"^WORKDIR\s+(\S+)", build, re.M)
cargo = re.search(r"cargo build\b[^\n]*", build)
if not (m and workdir and cargo and "--release" in cargo.group(0)):
    fail("Dockerfile: the build stage needs a name (AS build), a WORKDIR and `cargo build --release`")
bin_name = re.search(r"--bin\s+(\S+)", cargo.group(0))
bin_name = bin_name.group(1) if bin_name else "lethe"
built = f"{workdir[-1].rstrip('/')}/target/release/{bin_name}"
copied = re.findall(rf"^COPY\s+--from={re.escape(m.group(1))}\s+(\S+)\s+(\S+)", final, re.M)
if [src for src, _ in copied] != [built]:
    fail(f"Dockerfile: the runtime stage must copy the build's output {built}, copies {copied}")
entry = re.search(r"^ENTRYPOINT\s+\[\"([^\"]+)\"", final, re.M)
if not entry or entry.group(1) != copied[0][1]:
    fail(f"Dockerfile: ENTRYPOINT must run the copied binary {copied[0][1]}")
if not user or user[-1].split(":")[0] in ("0", "root") or not user[-1].split(":")[0].isdigit():
    fail("Dockerfile: the runtime stage must end with a numeric non-root USER")
if re.search(r"^(COPY|ADD)\s+(?!--from=)", final, re.M):
    fail("Dockerfile: the runtime stage copies files from the context (job specs belong in a volume)")
if re.search(r"^ENV\s+.*LETHE_JOBS_DIR", final, re.M):
    fail("Dockerfile: no default LETHE_JOBS_DIR in the image (the deployment sets it where it mounts specs)")

# .dockerignore, with Docker's rules for the patterns it uses: `*` within a path segment,
# `**` across segments, a pattern matching a directory leaves out all under it, `!` re-includes,
# the last matching pattern wins.
patterns = []
for line in pathlib.Path(".dockerignore").read_text().splitlines():
    line = line.strip()
    if line and not line.startswith("#"):
        neg = line.startswith("!")
        pat = line.lstrip("!").strip("/")
        rx = re.escape(pat).replace(r"\*\*", "\0").replace(r"\*", "[^/]*").replace(r"\?", "[^/]").replace("\0", ".*")
        patterns.append((neg, re.compile(rx + r"\Z")))
def ignored(path):
    parts = path.split("/")
    result = False
    for neg, rx in patterns:
        if any(rx.match("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            result = not neg
    return result
for path in (".git", "target", "target/release/lethe"):
    if not ignored(path):
        fail(f".dockerignore must leave out {path}")
# What the build reads: the manifest, the lockfile, the binary's sources and every file the
# sources include at compile time.
cargo_toml = tomllib.loads(pathlib.Path("Cargo.toml").read_text())
needed = {"Cargo.toml", "Cargo.lock"} | {b["path"] for b in cargo_toml.get("bin", [])}
for src in pathlib.Path("src").rglob("*.rs"):
    needed.add(str(src))
    for inc in re.findall(r'(?:include_str|include_bytes)!\(\s*"([^"]+)"', src.read_text()):
        needed.add(os.path.normpath(src.parent / inc))
    for mig in re.findall(r'migrate!\(\s*"([^"]+)"', src.read_text()):
        needed |= {str(f) for f in pathlib.Path(mig).rglob("*") if f.is_file()}
left_out = sorted(n for n in needed if ignored(n))
if left_out:
    more = f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
    fail(f".dockerignore leaves out what the build reads: {', '.join(left_out[:5])}{more}")
print(f"lint-deploy: Dockerfile checked; .dockerignore keeps the {len(needed)} files the build reads")
PY
