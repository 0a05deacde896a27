#!/usr/bin/env bash
# Fuzzes the input reader and validator and the answer classifier (the
# properties of tests/fuzz.rs) for a fixed time, in a release build.
#
#   scripts/fuzz.sh            # 120 s per property, all properties at once
#   scripts/fuzz.sh 600        # ten minutes
#   TRACKMASS_FUZZ_SEED=42 scripts/fuzz.sh   # replay a round sequence
#
# Every property runs rounds of TRACKMASS_FUZZ_CASES cases (default 2000),
# each round with the next seed, until the time is up. A failure is shrunk
# to a minimal input, printed, and its seed appended to
# tests/fuzz.proptest-regressions, the kept corpus that every `cargo test`
# replays first: commit that file. `cargo test` itself runs a short,
# fixed-seed pass of the same properties.
#
# Exit status: 0 no failure; 1 a property failed (see above); 124 the run
# overran its time limit (a hang: the last property started is the suspect).

set -euo pipefail
cd "$(dirname "$0")/.."

budget="${1:-${TRACKMASS_FUZZ_SECONDS:-120}}"
cases="${TRACKMASS_FUZZ_CASES:-2000}"
seed="${TRACKMASS_FUZZ_SEED:-$(date +%s)}"
case "$budget$cases$seed" in
*[!0-9]*)
    echo "fuzz.sh: the time, TRACKMASS_FUZZ_CASES and TRACKMASS_FUZZ_SEED must be whole numbers" >&2
    exit 2
    ;;
esac

cargo test --release --test cli --no-run
echo "fuzz.sh: ${budget}s per property, rounds of ${cases} cases, first seed ${seed}" >&2
started=$(date +%s)
status=0
# Rounds end at the first check after the budget: allow for one long round
# and for shrinking a failure.
TRACKMASS_FUZZ_SECONDS="$budget" TRACKMASS_FUZZ_CASES="$cases" TRACKMASS_FUZZ_SEED="$seed" \
    timeout --kill-after=10 "$((budget * 2 + 300))" \
    cargo test --release --test cli fuzz:: -- --nocapture --test-threads=16 || status=$?
echo "fuzz.sh: $(($(date +%s) - started))s, exit status ${status}" >&2
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "fuzz.sh: the properties did not finish in time: something hangs" >&2
    exit 124
fi
if [ "$status" -ne 0 ]; then
    echo "fuzz.sh: a property failed; its seed is in tests/fuzz.proptest-regressions (commit it)" >&2
    exit 1
fi
