-- A running attempt ends, and its slot goes to the next waiting job at once (no
-- round trip through a gateway). ARGV: prefix, id, attempt, outcome, payload,
-- retry delay ms (-1: none), then the policy arguments (see transport_args), then
-- optionally the Dramatiq worker id and message id of the delivery, acknowledged here
-- (whatever the outcome) so the worker's own ack has nothing left to do.
--   outcome 'completed': payload is the serialized result
--   outcome 'failed':    payload is the serialized error; a retry delay >= 0 asks for a retry
--                        (granted while attempts remain and no cancel was asked)
--   outcome 'cancelled': payload is the serialized error
-- Returns the job's new state, or '' when the attempt no longer runs (nothing changes).
local id, attempt, outcome, payload = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local retry_delay = tonumber(ARGV[6])
local t = transport_args(7)
if ARGV[17] then ack_delivery(t, ARGV[16], ARGV[17]) end
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
local to, h
if outcome == 'completed' then
  to = 'COMPLETED'
  h = {'result', payload, 'progress', 100, 'ended', int(now)}
  -- An earlier attempt's error (attempt 1 has none to clear).
  if attempt ~= '1' then redis.call('HDEL', kj, 'error') end
elseif outcome == 'cancelled' or cancel == '1' then
  to = 'CANCELLED'
  h = {'error', payload, 'ended', int(now)}
elseif retry_delay >= 0 and tonumber(attempt) < tonumber(limit) then
  to = 'DELAYED'
  h = {'error', payload, 'run_at', int(retry_at)}
else
  to = 'FAILED'
  h = {'error', payload, 'ended', int(now)}
end
local record = {['end'] = int(now), outcome = (to == 'DELAYED') and 'FAILED' or to}
if to ~= 'COMPLETED' then record.error = payload end
record_attempt(id, attempt, record)
local count = move(id, q, 'ACTIVE', to, now, (to == 'DELAYED') and retry_at or nil, h)
local fields = {}
if to ~= 'COMPLETED' then fields = {'e', payload} end
if to == 'COMPLETED' then fields = {'p', 100} end
emit(id, q, 'state', to, tonumber(attempt), fields, now)
if to ~= 'DELAYED' then settle(id, q, to, t, now, count) end
admit(t, now)
return to
