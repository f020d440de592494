#!/usr/bin/env bash
# Issue #6 benchmarks, against a real `warden serve` (release build, embedded SQLite):
#
#   1. token exchange: POST /oauth2/token driven by wrk (bench/exchange.lua) — JWT-SVID in,
#      policy decision, ES256 access token, lease and ledger entries committed, token out;
#   2. revoke 100,000 leases: every lease the runs above created (topped up to at least
#      100,000) is revoked by one `warden lease revoke --agent …`, timed from the command's
#      start to its exit, then a token of the batch is introspected (must be inactive);
#   3. hold → deny: `warden bench hold` against the same server.
#
#   bench/broker.sh
#
# Environment (all optional): CONNS="16 64", THREADS=2, DURATION=20s, LEASES=100000,
# NO_BUILD=1, CARGO_TARGET_DIR (default /work/target), KEEP=1.
set -euo pipefail
CONNS=${CONNS:-"16 64"}
THREADS=${THREADS:-2}
DURATION=${DURATION:-20s}
LEASES=${LEASES:-100000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
command -v wrk >/dev/null || {
    echo "wrk is missing: apt-get install -y wrk" >&2
    exit 1
}
[[ -n ${NO_BUILD:-} ]] || cargo build --release -p warden
TMP=$(mktemp -d /tmp/warden-bench.XXXXXX)
cp "$CARGO_TARGET_DIR/release/warden" "$TMP/warden"
W="$TMP/warden"
DATA="$TMP/data"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" || true
    fi
    if [[ -z ${KEEP:-} ]]; then rm -rf "$TMP"; else echo "kept $TMP"; fi
}
trap cleanup EXIT
echo "== commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.lock || echo ' + uncommitted changes in crates/')"
echo "== $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')"

"$W" --data-dir "$DATA" serve --listen "127.0.0.1:$PORT" --log warn \
    --oauth-scopes repo:read,repo:write --oauth-token-ttl 3600 >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -fs "$URL/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
ADMIN="$DATA/admin.token"
client=(--server "$URL" --token-file "$ADMIN")
PLANNER=spiffe://example.org/agent/planner
curl -fsS -o /dev/null -X POST "$URL/v1/entries" -H "authorization: Bearer $(cat "$ADMIN")" \
    -H 'content-type: application/json' \
    -d "{\"spiffe_id\":\"$PLANNER\",\"selectors\":[\"unix:uid:$(id -u)\",\"unix:path:$W\"]}"
"$W" policy push broker examples/broker/broker.cedar examples/broker/broker.cedarschema "${client[@]}" >/dev/null
SVID=$("$W" svid --socket "$DATA/workload.sock" jwt --audience "$URL" --spiffe-id "$PLANNER")
export WARDEN_BENCH_SVID=$SVID
echo "== one exchange by hand:"
curl -sS -X POST "$URL/oauth2/token" --data-urlencode grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
    --data-urlencode "subject_token=$SVID" --data-urlencode subject_token_type=urn:ietf:params:oauth:token-type:jwt \
    --data-urlencode audience=https://git.example.org --data-urlencode scope=repo:read | cut -c1-160
echo

issued=0
for c in $CONNS; do
    echo "== exchange: wrk -t$THREADS -c$c -d$DURATION --latency -s bench/exchange.lua $URL/oauth2/token"
    out=$(wrk -t"$THREADS" -c"$c" -d"$DURATION" --latency -s bench/exchange.lua "$URL/oauth2/token")
    echo "$out" | grep -E 'Latency|Requests/sec|RESULT'
    n=$(echo "$out" | sed -n 's/^RESULT requests=\([0-9]*\).* non2xx=\([0-9]*\).*/\1 \2/p')
    issued=$((issued + ${n% *} - ${n#* }))
done
while ((issued < LEASES)); do
    echo "== topping up: $issued leases so far"
    out=$(wrk -t"$THREADS" -c64 -d10s -s bench/exchange.lua "$URL/oauth2/token")
    n=$(echo "$out" | sed -n 's/^RESULT requests=\([0-9]*\).* non2xx=\([0-9]*\).*/\1 \2/p')
    issued=$((issued + ${n% *} - ${n#* }))
done
SAMPLE=$(curl -sS -X POST "$URL/oauth2/token" --data-urlencode grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
    --data-urlencode "subject_token=$SVID" --data-urlencode subject_token_type=urn:ietf:params:oauth:token-type:jwt \
    --data-urlencode audience=https://git.example.org | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
ENFORCER=$("$W" api-token create --name gw --role enforcer "${client[@]}" 2>/dev/null | sed -n 's/^token: *//p')

echo "== revoke every lease of $PLANNER ($issued issued by the runs above, +1)"
t0=$(date +%s.%N)
"$W" lease revoke --agent "$PLANNER" --reason "bench: revoke all" "${client[@]}" >"$TMP/revoked.txt"
t1=$(date +%s.%N)
head -1 "$TMP/revoked.txt"
echo "RESULT revoke_seconds=$(python3 -c "print(round($t1 - $t0, 3))")"
echo "== a token of the batch, introspected afterwards:"
curl -sS -X POST "$URL/oauth2/introspect" -H "authorization: Bearer $ENFORCER" --data-urlencode "token=$SAMPLE"
echo

echo "== hold → deny"
"$W" bench hold --server "$URL" --token-file "$ADMIN" --enforcer-token "$ENFORCER" \
    --subject-svid "$SVID" --agent "$PLANNER" --rounds 50
