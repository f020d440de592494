#!/usr/bin/env bash
# Issue #4 benchmark: POST /v1/authorize over HTTP keep-alive, driven by wrk on this machine,
# with the ledger on (every decision is one `policy.decision` entry, which also carries the
# request's method, path, request id and token, committed before the answer leaves).
#
#   bench/authorize.sh [MODE]    MODE: cedar (default), rego, whoami, unknown-token, healthz
#
# One command does it all: builds the release binary, starts a fresh install in a temporary
# data directory (embedded SQLite), creates an enforcer token, pushes the seed policy
# (examples/policies/coder, Cedar or Rego), registers the Coder agent and puts it on a
# patch_bug task (so the decision asked is an allow), checks one decision by hand, runs wrk once per connection count, checks the ledger grew by the number of requests,
# stops the server and counts the ledger entries by action.
#
#   cedar    POST /v1/authorize, package `coder` (Cedar)
#   rego     POST /v1/authorize, package `coder-rego` (Rego, through regorus)
#   whoami   GET /v1/whoami with the enforcer token: HTTP + token lookup + one api.request
#            ledger append, no decision (comparison)
#   unknown-token  GET /v1/whoami with a well-formed token Warden does not know: HTTP + the
#            token lookup in the store, answered 401 (so every answer counts as non-2xx); the
#            ledger records at most 50 refusals a second and counts the rest; the per-source
#            failure limit is switched off for this mode (comparison)
#   healthz  GET /healthz: HTTP only, no authentication, no ledger (comparison)
#
# Environment (all optional):
#   CONNS="16 64 128"   wrk connection counts, one run each
#   THREADS=1           wrk threads (one wrk thread drives /healthz at 80,000 requests/s here,
#                       so it is not the limit; a second one only takes CPU from the server)
#   DURATION=20s        each measured run
#   WARMUP=5s           one unmeasured run at 64 connections first (0 to skip)
#   MAX_LOAD=1.0        before each run, wait until the 1-minute load average is below this …
#   LOAD_WAIT=900       … for at most this many seconds (then run anyway, and say so)
#   DENY=1              leave the Coder without a task (the decision asked is then a deny)
#   NO_BUILD=1          use the existing binary
#   CARGO_TARGET_DIR    default /work/target
#   KEEP=1              keep the temporary data directory
#   PERF=1              also profile the server (perf record) during the first run
#   CALLGRIND=1         run the server under valgrind's callgrind and count the instructions
#                       it executes (all threads, SQLite's included) during each run, per
#                       request: repeatable whatever the machine's speed. Under valgrind the
#                       server is ~50x slower and SHA-256 runs without the CPU's SHA
#                       extensions. Use with MAX_LOAD=99 WARMUP=5s CONNS=64 DURATION=30s.
#
# wrk and warden share the machine's cores: the figure is for both on the same 2 cores.
set -euo pipefail

MODE=${1:-cedar}
case "$MODE" in cedar | rego | whoami | unknown-token | healthz) ;; *)
    echo "usage: $0 [cedar|rego|whoami|unknown-token|healthz]" >&2
    exit 2
    ;;
esac
CONNS=${CONNS:-"16 64 128"}
THREADS=${THREADS:-1}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-5s}
MAX_LOAD=${MAX_LOAD:-1.0}
LOAD_WAIT=${LOAD_WAIT:-900}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
command -v wrk >/dev/null || {
    echo "wrk is missing: apt-get install -y wrk" >&2
    exit 1
}

if [[ -z ${NO_BUILD:-} ]]; then
    cargo build --release -p warden
fi

TMP=$(mktemp -d /tmp/warden-bench.XXXXXX)
# A private copy: a concurrent rebuild must not swap the binary under a running benchmark.
cp "$CARGO_TARGET_DIR/release/warden" "$TMP/warden"
W="$TMP/warden"
DATA="$TMP/data"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
SERVER_PID=
PERF_PID=

cleanup() {
    if [[ -n $PERF_PID ]] && kill -0 "$PERF_PID" 2>/dev/null; then kill -INT "$PERF_PID" || true; fi
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" || true
    fi
    if [[ -z ${KEEP:-} ]]; then rm -rf "$TMP"; else echo "kept $TMP"; fi
}
trap cleanup EXIT

echo "== commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.lock || echo ' + uncommitted changes in crates/'), binary $(stat -c '%y' "$CARGO_TARGET_DIR/release/warden" | cut -d. -f1)"
echo "== $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')"

if [[ $MODE == unknown-token ]]; then
    # Measure the lookup path, not the per-source failure limit (which would answer 429 after
    # the first 1,000 refusals, before any lookup): switched off for this run only.
    printf '\n[limits]\nauth_failures_per_source = { per_sec = 0, burst = 0 }\n' >>"$DATA/warden.toml"
