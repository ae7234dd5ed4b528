-- schedule_delete: delete a schedule. Jobs it submitted are not touched.
--   ARGV[1]  key prefix
--   ARGV[2]  schedule id
--   ARGV[3]  owner
-- Reply: 1.
-- Refusals: SCHEDULE_NOT_FOUND <id> (none of this owner).
-- @include base

local sid, owner = ARGV[2], ARGV[3]
local ks = k_schedule(sid)
if hget(ks, 'owner') ~= owner then return refuse('SCHEDULE_NOT_FOUND', sid) end
redis.call('DEL', ks)
redis.call('ZREM', K_SCHEDULES_DUE, sid)
redis.call('ZREM', k_owner_schedules(owner), sid)
return 1
