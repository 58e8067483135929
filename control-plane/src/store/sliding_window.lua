-- Sliding-window check-and-record over several counters, exact logs and slotted counters
-- alike, atomically, and at most once per request, for a batch of requests in one script
-- call. A request has a cost (units, 1 unless its endpoint rule says otherwise) and is
-- admitted iff every enforced counter has room for that many units; it is then recorded, with
-- its weight, in every enforced counter and in every shadow counter that has room for it (so
-- a shadow counter never refuses a request and never holds more than its limit). A denied
-- request records nothing.
-- The requests of a batch are decided one after the other, in order, each exactly as if it
-- were the only one of its call: a later request sees what an earlier one recorded, and
-- nothing else of it (a denial, a refused request) changes its answer.
--
-- ARGV[1]      "r" to record admitted requests, "p" to only report (status endpoint)
-- ARGV[2]      "" to read the time from Redis (production); a store given its own clock
--              (tests: a manual one, for exact boundaries) passes its reading in µs
-- ARGV[3]      replay horizon (µs): how long a recorded nonce is remembered
-- ARGV[4]      TTL of the seen records (ms): twice the horizon rounded up, plus one
-- Then each request in turn, its keys following the previous request's in KEYS and its
-- arguments following them in ARGV:
--   KEYS  seen        the identity's seen record: sorted set of the nonces of requests
--                     recorded within the replay horizon (score = µs timestamp), and "~"
--                     (see the end of decide)
--         counter i   (i = 1..n) an exact log (sorted set of admitted requests, score = µs
--                     timestamp) or a slotted counter (hash, see below)
--         source j    (j = 1..m) exact logs that slotted counters take their counts from when
--                     they do not exist yet
--   ARGV  nonce       unique per request, the same in every retry of it
--         n, m        how many counters and sources the request has
--         cost        units the request takes from each counter (>= 1)
--         counter i   five arguments: limit, window W (µs), "1" for a shadow counter ("0" for
--                     an enforced one), slot length g (µs; "0" for an exact log), and the
--                     index among the request's keys (seen = 1, counter i = 1 + i, source
--                     j = 1 + n + j) of the exact log of the same window ("0": none)
--
-- Returns one entry per request, in order: { admitted (0/1), now_us, count_1, free_at_1,
-- full_1, count_2, ... }, where count_i is in units, free_at_i is when counter i has room for
-- cost units again (when its oldest entry leaves if it has room already) and full_i (0/1)
-- says counter i had no room for this request's cost, or
-- for a request refused whole (nothing of it written) a string saying why (not an error
-- reply: the other requests' answers stand). Every request of a batch is judged at the same
-- now_us.
--
-- An exact log holds one entry per recorded request. A request of cost 1 is the member
-- "<us>.<nonce>"; a heavier one carries its weight, "<us>.<nonce>*<w>", and its log then keeps
-- the sum of its weights in the member "#", whose score is SUM_BASE + sum (beyond every
-- timestamp, so trimming never takes it and it sorts last). A log without "#" weighs 1 per
-- entry (its sum is ZCARD: nothing changes for logs of cost-1 requests only); one with it
-- subtracts the weights of the entries it trims, and drops "#" once the sum is the number of
-- entries again. Entries are at most the sum, so memory stays bounded by the limit.
--
-- Numbers reach redis.call as strings formatted with %.0f: Lua would otherwise print them
-- with 14 significant digits and corrupt µs timestamps (16 digits).
--
-- A slotted counter keeps one count per slot of g µs (slot s = floor(t / g)) in a hash:
-- field "t" the total, "l" the lowest slot holding a count, and each such slot's count under
-- the field s mod 4096 (short integer fields keep the hash in the compact listpack encoding;
-- a counter's slots span at most ceil(W / g) + 2 consecutive numbers, far fewer than 4096, so
-- fields never collide). At now every slot from floor((now - W) / g) on is counted, the oldest
-- one whole: no window (t - W, t] ever holds more than the limit. The slots below are
-- subtracted and deleted when the lowest one leaves, and the next lowest is looked for a few
-- slots at a time, so trimming costs what time has passed, not what the counter holds. A
-- slotted counter that does not exist yet takes the counts of the exact log of its window (a
-- window switched from exact to slotted loses no request) and the log is deleted.
--
-- One request, one count: a client that lost the reply may send the same call again (Redis
-- Cluster clients retry after a reset connection). The retry finds its nonce in the seen
-- record, records nothing and answers as a report in which the request is admitted, its
-- entries counted once; it reports no counter full (whether a shadow counter had room when
-- the request was recorded is not known any more). A request that was not recorded (denied)
-- left no nonce, so its retry is judged afresh and recorded at most once. The guard brackets
-- the counters instead of living in their entries, so it holds whatever a counter stores.

local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[2])
end
local function fmt(x)
  return string.format('%.0f', x)
