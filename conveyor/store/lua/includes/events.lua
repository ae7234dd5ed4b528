-- Events: what every state change and progress report appends.
-- @include base

local QUEUE_EVENTS_MAXLEN = 100000  -- per-queue stream (read by the gateways' event hubs; WatchQueue replay)
local QUEUE_EVENTS_MAXLEN_ARG = '100000'  -- (the same, as XADD's argument)

-- The msgpack of the pairs 'j' = id, 's' = seq: what cmsgpack.pack('j', id, 's', seq)
-- writes, written out here for the usual sizes (an id under 256 bytes, a sequence
-- under 65536), which costs a fraction of cmsgpack's encoder.
local function id_seq_pairs(id, seq)
  local n = #id
  local hid, s
  if n < 32 then hid = string.char(0xa0 + n) elseif n < 256 then hid = '\217' .. string.char(n) end  -- fixstr, str 8
  if seq < 128 then
    s = string.char(seq)  -- positive fixint
  elseif seq < 256 then
    s = '\204' .. string.char(seq)  -- uint 8
  elseif seq < 65536 then
    s = '\205' .. string.char(math.floor(seq / 256), seq % 256)  -- uint 16
  end
  if not (hid and s) then return cmsgpack.pack('j', id, 's', seq) end
  return '\161j' .. hid .. id .. '\161s' .. s
end

-- Append an event to the job's log (a list: event <seq> is element seq - 1, one
-- msgpack map each, its sequence being its place) and the queue's stream (id
-- 0-<qseq>, one field 'ev': the same map with the job id 'j' and sequence 's'), which
-- the gateways' event hubs read. `fields` is a flat list of extra field/value pairs.
-- Returns the event's sequence and queue sequence.
local function emit(id, q, etype, state, attempt, fields, now)
  local qseq = incr(k_queue(q), 'qseq', 1)
  local record = {q = q, qs = qseq, t = etype, st = state, a = tonumber(attempt), ts = now}
  for i = 1, #fields, 2 do record[fields[i]] = fields[i + 1] end
  local packed = cmsgpack.pack(record)
  local seq = redis.call('RPUSH', k_job_events(id), packed)
  -- The stream's map is the log's with 'j' and 's' added: its encoding, with a header
  -- counting two more pairs (a fixmap's, up to 15) and the two pairs after it.
  local head = string.byte(packed)
  local entry
  if head >= 0x80 and head <= 0x8d then
    entry = string.char(head + 2) .. string.sub(packed, 2) .. id_seq_pairs(id, seq)
  else
    record.j = id
    record.s = seq
    entry = cmsgpack.pack(record)
  end
  redis.call('XADD', k_index(q, 'events'), 'MAXLEN', '~', QUEUE_EVENTS_MAXLEN_ARG, '0-' .. int(qseq), 'ev', entry)
  return seq, qseq
end
