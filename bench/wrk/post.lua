-- wrk script for the mcp-policy benchmark: POST one fixed MCP message, as an MCP client over
-- Streamable HTTP would (JSON body, Accept for JSON and SSE, a session id), and print the results
-- as one JSON line that bench/measure.py reads.
--   BENCH_BODY   file holding the request body (required)
--   BENCH_SESSION  Mcp-Session-Id to send (default bench-session-1)
--   BENCH_AUTH   file holding a bearer token to send as Authorization (configurations J and P)
local path = os.getenv("BENCH_BODY")
local f = assert(io.open(path, "rb"), "cannot open BENCH_BODY " .. tostring(path))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Mcp-Session-Id"] = os.getenv("BENCH_SESSION") or "bench-session-1"
wrk.headers["Mcp-Protocol-Version"] = "2025-06-18"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  local t = assert(io.open(auth, "rb"), "cannot open BENCH_AUTH " .. auth)
  wrk.headers["Authorization"] = "Bearer " .. t:read("*a"):gsub("%s+$", "")
  t:close()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,' ..
    '"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
