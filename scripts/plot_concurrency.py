#!/usr/bin/env python3
"""Plot throughput against concurrency at a fixed latency, with the
Little's-law line (concurrency / latency), from the CSV that
`cargo bench --bench throughput` writes (target/bench/concurrency.csv).

Usage: scripts/plot_concurrency.py [CSV] [PNG]   (needs matplotlib)
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

source = sys.argv[1] if len(sys.argv) > 1 else "target/bench/concurrency.csv"
target = sys.argv[2] if len(sys.argv) > 2 else "docs/throughput-by-concurrency.png"

with open(source, newline="") as f:
    rows = list(csv.DictReader(f))
c = [int(r["concurrency"]) for r in rows]
measured = [float(r["rows_per_second"]) for r in rows]
bound = [float(r["littles_law"]) for r in rows]

fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
ax.plot(c, bound, "--", color="grey", label="Little's law: concurrency / 50 ms")
ax.plot(c, measured, "o-", color="tab:blue", label="trackmass run (measured)")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xticks(c)
ax.set_xticklabels([str(x) for x in c])
ax.set_xlabel("--concurrency")
ax.set_ylabel("rows per second")
ax.set_title("Throughput against concurrency, sandbox latency 50 ms")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(target)
print(f"wrote {target}")
