-- wrk script: up to BENCH_SESSIONS (default 100000) allowed tools/call requests, each with a new
-- Mcp-Session-Id (bench-session-<BENCH_SESSION_OFFSET + n>), to fill mcp-policy's per-session
-- rate-limit state. Once that many were sent, the remaining requests reuse the last id, so exactly
-- that many distinct ids are sent if the run is long enough. wrk runs for its whole -d duration
-- whatever the script does, so bench/run.sh calls it in short slices, passing the offset on.
local path = os.getenv("BENCH_BODY")
local f = assert(io.open(path, "rb"), "cannot open BENCH_BODY " .. tostring(path))
local body = f:read("*a")
f:close()
local total = tonumber(os.getenv("BENCH_SESSIONS") or "100000")
local offset = tonumber(os.getenv("BENCH_SESSION_OFFSET") or "0")
-- globals, so that done() can read them with thread:get()
sent, answered, bad = 0, 0, 0
local headers = {
  ["Content-Type"] = "application/json",
  ["Accept"] = "application/json, text/event-stream",
  ["Mcp-Protocol-Version"] = "2025-06-18",
}

function request()
  if sent < total then sent = sent + 1 end
  headers["Mcp-Session-Id"] = string.format("bench-session-%08d", offset + sent)
  return wrk.format("POST", nil, headers, body)
end

function response(status, hdrs, resp)
  answered = answered + 1
  if status ~= 200 or string.find(resp, '"error"', 1, true) then bad = bad + 1 end
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local distinct, refused = 0, 0
  for _, t in ipairs(threads) do
    distinct = distinct + (t:get("sent") or 0)
    refused = refused + (t:get("bad") or 0)
  end
  io.write(string.format('SESSIONS {"requests":%d,"distinct_sessions":%d,"refused":%d}\n',
    summary.requests, distinct, refused))
end
