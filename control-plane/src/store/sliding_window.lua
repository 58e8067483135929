-- Exact sliding-window check-and-record over several counters, atomically, and at most once
-- per request. A request is admitted iff every enforced counter has room; it is then recorded
-- in every enforced counter and in every shadow counter that has room (so a shadow counter
-- never refuses a request and never holds more than its limit). A denied request records
-- nothing.
--
-- KEYS[1]      the identity's seen record: sorted set of the nonces of requests recorded
--              within the replay horizon (score = µs timestamp)
-- KEYS[1+i]    sorted set of admitted requests of counter i (score = µs timestamp)
-- ARGV[1]      the request's nonce: unique per request, the same in every retry of it
-- ARGV[2]      "r" to record an admitted request, "p" to only report (status endpoint)
-- ARGV[3]      "" to read the time from Redis (production); a store given its own clock
--              (tests: a manual one, for exact boundaries) passes its reading in µs
-- ARGV[4]      replay horizon (µs): how long a recorded nonce is remembered
-- ARGV[5]      TTL of the seen record (ms): the horizon rounded up, plus one
-- ARGV[3+3i], ARGV[4+3i], ARGV[5+3i]   limit, window (µs) and "1" for a shadow counter ("0"
--              for an enforced one) of counter i
--
-- Returns { admitted (0/1), now_us, count_1, free_at_1, full_1, count_2, ... }, where full_i
-- (0/1) says counter i had no room for this request.
--
-- Numbers reach redis.call as strings formatted with %.0f: Lua would otherwise print them
-- with 14 significant digits and corrupt µs timestamps (16 digits).
--
-- One request, one count: a client that lost the reply may send the same call again (Redis
-- Cluster clients retry after a reset connection). The retry finds its nonce in the seen
-- record, records nothing and answers as a report in which the request is admitted, its
-- entries counted once; it reports no counter full (whether a shadow counter had room when
-- the request was recorded is not known any more). A request that was not recorded (denied)
-- left no nonce, so its retry is judged afresh and recorded at most once. The guard brackets
-- the counters instead of living in their entries, so it holds whatever a counter stores.

local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[3])
end
local now_s = string.format('%.0f', now)

local seen, nonce, mode = KEYS[1], ARGV[1], ARGV[2]
local replay = mode == 'r' and redis.call('ZSCORE', seen, nonce) ~= false

-- Cost: every number <-> string conversion is a libc call and a large share of the
-- script's CPU, so each argument is converted once and the strings derived from a window
-- (trim horizon, TTL) once per distinct window; the score of the entry that sets free_at is
-- read from its member ("<us>.<nonce>" starts with it) instead of WITHSCORES, which would
-- format the double only for the script to parse it back.

local n = #KEYS - 1
local limits, windows, counts, full = {}, {}, {}, {}
local horizon, ttl = {}, {}
local admitted = 1
for i = 1, n do
  local key = KEYS[1 + i]
  local limit = tonumber(ARGV[3 + 3 * i])
  local wkey = ARGV[4 + 3 * i]
  local window = tonumber(wkey)
  limits[i], windows[i] = limit, window
  local h = horizon[wkey]
  if h == nil then
    -- The window is (now - W, now]: entries at or before now - W have left it.
    h = string.format('%.0f', now - window)
    horizon[wkey] = h
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', h)
  local c = redis.call('ZCARD', key)
  counts[i] = c
  full[i] = c >= limit
  if full[i] and ARGV[5 + 3 * i] ~= '1' then
    admitted = 0
  end
end
if replay then
  -- Recorded by the first execution: admitted, whatever the counters say now.
  admitted = 1
  for i = 1, n do
    full[i] = false
  end
end

local record = admitted == 1 and mode == 'r' and not replay
local out = { admitted, now }
-- The nonce makes the member unique, also when two requests share a µs or the clock steps
-- back.
local member = record and (now_s .. '.' .. nonce)
for i = 1, n do
  local key = KEYS[1 + i]
  local limit, window, c = limits[i], windows[i], counts[i]
  local free_at = now
  -- An admitted request finds every enforced counter with room: only a full shadow counter
  -- is left out.
  if record and not full[i] then
    redis.call('ZADD', key, now_s, member)
    local wkey = ARGV[4 + 3 * i]
    local t = ttl[wkey]
    if t == nil then
      -- Redis counts expiry from its clock truncated to the millisecond, so a TTL of exactly
      -- the window could drop the key (and its newest entry) up to 1 ms before that entry
      -- leaves the window: one more millisecond keeps every entry for its whole window.
      t = string.format('%.0f', math.ceil(window / 1000) + 1)
      ttl[wkey] = t
    end
    redis.call('PEXPIRE', key, t)
    if c == 0 then
      -- The entry just added is the only one.
      free_at = now + window
    end
    c = c + 1
  end
  if c > 0 and free_at == now then
    local index = 0
    if c > limit then
      index = c - limit
    end
    local first = redis.call('ZRANGE', key, index, index)[1]
    if first then
      free_at = tonumber(string.match(first, '^%d+')) + window
    end
  end
  out[#out + 1] = c
  out[#out + 1] = free_at
  out[#out + 1] = full[i] and 1 or 0
end

if record then
  -- Only recorded requests are remembered, for the replay horizon: the record holds at most
  -- the requests admitted within it.
  redis.call('ZREMRANGEBYSCORE', seen, '-inf', string.format('%.0f', now - tonumber(ARGV[4])))
  redis.call('ZADD', seen, now_s, nonce)
  redis.call('PEXPIRE', seen, ARGV[5])
end
return out
