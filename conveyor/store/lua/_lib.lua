-- Shared prelude, prepended to every script of this folder by conveyor/store/scripts.py.
-- Every script takes the key prefix as ARGV[1]; keys are built here, in one place.
-- States are the proto names without the JOB_STATE_ prefix.

local P = ARGV[1]
local EVENTS_MAXLEN = 100000       -- the global stream read by the gateways' shared reader
local QUEUE_EVENTS_MAXLEN = 10000  -- per-queue stream (WatchQueue replay)
local PRIORITY_SHIFT = 17592186044416  -- 2^44: waiting score = priority * 2^44 + FIFO counter

local function k_job(id) return P .. ':job:' .. id end
local function k_job_events(id) return P .. ':job:' .. id .. ':events' end
local function k_queue(q) return P .. ':q:' .. q end
local function k_index(q, name) return P .. ':q:' .. q .. ':' .. name end
local K_JOBS = P .. ':jobs'
local K_QUEUES = P .. ':queues'
local K_READY_QUEUES = P .. ':ready-queues'
local K_INFLIGHT = P .. ':inflight'
local K_DELAYED = P .. ':delayed'
local K_EXECUTORS = P .. ':executors'
local K_EVENTS = P .. ':events'
local K_CANCEL_CHANNEL = P .. ':cancel'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as exact decimal strings (tostring would switch to exponent form).
local function int(n) return string.format('%.0f', n) end

local function hget(key, field) return redis.call('HGET', key, field) end

-- The per-state index of a queue that a job in `state` sits in (WAITING has its own
-- priority-ordered set, filled and emptied by enter_line/leave_line).
local STATE_INDEX = {DELAYED = 'delayed', ACTIVE = 'active', COMPLETED = 'completed',
                     FAILED = 'failed', CANCELLED = 'cancelled'}
local TERMINAL = {COMPLETED = true, FAILED = true, CANCELLED = true}

-- Append an event to the job's stream (id 0-<seq>), the queue's stream (id 0-<qseq>)
-- and the global stream. `fields` is a flat list of extra field/value pairs.
local function emit(id, q, etype, state, attempt, fields, now)
  local seq = redis.call('HINCRBY', k_job(id), 'seq', 1)
  local qseq = redis.call('HINCRBY', k_queue(q), 'qseq', 1)
  local entry = {'j', id, 'q', q, 's', seq, 'qs', qseq, 't', etype, 'st', state,
                 'a', attempt, 'ts', int(now)}
  for i = 1, #fields do entry[#entry + 1] = fields[i] end
  redis.call('XADD', k_job_events(id), '0-' .. seq, unpack(entry))
  redis.call('XADD', k_index(q, 'events'), 'MAXLEN', '~', QUEUE_EVENTS_MAXLEN, '0-' .. qseq, unpack(entry))
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', unpack(entry))
  return seq
end

-- Move the per-queue counters and per-state indexes from one state to another.
-- `from` or `to` may be nil (a new job; a deleted job).
local function move(id, q, from, to, now, to_score)
  local kq = k_queue(q)
  if from then
    redis.call('HINCRBY', kq, from, -1)
    local idx = STATE_INDEX[from]
    if idx then redis.call('ZREM', k_index(q, idx), id) end
    if from == 'DELAYED' then redis.call('ZREM', K_DELAYED, id) end
  end
  if to then
    redis.call('HINCRBY', kq, to, 1)
    local idx = STATE_INDEX[to]
    if idx then redis.call('ZADD', k_index(q, idx), int(to_score or now), id) end
    if to == 'DELAYED' then redis.call('ZADD', K_DELAYED, int(to_score), id) end
    redis.call('HSET', k_job(id), 'state', to)
  end
end

-- Put a WAITING job in line: priority first, FIFO within a priority. A job that
-- was already in line (a lost hand-over, a stalled run) keeps its old place.
local function enter_line(id, q, keep_place)
  local kj = k_job(id)
  local score = keep_place and tonumber(hget(kj, 'score')) or nil
  if not score then
    local priority = tonumber(hget(kj, 'priority'))
    score = priority * PRIORITY_SHIFT + redis.call('HINCRBY', k_queue(q), 'fifo', 1)
    redis.call('HSET', kj, 'score', int(score))
  end
  redis.call('ZADD', k_index(q, 'waiting'), int(score), id)
  redis.call('SADD', K_READY_QUEUES, q)
end

-- 1-based place in line, or 0.
local function position(id, q)
  local rank = redis.call('ZRANK', k_index(q, 'waiting'), id)
  if rank then return rank + 1 end
  return 0
