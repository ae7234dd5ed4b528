-- Cancel a job. WAITING and DELAYED jobs are CANCELLED at once; for an ACTIVE one
-- the cancel flag is set and its executor is told (pub/sub; its heartbeat also
-- sees the flag), and it confirms with finish(cancelled).
-- ARGV: prefix, id, serialized error, then the policy arguments. Returns the state after the call, or
-- {err = 'terminal:<STATE>'} for a job that has already ended, or {err = 'missing'}.
local id, payload = ARGV[2], ARGV[3]
local kj = k_job(id)
local state, q, attempt, handed = unpack(redis.call('HMGET', kj, 'state', 'queue', 'attempt', 'handed'))
if not state then return redis.error_reply('missing') end
if TERMINAL[state] then return redis.error_reply('terminal:' .. state) end
local now = now_ms()
if state == 'ACTIVE' then
  if hget(kj, 'cancel') ~= '1' then
    redis.call('HSET', kj, 'cancel', 1)
    redis.call('PUBLISH', K_CANCEL_CHANNEL, id)
    emit(id, q, 'progress', 'ACTIVE', tonumber(attempt),
      {'p', hget(kj, 'progress') or 0, 'm', 'cancel requested'}, now)
  end
  return 'ACTIVE'
end
if state == 'WAITING' then
  redis.call('ZREM', k_index(q, 'waiting'), id)
  if handed == '1' then leave_inflight(id, q) end
end
redis.call('HSET', kj, 'error', payload, 'ended', int(now), 'handed', 0, 'cancel', 1)
move(id, q, state, 'CANCELLED', now)
emit(id, q, 'state', 'CANCELLED', tonumber(attempt), {'e', payload}, now)
settle(id, q, 'CANCELLED', transport_args(4), now)
return 'CANCELLED'
