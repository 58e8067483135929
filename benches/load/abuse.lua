-- wrk script of the load benchmark, phase c (abuse mix, SC-005):
--   wrk -t2 -c100 -d15s -s abuse.lua URL -- GOOD_KEYS_FILE ABUSE_KEYS_FILE GOOD_EVERY QUOTA
--       THREADS ACTIVE [PATH]
-- One request in GOOD_EVERY comes from a "good" identity, the others from abuse identities
-- (drawn at random), which load_bench has pushed over their limit beforehand. Each thread
-- owns every THREADS-th good key and keeps ACTIVE of them in use, in turn; a good identity
-- that has been sent QUOTA requests (its share of the limit SC-005 speaks of) is retired and
-- the next one of the pool takes its place. response() classifies each answer by its
-- X-RateLimit-Tier header and records how close good identities came to their limit
-- (X-RateLimit-Remaining / -Limit).

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local pool, bad = {}, {}
local every, quota, max_active = 10, 1, 1
local next_good = 1
local active = {}
local turn = 0
local i = 0
-- wrk calls request() once in its first thread before the run, to check what it returns;
-- that request is never sent, so it must not count.
local checking = false

good_ok, good_429, good_other = 0, 0, 0
abuse_ok, abuse_429, abuse_other = 0, 0, 0
unlabelled = 0
good_max_used = 0.0
-- Good identities taken into use, retired at their quota, and whether the pool ran dry.
good_used, good_retired, good_exhausted = 0, 0, 0

function init(args)
  local path = args[7] or "/api/v1/request"
  local nthreads = tonumber(args[5] or "1")
  local id = thread_id or 1
  checking = id == 1
  local line = 0
  for key in io.lines(args[1]) do
    if key ~= "" then
      line = line + 1
      if (line - 1) % nthreads == id - 1 then
        pool[#pool + 1] = wrk.format("GET", path, { ["x-api-key"] = key })
      end
    end
  end
  for key in io.lines(args[2]) do
    if key ~= "" then
      bad[#bad + 1] = wrk.format("GET", path, { ["x-api-key"] = key })
    end
  end
  assert(#pool > 0, "no good keys for thread " .. id .. " in " .. tostring(args[1]))
  assert(#bad > 0, "no keys in " .. tostring(args[2]))
  every = tonumber(args[3] or "10")
  quota = tonumber(args[4] or "1")
  max_active = tonumber(args[6] or "1")
  math.randomseed(os.time() * 1000 + id)
end

local function activate()
  while #active < max_active and next_good <= #pool do
    active[#active + 1] = { req = pool[next_good], sent = 0 }
    next_good = next_good + 1
    good_used = good_used + 1
  end
end

function request()
  if checking then
    checking = false
    return bad[1]
  end
  i = i + 1
  if i % every == 0 then
    activate()
    if #active > 0 then
      turn = turn % #active + 1
      local a = active[turn]
      a.sent = a.sent + 1
      if a.sent >= quota then
        table.remove(active, turn)
        good_retired = good_retired + 1
        turn = turn - 1
      end
      return a.req
    end
    good_exhausted = 1
  end
  return bad[math.random(#bad)]
end

function response(status, headers, body)
  local tier = headers["x-ratelimit-tier"]
  if tier == "lb_good" then
    if status == 429 then
      good_429 = good_429 + 1
    elseif status < 400 then
      good_ok = good_ok + 1
    else
      good_other = good_other + 1
    end
    local limit = tonumber(headers["x-ratelimit-limit"])
    local remaining = tonumber(headers["x-ratelimit-remaining"])
    if limit and remaining and limit > 0 then
      local used = (limit - remaining) / limit
      if used > good_max_used then good_max_used = used end
    end
  elseif tier == "lb_abuse" then
    if status == 429 then
      abuse_429 = abuse_429 + 1
    elseif status < 400 then
      abuse_ok = abuse_ok + 1
    else
      abuse_other = abuse_other + 1
    end
  else
    unlabelled = unlabelled + 1
  end
end

function done(summary, latency, requests)
  local c = { good_ok = 0, good_429 = 0, good_other = 0, abuse_ok = 0, abuse_429 = 0,
              abuse_other = 0, unlabelled = 0, good_used = 0, good_retired = 0 }
  local max_used, exhausted = 0.0, 0
  for _, t in ipairs(threads) do
    for k, _ in pairs(c) do c[k] = c[k] + (t:get(k) or 0) end
    local m = t:get("good_max_used") or 0
    if m > max_used then max_used = m end
    if (t:get("good_exhausted") or 0) > 0 then exhausted = 1 end
  end
  local e = summary.errors
  io.write(string.format(
    'LOADBENCH {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"mean_us":%.1f,"p50_us":%d,' ..
    '"p95_us":%d,"p99_us":%d,"max_us":%d,"good_ok":%d,"good_429":%d,"good_other":%d,' ..
    '"abuse_ok":%d,"abuse_429":%d,"abuse_other":%d,"unlabelled":%d,"good_max_used":%.4f,' ..
    '"good_used":%d,"good_retired":%d,"good_exhausted":%s}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, c.good_ok, c.good_429, c.good_other, c.abuse_ok, c.abuse_429,
    c.abuse_other, c.unlabelled, max_used, c.good_used, c.good_retired,
    exhausted > 0 and "true" or "false"))
end
