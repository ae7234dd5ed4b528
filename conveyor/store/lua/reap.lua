-- Recover in-flight jobs whose deadline passed:
--   handed over but never claimed -> back in line, at its old place;
--   ACTIVE with no heartbeat (its executor died) -> back in line at its old place
--   while attempts remain, else FAILED; CANCELLED if a cancel was asked.
-- ARGV: prefix, max jobs, serialized error for lost executors, then the policy
-- arguments. Returns {requeued, failed}.
local limit, payload = tonumber(ARGV[2]), ARGV[3]
local t = transport_args(4)
local now = now_ms()
local requeued, failed = 0, 0
refresh_capacity(now)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_INFLIGHT, '-inf', now, 'LIMIT', 0, limit)) do
  local kj = k_job(id)
  local state, q, attempt, limit_a, cancel, handed = unpack(redis.call('HMGET', kj,
    'state', 'queue', 'attempt', 'limit', 'cancel', 'handed'))
  if not state then
    redis.call('ZREM', K_INFLIGHT, id)
  else
    leave_inflight(id, q)
    if state == 'WAITING' and handed == '1' then
      redis.call('HSET', kj, 'handed', 0)
      enter_line(id, q, true, now)
      requeued = requeued + 1
    elseif state == 'ACTIVE' then
      local a = tonumber(attempt)
      local to
      if cancel == '1' then to = 'CANCELLED'
      elseif a < tonumber(limit_a) then to = 'WAITING'
      else to = 'FAILED' end
      redis.call('HSET', kj, 'error', payload, unpack(attempt_fields(a, {['end'] = int(now),
        outcome = (to == 'WAITING') and 'FAILED' or to, error = payload}, {})))
      if to == 'WAITING' then
        move(id, q, 'ACTIVE', 'WAITING', now)
        enter_line(id, q, true, now)
        requeued = requeued + 1
      else
        redis.call('HSET', kj, 'ended', int(now))
        move(id, q, 'ACTIVE', to, now)
        failed = failed + 1
      end
      emit(id, q, 'state', to, a, {'e', payload}, now)
      if to ~= 'WAITING' then settle(id, q, to, t, now) end
    end
  end
end
return {requeued, failed}
