-- wrk script for Warden's POST /v1/authorize (issue #4 benchmark).
--
--   WARDEN_BENCH_TOKEN=wdn_… wrk -t2 -c64 -d20s --latency -s bench/authorize.lua \
--       http://127.0.0.1:PORT/v1/authorize
--
-- Environment:
--   WARDEN_BENCH_TOKEN    enforcer (or admin) API token — required
--   WARDEN_BENCH_PACKAGE  package to ask, e.g. coder-rego (optional: left out when only one
--                         package is in force)
--
-- Every answer that is not 2xx/3xx is counted by wrk itself ("Non-2xx or 3xx responses",
-- summary.errors.status); done() prints it with the throughput and latency percentiles on one
-- machine-readable RESULT line. No per-response callback, so wrk spends no extra CPU on the
-- cores it shares with the server.

local token = os.getenv("WARDEN_BENCH_TOKEN")
if token == nil or token == "" then
  error("set WARDEN_BENCH_TOKEN to an enforcer API token")
end
local package = os.getenv("WARDEN_BENCH_PACKAGE")

local body = '{"principal":"spiffe://example.org/agent/coder","action":"write",'
  .. '"resource":{"type":"Repository","id":"warden"}'
if package ~= nil and package ~= "" then
  body = body .. ',"package":"' .. package .. '"'
end
body = body .. '}'

wrk.method = "POST"
wrk.body = body
wrk.headers["authorization"] = "Bearer " .. token
wrk.headers["content-type"] = "application/json"

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d seconds=%.2f rps=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f "
      .. "max_ms=%.2f non2xx=%d connect_err=%d read_err=%d write_err=%d timeouts=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    e.status, e.connect, e.read, e.write, e.timeout))
end
