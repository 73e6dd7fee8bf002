-- The GCRA on Redis: see script.rs.
redis.replicate_commands()
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local partial = ARGV[4] == '1'
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local ahead = tat - now
local room = math.floor((tolerance - ahead) / interval)
local grant = want
if room < want then
  if partial and room >= 1 then
    grant = room
  else
    local need = want
    if partial then
      need = 1
    end
    return {0, ahead + need * interval - tolerance}
  end
end
ahead = ahead + grant * interval
redis.call('SET', KEYS[1], now + ahead, 'PX', math.ceil(ahead / 1000))
return {grant, math.floor((tolerance - ahead) / interval)}
