-- Adjusts the counters of one admitted request after its response, once (`store/usage.rs`):
-- a charge adds units at now without a room check (a counter may go over its limit); a
-- release takes back the entry recorded at admission, if it is still in its window. The
-- structures are those of sliding_window.lua (weighted exact logs with their "#" sum, slotted
-- hashes with "l" and "t"), kept consistent the same way.
--
-- KEYS[1]        the once record: present while this adjustment is remembered
-- KEYS[2..n+1]   the counters (exact logs or slotted hashes)
-- ARGV[1]        "c" charge, "r" release
-- ARGV[2]        "" to read the time from Redis; a store given its own clock passes µs
-- ARGV[3]        units (charge) or the entry's weight (release), >= 1
-- ARGV[4]        release: the entry's time (µs); charge: the member's unique suffix
-- ARGV[5]        how long the once record is kept (ms)
-- ARGV[6 + 2(i-1)], ARGV[7 + 2(i-1)]: counter i's window W (µs) and slot g (µs, "0": an
--                exact log)
--
-- Returns the units charged, or released (the weight when at least one counter still held
-- the entry); 0 when this adjustment was applied before.

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

local SUM_BASE = 4503599627370496
local M = 4096

local function weight_of(member)
  local w = string.match(member, '%*(%d+)$')
  if w then
    return tonumber(w)
  end
  return 1
end

local function slot_of(t, g)
  if t < 0 then
    return math.floor(t / g)
  end
  return (t - math.fmod(t, g)) / g
end

local function field(s)
  return fmt(math.fmod(s, M))
end

-- The sum of a log's weights and whether it keeps "#".
local function log_sum(key)
  local s = redis.call('ZSCORE', key, '#')
  if s then
    return tonumber(s) - SUM_BASE, true
  end
  return redis.call('ZCARD', key), false
end

if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[5]) then
  return 0
end

local op, amount = ARGV[1], tonumber(ARGV[3])
local done = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local window = tonumber(ARGV[6 + 2 * (i - 2)])
  local g = tonumber(ARGV[7 + 2 * (i - 2)])
  if op == 'c' then
    if g == 0 then
      local sum, weighted = log_sum(key)
      local member = fmt(now) .. '.' .. ARGV[4]
      if amount > 1 then
        member = member .. '*' .. fmt(amount)
      end
      redis.call('ZADD', key, fmt(now), member)
      if amount > 1 or weighted then
        redis.call('ZADD', key, fmt(SUM_BASE + sum + amount), '#')
      end
      redis.call('PEXPIRE', key, fmt(math.ceil(window / 1000) + 1))
    else
      local s = slot_of(now, g)
      local v = redis.call('HMGET', key, 'l', 't')
      if not v[1] then
        redis.call('HSET', key, 'l', fmt(s), 't', fmt(amount), field(s), fmt(amount))
      else
        local lowest = tonumber(v[1])
        -- A clock that stepped back: the oldest live slot, counted longer, never less.
        if s < lowest then
          s = lowest
        end
        redis.call('HINCRBY', key, field(s), amount)
        redis.call('HSET', key, 't', fmt(tonumber(v[2]) + amount))
      end
      redis.call('PEXPIRE', key, fmt(math.ceil((window + g) / 1000) + 1))
    end
    done = amount
  else
    local at = tonumber(ARGV[4])
    if g == 0 then
      if at > now - window then
        for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, ARGV[4], ARGV[4])) do
          if m ~= '#' and weight_of(m) == amount then
            local sum, weighted = log_sum(key)
            redis.call('ZREM', key, m)
            if weighted then
              local n = redis.call('ZCARD', key) - 1
              if n <= 0 then
                redis.call('DEL', key)
              else
                redis.call('ZADD', key, fmt(SUM_BASE + sum - amount), '#')
              end
            end
            done = amount
            break
          end
        end
      end
    else
      local v = redis.call('HMGET', key, 'l', 't')
      local s = slot_of(at, g)
      if v[1] and s >= tonumber(v[1]) and s >= slot_of(now - window, g) then
        local c = tonumber(redis.call('HGET', key, field(s)) or '0')
        if c >= amount then
          local total = tonumber(v[2]) - amount
          if total <= 0 then
            redis.call('DEL', key)
          else
            if c == amount then
              redis.call('HDEL', key, field(s))
            else
              redis.call('HINCRBY', key, field(s), -amount)
            end
            redis.call('HSET', key, 't', fmt(total))
          end
          done = amount
        end
      end
    end
  end
end
return done
