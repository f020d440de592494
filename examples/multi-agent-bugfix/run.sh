#!/usr/bin/env bash
# Scenario 2 — dynamic policy for a multi-agent workflow, enforced on a real git repository.
#
# A Planner orchestrates a Coder and a Reviewer fixing a bug in a git repository. Each agent
# has a SPIFFE ID and no standing secret. The repository's pre-receive hook asks Warden about
# every pushed ref: the Coder may push its task's branch only while its `patch_bug` task is
# open and its risk score is below 0.5; the Reviewer reads and never writes. Grants are
# task-bound and vanish when the task completes — the real `git` client is then refused.
#
# Usage:  WARDEN=target/debug/warden examples/multi-agent-bugfix/run.sh
#
#   WARDEN   the warden binary (default: `warden` on PATH)
#
# Needs git (with push options: 2.10 or newer), python3, jq and curl. Everything happens in a
# temporary directory that is deleted on exit. Exits non-zero on any unexpected result.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PLANNER=spiffe://example.org/agent/planner
CODER=spiffe://example.org/agent/coder
REVIEWER=spiffe://example.org/agent/reviewer
REPO=bugfix-demo
TASK=bug-42
BRANCH=refs/heads/fix/$TASK
TASK2=bug-43
BRANCH2=refs/heads/fix/$TASK2

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

WARDEN=${WARDEN:-warden}
warden_bin=$(command -v "$WARDEN") || fail "no warden binary \`$WARDEN\` (set WARDEN=/path/to/warden)"
# The Workload API attests an agent by the kernel's view of its executable: the real path.
warden_bin=$(realpath "$warden_bin")
WARDEN=$warden_bin
for tool in git python3 jq curl; do
  command -v "$tool" >/dev/null || fail "this example needs \`$tool\`"
done

# Only what this script passes explicitly: no WARDEN_* setting of the caller's shell, no
# proxy for 127.0.0.1, no git configuration of the caller (user, hooks, credential helpers).
while read -r name; do unset "$name"; done < <(compgen -e | grep '^WARDEN_' || true)
unset SPIFFE_ENDPOINT_SOCKET
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost NO_COLOR=1
export PYTHONDONTWRITEBYTECODE=1 GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0

work=$(mktemp -d "${TMPDIR:-/tmp}/warden-bugfix.XXXXXX")
export HOME=$work/home GIT_CONFIG_GLOBAL=$work/home/.gitconfig
mkdir -p "$HOME"
data="$work/data"
token_file="$work/admin.token"
server_pid=
server_url=

# ---- cleanup: runs however the script ends ----------------------------------------------------

cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  printf '\n== cleanup\n'
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 1 300); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
    say "stopped warden serve"
  fi
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

# ---- helpers ----------------------------------------------------------------------------------

# Operator commands carry the admin API token (from a file, never on a command line).
operator() { "$WARDEN" "$@" --server "$server_url" --token-file "$token_file"; }

