-- Bans shared by every instance (see bans.rs). KEYS[1] holds them: a
-- sorted set of clients scored by when each ban ends, in milliseconds of
-- Redis's own clock; the key expires with its last ban, and each write
-- prunes the bans that ended, so nothing outlives its ban. ARGV[1] says
-- what to do:
--   1 (ban), client, ms, channel -> {ms in force}: the longer of this ban
--     and one already there; published as 'b <ms> <client>'
--   2 (lift), client, channel -> {removed}; published as 'l <client>'
--   3 (list), most -> {client, ms left, ...} of the bans in force, the
--     latest to end first
redis.replicate_commands()
local key = KEYS[1]
local op = tonumber(ARGV[1])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- A key of another type (or garbage) is replaced: it holds no bans.
local pruned = redis.pcall('ZREMRANGEBYSCORE', key, '-inf', now)
if type(pruned) == 'table' and pruned.err then
  redis.call('DEL', key)
end

local function expire_with_last()
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIREAT', key, math.ceil(tonumber(last[2])))
  end
end

if op == 1 then
  local client = ARGV[2]
  local ends = now + tonumber(ARGV[3])
  local current = redis.call('ZSCORE', key, client)
  if current and tonumber(current) > ends then
    ends = tonumber(current)
  end
  redis.call('ZADD', key, ends, client)
  expire_with_last()
  redis.call('PUBLISH', ARGV[4], 'b ' .. string.format('%d', ends - now) .. ' ' .. client)
  return {ends - now}
elseif op == 2 then
  local removed = redis.call('ZREM', key, ARGV[2])
  redis.call('PUBLISH', ARGV[3], 'l ' .. ARGV[2])
  return {removed}
elseif op == 3 then
  local found = redis.call('ZREVRANGEBYSCORE', key, '+inf', '(' .. string.format('%d', now), 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
  local listed = {}
  for i = 1, #found, 2 do
    listed[#listed + 1] = found[i]
    listed[#listed + 1] = string.format('%d', tonumber(found[i + 1]) - now)
  end
  return listed
end
return redis.error_reply('unknown operation')
