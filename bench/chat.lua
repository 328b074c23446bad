-- wrk script for scrim's benchmark: every request is a POST of a 4 KB
-- OpenAI chat-completions body (non-streaming), as an OpenAI SDK sends it.
--
-- Environment:
--   BENCH_KEY        client key sent as `Authorization: Bearer ...` (required)
--   BENCH_PATH       request path (default /v1/chat/completions)
--   BENCH_HEADERS    extra headers, `Name: value` separated by `|`
--                    (the Portkey run uses it for x-portkey-*)
--   BENCH_BODY_SIZE  body size in bytes (default 4096)
--   BENCH_PII        1: the user turn also carries an e-mail address and a
--                    phone number, so scrim scrubs, keeps a vault and
--                    restores (default 0: nothing to replace)
--
-- At the end it prints one machine-readable line that bench/run.sh parses:
--   BENCH rps=R p50_us=N p90_us=N p99_us=N max_us=N requests=N non2xx=N
--         errors=N statuses=200:N,502:N
-- `non2xx` is counted here, per response, not taken from wrk's summary.

local key = os.getenv("BENCH_KEY")
if not key or key == "" then
  error("chat.lua: set BENCH_KEY to the client key")
end

local path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
local size = tonumber(os.getenv("BENCH_BODY_SIZE") or "4096")
local pii = os.getenv("BENCH_PII") == "1"

-- The body: a system prompt, a short earlier exchange and a long user turn,
-- padded with prose so that the JSON is exactly `size` bytes.
local function make_body(n)
  local head = '{"model":"gpt-4o-mini","temperature":0.2,"max_tokens":256,'
    .. '"messages":['
    .. '{"role":"system","content":"You are a careful assistant for a support '
    .. 'team. Answer briefly, cite the ticket number, and never invent '
    .. 'account details."},'
    .. '{"role":"user","content":"Ticket 4812: the export job failed twice '
    .. 'last night. What should I check first?"},'
    .. '{"role":"assistant","content":"Start with the job log for the two '
    .. 'failed runs and compare their error lines."},'
    .. '{"role":"user","content":"Here is the log of the second run'
    .. (pii and ', sent by maria.gonzalez@example.com (call me on '
                .. '+1 415 555 0132). ' or '. ')
  local tail = '"}],"user":"bench"}'
  local prose = "The export worker started at 02:00 and read 18,442 rows "
    .. "from the orders table in batches of 500. After batch 31 the "
    .. "connection to the warehouse was reset by the peer; the worker "
    .. "retried three times with a back-off of 2, 4 and 8 seconds, then "
    .. "gave up and marked the job failed. "
  local room = n - #head - #tail
  local parts, len = {}, 0
  while len + #prose <= room do
    parts[#parts + 1] = prose
    len = len + #prose
  end
  parts[#parts + 1] = string.rep(".", room - len)
  local body = head .. table.concat(parts) .. tail
  assert(#body == n, "body size " .. #body .. " ~= " .. n)
  return body
end

wrk.method = "POST"
wrk.path = path
wrk.body = make_body(size)
wrk.headers["Authorization"] = "Bearer " .. key
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"

local extra = os.getenv("BENCH_HEADERS") or ""
for item in string.gmatch(extra, "[^|]+") do
  local name, value = string.match(item, "^%s*([^:]+):%s*(.-)%s*$")
  if name then wrk.headers[name] = value end
end

-- Per-thread counters (each wrk thread has its own Lua state), gathered in
-- done() through the thread objects kept by setup().
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Globals, not locals: thread:get() reads a thread's global variables.
statuses = {}
non2xx = 0

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local total_non2xx = 0
  local all = {}
  for _, t in ipairs(threads) do
    total_non2xx = total_non2xx + (t:get("non2xx") or 0)
    local st = t:get("statuses") or {}
    for code, n in pairs(st) do
      all[code] = (all[code] or 0) + n
    end
  end
  local codes = {}
  for code, n in pairs(all) do
    codes[#codes + 1] = code .. ":" .. n
  end
  table.sort(codes)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "BENCH rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d requests=%d "
      .. "non2xx=%d errors=%d statuses=%s\n",
    summary.requests / seconds,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, summary.requests, total_non2xx, errors,
    #codes > 0 and table.concat(codes, ",") or "none"))
  if errors > 0 then
    io.write(string.format(
      "BENCH socket_errors connect=%d read=%d write=%d timeout=%d\n",
      e.connect, e.read, e.write, e.timeout))
  end
end