# `curl` to Warden's API with the bearer token in the file $1 (a header file, so the secret
# is not on a command line); prints the body, fails with it on an error status.
call() {
  local header=$1 method=$2 path=$3 body=${4:-} out status
  out=$(curl -sS -X "$method" -H "@$header" -H 'content-type: application/json' \
    ${body:+--data "$body"} -w '\n%{http_code}' "$server_url$path") || fail "cannot reach $server_url$path"
  status=${out##*$'\n'}
  out=${out%$'\n'*}
  [[ $status == 2* ]] || fail "$method $path answered $status: $out"
  printf '%s' "$out"
}
bearer_file() { # NAME TOKEN: a 0600 header file
  (umask 077 && printf 'authorization: Bearer %s\n' "$2" >"$work/$1.header")
  printf '%s' "$work/$1.header"
}
admin() { call "$work/admin.header" "$@"; }

# An agent's JWT-SVID for Warden, from the Workload API (attested from the kernel).
svid() { "$WARDEN" svid --socket "$data/workload.sock" jwt --audience "$issuer" --spiffe-id "$1"; }
# An agent's push credential: a JWT-SVID for the repository's git authorization only
# (audience git:<repository>), which Warden's agent APIs refuse.
git_svid() { "$WARDEN" svid --socket "$data/workload.sock" jwt --audience "git:$REPO" --spiffe-id "$1"; }
# The Planner calls the agent API with a fresh JWT-SVID each time.
planner() { call "$(bearer_file planner "$(svid "$PLANNER")")" "$@"; }

# Runs `git push` in repository $1 as agent $2 ("" for no credential); the rest are push
# arguments. Prints git's output; returns git's status.
push_as() {
  local dir=$1 who=$2
  shift 2
  if [[ -n $who ]]; then
    git -C "$dir" push -o "warden-token=$(git_svid "$who")" "$@" 2>&1
  else
    git -C "$dir" push "$@" 2>&1
  fi
}
# The decision id Warden printed for a ref (the last one named).
decision_in() { grep -o 'decision dec_[0-9a-f]*' <<<"$1" | tail -n 1 | cut -d' ' -f2; }
remote_lines() { grep '^remote: warden:' <<<"$1" | sed -e 's/^remote: //' -e 's/[[:space:]]*$//' || true; }
run_tests() { (cd "$1" && python3 -m unittest -q 2>&1); }

# ---- the operator sets up ---------------------------------------------------------------------

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
issuer=$(curl -sf "$server_url/.well-known/openid-configuration" | jq -r .issuer)
bearer_file admin "$(cat "$token_file")" >/dev/null
say "warden serve is listening on $server_url (issuer $issuer)"

step "The operator registers the Planner, the Coder and the Reviewer"
say "A process of uid $(id -u) running $warden_bin gets the SPIFFE ID it asks for with"
say "--spiffe-id (in this example every agent is this script, using the warden binary as its"
say "Workload API client; in production each agent runs as its own user or binary)."
for who in planner coder reviewer; do
  operator entry create --spiffe-id "spiffe://example.org/agent/$who" \
    --selector "unix:uid:$(id -u)" --selector "unix:path:$warden_bin" \
    --kind "$who" --owner engineering >/dev/null
  say "registered spiffe://example.org/agent/$who"
done

step "The operator pushes the relationship model, the git policy and the broker policy"
operator rebac model push "$here/model.fga" >/dev/null
say "model.fga: repository#writer@agent, and every writer is also a reader"
"$WARDEN" policy test "$here" | indent
operator policy push git "$here/git.cedar" "$here/git.cedarschema" >/dev/null
say "git.cedar: a writer pushes its open patch_bug task's branch while its risk score is below 0.5"
operator policy push broker "$here/../broker/broker.cedar" "$here/../broker/broker.cedarschema" >/dev/null
say "broker.cedar: the Planner may open patch_bug tasks"

step "The operator creates the repository $REPO and lets Warden guard it"
src="$work/import"
mkdir -p "$src" "$work/srv"
cp "$here/project/pagination.py" "$here/project/test_pagination.py" "$src/"
git init -q -b main "$src"
git -C "$src" add .
git -C "$src" -c user.name=Operator -c user.email=ops@example.org commit -q -m "Pagination helpers"
bare="$work/srv/$REPO.git"
git clone -q --bare "$src" "$bare"
hook_token=$(operator api-token create --name git-hook --role enforcer -o json 2>/dev/null | jq -r .token)
[[ $hook_token == wdn_* ]] || fail "no enforcer token was created"
(umask 077 && printf '%s\n' "$hook_token" >"$work/hook.token")
"$WARDEN" git install-hook "$bare" --server "$server_url" --token-file "$work/hook.token" \
  --repository "$REPO" --package git | indent
[[ -x $bare/hooks/pre-receive ]] || fail "no executable pre-receive hook"
[[ $(git --git-dir "$bare" config receive.advertisePushOptions) == true ]] || fail "push options are not advertised"
say "The hook holds an API token of role enforcer (it may ask for decisions, nothing else)."
main_before=$(git --git-dir "$bare" rev-parse main)

# ---- the Planner opens the task ---------------------------------------------------------------

step "The Planner opens task $TASK (patch_bug) and assigns the Coder and the Reviewer"
planner POST /v1/agent/tasks "$(jq -nc --arg id "$TASK" --arg repo "repository:$REPO" --arg branch "$BRANCH" \
  '{id: $id, type: "patch_bug", owner: "alice@example.org", resources: [$repo], deadline_s: 3600,
    attributes: {branch: $branch}}')" |
  jq -r '"task \(.id): \(.type), owner \(.owner), about \(.resources | join(", ")), branch \(.attributes.branch), created by \(.created_by)"' | indent
