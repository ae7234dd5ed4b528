-- Resume a paused schedule with its next run (the first occurrence from now on,
-- computed by the caller: occurrences passed while paused are not made up).
-- ARGV: prefix, schedule id, owner, next run ms. A schedule that is not paused is
-- left as it is. Returns the schedule hash (flat), or {} when there is no such
-- schedule of this owner.
local sid, owner = ARGV[2], ARGV[3]
local ks = P .. ':schedule:' .. sid
if hget(ks, 'owner') ~= owner then return {} end
if hget(ks, 'paused') == '1' then
  local next_run = tonumber(ARGV[4])
  redis.call('HSET', ks, 'paused', 0, 'next_run', int(next_run))
  redis.call('ZADD', P .. ':schedules:due', int(next_run), sid)
end
return redis.call('HGETALL', ks)
