#!/usr/bin/env python3
"""Plot one run's pace over time against a gateway's limit, from the CSV
that `cargo bench --bench throughput` writes (target/bench/pace.csv): the
calls the gateway let through and refused (429) each second.

Usage: scripts/plot_pace.py [CSV] [PNG] [TITLE]   (needs matplotlib)

Every cell of the quota table has its CSV: target/bench/pace-GATEWAY-Nx.csv.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

source = sys.argv[1] if len(sys.argv) > 1 else "target/bench/pace.csv"
target = sys.argv[2] if len(sys.argv) > 2 else "docs/pace-over-time.png"
title = (
    sys.argv[3]
    if len(sys.argv) > 3
    else "trackmass --rate 3× the limit, sliding window per second"
)

with open(source, newline="") as f:
    rows = list(csv.DictReader(f))
t = [int(r["second"]) for r in rows]
through = [int(r["let_through"]) for r in rows]
refused = [int(r["refused"]) for r in rows]
limit = float(rows[0]["limit"]) if rows else 0.0

fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
ax.axhline(limit, linestyle="--", color="grey", label=f"the gateway's limit ({limit:.0f}/s)")
ax.plot(t, through, color="tab:blue", label="let through (per second)")
ax.bar(t, refused, color="tab:red", width=1.0, label="answered 429 (per second)")
ax.set_xlabel("seconds since the first request")
ax.set_ylabel("requests per second")
ax.set_title(title)
ax.legend(loc="lower right")
ax.set_ylim(bottom=0)
fig.tight_layout()
fig.savefig(target)
print(f"wrote {target}")