end
local now_s = fmt(now)

local mode, horizon_us, seen_ttl = ARGV[1], tonumber(ARGV[3]), ARGV[4]

-- ---- Weighted exact logs ----

-- 2^52 µs is the year 2112; SUM_BASE + sum stays exact in a double for sums below 2^52.
local SUM_BASE = 4503599627370496

-- The weight of an exact log's member (1 unless it says otherwise).
local function weight_of(member)
  local w = string.match(member, '%*(%d+)$')
  if w then
    return tonumber(w)
  end
  return 1
end

-- Trims the log to the window (entries at or before horizon leave) and returns its sum of
-- weights and whether it keeps the "#" member.
local function trim_log(key, horizon)
  local s = redis.call('ZSCORE', key, '#')
  if not s then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', horizon)
    return redis.call('ZCARD', key), false
  end
  local sum = tonumber(s) - SUM_BASE
  local gone = redis.call('ZRANGEBYSCORE', key, '-inf', horizon)
  if #gone == 0 then
    return sum, true
  end
  for _, m in ipairs(gone) do
    sum = sum - weight_of(m)
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', horizon)
  local n = redis.call('ZCARD', key) - 1
  if n <= 0 then
    redis.call('DEL', key)
    return 0, false
  end
  if sum <= n then
    redis.call('ZREM', key, '#')
    return n, false
  end
  redis.call('ZADD', key, fmt(SUM_BASE + sum), '#')
  return sum, true
end

-- When the log whose entries weigh sum in all has shed must units: the timestamp (from the
-- member) of the entry whose leaving completes them, plus the window; the newest entry's when
-- it holds fewer (a cost no window can hold, refused by the configuration). A log of cost-1
-- entries finds it by rank; a weighted one adds weights from the oldest, a page at a time.
local function log_free_at(key, weighted, sum, must, window)
  local function leaves(member)
    if not member then
      return now
    end
    return tonumber(string.match(member, '^%d+')) + window
  end
  if not weighted then
    local index = math.min(must, sum) - 1
    return leaves(redis.call('ZRANGE', key, index, index)[1])
  end
  local left, from, last, page = 0, 0, nil, 64
  while true do
    local batch = redis.call('ZRANGE', key, from, from + page - 1)
    for _, m in ipairs(batch) do
      if m == '#' then
        return leaves(last)
      end
      last = m
      left = left + weight_of(m)
      if left >= must then
        return leaves(m)
      end
    end
    if #batch < page then
      return leaves(last)
    end
    from = from + page
  end
end

-- ---- Slotted counters ----

local M = 4096

-- floor(t / g) without the rounding of a double division (t up to 2^53).
local function slot_of(t, g)
  if t < 0 then
    return math.floor(t / g)
  end
  return (t - math.fmod(t, g)) / g
end

local function field(s)
  return fmt(math.fmod(s, M))
end

