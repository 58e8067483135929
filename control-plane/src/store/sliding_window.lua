-- Exact sliding-window check-and-record over several counters, atomically.
--
-- KEYS[i]      sorted set of admitted requests of counter i (score = µs timestamp)
-- ARGV[1]      nonce: makes members unique even if the server clock steps back
-- ARGV[2]      "r" to record an admitted request, "p" to only report (status endpoint)
-- ARGV[3]      "" to read the time from Redis (production); a store given its own clock
--              (tests: a manual one, for exact boundaries) passes its reading in µs
-- ARGV[2+2i], ARGV[3+2i]   limit and window (µs) of counter i
--
-- Returns { admitted (0/1), now_us, count_1, free_at_1, count_2, free_at_2, ... }.
--
-- Numbers reach redis.call as strings formatted with %.0f: Lua would otherwise print them
-- with 14 significant digits and corrupt µs timestamps (16 digits).

local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[3])
end
local now_s = string.format('%.0f', now)

-- Cost: every number <-> string conversion is a libc call and a large share of the
-- script's CPU, so each argument is converted once and the strings derived from a window
-- (trim horizon, TTL) once per distinct window; the score of the entry that sets free_at is
-- read from its member ("<us>.<count>.<nonce>" starts with it) instead of WITHSCORES, which
-- would format the double only for the script to parse it back.

local n = #KEYS
local limits, windows, counts = {}, {}, {}
local horizon, ttl = {}, {}
local admitted = 1
for i = 1, n do
  local limit = tonumber(ARGV[2 + 2 * i])
  local wkey = ARGV[3 + 2 * i]
  local window = tonumber(wkey)
  limits[i], windows[i] = limit, window
  local h = horizon[wkey]
  if h == nil then
    -- The window is (now - W, now]: entries at or before now - W have left it.
    h = string.format('%.0f', now - window)
    horizon[wkey] = h
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', h)
  local c = redis.call('ZCARD', KEYS[i])
  counts[i] = c
  if c >= limit then
    admitted = 0
  end
end

local record = admitted == 1 and ARGV[2] == 'r'
local out = { admitted, now }
for i = 1, n do
  local limit, window, c = limits[i], windows[i], counts[i]
  local free_at = now
  if record then
    -- now.count.nonce is unique: within one us the count grows with every admission.
    redis.call('ZADD', KEYS[i], now_s, now_s .. '.' .. c .. '.' .. ARGV[1])
    local wkey = ARGV[3 + 2 * i]
    local t = ttl[wkey]
    if t == nil then
      -- Redis counts expiry from its clock truncated to the millisecond, so a TTL of exactly
      -- the window could drop the key (and its newest entry) up to 1 ms before that entry
      -- leaves the window: one more millisecond keeps every entry for its whole window.
      t = string.format('%.0f', math.ceil(window / 1000) + 1)
      ttl[wkey] = t
    end
    redis.call('PEXPIRE', KEYS[i], t)
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
    local member = redis.call('ZRANGE', KEYS[i], index, index)[1]
    if member then
      free_at = tonumber(string.match(member, '^%d+')) + window
    end
  end
  out[#out + 1] = c
  out[#out + 1] = free_at
end
return out