fi
SERVE=("$W" --data-dir "$DATA" serve --listen "127.0.0.1:$PORT" --log warn)
if [[ -n ${CALLGRIND:-} ]]; then
    command -v valgrind >/dev/null || {
        echo "valgrind is missing: apt-get install -y valgrind" >&2
        exit 1
    }
    SERVE=(valgrind --tool=callgrind --dump-instr=no
        --callgrind-out-file="$TMP/callgrind.out" "${SERVE[@]}")
fi
"${SERVE[@]}" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1200); do
    curl -fs "$URL/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "$URL/healthz" >/dev/null || {
    cat "$TMP/server.log"
    exit 1
}
ADMIN="$DATA/admin.token"
client=(--server "$URL" --token-file "$ADMIN")

TOKEN=$("$W" api-token create --name gw --role enforcer "${client[@]}" 2>/dev/null | sed -n 's/^token: *//p')
[[ $TOKEN == wdn_* ]] || {
    echo "could not create the enforcer token" >&2
    exit 1
}
export WARDEN_BENCH_TOKEN=$TOKEN
PACKAGE=
case "$MODE" in
rego)
    PACKAGE=coder-rego
    "$W" policy push coder-rego examples/policies/coder/coder.rego "${client[@]}"
    ;;
*)
    "$W" policy push coder examples/policies/coder/coder.cedar \
        examples/policies/coder/coder.cedarschema "${client[@]}"
    ;;
esac
export WARDEN_BENCH_PACKAGE=$PACKAGE
curl -fsS -o /dev/null -X POST "$URL/v1/entries" -H "authorization: Bearer $(cat "$ADMIN")" \
    -H 'content-type: application/json' \
    -d '{"spiffe_id":"spiffe://example.org/agent/coder","selectors":["unix:uid:4242"],"agent_kind":"coder","owner":"team"}'
# The Coder on a patch_bug task: the seed policy then allows its writes (the decision the
# benchmark asks is an allow, with a determining policy).
[[ -n ${DENY:-} ]] || "$W" task create --id BENCH-1 --type patch_bug --owner bench@example.org \
    --resource repository:warden --deadline 2h "${client[@]}" >/dev/null
[[ -n ${DENY:-} ]] || "$W" task assign BENCH-1 --agent spiffe://example.org/agent/coder --role coder "${client[@]}" >/dev/null

case "$MODE" in
cedar | rego)
    SCRIPT=bench/authorize.lua
    TARGET="$URL/v1/authorize"
    PER_REQUEST=1 # policy.decision (it stands for the api.request entry too)
    body='{"principal":"spiffe://example.org/agent/coder","action":"write","resource":{"type":"Repository","id":"warden"}'
    [[ -n $PACKAGE ]] && body+=",\"package\":\"$PACKAGE\""
    body+='}'
    echo "== one decision by hand:"
    curl -sS -i -X POST "$TARGET" -H "authorization: Bearer $TOKEN" \
        -H 'content-type: application/json' -d "$body" | grep -Ei '^HTTP/|^warden-audit-seq|^\{'
    echo
    ;;
whoami)
    SCRIPT=bench/get.lua
    TARGET="$URL/v1/whoami"
    PER_REQUEST=1 # api.request
    ;;
unknown-token)
    SCRIPT=bench/get.lua
    TARGET="$URL/v1/whoami"
    PER_REQUEST=0 # ≤ 50 api.authenticate entries a second
    export WARDEN_BENCH_TOKEN=wdn_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
    ;;
healthz)
    SCRIPT=bench/get.lua
    TARGET="$URL/healthz"
    PER_REQUEST=0
    unset WARDEN_BENCH_TOKEN
    ;;
esac

# The ledger's newest index, read from the warden-audit-seq header of an authenticated call
# (that call itself adds one entry).
ledger_seq() {
    curl -fsS -o /dev/null -D - "$URL/v1/whoami" -H "authorization: Bearer $(cat "$ADMIN")" |
        tr -d '\r' | awk -F': ' 'tolower($1)=="warden-audit-seq" {print $2}'
}

wait_idle() {
    local waited=0
    while :; do
        local load
        load=$(cut -d' ' -f1 /proc/loadavg)
        if awk -v l="$load" -v m="$MAX_LOAD" 'BEGIN {exit !(l < m)}'; then return; fi
        if ((waited >= LOAD_WAIT)); then
            echo "!! load still $load after ${LOAD_WAIT}s: running anyway" >&2
            return
        fi
        sleep 10
        waited=$((waited + 10))
    done
}

# CPU seconds used by the server so far (user + system).
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$SERVER_PID/stat"; }
# Machine-wide busy and iowait jiffies (all cores): "busy total iowait".
machine_cpu() { awk '/^cpu / {t=0; for (i=2; i<=NF; i++) t+=$i; print t-$5-$6, t, $6}' /proc/stat; }

# Ledger group commits so far (GET /metrics).
commits() { curl -fsS "$URL/metrics" | awk '$1=="warden_ledger_commits" {print $2}'; }

