-- wrk script for Warden's POST /oauth2/token (issue #6 benchmark): RFC 8693 token exchange.
--
--   WARDEN_BENCH_SVID=<JWT-SVID> wrk -t2 -c64 -d20s --latency -s bench/exchange.lua \
--       http://127.0.0.1:PORT/oauth2/token
--
-- Environment:
--   WARDEN_BENCH_SVID      the subject: a JWT-SVID for the server's issuer URL — required
--   WARDEN_BENCH_AUDIENCE  default https://git.example.org
--   WARDEN_BENCH_SCOPE     default repo:read
--
-- Every exchange is a full issuance: JWT-SVID validation, a policy decision (recorded),
-- an ES256-signed access token, its lease (committed) and its issuance entry (committed).

local svid = os.getenv("WARDEN_BENCH_SVID")
if svid == nil or svid == "" then
  error("set WARDEN_BENCH_SVID to a JWT-SVID")
end
local audience = os.getenv("WARDEN_BENCH_AUDIENCE") or "https://git.example.org"
local scope = os.getenv("WARDEN_BENCH_SCOPE") or "repo:read"

local function enc(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

wrk.method = "POST"
wrk.body = "grant_type=" .. enc("urn:ietf:params:oauth:grant-type:token-exchange")
  .. "&subject_token=" .. enc(svid)
  .. "&subject_token_type=" .. enc("urn:ietf:params:oauth:token-type:jwt")
  .. "&audience=" .. enc(audience)
  .. "&scope=" .. enc(scope)
wrk.headers["content-type"] = "application/x-www-form-urlencoded"

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
