-- reap: recover in-flight jobs whose deadline passed:
--   handed over but never claimed -> back in line, at its old place;
--   ACTIVE with no heartbeat (its executor died) -> back in line at its old place
--   while attempts remain, else FAILED; CANCELLED if a cancel was asked.
-- And Dramatiq's own maintenance, for the transport queue: a worker whose Dramatiq
-- heartbeat is older than the worker time-out died with its deliveries outstanding;
-- they go back to the queue, as Dramatiq hands back a dead worker's messages. (A
-- hand-over's job is recovered by its own deadline above; its message, taken again,
-- is then refused as stale and acknowledged.)
--   ARGV[1]  key prefix
--   ARGV[2]  most jobs to recover
--   ARGV[3]  the serialized error (google.rpc.Status) of an attempt whose executor was lost
--   ARGV[4]  Dramatiq worker time-out ms
--   ARGV[5…] the policy arguments (transport_args)
-- Reply: {requeued, failed}.
-- @include admission
-- @include executor
-- @include history

local limit, payload, worker_timeout_ms = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local t = transport_args(5)
local now = now_ms()
local requeued, failed = 0, 0
refresh_capacity(now, true)
local beats = t.ns .. ':__heartbeats__'
local dead = redis.call('ZRANGEBYSCORE', beats, '-inf', now - worker_timeout_ms, 'LIMIT', 0, limit)
if #dead > 0 then
  for _, queue in ipairs(transport_queues(t)) do
    local qkey = t.ns .. ':' .. queue
    for _, worker in ipairs(dead) do
      local acks = dramatiq_acks(t, worker, queue)
      for _, mid in ipairs(redis.call('SMEMBERS', acks)) do
        if redis.call('HEXISTS', qkey .. '.msgs', mid) == 1 then redis.call('RPUSH', qkey, mid) end
      end
      redis.call('DEL', acks)
    end
  end
  for _, worker in ipairs(dead) do redis.call('ZREM', beats, worker) end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_INFLIGHT, '-inf', now, 'LIMIT', 0, limit)) do
  local kj = k_job(id)
  local state, q, attempt, limit_a, cancel, handed, kind, owner, started, worker = unpack(redis.call('HMGET', kj,
    'state', 'queue', 'attempt', 'limit', 'cancel', 'handed', 'kind', 'owner', 'started', 'worker'))
  if not state then
    redis.call('ZREM', K_INFLIGHT, id)
  else
    leave_inflight(id, q, kind, owner)
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
      local h = attempt_fields(a, {start = started or '0', worker = worker or '', ['end'] = int(now),
        outcome = (to == 'WAITING') and 'FAILED' or to, error = payload}, {'error', payload})
      if to == 'WAITING' then
        requeued = requeued + 1
      else
        h[#h + 1] = 'ended'
        h[#h + 1] = int(now)
        failed = failed + 1
      end
      transition(id, q, 'ACTIVE', to, now, {attempt = a, fields = h, keep_place = true, event = {'e', payload},
        owner = owner, settle = t})
    end
  end
end
return {requeued, failed}
