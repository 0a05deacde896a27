#!/usr/bin/env bash
# The whole benchmark in one command: the table (cargo bench --bench
# throughput), then the plots of throughput against concurrency and of one
# run's pace against a gateway's limit.
#
#   scripts/bench.sh            # full sizes (about 40 minutes on 2 cores)
#   TRACKMASS_BENCH_SCALE=small scripts/bench.sh   # a quick look
#
# Needs Python 3: for the plots (matplotlib is installed into
# target/bench/venv) and for the per-row cost's Python peer, which the
# benchmark installs itself with oha (under target/bench-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/bench
cargo bench --bench throughput | tee target/bench/table.md
if [ ! -x target/bench/venv/bin/python ]; then
    python3 -m venv target/bench/venv
    target/bench/venv/bin/pip install --quiet --disable-pip-version-check matplotlib
fi
target/bench/venv/bin/python scripts/plot_concurrency.py target/bench/concurrency.csv docs/throughput-by-concurrency.png
target/bench/venv/bin/python scripts/plot_pace.py target/bench/pace.csv docs/pace-over-time.png
