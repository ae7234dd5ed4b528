-- schedule_resume: resume a paused schedule with its next run (the first occurrence
-- from now on, computed by the caller: occurrences passed while paused are not made
-- up). A schedule that is not paused is left as it is.
--   ARGV[1]  key prefix
--   ARGV[2]  schedule id
--   ARGV[3]  owner
--   ARGV[4]  next run ms
-- Reply: the schedule hash (flat).
-- Refusals: SCHEDULE_NOT_FOUND <id> (none of this owner).
-- @include base

local sid, owner = ARGV[2], ARGV[3]
local ks = k_schedule(sid)
if hget(ks, 'owner') ~= owner then return refuse('SCHEDULE_NOT_FOUND', sid) end
if hget(ks, 'paused') == '1' then
  local next_run = tonumber(ARGV[4])
  redis.call('HSET', ks, 'paused', 0, 'next_run', int(next_run))
  redis.call('ZADD', K_SCHEDULES_DUE, int(next_run), sid)
end
return redis.call('HGETALL', ks)
