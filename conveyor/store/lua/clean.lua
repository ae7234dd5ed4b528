-- clean: delete a queue's jobs of one finished state that ended before a time (of
-- every tenant, or of one), with their events and attempts (their ids go to the gc
-- list for their artifacts).
--   ARGV[1]  key prefix
--   ARGV[2]  queue
--   ARGV[3]  state (COMPLETED, FAILED or CANCELLED)
--   ARGV[4]  ended before (ms)
--   ARGV[5]  most jobs to delete
--   ARGV[6]  tenant ('' for every tenant's): only its jobs are deleted. The finished
--            jobs a queue keeps are bounded (see trim_history), so this looks at them all.
-- Reply: how many were deleted.
-- Refusals: STATE_NOT_FINISHED <state>.
-- @include history

local q, state, before, limit, tenant = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
if not TERMINAL[state] then return refuse('STATE_NOT_FINISHED', state) end
local index = k_index(q, STATE_INDEX[state])
local n = 0
if tenant == '' then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', before, 'LIMIT', 0, limit)) do
    n = n + delete_job(id)
  end
  return n
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', before)) do
  if n >= limit then break end
  if hget(k_job(id), 'owner') == tenant then n = n + delete_job(id) end
end
return n
