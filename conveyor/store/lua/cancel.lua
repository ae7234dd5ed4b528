-- cancel: cancel a job. WAITING and DELAYED jobs are CANCELLED at once; for an ACTIVE
-- one the cancel flag is set and its executor is told (pub/sub; its heartbeat also
-- sees the flag), and it confirms with finish(cancelled).
--   ARGV[1]  key prefix
--   ARGV[2]  job id
--   ARGV[3]  the serialized error (google.rpc.Status) the job ends with
--   ARGV[4…] the policy arguments (transport_args)
-- Reply: the job's state after the call (CANCELLED, or ACTIVE while its executor stops it).
-- Refusals: JOB_NOT_FOUND <id>; JOB_STATE <id> <state> (it has ended already).
-- @include admission
-- @include history

local id, payload = ARGV[2], ARGV[3]
local kj = k_job(id)
local state, q, attempt, handed, kind, owner = unpack(redis.call('HMGET', kj, 'state', 'queue', 'attempt',
  'handed', 'kind', 'owner'))
if not state then return refuse('JOB_NOT_FOUND', id) end
if TERMINAL[state] then return refuse('JOB_STATE', id, state) end
local now = now_ms()
if state == 'ACTIVE' then
  if hget(kj, 'cancel') ~= '1' then
    -- The error its end records (who asked, in its metadata), whatever the executor sends.
    redis.call('HSET', kj, 'cancel', 1, 'cancel_error', payload)
    redis.call('PUBLISH', K_CANCEL_CHANNEL, id)
    emit(id, q, 'progress', 'ACTIVE', tonumber(attempt),
      {'p', hget(kj, 'progress') or 0, 'm', 'cancel requested'}, now)
  end
  return 'ACTIVE'
end
if state == 'WAITING' then
  line_remove(id, q, owner or '')
  if handed == '1' then leave_inflight(id, q, kind, owner) end
end
transition(id, q, state, 'CANCELLED', now, {attempt = tonumber(attempt), event = {'e', payload}, owner = owner,
  fields = {'error', payload, 'ended', int(now), 'handed', 0, 'cancel', 1}, settle = transport_args(4)})
return 'CANCELLED'
