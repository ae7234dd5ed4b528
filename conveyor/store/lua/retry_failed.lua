-- retry_failed: retry the FAILED jobs of a queue, oldest first.
--   ARGV[1]  key prefix
--   ARGV[2]  queue
--   ARGV[3]  most jobs to retry
-- Reply: how many were retried.
-- @include retry_job

local q, limit = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local n = 0
for _, id in ipairs(redis.call('ZRANGE', k_index(q, 'failed'), 0, limit - 1)) do
  if not retry_job(id, now) then n = n + 1 end
end
return n
