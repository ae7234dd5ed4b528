-- Pause a schedule: it leaves the due set and has no next run until resumed.
-- ARGV: prefix, schedule id, owner. Returns the schedule hash (flat), or {} when
-- there is no such schedule of this owner.
local sid, owner = ARGV[2], ARGV[3]
local ks = P .. ':schedule:' .. sid
if hget(ks, 'owner') ~= owner then return {} end
redis.call('HSET', ks, 'paused', 1)
redis.call('HDEL', ks, 'next_run')
redis.call('ZREM', P .. ':schedules:due', sid)
return redis.call('HGETALL', ks)
