-- Concurrency leases of one or more identities: each identity's leases are one sorted set
-- (member = lease id, score = expiry in µs). An expired lease holds no slot; it is dropped the
-- next time its set is taken from, and the whole set expires with its last lease.
--
-- ARGV[1]  "a" take a lease, "n" renew leases, "x" release leases
-- ARGV[2]  "" to read the time from Redis (production); a store given its own clock (tests)
--          passes its reading in µs
-- ARGV[3]  the lease's lifetime from now, in µs (take and renew)
-- "a": KEYS[1] the set, ARGV[4] the most leases it may hold, ARGV[5] the new lease's id.
--      Returns { granted (0/1), leases held after the call }.
-- "n", "x": KEYS[i] the set of lease i, ARGV[3 + i] its id (every key of one call shares a
--      hash tag on a cluster: the caller groups them). Returns how many leases were renewed
--      (an expired or released one is not brought back: its slot may be taken) or released.
--
-- Numbers reach redis.call as strings formatted with %.0f: Lua would otherwise print them
-- with 14 significant digits and corrupt µs timestamps (16 digits).

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
local op = ARGV[1]
local ttl = tonumber(ARGV[3])
local expiry = fmt(now + ttl)
-- The set outlives its longest lease by a millisecond at most (Redis's own clock: with a
-- clock of the caller's, scores decide and the TTL only cleans up).
local ttl_ms = math.floor(ttl / 1000) + 1

local function keep(key)
  if redis.call('PTTL', key) < ttl_ms then
    redis.call('PEXPIRE', key, ttl_ms)
  end
end

if op == 'a' then
  local key = KEYS[1]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
  local held = redis.call('ZCARD', key)
  if held >= tonumber(ARGV[4]) then
    return { 0, held }
  end
  redis.call('ZADD', key, expiry, ARGV[5])
  keep(key)
  return { 1, held + 1 }
end

local done = 0
for i, key in ipairs(KEYS) do
  local id = ARGV[3 + i]
  local score = redis.call('ZSCORE', key, id)
  if score and tonumber(score) > now then
    if op == 'n' then
      redis.call('ZADD', key, expiry, id)
      keep(key)
    else
      redis.call('ZREM', key, id)
    end
    done = done + 1
  elseif score then
    redis.call('ZREM', key, id)
  end
end
return done
