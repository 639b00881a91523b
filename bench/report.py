"""Prints medians and ratios from bench/run.sh's results.tsv."""
import csv
import statistics
import sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = defaultdict(list)
for r in rows:
    by[(r["scenario"], r["tool"])].append(r)

W = max([10] + [len(t) + 2 for _, t in by])
print(f"\n{'scenario':<16}{'tool':<{W}}{'items':>9}{'median s':>10}{'min s':>8}{'max s':>8}{'items/s':>10}"
      f"{'vs s5cmd':>10}{'vs floor':>11}{'vs raw-sql':>11}{'peak RSS MiB':>14}{'S3 CPU s':>10}  left (versions/markers), exit")
rate = {}
for (scenario, tool), rs in by.items():
    secs = [float(r["seconds"]) for r in rs]
    rate[(scenario, tool)] = int(rs[0]["items"]) / statistics.median(secs)
for (scenario, tool), rs in sorted(by.items()):
    secs = [float(r["seconds"]) for r in rs]
    med = statistics.median(secs)
    mine = rate[(scenario, tool)]
    incomplete = any(r["left_versions"] not in ("0", "-") or r["left_markers"] not in ("0", "-") for r in rs)

    def ratio(peer):
        other = rate.get((scenario, peer))
        if incomplete:
            return "left data"
        return f"{mine / other:.2f}" if other and tool != peer else "-"
    rss = [int(r["peak_rss_kb"]) for r in rs if r["peak_rss_kb"] not in ("-", "")]
    rss_s = f"{max(rss) / 1024:.1f}" if rss else "-"
    cpu = [float(r["server_cpu_s"]) for r in rs if r.get("server_cpu_s") not in (None, "-", "")]
    cpu_s = f"{statistics.median(cpu):.2f}" if cpu else "-"
    left = ",".join(sorted({f"{r['left_versions']}/{r['left_markers']}" for r in rs}))
    codes = ",".join(sorted({r["exit"] for r in rs}))
    print(f"{scenario:<16}{tool:<{W}}{rs[0]['items']:>9}{med:>10.2f}{min(secs):>8.2f}{max(secs):>8.2f}{mine:>10.0f}"
          f"{ratio('s5cmd'):>10}{ratio('floor'):>11}{ratio('raw-sql'):>11}{rss_s:>14}{cpu_s:>10}  {left}, {codes}")

# Paired ratios: each round's tools ran on identical data, one after another, so the ratio of
# one round is less exposed to the machine's drift than a ratio of medians.
# Every lethe variant (`lethe:NAME=VALUE,...`) is paired with the peers the same way.
for scenario, tool in sorted(k for k in by if k[1] == "lethe" or k[1].startswith("lethe:")):
    for peer in ("s5cmd", "floor", "raw-sql"):
        mine = {r["round"]: float(r["seconds"]) for r in by[(scenario, tool)]}
        other = {r["round"]: float(r["seconds"]) for r in by.get((scenario, peer), [])}
        ratios = [other[k] / mine[k] for k in sorted(mine) if k in other]
        if ratios:
            shown = " ".join(f"{x:.2f}" for x in ratios)
            print(f"{scenario}: {tool}'s speed / {peer}'s, round by round: {shown} (median {statistics.median(ratios):.2f})")