planner POST "/v1/agent/tasks/$TASK/agents" "$(jq -nc --arg a "$CODER" '{agent: $a, role: "coder", permissions: ["writer"]}')" |
  jq -r '"\(.agent) as \(.role): " + (.grants | map("\(.resource)#\(.permission) until the deadline") | join(", "))' | indent
planner POST "/v1/agent/tasks/$TASK/agents" "$(jq -nc --arg a "$REVIEWER" '{agent: $a, role: "reviewer", permissions: ["reader"]}')" |
  jq -r '"\(.agent) as \(.role): " + (.grants | map("\(.resource)#\(.permission) until the deadline") | join(", "))' | indent
say "Policy (examples/broker) let the Planner create a patch_bug task; the grants are relationship"
say "tuples that expire with the task and are deleted when it ends."

# ---- the Coder fixes the bug ------------------------------------------------------------------

step "The Coder clones the repository and reproduces the bug"
coder="$work/coder"
git clone -q "$bare" "$coder"
git -C "$coder" config user.name "Coder agent"
git -C "$coder" config user.email coder@agents.example.org
if out=$(run_tests "$coder"); then
  fail "the tests pass before the fix: $out"
fi
grep -E '^(FAIL|ERROR):' <<<"$out" | indent
ok "the test suite fails: a partly filled last page is never counted"

step "The Coder fixes page_count and runs the tests"
sed -i 's|    return total_items // per_page|    # Round up: a partly filled last page is a page.\n    return -(-total_items // per_page)|' "$coder/pagination.py"
git -C "$coder" --no-pager diff | indent
out=$(run_tests "$coder") || fail "the tests still fail after the fix: $out"
ok "all tests pass: $(tail -n 1 <<<"$out")"
git -C "$coder" commit -q -am "Count a partly filled last page"

step "The Coder pushes its fix to the task branch ${BRANCH#refs/heads/}, with its JWT-SVID"
say "git push -o warden-token=\"\$(warden svid jwt --audience git:$REPO)\" origin HEAD:$BRANCH"
out=$(push_as "$coder" "$CODER" origin "HEAD:$BRANCH") || fail "the Coder's push was refused: $out"
remote_lines "$out" | indent
[[ $(git --git-dir "$bare" rev-parse "$BRANCH") == $(git -C "$coder" rev-parse HEAD) ]] ||
  fail "the branch does not hold the Coder's commit"
ok "accepted: $BRANCH now holds the fix"
accepted_decision=$(decision_in "$out")

step "The Coder tries to push straight to main"
if out=$(push_as "$coder" "$CODER" origin HEAD:refs/heads/main); then
  fail "the Coder pushed to main: $out"
fi
remote_lines "$out" | indent
[[ $out == *"only-the-task-branch"* ]] || fail "unexpected refusal: $out"
[[ $(git --git-dir "$bare" rev-parse main) == "$main_before" ]] || fail "main moved"
ok "refused: a patch_bug task's writer pushes only the task's branch"

step "Someone pushes a branch without a Warden credential"
if out=$(push_as "$coder" "" origin HEAD:refs/heads/experiment); then
  fail "a push without a credential was accepted: $out"
fi
remote_lines "$out" | indent
[[ $out == *"-o warden-token=<JWT-SVID>"* ]] || fail "the refusal does not say how to pass the credential: $out"
ok "refused, and told how to pass its credential"

# ---- the Reviewer reviews ---------------------------------------------------------------------

step "The Reviewer fetches the fix, reviews the diff and runs the tests"
reviewer="$work/reviewer"
git clone -q "$bare" "$reviewer"
git -C "$reviewer" config user.name "Reviewer agent"
git -C "$reviewer" config user.email reviewer@agents.example.org
git -C "$reviewer" fetch -q origin "$BRANCH:refs/remotes/origin/fix/$TASK"
git -C "$reviewer" --no-pager diff --stat main "origin/fix/$TASK" | indent
git -C "$reviewer" --no-pager diff main "origin/fix/$TASK" -- pagination.py | indent
git -C "$reviewer" checkout -q "origin/fix/$TASK"
out=$(run_tests "$reviewer") || fail "the Reviewer's test run fails: $out"
ok "the Reviewer's test run passes: $(tail -n 1 <<<"$out")"