run_wrk() { # connections duration
    wrk -t"$THREADS" -c"$1" -d"$2" --latency -s "$SCRIPT" "$TARGET"
}

if [[ $WARMUP != 0 ]]; then
    echo "== warm-up: $WARMUP at 64 connections (not measured)"
    run_wrk 64 "$WARMUP" >/dev/null
fi

SUMMARY=()
first=1
for c in $CONNS; do
    wait_idle
    before_load=$(cut -d' ' -f1-3 /proc/loadavg)
    seq0=$(ledger_seq)
    echo "== $MODE: wrk -t$THREADS -c$c -d$DURATION --latency -s $SCRIPT $TARGET"
    echo "   load before: $before_load"
    if [[ -n ${PERF:-} && $first == 1 ]]; then
        perf record -F 999 -p "$SERVER_PID" -o "$TMP/perf.data" >/dev/null 2>&1 &
        PERF_PID=$!
    fi
    commits0=$(commits)
    cpu0=$(server_cpu)
    read -r busy0 total0 iow0 < <(machine_cpu)
    # Counting starts from zero here; the dump right after the run holds what it cost.
    [[ -z ${CALLGRIND:-} ]] || callgrind_control -z "$SERVER_PID" >/dev/null 2>&1
    out=$(run_wrk "$c" "$DURATION")
    if [[ -n ${CALLGRIND:-} ]]; then
        rm -f "$TMP"/callgrind.out.*
        callgrind_control -d "$SERVER_PID" >/dev/null 2>&1
        instructions=$(awk '/^summary:/ {n = $2} END {print n + 0}' "$TMP"/callgrind.out.*)
    fi
    read -r busy1 total1 iow1 < <(machine_cpu)
    cpu1=$(server_cpu)
    commits1=$(commits)
    if [[ -n $PERF_PID ]]; then
        kill -INT "$PERF_PID"
        wait "$PERF_PID" || true
        PERF_PID=
        {
            echo "# server threads (perf record -F 999, $c connections)"
            perf report -i "$TMP/perf.data" --sort comm,dso --stdio 2>/dev/null | grep '%' | grep -v '^#'
            echo "# hottest symbols"
            perf report -i "$TMP/perf.data" --sort comm,dso,sym --stdio 2>/dev/null |
                grep '%' | grep -v '^#' | head -60
        } >"$ROOT/bench/perf-$MODE.txt" || true
        echo "   perf profile of the server: bench/perf-$MODE.txt"
    fi
    first=0
    after_load=$(cut -d' ' -f1-3 /proc/loadavg)
    seq1=$(ledger_seq)
    echo "$out" | sed 's/^/   /'
    echo "   load after:  $after_load"
    cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v d="${DURATION%s}" -v b0="$busy0" -v b1="$busy1" \
        -v t0="$total0" -v t1="$total1" -v i0="$iow0" -v i1="$iow1" \
        'BEGIN {printf "server_cpu=%.0f%% machine_busy=%.0f%% iowait=%.0f%%", 100*(b-a)/d, 100*(b1-b0)/(t1-t0), 100*(i1-i0)/(t1-t0)}')
    echo "   cpu: $cpu (server: % of one core; machine: % of all $(nproc) cores, wrk included)"
    result=$(echo "$out" | grep '^RESULT')
    requests=$(echo "$result" | sed 's/.*requests=\([0-9]*\).*/\1/')
    grown=$((seq1 - seq0 - 1)) # the second ledger_seq call's own entry
    if [[ -n ${CALLGRIND:-} ]]; then
        per_request=$((instructions / (requests > 0 ? requests : 1)))
        echo "   callgrind: $instructions instructions, $per_request per request"
        cpu+=" instructions_per_request=$per_request"
    fi
    expected=$((requests * PER_REQUEST))
    echo "   ledger: seq $seq0 -> $seq1, grew by $grown; $requests requests x $PER_REQUEST = $expected (the rest: requests in flight when wrk stopped)"
    ncommits=$((commits1 - commits0))
    echo "   ledger commits: $ncommits ($(awk -v g="$grown" -v n="$ncommits" 'BEGIN {if (n) printf "%.1f", g/n; else print "-"}') entries per commit, $(awk -v n="$ncommits" -v d="${DURATION%s}" 'BEGIN {printf "%.0f", n/d}')/s)"
    SUMMARY+=("$MODE c=$c ${result#RESULT } ledger_grew=$grown commits=$ncommits $cpu load_before=\"$before_load\" load_after=\"$after_load\"")
done

kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=
if command -v sqlite3 >/dev/null; then
    echo "== ledger entries by action (server stopped):"
    sqlite3 "$DATA/warden.db" \
        'SELECT action, count(*), CAST(avg(length(leaf)) AS INT) || " bytes/leaf" FROM ledger_entries GROUP BY action ORDER BY 2 DESC' |
        sed 's/^/   /'
fi
echo "== summary"
printf '%s\n' "${SUMMARY[@]}"
