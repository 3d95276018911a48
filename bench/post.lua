-- bench/post.lua: wrk script that POSTs a JSON body; driven by environment variables so one script
-- serves every scenario in bench/scenarios.txt (run.sh sets them).
--   BENCH_BODY     file holding the JSON body; "__N__" in it becomes "0", or, with BENCH_UNIQUE=1, a value
--                  unique per request (a cache-miss load; wrk then builds every request in Lua)
--   BENCH_RUN      a tag that keeps unique values distinct between the warm-up and the measured run
--   BENCH_HEADERS  extra request headers, one "Name: value" per line
-- done() prints one "BENCH key=value ..." line that run.sh parses (latencies in microseconds).

local function read_file(path)
  local file = assert(io.open(path or "", "rb"), "cannot open BENCH_BODY file '" .. tostring(path) .. "'")
  local text = file:read("*a")
  file:close()
  return text
end

local template = read_file(os.getenv("BENCH_BODY"))
local run = os.getenv("BENCH_RUN") or tostring(os.time())

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^%s*([^:]+):%s*(.-)%s*$")
  if name then
    wrk.headers[name] = value
  end
end
wrk.body = (template:gsub("__N__", "0"))

local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

if os.getenv("BENCH_UNIQUE") == "1" then
  local counter = 0
  request = function()
    counter = counter + 1
    local body = template:gsub("__N__", run .. "-" .. tostring(tid or 0) .. "-" .. counter)
    return wrk.format(nil, nil, nil, body)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99))))
end
