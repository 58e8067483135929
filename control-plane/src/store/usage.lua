-- Adjusts the counters of admitted requests after their responses, each once
-- (`store/usage.rs`): a charge adds units at now without a room check (a counter may go over
-- its limit); a release takes back the entry recorded at admission, if it is still in its
-- window. The structures are those of sliding_window.lua (weighted exact logs with their "#"
-- sum, slotted hashes with "l", "t" and "x"), kept consistent the same way. Several adjustments
-- go in one call, each with its own keys and arguments after the previous one's.
--
-- ARGV[1]        "" to read the time from Redis; a store given its own clock passes µs
-- Then each adjustment in turn:
--   KEYS  once        the record that this adjustment was applied
--         counter i   (i = 1..n) exact logs or slotted hashes
--   ARGV  op          "c" charge, "r" release
--         amount      units (charge) or the entry's weight (release), >= 1
--         at          release: the entry's time (µs); charge: the member's unique suffix
--         remember    how long the once record is kept (ms)
--         n           how many counters
--         counter i   two arguments: window W (µs) and slot g (µs, "0": an exact log)
--
-- Returns one number per adjustment, in order: the units charged, or released (the weight
-- when at least one counter still held the entry); 0 when it was applied before.

local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
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

-- As sliding_window.lua arms a slotted counter's time-to-live: up to slot x = s + W / 8g,
-- recorded in "x", so that a write within it leaves the TTL as it is (and this script never
-- shortens what that one armed). Returns x and the TTL (ms).
local function arm(window, g, s)
  local x = s + math.floor(window / (8 * g))
  return x, fmt(math.ceil(((x + 1) * g + window - now) / 1000) + 1)
end

-- The sum of a log's weights and whether it keeps "#".
local function log_sum(key)
  local s = redis.call('ZSCORE', key, '#')
  if s then
    return tonumber(s) - SUM_BASE, true
  end
  return redis.call('ZCARD', key), false
end

local function adjust(k, a)
  if not redis.call('SET', KEYS[k], '1', 'NX', 'PX', ARGV[a + 3]) then
    return 0
  end
  local op, amount, arg = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2]
  local n = tonumber(ARGV[a + 4])
  local done = 0
  for i = 1, n do
    local key = KEYS[k + i]
    local window = tonumber(ARGV[a + 5 + 2 * (i - 1)])
    local g = tonumber(ARGV[a + 6 + 2 * (i - 1)])
    if op == 'c' then
      if g == 0 then
        local sum, weighted = log_sum(key)
        local member = fmt(now) .. '.' .. arg
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
        local v = redis.call('HMGET', key, 'l', 't', 'x')
        local x, armed = tonumber(v[3]), nil
        if not v[1] then
          x, armed = arm(window, g, s)
          redis.call('HSET', key, 'l', fmt(s), 't', fmt(amount), field(s), fmt(amount), 'x', fmt(x))
        else
          local lowest = tonumber(v[1])
          -- A clock that stepped back: the oldest live slot, counted longer, never less.
          if s < lowest then
            s = lowest
          end
          redis.call('HINCRBY', key, field(s), amount)
          if x == nil or s > x then
            x, armed = arm(window, g, s)
            redis.call('HSET', key, 't', fmt(tonumber(v[2]) + amount), 'x', fmt(x))
          else
            redis.call('HSET', key, 't', fmt(tonumber(v[2]) + amount))
          end
        end
        if armed then
          redis.call('PEXPIRE', key, armed)
        end
      end
      done = amount
    else
      local at = tonumber(arg)
      if g == 0 then
        if at > now - window then
          for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, arg, arg)) do
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
end

local out, k, a = {}, 1, 2
while a <= #ARGV do
  local n = tonumber(ARGV[a + 4])
  out[#out + 1] = adjust(k, a)
  k = k + 1 + n
  a = a + 5 + 2 * n
end
return out
