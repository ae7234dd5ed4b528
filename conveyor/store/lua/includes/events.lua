-- Events: what every state change and progress report appends.
-- @include base

local QUEUE_EVENTS_MAXLEN = 100000  -- per-queue stream (read by the gateways' event hubs; WatchQueue replay)

-- Append an event to the job's log (a list: event <seq> is element seq - 1, one
-- msgpack map each, its sequence being its place) and the queue's stream (id
-- 0-<qseq>, one field 'ev': the same map with the job id 'j' and sequence 's'), which
-- the gateways' event hubs read. `fields` is a flat list of extra field/value pairs.
-- Returns the event's sequence and queue sequence.
local function emit(id, q, etype, state, attempt, fields, now)
  local qseq = incr(k_queue(q), 'qseq', 1)
  local record = {q = q, qs = qseq, t = etype, st = state, a = tonumber(attempt), ts = now}
  for i = 1, #fields, 2 do record[fields[i]] = fields[i + 1] end
  local seq = redis.call('RPUSH', k_job_events(id), cmsgpack.pack(record))
  record.j = id
  record.s = seq
  redis.call('XADD', k_index(q, 'events'), 'MAXLEN', '~', QUEUE_EVENTS_MAXLEN, '0-' .. qseq, 'ev',
    cmsgpack.pack(record))
  return seq, qseq
end
