-- wrk script of the load benchmark, phase c (abuse mix, SC-005):
--   wrk -t2 -c100 -d10s -s abuse.lua URL -- GOOD_KEYS_FILE ABUSE_KEYS_FILE [GOOD_EVERY] [PATH]
-- One request in GOOD_EVERY (default 10) comes from a "good" identity, taken in turn so
-- every good identity gets the same share and stays at a known fraction of its limit; the
-- others come from abuse identities (random), which load_bench has pushed over their limit
-- beforehand. response() classifies each answer by its X-RateLimit-Tier header and records
-- how close good identities came to their limit (X-RateLimit-Remaining / -Limit).

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local good, bad = {}, {}
local every = 10
local i, gi = 0, 0

good_ok, good_429, good_other = 0, 0, 0
abuse_ok, abuse_429, abuse_other = 0, 0, 0
unlabelled = 0
good_max_used = 0.0

local function load(path, list, header_path)
  for key in io.lines(path) do
    if key ~= "" then
      list[#list + 1] = wrk.format("GET", header_path, { ["x-api-key"] = key })
    end
  end
  assert(#list > 0, "no keys in " .. tostring(path))
end

function init(args)
  local path = args[4] or "/api/v1/request"
  load(args[1], good, path)
  load(args[2], bad, path)
  every = tonumber(args[3] or "10")
  local id = thread_id or 1
  math.randomseed(os.time() * 1000 + id)
  gi = math.floor((id - 1) * #good / 2)
end

function request()
  i = i + 1
  if i % every == 0 then
    gi = gi % #good + 1
    return good[gi]
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
              abuse_other = 0, unlabelled = 0 }
  local max_used = 0.0
  for _, t in ipairs(threads) do
    for k, _ in pairs(c) do c[k] = c[k] + (t:get(k) or 0) end
    local m = t:get("good_max_used") or 0
    if m > max_used then max_used = m end
  end
  local e = summary.errors
  io.write(string.format(
    'LOADBENCH {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"mean_us":%.1f,"p50_us":%d,' ..
    '"p95_us":%d,"p99_us":%d,"max_us":%d,"good_ok":%d,"good_429":%d,"good_other":%d,' ..
    '"abuse_ok":%d,"abuse_429":%d,"abuse_other":%d,"unlabelled":%d,"good_max_used":%.4f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, c.good_ok, c.good_429, c.good_other, c.abuse_ok, c.abuse_429,
    c.abuse_other, c.unlabelled, max_used))
end