end

-- Leave the in-flight set (handed over or running): frees a slot of the queue.
local function leave_inflight(id, q)
  if redis.call('ZREM', K_INFLIGHT, id) == 1 then
    redis.call('HINCRBY', k_queue(q), 'inflight', -1)
  end
end

-- ---- admission and hand-over ------------------------------------------------------

-- Where handed-over jobs go: a Dramatiq queue. The transport arguments are six ARGV
-- values starting at `i`: max jobs, default queue concurrency, hand-over timeout ms,
-- Dramatiq namespace, Dramatiq queue, actor name.
local function transport_args(i)
  return {max = tonumber(ARGV[i]), limit = tonumber(ARGV[i + 1]), handover_ms = tonumber(ARGV[i + 2]),
          ns = ARGV[i + 3], queue = ARGV[i + 4], actor = ARGV[i + 5]}
end

-- Write the Dramatiq message "run attempt `attempt` of job `id`" straight into the
-- broker's queue (its layout: <ns>:<queue> list of ids, <ns>:<queue>.msgs hash), in
-- the same atomic step that marks the job handed over: a job is never handed over
-- without its message, nor sent twice for one hand-over.
local function hand_over(id, attempt, now, t)
  local n = redis.call('HINCRBY', k_job(id), 'handovers', 1)
  local mid = id .. '-' .. attempt .. '-' .. n
  local msg = cjson.encode({queue_name = t.queue, actor_name = t.actor, args = {id, attempt}, kwargs = {},
                            options = {redis_message_id = mid}, message_id = mid, message_timestamp = now})
  local qkey = t.ns .. ':' .. t.queue
  redis.call('HSET', qkey .. '.msgs', mid, msg)
  redis.call('RPUSH', qkey, mid)
end

-- Admission: hand waiting jobs to the executors, only as many as they have free
-- slots, and only as many of one queue as its concurrency allows. Queues take
-- turns, one job each, highest priority (then oldest) first within a queue.
-- Returns a flat list {id1, attempt1, id2, attempt2, ...}.
local function admit(t, now)
  -- Live executors and their slots; forget the silent ones.
  for _, ex in ipairs(redis.call('ZRANGEBYSCORE', K_EXECUTORS, '-inf', now)) do
    redis.call('ZREM', K_EXECUTORS, ex)
    redis.call('DEL', P .. ':executor:' .. ex)
  end
  local capacity = 0
  for _, ex in ipairs(redis.call('ZRANGE', K_EXECUTORS, 0, -1)) do
    capacity = capacity + (tonumber(hget(P .. ':executor:' .. ex, 'slots')) or 0)
  end
  local free = math.min(capacity - redis.call('ZCARD', K_INFLIGHT), t.max)
  local out = {}
  if free <= 0 then return out end

  local open = {}
  for _, q in ipairs(redis.call('SMEMBERS', K_READY_QUEUES)) do
    local paused, limit, inflight = unpack(redis.call('HMGET', k_queue(q), 'paused', 'concurrency', 'inflight'))
    limit = tonumber(limit) or t.limit
    if limit <= 0 then limit = t.limit end
    if paused ~= '1' then
      open[#open + 1] = {q = q, room = limit - (tonumber(inflight) or 0)}
    end
  end

  local progress = true
  while free > 0 and progress do
    progress = false
    for _, entry in ipairs(open) do
      if free > 0 and entry.room > 0 then
        local popped = redis.call('ZPOPMIN', k_index(entry.q, 'waiting'))
        if #popped == 0 then
          entry.room = 0
          redis.call('SREM', K_READY_QUEUES, entry.q)
        else
          local id = popped[1]
          local attempt = tonumber(hget(k_job(id), 'attempt')) + 1
          redis.call('HSET', k_job(id), 'handed', 1)
          redis.call('ZADD', K_INFLIGHT, int(now + t.handover_ms), id)
          redis.call('HINCRBY', k_queue(entry.q), 'inflight', 1)
          hand_over(id, attempt, now, t)
          out[#out + 1] = id
          out[#out + 1] = attempt
          entry.room = entry.room - 1
          free = free - 1
          progress = true
        end
      end
    end
  end
  if #out > 0 then
    -- Wake as many idle consumers as there are new messages (bounded).
    local wake = t.ns .. ':' .. t.queue .. '.wake'
    local tokens = {}
    for i = 1, math.min(#out / 2, 64) do tokens[i] = '1' end
    redis.call('LPUSH', wake, unpack(tokens))
    redis.call('LTRIM', wake, 0, 63)
  end
  return out
end
