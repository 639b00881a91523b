#!/usr/bin/env bash
# The crate's layers (docs/decisions/0007-one-direction.md): every `crate::MODULE` a file of
# src/ names is an arrow from its top-level module to that one. An arrow must point to a lower
# layer (or stay inside its own module); an arrow up, or a circle between two top-level
# modules, fails; so do sqlx used outside src/db/ (SQL lives there alone), a file of src/ over
# 500 lines, and one without a module doc comment. Prints the arrows between modules with the
# files that make them.
#
#   bash scripts/layers.sh          # check; exit 1 on an upward arrow
#   bash scripts/layers.sh --graph  # also print every arrow
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - "$@" <<'PY'
import pathlib, re, sys

# Highest first. A module may take from the layers below its own, never from above.
LAYERS = [
    ["main", "lib", "cli"],
    ["daemon", "report", "demo", "export"],
    ["pipeline"],
    ["context"],
    ["anchor", "config"],
    ["spec", "storage", "db"],
    ["domain", "audit", "controls"],
]
layer = {m: i for i, ms in enumerate(LAYERS) for m in ms}

def module_of(path):
    rel = path.relative_to("src")
    return rel.parts[0].removesuffix(".rs")

arrows = {}
for f in sorted(pathlib.Path("src").rglob("*.rs")):
    text = f.read_text()
    # Leave out tests: `#[cfg(test)] mod tests { ... }` at the end of a file.
    cut = text.find("#[cfg(test)]\nmod tests")
    if cut >= 0:
        text = text[:cut]
    src = module_of(f)
    # `use crate::{a, b::c}` and paths `crate::x::...` anywhere.
    # Exported macros live at the crate root; each belongs to the module that defines it.
    MACROS = {"on_db": "db", "on_tx": "db", "outln": "cli"}
    names = {MACROS.get(n, n) for n in re.findall(r"\bcrate::([a-z_]+)", text)}
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
        names |= {n.strip().split("::")[0] for n in group.split(",") if n.strip()}
    for dst in names:
        if dst != src and dst != "self":
            arrows.setdefault((src, dst), []).append(str(f))

bad = []
for (src, dst), files in sorted(arrows.items()):
    where = ", ".join(sorted(set(files)))
    missing = [m for m in (src, dst) if m not in layer]
    if missing:
        bad.append(f"src/{missing[0]}: a top-level module in no layer (add it to scripts/layers.sh)")
    elif layer[dst] < layer[src]:
        bad.append(f"{src} -> {dst} runs up ({where})")
    elif layer[dst] == layer[src] and (dst, src) in arrows:
        bad.append(f"{src} <-> {dst}: a circle inside one layer ({where})")

# SQL lives under src/db/ alone: no other module names sqlx (tests aside).
for f in sorted(pathlib.Path("src").rglob("*.rs")):
    if f.parts[1] == "db" or f.name == "tests.rs":
        continue
    text = f.read_text()
    cut = text.find("#[cfg(test)]\nmod tests")
    if cut >= 0:
        text = text[:cut]
    if "sqlx::" in text:
        bad.append(f"{f} uses sqlx: SQL belongs under src/db/, behind a function named for what it answers")

# No file of src/ needs two sittings: 500 lines at most, each opening with what it owns.
for f in sorted(pathlib.Path("src").rglob("*.rs")):
    text = f.read_text()
    n = text.count("\n")
    if n > 500:
        bad.append(f"{f} has {n} lines: split it (at most 500)")
    if f.name != "tests.rs" and not text.startswith("//!"):
        bad.append(f"{f} does not open with a module doc comment (what it owns, what it must not do)")

if "--graph" in sys.argv:
    for (src, dst), files in sorted(arrows.items()):
        print(f"{src} -> {dst}  ({len(set(files))} files)")
if bad:
    for b in sorted(set(bad)):
        print(f"layers: {b}")
    sys.exit(1)
print(f"layers: {len(arrows)} arrows between {len({s for s, _ in arrows} | {d for _, d in arrows})} modules, every one downward")
PY
