#!/usr/bin/env bash
# Instructions per in-process Cedar decision, counted by valgrind's callgrind: the same number
# for the same binary and inputs whatever else the machine is doing, so it compares builds on a
# shared or noisy machine where wall-clock percentiles move by tens of percent.
#
#   bench/pdp-instructions.sh [FILTER]     FILTER: a pdp bench case, default 'cedar_1000/decide$'
#
# Builds the pdp bench, runs it under callgrind with collection switched on only inside
# `CedarPackage::decide` (Criterion's --profile-time loop, 2 s of valgrind time), and prints
# the instructions collected divided by the calls made. Needs valgrind (apt-get install
# valgrind). The per-call figure includes the first calls' one-time work (a few hundred
# requests of new shapes validated in full), a few percent of the total.
set -euo pipefail

FILTER=${1:-'cedar_1000/decide$'}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v valgrind >/dev/null || {
    echo "valgrind is missing: apt-get install -y valgrind" >&2
    exit 1
}

BIN=$(cd "$ROOT" && cargo bench -p policy --bench pdp --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "pdp" and m.get("executable"):
        print(m["executable"])')
OUT=$(mktemp -d /tmp/pdp-instructions.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

cd "$ROOT/crates/policy"
valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" \
    --toggle-collect='policy::cedar::CedarPackage::decide' \
    "$BIN" --bench "$FILTER" --profile-time 2 >"$OUT/log" 2>&1
FILE=$(ls -S "$OUT"/cg.* | head -1)
ID=$(grep -o 'fn=([0-9]*) policy::cedar::CedarPackage::decide$' "$FILE" | head -1 | grep -o '([0-9]*)')
CALLS=$(grep -A1 -F "cfn=$ID" "$FILE" | grep -o '^calls=[0-9]*' | cut -d= -f2 | paste -sd+ | bc)
TOTAL=$(grep '^totals:\|^summary:' "$FILE" | head -1 | awk '{print $2}')
echo "$FILTER: $TOTAL instructions in $CALLS decisions: $((TOTAL / CALLS)) per decision"