step "The Reviewer tries to push a change of its own"
git -C "$reviewer" checkout -q -b review "origin/fix/$TASK"
printf '\n# Reviewed.\n' >>"$reviewer/pagination.py"
git -C "$reviewer" commit -q -am "Reviewer's edit"
if out=$(push_as "$reviewer" "$REVIEWER" origin "HEAD:$BRANCH"); then
  fail "the Reviewer pushed: $out"
fi
remote_lines "$out" | indent
[[ $out == *"is not a \`writer\`"* ]] || fail "unexpected refusal: $out"
ok "refused: the Reviewer is a reader of $REPO, not a writer"

step "The Reviewer approves; the Planner completes task $TASK"
planner POST "/v1/agent/tasks/$TASK/end" '{"outcome": "completed", "reason": "fix reviewed and approved by the Reviewer"}' |
  jq -r '"task \(.id): \(.state) (\(.end_reason))", (.grants[] | "grant \(.resource)#\(.permission) of \(.agent): \(.state)")' | indent
left=$(admin GET "/v1/rebac/tuples?object=repository:$REPO" | jq '.tuples | length')
[[ $left == 0 ]] || fail "$left relationship tuples on repository:$REPO remain after the task ended"
ok "its grants are gone: no relationship tuple on repository:$REPO remains"

step "The Coder pushes again after the task completed"
printf '\n\ndef last_page(items, per_page):\n    return page(items, page_count(len(items), per_page), per_page)\n' >>"$coder/pagination.py"
git -C "$coder" commit -q -am "A late change"
if out=$(push_as "$coder" "$CODER" origin "HEAD:$BRANCH"); then
  fail "the Coder pushed after its task completed: $out"
fi
remote_lines "$out" | indent
[[ $out == *"task \`$TASK\` is completed (no open task grants write)"* ]] || fail "unexpected refusal: $out"
late_decision=$(decision_in "$out")
[[ $(git --git-dir "$bare" rev-parse "$BRANCH") != $(git -C "$coder" rev-parse HEAD) ]] || fail "the late push landed"
ok "refused: the same agent, the same command — the grant ended with the task"

# ---- a second task, at high risk --------------------------------------------------------------

step "The Planner opens task $TASK2 for the Coder; the operator raises the Coder's risk score to 0.7"
planner POST /v1/agent/tasks "$(jq -nc --arg id "$TASK2" --arg repo "repository:$REPO" --arg branch "$BRANCH2" \
  '{id: $id, type: "patch_bug", owner: "alice@example.org", resources: [$repo], deadline_s: 3600,
    attributes: {branch: $branch}}')" | jq -r '"task \(.id): \(.type), branch \(.attributes.branch)"' | indent
planner POST "/v1/agent/tasks/$TASK2/agents" "$(jq -nc --arg a "$CODER" '{agent: $a, role: "coder", permissions: ["writer"]}')" >/dev/null
admin POST /v1/risk "$(jq -nc --arg a "$CODER" '{agent: $a, score: 0.7, reason: "unusual activity: bulk reads outside its task"}')" >/dev/null
say "risk score of $CODER: 0.7 (policies see it as context.risk_score at once)"

step "The Coder pushes to its new task branch at risk 0.7"
if out=$(push_as "$coder" "$CODER" origin "HEAD:$BRANCH2"); then
  fail "the Coder pushed at risk 0.7: $out"
fi
remote_lines "$out" | indent
[[ $out == *"risk score 0.7 ≥ 0.5"* ]] || fail "unexpected refusal: $out"
ok "refused: risk score 0.7 is at or above the policy's 0.5"

