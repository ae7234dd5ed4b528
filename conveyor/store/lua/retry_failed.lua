-- retry_failed: retry the FAILED jobs of a queue, oldest first.
--   ARGV[1]  key prefix
--   ARGV[2]  queue
--   ARGV[3]  most jobs to retry
--   ARGV[4]  their new priority (0: each keeps its own)
--   ARGV[5]  attempts in their fresh set (0: each its own max_attempts)
--   ARGV[6]  the API key that asks ('' for none)
-- Reply: how many were retried.
-- @include retry_job

local q, limit = ARGV[2], tonumber(ARGV[3])
local priority, attempts = tonumber(ARGV[4]) or 0, tonumber(ARGV[5]) or 0
local now = now_ms()
local n = 0
for _, id in ipairs(redis.call('ZRANGE', k_index(q, 'failed'), 0, limit - 1)) do
  if not retry_job(id, now, priority > 0 and priority or nil, attempts > 0 and attempts or nil, ARGV[6]) then
    n = n + 1
  end
end
return n
