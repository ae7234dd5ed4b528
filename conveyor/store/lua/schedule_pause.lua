-- schedule_pause: pause a schedule: it leaves the due set and has no next run until
-- resumed.
--   ARGV[1]  key prefix
--   ARGV[2]  schedule id
--   ARGV[3]  owner
-- Reply: the schedule hash (flat).
-- Refusals: SCHEDULE_NOT_FOUND <id> (none of this owner).
-- @include base

local sid, owner = ARGV[2], ARGV[3]
local ks = k_schedule(sid)
if hget(ks, 'owner') ~= owner then return refuse('SCHEDULE_NOT_FOUND', sid) end
redis.call('HSET', ks, 'paused', 1)
redis.call('HDEL', ks, 'next_run')
redis.call('ZREM', K_SCHEDULES_DUE, sid)
return redis.call('HGETALL', ks)
