-- wrk script of the load benchmark: GET PATH with an X-API-Key header taken from a file of
-- keys (one per line).
--   wrk -t2 -c100 -d10s -s keys.lua URL -- KEYS_FILE [random|cycle] [PATH]
-- random: a key drawn uniformly at random per request (phases a and b);
-- cycle:  the keys in turn (pushes every abuse identity over its limit before phase c).
-- Requests are formatted once in init(), so a request costs one table lookup.

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local reqs = {}
local n = 0
local cycle = false
local pos = 0

function init(args)
  local path = args[3] or "/api/v1/request"
  for key in io.lines(args[1]) do
    if key ~= "" then
      n = n + 1
      reqs[n] = wrk.format("GET", path, { ["x-api-key"] = key })
    end
  end
  assert(n > 0, "no keys in " .. tostring(args[1]))
  cycle = args[2] == "cycle"
  local id = thread_id or 1
  math.randomseed(os.time() * 1000 + id)
  -- Threads start at different places so they do not walk the list in lockstep.
  pos = math.floor((id - 1) * n / 2)
end

function request()
  if cycle then
    pos = pos % n + 1
    return reqs[pos]
  end
  return reqs[math.random(n)]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'LOADBENCH {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"mean_us":%.1f,"p50_us":%d,' ..
    '"p95_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max))
end
