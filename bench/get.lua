-- wrk script for the comparison runs of bench/authorize.sh: a plain GET, with a bearer token
-- when WARDEN_BENCH_TOKEN is set (GET /v1/whoami: authentication + one api.request ledger
-- append) and without one for GET /healthz (no authentication, no ledger).
local token = os.getenv("WARDEN_BENCH_TOKEN")
wrk.method = "GET"
if token ~= nil and token ~= "" then
  wrk.headers["authorization"] = "Bearer " .. token
end

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
