-- promote: due DELAYED jobs (scheduled starts, retry backoffs) join their queue's line.
--   ARGV[1]  key prefix
--   ARGV[2]  most jobs to promote
-- Reply: how many were promoted.
-- @include transition

local limit = tonumber(ARGV[2])
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  local kj = k_job(id)
  local q, attempt = unpack(redis.call('HMGET', kj, 'queue', 'attempt'))
  if not q then
    redis.call('ZREM', K_DELAYED, id)
  else
    redis.call('HDEL', kj, 'run_at')
    transition(id, q, 'DELAYED', 'WAITING', now, {attempt = tonumber(attempt)})
  end
end
return #due
