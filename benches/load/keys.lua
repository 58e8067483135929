-- wrk script of the load benchmark: GET PATH with an X-API-Key header from a file of keys
-- (one per line).
--   wrk -t2 -c100 -d15s -s keys.lua URL -- KEYS_FILE MODE [SAMPLE_EVERY QUOTA THREADS [PATH]]
-- MODE cycle:  the keys in turn, each thread from its own place in the list, so every
--              identity gets the same share (phases a and b, warm-ups, pushing the abuse
--              identities over their limit);
--      random: a key drawn at random per request.
-- SAMPLE_EVERY > 0: key lines 1, 1 + SAMPLE_EVERY, 1 + 2 * SAMPLE_EVERY, ... are samples. A
-- sample gets QUOTA requests in all (split over the THREADS threads) and is skipped after
-- that; done() reports how many each was sent, which load_bench compares with the control
-- plane's count once the run is over. Requests are formatted once in init(), so a request
-- costs a table lookup.

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local reqs = {}
local n = 0
local random = false
local pos = 0
local is_sample = {}
local quota_here = 0
-- wrk calls request() once in its first thread before the run, to check what it returns;
-- that request is never sent, so it must not count.
local checking = false
-- Requests sent per sample line (a global: done() reads it through thread:get).
sample_sent = {}

function init(args)
  local path = args[6] or "/api/v1/request"
  for key in io.lines(args[1]) do
    if key ~= "" then
      n = n + 1
      reqs[n] = wrk.format("GET", path, { ["x-api-key"] = key })
    end
  end
  assert(n > 0, "no keys in " .. tostring(args[1]))
  random = args[2] == "random"
  local every = tonumber(args[3] or "0")
  local quota = tonumber(args[4] or "0")
  local nthreads = tonumber(args[5] or "1")
  local id = thread_id or 1
  checking = id == 1
  if every > 0 then
    for line = 1, n, every do
      is_sample[line] = true
      sample_sent[line] = 0
    end
    quota_here = math.floor(quota / nthreads)
    if id <= quota % nthreads then quota_here = quota_here + 1 end
  end
  math.randomseed(os.time() * 1000 + id)
  -- Threads start at different places so they do not walk the list in lockstep.
  pos = math.floor((id - 1) * n / nthreads)
end

function request()
  if checking then
    checking = false
    return reqs[1]
  end
  local skipped = 0
  while true do
    local line
    if random then
      line = math.random(n)
    else
      pos = pos % n + 1
      line = pos
    end
    if not is_sample[line] then
      return reqs[line]
    end
    local sent = sample_sent[line]
    -- A list made only of samples that are all done: send anyway, still counted.
    if sent < quota_here or skipped > n then
      sample_sent[line] = sent + 1
      return reqs[line]
    end
    skipped = skipped + 1
  end
end

function done(summary, latency, requests)
  local sent = {}
  for _, t in ipairs(threads) do
    for line, count in pairs(t:get("sample_sent") or {}) do
      sent[line] = (sent[line] or 0) + count
    end
  end
  local parts = {}
  for line, count in pairs(sent) do
    parts[#parts + 1] = string.format('"%d":%d', line, count)
  end
  local e = summary.errors
  io.write(string.format(
    'LOADBENCH {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"mean_us":%.1f,"p50_us":%d,' ..
    '"p95_us":%d,"p99_us":%d,"max_us":%d,"samples":{%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, table.concat(parts, ",")))
end
