-- Retry the FAILED jobs of a queue, oldest first. ARGV: prefix, queue, max jobs.
-- Returns how many were retried.
local q, limit = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local n = 0
for _, id in ipairs(redis.call('ZRANGE', k_index(q, 'failed'), 0, limit - 1)) do
  if not retry_job(id, now) then n = n + 1 end
end
return n
