-- Shared concurrency permits (see permits.rs). KEYS[1] holds a key's
-- permits: a sorted set of permit ids scored by when each expires, in
-- microseconds of Redis's own clock. ARGV[1] says what to do:
--   1 (acquire), limit, ttl, id -> {1, held} granted, {0, held} full
--   2 (renew), ttl, id...       -> {restored}: ids that were gone, added back
--   3 (release), id...          -> {removed}
-- Every write sets the key's expiry to just past its latest permit's (an
-- instance with a shorter TTL never cuts another's permits short), so no
-- key is ever left without a TTL, nor outlived by a permit.
redis.replicate_commands()
local key = KEYS[1]
local op = tonumber(ARGV[1])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- A key of another type (or garbage) is replaced: it holds no permits.
local function expired_out()
  local removed = redis.pcall('ZREMRANGEBYSCORE', key, '-inf', now)
  if type(removed) == 'table' and removed.err then
    redis.call('DEL', key)
  end
end

local function expire_after_last()
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIREAT', key, math.ceil(tonumber(last[2]) / 1000) + 1)
  end
end

if op == 1 then
  local limit = tonumber(ARGV[2])
  local ttl = tonumber(ARGV[3])
  expired_out()
  local held = redis.call('ZCARD', key)
  if held >= limit then
    return {0, held}
  end
  redis.call('ZADD', key, now + ttl, ARGV[4])
  expire_after_last()
  return {1, held + 1}
elseif op == 2 then
  local ttl = tonumber(ARGV[2])
  expired_out()
  local restored = 0
  for i = 3, #ARGV do
    restored = restored + redis.call('ZADD', key, now + ttl, ARGV[i])
  end
  expire_after_last()
  return {restored}
elseif op == 3 then
  local removed = 0
  for i = 2, #ARGV do
    local gone = redis.pcall('ZREM', key, ARGV[i])
    if type(gone) == 'number' then
      removed = removed + gone
    end
  end
  return {removed}
end
return redis.error_reply('unknown operation')
