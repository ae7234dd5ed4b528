-- Due DELAYED jobs (scheduled starts, retry backoffs) join their queue's line.
-- ARGV: prefix, max jobs. Returns how many were promoted.
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
    move(id, q, 'DELAYED', 'WAITING', now)
    enter_line(id, q, false, now)
    emit(id, q, 'state', 'WAITING', tonumber(attempt), {}, now)
  end
end
return #due