-- { {slot, count}, ... } of the slots in [from, to] of a hash whose lowest slot is lowest,
-- oldest first: by name when the range is shorter than the hash, else from the whole hash.
local function present(key, lowest, from, to)
  local out = {}
  if to < from then
    return out
  end
  if to - from + 1 <= redis.call('HLEN', key) then
    local fields = {}
    for s = from, to do
      fields[#fields + 1] = field(s)
    end
    local v = redis.call('HMGET', key, unpack(fields))
    for j = 1, #v do
      if v[j] then
        out[#out + 1] = { from + j - 1, tonumber(v[j]) }
      end
    end
    return out
  end
  local all = redis.call('HGETALL', key)
  local base = math.fmod(lowest, M)
  for j = 1, #all, 2 do
    local f = all[j]
    if f ~= 't' and f ~= 'l' and f ~= 'x' then
      local s = lowest + math.fmod(tonumber(f) - base + M, M)
      if s >= from and s <= to then
        out[#out + 1] = { s, tonumber(all[j + 1]) }
      end
    end
  end
  table.sort(out, function(a, b) return a[1] < b[1] end)
  return out
end

-- The counter's lowest slot and total at now, after the slots that left are dropped
-- (nil, 0 when empty), the last slot its time-to-live covers ("x", nil when unknown) and the
-- count of now's slot (nil when empty): read in the one call that loads the counter, so that
-- recording needs no second read.
local function load_slots(key, window, g, now_field)
  local v = redis.call('HMGET', key, 'l', 't', 'x', now_field)
  if not v[1] then
    return nil, 0
  end
  local lowest, total = tonumber(v[1]), tonumber(v[2])
  local covered, current = tonumber(v[3]), tonumber(v[4])
  local oldest = slot_of(now - window, g)
  if oldest <= lowest then
    return lowest, total, covered, current
  end
  if oldest - lowest >= M then
    redis.call('DEL', key)
    return nil, 0
  end
  local gone, fields = 0, {}
  for _, sc in ipairs(present(key, lowest, lowest, oldest - 1)) do
    gone = gone + sc[2]
    fields[#fields + 1] = field(sc[1])
  end
  total = total - gone
  if total <= 0 then
    redis.call('DEL', key)
    return nil, 0
  end
  if #fields > 0 then
    redis.call('HDEL', key, unpack(fields))
  end
  local from, next_lowest = oldest, nil
  while next_lowest == nil do
    if from >= lowest + M then
      error('slotted counter ' .. key .. ': a total without slots')
    end
    local found = present(key, lowest, from, from + 7)
    if #found > 0 then
      next_lowest = found[1][1]
    end
    from = from + 8
  end
  redis.call('HSET', key, 'l', fmt(next_lowest), 't', fmt(total))
  -- Only slots before now's left: now's count stands.
  return next_lowest, total, covered, current
end

-- Time-to-live of a slotted counter (ms): its newest slot is counted until at most W + g
-- from now; one more millisecond, as for the logs below.
local function slots_ttl(window, g)
  return fmt(math.ceil((window + g) / 1000) + 1)
end

-- A counter's time-to-live is armed ahead, so that most requests need no PEXPIRE: writing
-- slot s arms it to cover every slot up to x = s + W / 8g (slot q is counted until
-- (q + 1) g + W) and records x in the field "x"; a later write to a slot up to x leaves it
-- as it is. The key outlives its last count by at most W / 8. Returns x and the TTL (ms; one
-- more, as for the logs below).
local function arm(window, g, s)
  local x = s + math.floor(window / (8 * g))
  return x, fmt(math.ceil(((x + 1) * g + window - now) / 1000) + 1)
end

-- A new slotted counter takes the counts of the exact log source (entries still inside the
-- window, by slot; entries after now, from a clock that stepped back, in the slot of the
-- newest) and the log is deleted. A weighted log's entries count their weights, each in its
-- own slot (read once: a conversion happens once). Returns its lowest slot and total.
local function convert(key, source, window, g)
  local sum, weighted = trim_log(source, fmt(now - window))
  if sum == 0 then
    redis.call('DEL', source)
    return nil, 0
  end
  local oldest, newest = slot_of(now - window, g), slot_of(now, g)
  local args, total, lowest = {}, 0, nil
  local function put(s, c)
    if c > 0 then
      args[#args + 1] = field(s)
      args[#args + 1] = fmt(c)
      total = total + c
      if lowest == nil then
        lowest = s
      end
    end
  end
  if weighted then
    local counts, order, cap = {}, {}, oldest + M - 8
    -- Oldest first, so the slots come in order; "#" sorts last.
    for _, member in ipairs(redis.call('ZRANGE', source, 0, -1)) do
      if member ~= '#' then
        local s = math.min(slot_of(tonumber(string.match(member, '^%d+')), g), cap)
        if counts[s] == nil then
          counts[s] = 0
          order[#order + 1] = s
        end
        counts[s] = counts[s] + weight_of(member)
      end
    end
    for _, s in ipairs(order) do
      put(s, counts[s])
    end
  else
    for s = oldest, newest do
      put(s, redis.call('ZCOUNT', source, fmt(s * g), fmt((s + 1) * g - 1)))
    end
  end
  local after = 0
  if not weighted then
    after = redis.call('ZCOUNT', source, fmt((newest + 1) * g), '+inf')
  end
  if after > 0 then
    local last = redis.call('ZRANGE', source, -1, -1)[1]
    -- After newest (the entry is), and within the slots a hash can name.
    local s = slot_of(tonumber(string.match(last, '^%d+')), g)
    put(math.min(s, oldest + M - 8), after)
  end
  redis.call('UNLINK', source)
  if total == 0 then
    return nil, 0
  end
  args[#args + 1] = 'l'
  args[#args + 1] = fmt(lowest)
  args[#args + 1] = 't'
  args[#args + 1] = fmt(total)
  redis.call('HSET', key, unpack(args))
  redis.call('PEXPIRE', key, slots_ttl(window, g))
  return lowest, total
end

-- When a slotted counter of total units from slot lowest has room for cost units again under
-- limit (or, with room, when its oldest units stop being counted): total + cost - limit units
-- must have left (one when it has room), a slot at a time; slot s leaves at (s + 1) g + W.
local function slots_free_at(key, lowest, total, limit, window, g, cost)
  if total == 0 then
    return now
  end
  local must = 1
  if total + cost - limit > 1 then
    must = total + cost - limit
  end
  if must == 1 then
    return (lowest + 1) * g + window
  end
  local left, last = 0, lowest
  for _, sc in ipairs(present(key, lowest, lowest, lowest + M - 1)) do
    left = left + sc[2]
    last = sc[1]
    if left >= must then
      break
    end
  end
  return (last + 1) * g + window
end

-- ---- One request: check, record, report ----

-- Cost: every number <-> string conversion is a libc call and a large share of the
-- script's CPU, so each argument is converted once and the strings derived from a window
-- (trim horizon, TTL) once per distinct window, for the whole batch (every request is judged
-- at the same now); the score of the entry that sets free_at is read from its member
-- ("<us>.<nonce>" starts with it) instead of WITHSCORES, which would format the double only
-- for the script to parse it back.
local horizon, ttl, now_fields = {}, {}, {}

-- The request whose seen record is KEYS[K + 1], its counters KEYS[K + 1 + i] and its sources
-- after them, and whose counter i has the arguments ARGV[A + 5 (i - 1) + 1 .. + 5].
local function decide(K, A, n, nonce, cost)
  for i = 1, n do
    local a = A + 5 * (i - 1)
    local g = tonumber(ARGV[a + 4])
    -- Checked before anything is written: a request is refused whole.
    if g > 0 and tonumber(ARGV[a + 2]) / g > M - 8 then
      return 'slotted counter ' .. KEYS[K + 1 + i] .. ': too many slots per window'
    end
  end
  local seen = KEYS[K + 1]
  local replay, seen_until = false, nil
  if mode == 'r' then
    local v = redis.call('ZMSCORE', seen, nonce, '~')
    replay, seen_until = v[1] ~= false, v[2]
  end
  local limits, windows, slots, counts, full, lowests, weighted = {}, {}, {}, {}, {}, {}, {}
  -- Slotted counters: the slot armed up to ("x") and now's count, when load_slots read them.
  local covers, currents, known = {}, {}, {}
  local admitted = 1
  for i = 1, n do
    local key = KEYS[K + 1 + i]
    local a = A + 5 * (i - 1)
    local limit = tonumber(ARGV[a + 1])
    local wkey = ARGV[a + 2]
    local window = tonumber(wkey)
    local g = tonumber(ARGV[a + 4])
    limits[i], windows[i], slots[i] = limit, window, g
    local c
    if g > 0 then
      local gkey = ARGV[a + 4]
      local nf = now_fields[gkey]
      if nf == nil then
        nf = field(slot_of(now, g))
        now_fields[gkey] = nf
      end
      local lowest
      lowest, c, covers[i], currents[i] = load_slots(key, window, g, nf)
      known[i] = true
      local source = tonumber(ARGV[a + 5])
      if lowest == nil and source > 0 then
        lowest, c = convert(key, KEYS[K + source], window, g)
        -- Written by the conversion: now's count is not known any more.
        known[i] = lowest == nil
      end
      lowests[i] = lowest
    else
      local h = horizon[wkey]
      if h == nil then
        -- The window is (now - W, now]: entries at or before now - W have left it.
        h = fmt(now - window)
        horizon[wkey] = h
      end
      c, weighted[i] = trim_log(key, h)
    end
    counts[i] = c
    full[i] = c + cost > limit
    if full[i] and ARGV[a + 3] ~= '1' then
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
  -- The nonce makes the member unique, also when two requests share a µs (every request of
  -- a batch does) or the clock steps back.
  local member = record and (now_s .. '.' .. nonce)
  for i = 1, n do
    local key = KEYS[K + 1 + i]
    local limit, window, g, c = limits[i], windows[i], slots[i], counts[i]
    local free_at = now
    -- An admitted request finds every enforced counter with room: only a full shadow counter
    -- is left out.
    local records = record and not full[i]
    if g > 0 then
      local lowest = lowests[i]
      if records then
        -- In the slot of now, or in the lowest if that is later (a clock that stepped back):
        -- a later slot is counted longer, never less.
        local s = slot_of(now, g)
        local current = currents[i] or 0
        if lowest == nil or lowest > s then
          if lowest ~= nil then
            current = nil
          end
          lowest = lowest or s
          s = lowest
        end
        c = c + cost
        local args = { 'l', fmt(lowest), 't', fmt(c) }
        if known[i] and current ~= nil then
          args[5], args[6] = field(s), fmt(current + cost)
        else
          redis.call('HINCRBY', key, field(s), cost)
        end
        local x, armed = covers[i], nil
        if x == nil or s > x then
          x, armed = arm(window, g, s)
          args[#args + 1] = 'x'
          args[#args + 1] = fmt(x)
        end
        redis.call('HSET', key, unpack(args))
        if armed then
          redis.call('PEXPIRE', key, armed)
        end
      end
      if c > 0 then
        free_at = slots_free_at(key, lowest, c, limit, window, g, cost)
      end
    else
      if records then
        if cost == 1 then
          redis.call('ZADD', key, now_s, member)
        else
          redis.call('ZADD', key, now_s, member .. '*' .. fmt(cost))
        end
        if cost > 1 or weighted[i] then
          redis.call('ZADD', key, fmt(SUM_BASE + c + cost), '#')
          weighted[i] = true
        end
        local wkey = ARGV[A + 5 * (i - 1) + 2]
        local t = ttl[wkey]
        if t == nil then
          -- Redis counts expiry from its clock truncated to the millisecond, so a TTL of
          -- exactly the window could drop the key (and its newest entry) up to 1 ms before
          -- that entry leaves the window: one more millisecond keeps every entry for its
          -- whole window.
          t = fmt(math.ceil(window / 1000) + 1)
          ttl[wkey] = t
        end
        redis.call('PEXPIRE', key, t)
        c = c + cost
      end
      if c > 0 then
        -- Units that must leave for cost more to fit (the oldest entry when they fit).
        local must = 1
        if c + cost - limit > 1 then
          must = c + cost - limit
        end
        free_at = log_free_at(key, weighted[i], c, must, window)
      end
    end
    out[#out + 1] = c
    out[#out + 1] = free_at
    out[#out + 1] = full[i] and 1 or 0
  end

  if record then
    -- Only recorded requests are remembered, for at least the replay horizon H. The record is
    -- trimmed and its time-to-live armed once per H, not per request: the member "~" (no nonce
    -- has it) scores the time until which the TTL set then (2 H) keeps every nonce added
    -- before it for H. The record holds at most the requests admitted within 2 H.
    if seen_until and tonumber(seen_until) >= now then
      redis.call('ZADD', seen, now_s, nonce)
    else
      redis.call('ZREMRANGEBYSCORE', seen, '-inf', fmt(now - horizon_us))
      redis.call('ZADD', seen, now_s, nonce, fmt(now + horizon_us), '~')
      redis.call('PEXPIRE', seen, seen_ttl)
    end
  end
  return out
end

-- ---- The batch, in order ----

local replies = {}
local K, A = 0, 4
while A < #ARGV do
  local nonce, n, m = ARGV[A + 1], tonumber(ARGV[A + 2]), tonumber(ARGV[A + 3])
  local cost = tonumber(ARGV[A + 4])
  replies[#replies + 1] = decide(K, A + 4, n, nonce, cost)
  K = K + 1 + n + m
  A = A + 4 + 5 * n
end
if K ~= #KEYS or A ~= #ARGV then
  return redis.error_reply('batch: keys and arguments do not match the requests they name')
end
return replies