step "The operator lowers the risk score to 0.2; the same push goes through"
admin POST /v1/risk "$(jq -nc --arg a "$CODER" '{agent: $a, score: 0.2, reason: "activity explained"}')" >/dev/null
out=$(push_as "$coder" "$CODER" origin "HEAD:$BRANCH2") || fail "the Coder's push at risk 0.2 was refused: $out"
remote_lines "$out" | indent
ok "accepted: the decision follows the live risk score"
planner POST "/v1/agent/tasks/$TASK2/end" '{"outcome": "cancelled", "reason": "example over"}' >/dev/null
say "task $TASK2 cancelled"

# ---- the auditor checks -----------------------------------------------------------------------

step "The audit trail of this run"
say "Ledger index, action, outcome, actor, what (other admin API calls left out):"
operator audit tail -n 1000 -o json | jq -c '.[]' >"$work/trail.jsonl"
jq -r '
  .event as $e | ($e.fields) as $f
  | select(($e.action == "policy.decision" and $f.api == "git")
           or ($e.action | IN("git.push", "task.create", "task.assign", "task.end", "grant.issue",
                              "grant.end", "risk.set")))
  | [ (.index | tostring), $e.action, $e.outcome, $e.actor,
      ( if $e.action == "policy.decision" then "\($f.decision) \($f.principal) write \($f.request.context.request.ref)"
        elif $e.action == "git.push" then "\($f.repository) \($f.refs | tojson): \($f.code)"
        elif $e.action == "task.create" then "\($f.task) \($f.type) \($f.resources | join(","))"
        elif $e.action == "task.assign" then "\($f.task) \($f.agent) as \($f.role)"
        elif $e.action == "task.end" then "\($f.task) \($f.outcome): \($f.reason)"
        elif $e.action == "grant.issue" then "\($f.task) \($f.agent) \($f.permissions | join(","))"
        elif $e.action == "grant.end" then "\($f.task) \($f.reason)"
        else "\($f.agent) \($f.score_milli / 1000): \($f.reason)" end ) ]
  | @tsv' "$work/trail.jsonl" | while IFS=$'\t' read -r index action outcome actor what; do
  printf '      %4s  %-16s %-8s %-40s %s\n' "$index" "$action" "$outcome" "$actor" "$what"
done
decisions=$(jq -s '[.[] | select(.event.action == "policy.decision" and .event.fields.api == "git")] | length' "$work/trail.jsonl")
refusals=$(jq -s '[.[] | select(.event.action == "git.push")] | length' "$work/trail.jsonl")
# Pushes with a credential: accepted, main, reviewer, late, risk 0.7, risk 0.2; one without.
[[ $decisions == 6 && $refusals == 1 ]] || fail "expected 6 git decisions and 1 git.push refusal, found $decisions and $refusals"
ok "every push attempt is in the ledger: $decisions decisions (api git) and $refusals refusal without a credential"

step "An inclusion proof for the refusal of the late push ($late_decision)"
late_index=$(jq -r --arg d "$late_decision" 'select(.event.fields.decision_id == $d) | .index' "$work/trail.jsonl")
[[ -n $late_index ]] || fail "decision $late_decision is not in the ledger"
jq -r --arg d "$late_decision" 'select(.event.fields.decision_id == $d)
  | "entry \(.index): \(.event.action) \(.event.fields.decision) for \(.event.fields.principal) on \(.event.fields.resource), ref \(.event.fields.request.context.request.ref)"' \
  "$work/trail.jsonl" | indent
operator audit checkpoint --publish >/dev/null
operator audit proof --index "$late_index" 2>&1 | indent
ok "the refusal is provably in the signed ledger (and so is the accepted push, $accepted_decision)"

step "An auditor verifies the whole ledger offline"
operator audit export --publish "$work/ledger.jsonl" 2>&1 | indent
curl -sf "$server_url/v1/audit/key" >"$work/ledger.vkey"
say "The auditor takes the ledger's public key out of band: $(cat "$work/ledger.vkey")"
verified=$("$WARDEN" audit verify "$work/ledger.jsonl" --key-file "$work/ledger.vkey" --quiet) ||
  fail "the export does not verify: $verified"
say "$verified"

printf '\nScenario 2 passed: the Coder could push only its task branch, only while its patch_bug\n'
printf 'task was open and its risk score below 0.5; the Reviewer only read; every attempt is in a\n'
printf 'ledger that verifies offline.\n'
