-- finish: running attempts end (one, or several that ended together on one
-- executor), and their slots go to the next waiting jobs at once (no round trip
-- through a gateway).
-- The same step may then take messages for the worker's free slots, as take.lua does
-- (a finishing executor gets its next jobs in the reply: one round trip, not two).
-- The counters the whole step moves (the queues' and tenants' counts, in-flight counts,
-- histograms) are read once per hash and written back once (cache_load, base.lua).
--   ARGV[1]     key prefix
--   ARGV[2…11]  the policy arguments (transport_args)
--   ARGV[12]    most messages to take after (0: none), then ARGV[13] the worker id,
--               ARGV[14] the stall timeout ms, ARGV[15] the number n of Dramatiq queues
--               to take from, ARGV[16…15+n] those queues (see take.lua)
--   ARGV[16+n…] eight per attempt: job id, attempt, outcome, payload, retry delay ms
--               (-1: none), then the Dramatiq worker id, message id and queue of its
--               delivery ('', '' and '' for none), acknowledged here whatever the
--               outcome, so the worker's own ack has nothing left to do.
--     outcome 'completed': payload is the serialized result
--     outcome 'failed':    payload is the serialized error; a retry delay >= 0 asks for
--                          a retry (granted while attempts remain and no cancel was asked)
--     outcome 'cancelled': payload is the serialized error
-- Reply: {states, taken}: per attempt, the job's new state, or '' when the attempt no
-- longer runs (nothing changes for it: a stale report, an outcome, not a refusal); and
-- take.lua's reply for the messages taken ({0} when none were asked for).
-- @include admission
-- @include executor
-- @include history

local t = transport_args(2)
local now = now_ms()
local batch = false  -- several attempts end in this step (see finish())

local function finish(id, attempt, outcome, payload, retry_delay)
  local kj = k_job(id)
  local state, cur, q, limit, cancel, started, has_dependents, kind, cancel_error, owner = unpack(redis.call('HMGET',
    kj, 'state', 'attempt', 'queue', 'limit', 'cancel', 'started', 'has_dependents', 'kind', 'cancel_error', 'owner'))
  if state ~= 'ACTIVE' or cur ~= attempt then return '' end
  -- Due times are on Redis's clock, like every other time here, whatever the
  -- executor's clock says.
  local retry_at = now + retry_delay
  local to, h
  if outcome == 'completed' then
    to = 'COMPLETED'
    h = {'result', payload, 'progress', '100', 'ended', int(now)}
    -- An earlier attempt's error (attempt 1 has none to clear).
    if attempt ~= '1' then redis.call('HDEL', kj, 'error') end
  elseif outcome == 'cancelled' or cancel == '1' then
    to = 'CANCELLED'
    payload = cancel_error or payload  -- the cancel's own error: who asked for it
    h = {'error', payload, 'ended', int(now)}
  elseif retry_delay >= 0 and tonumber(attempt) < tonumber(limit) then
    to = 'DELAYED'
    h = {'error', payload, 'run_at', int(retry_at)}
  else
    to = 'FAILED'
    h = {'error', payload, 'ended', int(now)}
  end
  -- The counters this end moves, and those the next claim of the queue will (one HMGET
  -- per hash, written back once by cache_flush: see base.lua).
  cache_load(k_queue(q), {'inflight', 'ACTIVE', to, 'qseq', 'ended:' .. to, 'WAITING'})
  if owner then
    cache_load(k_queue_tenant(q, owner), {'ACTIVE', to, 'WAITING'})
    cache_load(K_TENANT_INFLIGHT, {owner, q .. ' ' .. owner})
  end
  -- Counters of one field: cached only when several attempts end together (alone, an
  -- HMGET and an HSET would cost more than their one HINCRBY).
  if batch then
    if kind then cache_load(K_KIND_INFLIGHT, {kind}) end
    if TERMINAL[to] then
      if owner then cache_load(k_tenant(owner), {'open'}) end
      cache_load(k_index(q, 'throughput'), {END_FIELD[to] .. dec(math.floor(now / 60000))})
    end
  end
  leave_inflight(id, q, kind, owner)
  sample(q, 'run', now - (tonumber(started) or now))
  -- The attempt's record: the job's own fields when it ends the job; written out when
  -- another attempt follows (see attempt_fields in samples.lua; its worker read only then).
  if to == 'DELAYED' then
    attempt_fields(attempt, {start = started or '0', worker = hget(kj, 'worker') or '', ['end'] = int(now),
      outcome = 'FAILED', error = payload}, h)
  end
  transition(id, q, 'ACTIVE', to, now, {attempt = tonumber(attempt), fields = h,
    score = (to == 'DELAYED') and retry_at or nil, event = (to == 'COMPLETED') and {'p', 100} or {'e', payload},
    settle = t, has_dependents = has_dependents or '0', owner = owner})
  return to
end

local take_at = 2 + TRANSPORT_ARGC
local take_count, worker, stall_ms, nqueues = tonumber(ARGV[take_at]), ARGV[take_at + 1],
  tonumber(ARGV[take_at + 2]), tonumber(ARGV[take_at + 3])
local queues = {}
for q = 1, nqueues do queues[q] = ARGV[take_at + 3 + q] end
local out = {}
cache_open()
batch = #ARGV - (take_at + 3 + nqueues) > 8
for i = take_at + 4 + nqueues, #ARGV, 8 do
  if ARGV[i + 6] ~= '' then ack_delivery(t, ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]) end
  out[#out + 1] = finish(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]))
end
admit(t, now)
local taken = take_messages(t, take_count, worker, stall_ms, queues, now)
cache_flush()
return {out, taken}
