-- A running attempt ends, and its slot goes to the next waiting job at once (no
-- round trip through a gateway). ARGV: prefix, id, attempt, outcome, payload,
-- retry delay ms (-1: none), then the policy arguments (see transport_args).
--   outcome 'completed': payload is the serialized result
--   outcome 'failed':    payload is the serialized error; a retry delay >= 0 asks for a retry
--                        (granted while attempts remain and no cancel was asked)
--   outcome 'cancelled': payload is the serialized error
-- Returns the job's new state, or '' when the attempt no longer runs (nothing changes).
local id, attempt, outcome, payload = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local retry_delay = tonumber(ARGV[6])
local t = transport_args(7)
local kj = k_job(id)
local state, cur, q, limit, cancel, started = unpack(redis.call('HMGET', kj, 'state', 'attempt', 'queue', 'limit',
  'cancel', 'started'))
if state ~= 'ACTIVE' or cur ~= attempt then return '' end
local now = now_ms()
-- Due times are on Redis's clock, like every other time here, whatever the
-- executor's clock says.
local retry_at = now + retry_delay
leave_inflight(id, q)
sample(q, 'run', now - (tonumber(started) or now))
local to
if outcome == 'completed' then
  to = 'COMPLETED'
  redis.call('HSET', kj, 'result', payload, 'progress', 100, 'ended', int(now))
  redis.call('HDEL', kj, 'error')
elseif outcome == 'cancelled' or cancel == '1' then
  to = 'CANCELLED'
  redis.call('HSET', kj, 'error', payload, 'ended', int(now))
elseif retry_delay >= 0 and tonumber(attempt) < tonumber(limit) then
  to = 'DELAYED'
  redis.call('HSET', kj, 'error', payload, 'run_at', int(retry_at))
else
  to = 'FAILED'
  redis.call('HSET', kj, 'error', payload, 'ended', int(now))
end
local record = {['end'] = int(now), outcome = (to == 'DELAYED') and 'FAILED' or to}
if to ~= 'COMPLETED' then record.error = payload end
record_attempt(id, attempt, record)
if to == 'DELAYED' then
  move(id, q, 'ACTIVE', to, now, retry_at)
else
  move(id, q, 'ACTIVE', to, now)
end
local fields = {}
if to ~= 'COMPLETED' then fields = {'e', payload} end
if to == 'COMPLETED' then fields = {'p', 100} end
emit(id, q, 'state', to, tonumber(attempt), fields, now)
if to ~= 'DELAYED' then settle(id, q, to, t, now) end
admit(t, now)
return to
