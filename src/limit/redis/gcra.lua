-- The GCRA on Redis for one or more keys (see script.rs): ARGV[1] the
-- interval, ARGV[2] the tolerance, in microseconds; then for each key its
-- requests wanted and whether fewer will do ('1'). Replies {granted,
-- remaining} or {0, retry_after} for each key, in one flat array.
redis.replicate_commands()
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local replies = {}
for i, key in ipairs(KEYS) do
  local want = tonumber(ARGV[1 + 2 * i])
  local partial = ARGV[2 + 2 * i] == '1'
  -- Anything but a finite number this script wrote (a key of another
  -- type, 'nan', 'inf') counts as a fresh key, and is overwritten when a
  -- request passes; a TAT past the tolerance (a quota made stricter) is
  -- held to it, and rewritten with a TTL even when denied.
  local stored = redis.pcall('GET', key)
  local tat = nil
  if type(stored) == 'string' then
    tat = tonumber(stored)
  end
  if tat == nil or tat ~= tat or tat == math.huge or tat == -math.huge or tat < now then
    tat = now
  end
  local held = false
  if tat > now + tolerance then
    tat = now + tolerance
    held = true
  end
  local ahead = tat - now
  local room = math.floor((tolerance - ahead) / interval)
  local grant = want
  if room < want then
    if partial and room >= 1 then
      grant = room
    else
      grant = 0
    end
  end
  if grant == 0 then
    local need = want
    if partial then
      need = 1
    end
    if held then
      redis.call('SET', key, tat, 'PX', math.ceil(ahead / 1000))
    end
    replies[2 * i - 1] = 0
    replies[2 * i] = ahead + need * interval - tolerance
  else
    ahead = ahead + grant * interval
    redis.call('SET', key, now + ahead, 'PX', math.ceil(ahead / 1000))
    replies[2 * i - 1] = grant
    replies[2 * i] = math.floor((tolerance - ahead) / interval)
  end
end
return replies
