-- clean: delete a queue's jobs of one finished state that ended before a time, with
-- their events and attempts (their ids go to the gc list for their artifacts).
--   ARGV[1]  key prefix
--   ARGV[2]  queue
--   ARGV[3]  state (COMPLETED, FAILED or CANCELLED)
--   ARGV[4]  ended before (ms)
--   ARGV[5]  most jobs to delete
-- Reply: how many were deleted.
-- Refusals: STATE_NOT_FINISHED <state>.
-- @include history

local q, state, before, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if not TERMINAL[state] then return refuse('STATE_NOT_FINISHED', state) end
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', k_index(q, STATE_INDEX[state]), '-inf', before, 'LIMIT', 0, limit)) do
  n = n + delete_job(id)
end
return n
