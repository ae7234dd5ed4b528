-- retry_failed: retry the FAILED jobs of a queue (of every tenant, or of one), oldest first.
--   ARGV[1]  key prefix
--   ARGV[2]  queue
--   ARGV[3]  most jobs to retry
--   ARGV[4]  their new priority (0: each keeps its own)
--   ARGV[5]  attempts in their fresh set (0: each its own max_attempts)
--   ARGV[6]  the API key that asks ('' for none)
--   ARGV[7]  tenant ('' for every tenant's): only its jobs are retried (the failed
--            jobs a queue keeps are bounded, see trim_history, so this looks at them all)
-- Reply: how many were retried.
-- @include retry_job

local q, limit, tenant = ARGV[2], tonumber(ARGV[3]), ARGV[7]
local priority, attempts = tonumber(ARGV[4]) or 0, tonumber(ARGV[5]) or 0
local now = now_ms()
local n = 0
local ids = redis.call('ZRANGE', k_index(q, 'failed'), 0, tenant == '' and limit - 1 or -1)
for _, id in ipairs(ids) do
  if n >= limit then break end
  if tenant == '' or hget(k_job(id), 'owner') == tenant then
    if not retry_job(id, now, priority > 0 and priority or nil, attempts > 0 and attempts or nil, ARGV[6]) then
      n = n + 1
    end
  end
end
return n
