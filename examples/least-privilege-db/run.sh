#!/usr/bin/env bash
# Scenario 1 — a least-privilege agent with no standing credentials.
#
# A summarizer agent reads a sample customer database. It starts with no database password:
# before its task it asks Warden for a credential of the role template `db_read_summary`
# (SELECT on `customers` and `orders`, nothing else), gets a PostgreSQL login role made for
# this one lease, uses it, and gives it back. Every request, decision, issuance, data access
# and revocation lands in the signed ledger, which is then verified offline.
#
# Usage:  WARDEN_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
#             examples/least-privilege-db/run.sh
#
#   WARDEN_TEST_DATABASE_URL  an admin connection (CREATEDB, CREATEROLE) to a PostgreSQL 13+
#                             server; a database is created for the run and dropped after it
#   WARDEN                    the warden binary (default: `warden` on PATH)
#
# Needs psql, jq and curl. Exits non-zero on any unexpected result.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
AGENT=spiffe://example.org/agent/summarizer
ROLE=db_read_summary
TASK=summarise-q3

# ---- output -----------------------------------------------------------------------------------

step_no=0
step() {
  step_no=$((step_no + 1))
  printf '\n== %d. %s\n' "$step_no" "$*"
}
say() { printf '   %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
indent() { sed 's/^/      /'; }
fail() {
  printf '\nFAILED: %s\n' "$*" >&2
  exit 1
}

# ---- preconditions ----------------------------------------------------------------------------

admin_url=${WARDEN_TEST_DATABASE_URL:-}
[[ -n $admin_url ]] || fail "set WARDEN_TEST_DATABASE_URL to an admin connection URL, e.g. postgres://postgres@127.0.0.1:5432/test"
WARDEN=${WARDEN:-warden}
warden_bin=$(command -v "$WARDEN") || fail "no warden binary \`$WARDEN\` (set WARDEN=/path/to/warden)"
# The Workload API attests the agent by the kernel's view of its executable: the real path.
warden_bin=$(realpath "$warden_bin")
for tool in psql jq curl; do
  command -v "$tool" >/dev/null || fail "this example needs \`$tool\`"
done

# Only what this script passes explicitly: no WARDEN_* setting of the caller's shell (a
# WARDEN_TOKEN would win over --token-file), no proxy for 127.0.0.1.
while read -r name; do
  [[ $name == WARDEN_TEST_DATABASE_URL ]] || unset "$name"
done < <(compgen -e | grep '^WARDEN_' || true)
unset SPIFFE_ENDPOINT_SOCKET
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost NO_COLOR=1

# The example database: same server and credentials as the admin URL, its own database.
dbname="warden_example_$$_$(date +%s)"
url_base=${admin_url%%\?*}
url_query=${admin_url:${#url_base}}
[[ ${url_base#*://} == */* ]] || fail "WARDEN_TEST_DATABASE_URL must name a database (postgres://user@host:port/db)"
example_url="${url_base%/*}/$dbname$url_query"

work=$(mktemp -d "${TMPDIR:-/tmp}/warden-lp.XXXXXX")
data="$work/data"
token_file="$work/admin.token"
server_pid=
server_url=
db_created=

admin_sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$admin_url" -c "$1"; }

# ---- cleanup: runs however the script ends ----------------------------------------------------

cleanup() {
  local status=$? roles=
  set +e
  trap - EXIT INT TERM
  printf '\n== cleanup\n'
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    if [[ -n $server_url ]]; then
      # Every role this server made, to drop below should the server have missed one.
      roles=$("$WARDEN" lease list -o json --limit 1000 --server "$server_url" --token-file "$token_file" 2>/dev/null |
        jq -r '.[].scope.db_role // empty' 2>/dev/null)
      "$WARDEN" lease revoke --agent "$AGENT" --reason "example cleanup" \
        --server "$server_url" --token-file "$token_file" >/dev/null 2>&1
    fi
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 1 300); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
    say "stopped warden serve"
  fi
  if [[ -n $db_created ]]; then
    # Also every role that may connect to the example database (the server's, even one it
    # never got to drop): nobody else's role is granted anything on it.
    roles+=" $(admin_sql "SELECT a.grantee::regrole FROM pg_database d, aclexplode(d.datacl) a
                          WHERE d.datname = '$dbname' AND a.grantee <> 0")"
    admin_sql "DROP DATABASE IF EXISTS \"$dbname\" WITH (FORCE)" && say "dropped database $dbname"
  fi
  for role in $(printf '%s\n' $roles | sort -u); do
    if [[ $role =~ ^w_[a-z0-9_]+$ ]] && [[ $(admin_sql "SELECT count(*) FROM pg_roles WHERE rolname = '$role'") == 1 ]]; then
      admin_sql "DROP ROLE IF EXISTS \"$role\"" && say "dropped leftover role $role"
    fi
  done
  if [[ $status -ne 0 && -f $work/server.log ]]; then
    printf '\n-- last lines of the server log --\n' >&2
    tail -n 40 "$work/server.log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the operator sets up ---------------------------------------------------------------------

step "The operator creates a sample customer database ($dbname)"
admin_sql "CREATE DATABASE \"$dbname\""
db_created=1
psql -X -q -v ON_ERROR_STOP=1 -d "$example_url" -f "$here/seed.sql" >/dev/null
say "tables: customers (12 rows), orders (16 rows), payment_methods (4 rows, sensitive)"

step "The operator starts Warden (fresh data directory, embedded SQLite)"
"$WARDEN" --data-dir "$data" init --admin-token-file "$token_file" >/dev/null
# The log exists before the server starts: the loop below reads it at once.
: >"$work/server.log"
"$WARDEN" --data-dir "$data" serve --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 600); do
  server_url=$(sed -n 's/^warden listening on //p' "$work/server.log" | head -n 1)
  [[ -n $server_url ]] && break
  kill -0 "$server_pid" 2>/dev/null || fail "warden serve exited: $(cat "$work/server.log")"
  sleep 0.1
done
[[ -n $server_url ]] || fail "warden serve did not start within 60 s"
for _ in $(seq 1 600); do
  curl -sf "$server_url/healthz" >/dev/null && break
  sleep 0.1
done
curl -sf "$server_url/healthz" >/dev/null || fail "warden serve is not healthy"
say "warden serve is listening on $server_url"

# Operator commands carry the admin API token; agent commands carry nothing but the agent's
# own SVID, fetched from the Workload API (attested from the kernel) on every call.
operator() { "$WARDEN" "$@" --server "$server_url" --token-file "$token_file"; }
agent() { "$WARDEN" agent --server "$server_url" --socket "$data/workload.sock" "$@"; }

step "The operator registers the summarizer agent"
say "A process of uid $(id -u) running $warden_bin gets the SPIFFE ID $AGENT."
say "(In this example the agent is this shell script, with the warden binary as its Workload API client.)"
operator entry create --spiffe-id "$AGENT" \
  --selector "unix:uid:$(id -u)" --selector "unix:path:$warden_bin" \
  --kind summarizer --owner analytics >/dev/null

step "The operator pushes the broker policy (examples/broker/broker.cedar)"
operator policy push broker "$here/../broker/broker.cedar" "$here/../broker/broker.cedarschema" >/dev/null
say "It permits $AGENT to obtain DatabaseRole::\"$ROLE\" for at most 600 seconds."

step "The operator adds the database and the role template $ROLE"
WARDEN_DB_ADMIN_DSN=$example_url operator db add-connection customers --dsn-env | indent
operator db add-role "$ROLE" --connection customers --grant SELECT:customers,orders \
  --default-ttl 5m --max-ttl 1h | indent
say "The admin connection string is checked live and stored sealed; agents never see it."

step "The operator opens task $TASK and puts the summarizer on it"
api() { curl -fsS -X POST "$server_url$1" -H "authorization: Bearer $(cat "$token_file")" \
  -H 'content-type: application/json' -d "$2"; }
api /v1/tasks "{\"id\":\"$TASK\",\"type\":\"summarise\",\"owner\":\"analyst@example.org\",\"resources\":[\"database:customers\"],\"deadline_s\":3600}" >/dev/null
api "/v1/tasks/$TASK/agents" "{\"agent\":\"$AGENT\",\"role\":\"summarizer\"}" >/dev/null
say "Credentials for the task go only to agents on it, and end when it ends."

# ---- the agent works --------------------------------------------------------------------------

step "The agent starts with no standing credential"
held=$(operator lease list --agent "$AGENT" -o json)
[[ $held == "[]" ]] || fail "the agent already holds leases: $held"
# Grants on the tables to anyone but their owner (the operator).
grants=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$example_url" -c "
  SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a
   WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.grantee <> c.relowner")
[[ $grants == 0 ]] || fail "someone already holds privileges on the tables ($grants grants)"
ok "no standing credential: no lease, no role but the tables' owner may read them, no password anywhere"

step "The agent asks for more than the policy allows (15 minutes)"
if out=$(agent db-credential "$ROLE" --task "$TASK" --ttl 15m 2>&1); then
  fail "a 900 s credential was issued: $out"
fi
[[ $out == *access_denied* ]] || fail "expected access_denied, got: $out"
ok "policy refused a 15-minute credential"
say "$(printf '%s' "$out" | tail -n 1)"

step "The agent asks for a 5-minute credential for task $TASK"
cred=$(agent db-credential "$ROLE" --task "$TASK" --ttl 5m -o json)
lease=$(jq -r .lease_id <<<"$cred")
user=$(jq -r .username <<<"$cred")
dsn=$(jq -r .dsn <<<"$cred")
[[ $user =~ ^w_[a-z0-9_]+$ ]] || fail "unexpected role name: $user"
ok "issued lease $lease"
jq '.password = "(40 random characters, shown once)" | .dsn = "(connection URL with the password)"' <<<"$cred" | indent
valid_until=$(admin_sql "SELECT rolvaliduntil FROM pg_roles WHERE rolname = '$user'")
[[ -n $valid_until ]] || fail "role $user does not exist or has no VALID UNTIL"
say "PostgreSQL now has the login role $user, VALID UNTIL $valid_until."
granted=$(psql -X -q -A -t -F ' ' -v ON_ERROR_STOP=1 -d "$example_url" -c "
  SELECT c.relname, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a
   WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.grantee <> c.relowner
     AND a.grantee = '$user'::regrole ORDER BY 1, 2" | paste -sd, -)
[[ $granted == "customers SELECT,orders SELECT" ]] || fail "unexpected grants to $user: $granted"
others=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$example_url" -c "
  SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a
   WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.grantee <> c.relowner
     AND a.grantee <> '$user'::regrole")
[[ $others == 0 ]] || fail "other roles hold grants on the tables"
ok "its table privileges, from the catalog: $granted (and nothing on payment_methods)"
if psql -X -q -A -t -d "postgres://$user:not-the-password@$(jq -r '"\(.host):\(.port)/\(.database)"' <<<"$cred")" \
  -c 'SELECT 1' >/dev/null 2>&1; then
  say "Note: this PostgreSQL does not check passwords from this host (trust authentication in"
  say "pg_hba.conf), so it also ignores VALID UNTIL: here the role's existence is the credential,"
  say "and Warden dropping the role is what ends access. Use scram-sha-256 in production."
fi

step "The agent computes its summary with the credential"
psql -X -q -v ON_ERROR_STOP=1 -d "$dsn" -P footer=off -c "
  SELECT c.country,
         count(DISTINCT c.id)                         AS customers,
         count(o.id)                                  AS q3_orders,
         (coalesce(sum(o.amount_cents), 0) / 100.0)::numeric(12, 2) AS q3_revenue
    FROM customers c
    LEFT JOIN orders o ON o.customer_id = c.id
                      AND o.placed_on >= DATE '2024-07-01' AND o.placed_on < DATE '2024-10-01'
   GROUP BY c.country
   ORDER BY q3_revenue DESC, c.country" | indent
customers_read=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$dsn" -c 'SELECT count(*) FROM customers')
q3=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$dsn" -c \
  "SELECT count(*) || ' orders, ' || (sum(amount_cents) / 100.0)::numeric(12, 2) || ' total' FROM orders
    WHERE placed_on >= DATE '2024-07-01' AND placed_on < DATE '2024-10-01'")
[[ $customers_read == 12 && $q3 == "15 orders, 18289.50 total" ]] ||
  fail "unexpected summary: $customers_read customers, $q3"
ok "summary: $customers_read customers, Q3 $q3"

step "The agent cannot do anything else"
if out=$(psql -X -q -v ON_ERROR_STOP=1 -d "$dsn" -c 'SELECT card_brand, card_last4 FROM payment_methods' 2>&1); then
  fail "the agent read payment_methods: $out"
fi
[[ $out == *"permission denied for table payment_methods"* ]] || fail "unexpected error: $out"
ok "reading payment_methods was refused: $out"
if out=$(psql -X -q -v ON_ERROR_STOP=1 -d "$dsn" -c "INSERT INTO orders VALUES (900, 1, current_date, 100)" 2>&1); then
  fail "the agent inserted an order: $out"
fi
[[ $out == *"permission denied for table orders"* ]] || fail "unexpected error: $out"
ok "INSERT into orders was refused: $out"
if out=$(psql -X -q -v ON_ERROR_STOP=1 -d "$dsn" -c "CREATE TABLE copy_of_customers AS SELECT * FROM customers" 2>&1); then
  fail "the agent created a table: $out"
fi
[[ $out == *"permission denied for schema public"* ]] || fail "unexpected error: $out"
ok "CREATE TABLE was refused: $out"

step "The agent records its data access in the ledger"
agent record --lease "$lease" --action select --resource customers \
  --detail "rows=$customers_read" --detail purpose=q3-summary | indent
agent record --lease "$lease" --action select --resource orders \
  --detail rows=15 --detail purpose=q3-summary | indent

step "The agent is done and gives the credential back"
agent revoke "$lease" | indent
left=$(admin_sql "SELECT count(*) FROM pg_roles WHERE rolname = '$user'")
[[ $left == 0 ]] || fail "role $user still exists after revocation"
ok "the role is gone: $user no longer exists in pg_roles"
if out=$(psql -X -q -d "$dsn" -c 'SELECT 1' 2>&1); then
  fail "the revoked credential still logs in"
fi
[[ $out == *"does not exist"* || $out == *"authentication failed"* ]] || fail "unexpected login error: $out"
ok "login refused after revocation: $(printf '%s' "$out" | tail -n 1)"
state=$(operator lease show "$lease" -o json | jq -r '"\(.state) (\(.revoke_reason))"')
[[ $state == "revoked (returned by its holder)" ]] || fail "lease is $state"
say "lease $lease: $state"

step "A credential an agent forgets to give back ends on its own"
cred2=$(agent db-credential "$ROLE" --task "$TASK" --ttl 2s -o json)
lease2=$(jq -r .lease_id <<<"$cred2")
user2=$(jq -r .username <<<"$cred2")
[[ $user2 =~ ^w_[a-z0-9_]+$ ]] || fail "unexpected role name: $user2"
say "issued $lease2 for 2 seconds, and never returned"
started=$(date +%s%3N)
gone=
for _ in $(seq 1 300); do
  state2=$(operator lease show "$lease2" -o json | jq -r '"\(.state), reason: \(.revoke_reason)"')
  left=$(admin_sql "SELECT count(*) FROM pg_roles WHERE rolname = '$user2'")
  if [[ $left == 0 && $state2 == "revoked, reason: expired" ]]; then
    gone=1
    break
  fi
  sleep 0.1
done
[[ -n $gone ]] || fail "lease $lease2 did not end within 30 s (role rows left: $left; lease $state2)"
elapsed=$(($(date +%s%3N) - started))
ok "the sweeper dropped the forgotten credential $((elapsed / 1000)).$((elapsed % 1000 / 100)) s after issuance (lease $state2)"

# ---- the auditor checks -----------------------------------------------------------------------

step "The audit trail of this run"
say "Ledger index, action, outcome, who, what (admin API calls, also recorded, left out):"
operator audit tail -n 1000 -o json | jq -r '
  .[] | .event as $e
  | select($e.action | IN("policy.decision", "lease.issue", "agent.operation", "lease.revoke",
                          "lease.revoked", "lease.revoke_upstream", "lease.expire"))
  | ($e.fields) as $f
  | [ (.index | tostring), $e.action, $e.outcome, $e.actor,
      ( if $e.action == "policy.decision" then "\($f.decision) \($f.action) \($f.resource)"
        elif $e.action == "lease.issue" then "\($f.lease_id) task=\($f.task) role=\($f.db_role)"
        elif $e.action == "agent.operation" then "\($f.action) \($f.resource) \($f.detail | tojson)"
        elif $e.action == "lease.revoke" then "by \($f.by) \($f.value): \($f.reason)"
        elif $e.action == "lease.revoke_upstream" then "\($f.lease_id): \($f.result)"
        else ($f.leases | tojson) end ) ]
  | @tsv' | while IFS=$'\t' read -r index action outcome actor what; do
    printf '      %4s  %-22s %-8s %-46s %s\n' "$index" "$action" "$outcome" "$actor" "$what"
  done

step "An auditor verifies the ledger offline"
operator audit export --publish "$work/ledger.jsonl" 2>&1 | indent
curl -sf "$server_url/v1/audit/key" >"$work/ledger.vkey"
say "The auditor takes the ledger's public key out of band: $(cat "$work/ledger.vkey")"
verified=$("$WARDEN" audit verify "$work/ledger.jsonl" --key-file "$work/ledger.vkey" --quiet) ||
  fail "the export does not verify: $verified"
say "$verified"
about=$(jq -r --arg l "$lease" 'select(.leaf) | .leaf | @base64d | fromjson
  | select(.fields.lease_id == $l) | .action' "$work/ledger.jsonl" | sort | uniq -c | awk '{print $2 " x" $1}' | paste -sd, -)
[[ $about == *lease.issue* && $about == *agent.operation* && $about == *lease.revoke_upstream* ]] ||
  fail "the export lacks entries about $lease: $about"
say "entries about lease $lease in the export: $about"
# Alter one entry of the export (the task of an issuance): verification must fail and name it.
jq -c 'if .leaf and (.leaf | @base64d | fromjson | .action) == "lease.issue"
       then .leaf |= (@base64d | fromjson | .fields.task = "something-else" | tojson | @base64)
       else . end' "$work/ledger.jsonl" >"$work/tampered.jsonl"
if out=$("$WARDEN" audit verify "$work/tampered.jsonl" --key-file "$work/ledger.vkey" --quiet 2>&1); then
  fail "a tampered export verified: $out"
fi
ok "a tampered export fails verification: $(printf '%s' "$out" | tail -n 1)"

printf '\nScenario 1 passed: the agent held a database credential only for its task, could read\n'
printf 'only what its template grants, and every step is in a ledger that verifies offline.\n'
