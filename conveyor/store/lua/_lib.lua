-- Shared prelude, prepended to every script of this folder by conveyor/store/scripts.py.
-- Every script takes the key prefix as ARGV[1]; keys are built here, in one place.
-- States are the proto names without the JOB_STATE_ prefix.

local P = ARGV[1]
local QUEUE_EVENTS_MAXLEN = 100000  -- per-queue stream (read by the gateways' event hubs; WatchQueue replay)
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
local K_CAPACITY = P .. ':capacity'  -- the live executors' slots, summed by refresh_capacity()
local K_CANCEL_CHANNEL = P .. ':cancel'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as exact decimal strings (tostring would switch to exponent form).
local function int(n) return string.format('%.0f', n) end

-- ---- google.rpc.Status, encoded here for errors a script decides itself ---------------

local function varint(n)
  local out = {}
  repeat
    local b = n % 128
    n = math.floor(n / 128)
    if n > 0 then b = b + 128 end
    out[#out + 1] = string.char(b)
  until n == 0
  return table.concat(out)
end

local function pb_bytes(field, value)
  return string.char(field * 8 + 2) .. varint(#value) .. value
end

-- Status{code, message, details: [Any(ErrorInfo{reason, domain, metadata})]}
local function status_bytes(code, reason, message, metadata)
  local info = pb_bytes(1, reason) .. pb_bytes(2, 'conveyor.dev')
  for k, v in pairs(metadata or {}) do
    info = info .. pb_bytes(3, pb_bytes(1, k) .. pb_bytes(2, v))
  end
  local any = pb_bytes(1, 'type.googleapis.com/google.rpc.ErrorInfo') .. pb_bytes(2, info)
  return string.char(8) .. varint(code) .. pb_bytes(2, message) .. pb_bytes(3, any)
end

local function hget(key, field) return redis.call('HGET', key, field) end

-- The per-state index of a queue that a job in `state` sits in (WAITING has its own
-- priority-ordered set, filled and emptied by enter_line/leave_line).
local STATE_INDEX = {DELAYED = 'delayed', ACTIVE = 'active', COMPLETED = 'completed',
                     FAILED = 'failed', CANCELLED = 'cancelled'}
local TERMINAL = {COMPLETED = true, FAILED = true, CANCELLED = true}

-- Append an event to the job's log (a list: event <seq> is element seq - 1, one
-- msgpack map each, its sequence being its place) and the queue's stream (id
-- 0-<qseq>, one field 'ev': the same map with the job id 'j' and sequence 's'), which
-- the gateways' event hubs read. `fields` is a flat list of extra field/value pairs.
-- Returns the event's sequence and queue sequence.
local function emit(id, q, etype, state, attempt, fields, now)
  local qseq = redis.call('HINCRBY', k_queue(q), 'qseq', 1)
  local record = {q = q, qs = qseq, t = etype, st = state, a = tonumber(attempt), ts = now}
  for i = 1, #fields, 2 do record[fields[i]] = fields[i + 1] end
  local seq = redis.call('RPUSH', k_job_events(id), cmsgpack.pack(record))
  record.j = id
  record.s = seq
  redis.call('XADD', k_index(q, 'events'), 'MAXLEN', '~', QUEUE_EVENTS_MAXLEN, '0-' .. qseq, 'ev',
    cmsgpack.pack(record))
  return seq, qseq
end

-- Move the per-queue counters and per-state indexes from one state to another.
-- `from` or `to` may be nil (a new job; a deleted job). `fields`, a flat list, is
-- written to the job hash with its new state. Returns the queue's count of `to`.
local function move(id, q, from, to, now, to_score, fields)
  local kq = k_queue(q)
  if from then
    redis.call('HINCRBY', kq, from, -1)
    local idx = STATE_INDEX[from]
    if idx then redis.call('ZREM', k_index(q, idx), id) end
    if from == 'DELAYED' then redis.call('ZREM', K_DELAYED, id) end
  end
  local count
  if to then
    count = redis.call('HINCRBY', kq, to, 1)
    local idx = STATE_INDEX[to]
    if idx then redis.call('ZADD', k_index(q, idx), int(to_score or now), id) end
    -- A DELAYED job with a due time is promoted by promote.lua; one without (waiting
    -- for the jobs it depends on) is released by release_dependents().
    if to == 'DELAYED' and to_score then redis.call('ZADD', K_DELAYED, int(to_score), id) end
    redis.call('HSET', k_job(id), 'state', to, unpack(fields or {}))
  end
  return count
end

-- Put a WAITING job in line: priority first, FIFO within a priority. A job that
-- was already in line (a lost hand-over, a stalled run) keeps its old place. Its place
-- ('score') and when it became ready go to its hash; a new job whose hash is still
-- to be written passes its priority and `into`, the flat list of fields it will be
-- written with, and they go there instead.
local function enter_line(id, q, keep_place, now, priority, into)
  local kj = k_job(id)
  local score = keep_place and tonumber(hget(kj, 'score')) or nil
  local fields = into or {}
  if not score then
    priority = priority or tonumber(hget(kj, 'priority'))
    score = priority * PRIORITY_SHIFT + redis.call('HINCRBY', k_queue(q), 'fifo', 1)
    fields[#fields + 1] = 'score'
    fields[#fields + 1] = int(score)
  end
  redis.call('ZADD', k_index(q, 'waiting'), int(score), id)
  redis.call('SADD', K_READY_QUEUES, q)
  if not keep_place then
    fields[#fields + 1] = 'ready'
    fields[#fields + 1] = int(now)
  end
  if not into and #fields > 0 then redis.call('HSET', kj, unpack(fields)) end
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

-- Forget the executors that went silent, and sum the slots of the live ones into
-- K_CAPACITY (read by every admit()). Run by every heartbeat and every reap, so a
-- dead executor's slots stop counting within a second of its time-to-live.
local function refresh_capacity(now)
  for _, ex in ipairs(redis.call('ZRANGEBYSCORE', K_EXECUTORS, '-inf', now)) do
    redis.call('ZREM', K_EXECUTORS, ex)
    redis.call('DEL', P .. ':executor:' .. ex)
  end
  local capacity = 0
  for _, ex in ipairs(redis.call('ZRANGE', K_EXECUTORS, 0, -1)) do
    capacity = capacity + (tonumber(hget(P .. ':executor:' .. ex, 'slots')) or 0)
  end
  redis.call('SET', K_CAPACITY, capacity)
end

-- Where handed-over jobs go (a Dramatiq queue), and how many finished jobs a queue
-- keeps. The policy arguments are nine ARGV values starting at `i`: max jobs, default
-- queue concurrency, hand-over timeout ms, Dramatiq namespace, Dramatiq queue, actor
-- name, completed jobs kept, failed/cancelled jobs kept, max age ms of finished jobs.
local function transport_args(i)
  return {max = tonumber(ARGV[i]), limit = tonumber(ARGV[i + 1]), handover_ms = tonumber(ARGV[i + 2]),
          ns = ARGV[i + 3], queue = ARGV[i + 4], actor = ARGV[i + 5],
          keep_completed = tonumber(ARGV[i + 6]), keep_failed = tonumber(ARGV[i + 7]),
          max_age_ms = tonumber(ARGV[i + 8])}
end

-- Write the Dramatiq message "run attempt `attempt` of job `id`" straight into the
-- broker's queue (its layout: <ns>:<queue> list of ids, <ns>:<queue>.msgs hash), in
-- the same atomic step that marks the job handed over: a job is never handed over
-- without its message, nor sent twice for one hand-over.
local function hand_over(id, attempt, now, t)
  -- Unique per hand-over: the same attempt is handed over again only after the
  -- hand-over timeout.
  local mid = id .. '-' .. attempt .. '-' .. int(now)
  local msg = cjson.encode({queue_name = t.queue, actor_name = t.actor, args = {id, attempt}, kwargs = {},
                            options = {redis_message_id = mid}, message_id = mid, message_timestamp = now})
  local qkey = t.ns .. ':' .. t.queue
  redis.call('HSET', qkey .. '.msgs', mid, msg)
  redis.call('RPUSH', qkey, mid)
end

-- The next job of a queue's line that may start now, taken out of the line; nil when
-- the line is empty or everything within reach is held back by the queue's per-host
-- navigation rate (`rate` per second; the job's hosts are those it navigates to).
local RATE_SCAN = 50
local function take_next(q, rate, now)
  local line = k_index(q, 'waiting')
  if rate <= 0 then
    return redis.call('ZPOPMIN', line)[1]
  end
  local sec = math.floor(now / 1000)
  for _, id in ipairs(redis.call('ZRANGE', line, 0, RATE_SCAN - 1)) do
    local hosts = hget(k_job(id), 'hosts')
    local windows, ok = {}, true
    for _, host in ipairs(hosts and cjson.decode(hosts) or {}) do
      local window = P .. ':rate:' .. q .. ':' .. host .. ':' .. sec
      if (tonumber(redis.call('GET', window)) or 0) >= rate then
        ok = false
        break
      end
      windows[#windows + 1] = window
    end
    if ok then
      for _, window in ipairs(windows) do
        redis.call('INCR', window)
        redis.call('PEXPIRE', window, 2000)
      end
      redis.call('ZREM', line, id)
      return id
    end
  end
  return nil
end

-- Admission: hand waiting jobs to the executors, only as many as they have free
-- slots, and only as many of one queue as its concurrency allows. Queues take
-- turns, one job each, highest priority (then oldest) first within a queue.
-- Returns a flat list {id1, attempt1, id2, attempt2, ...}.
local function admit(t, now)
  local capacity = tonumber(redis.call('GET', K_CAPACITY)) or 0
  local free = math.min(capacity - redis.call('ZCARD', K_INFLIGHT), t.max)
  local out = {}
  if free <= 0 then return out end

  local open = {}
  for _, q in ipairs(redis.call('SMEMBERS', K_READY_QUEUES)) do
    local paused, limit, inflight, rate = unpack(redis.call('HMGET', k_queue(q), 'paused', 'concurrency',
      'inflight', 'host_rate_limit'))
    limit = tonumber(limit) or t.limit
    if limit <= 0 then limit = t.limit end
    if paused ~= '1' then
      open[#open + 1] = {q = q, room = limit - (tonumber(inflight) or 0), rate = tonumber(rate) or 0}
    end
  end

  local progress = true
  while free > 0 and progress do
    progress = false
    for _, entry in ipairs(open) do
      if free > 0 and entry.room > 0 then
        local id = take_next(entry.q, entry.rate, now)
        if not id then
          entry.room = 0
          if redis.call('ZCARD', k_index(entry.q, 'waiting')) == 0 then
            redis.call('SREM', K_READY_QUEUES, entry.q)
          end
        else
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
    if redis.call('LPUSH', wake, unpack(tokens)) > 64 then redis.call('LTRIM', wake, 0, 63) end
  end
  return out
end

-- ---- creating jobs, and jobs that wait for others -----------------------------------

local function dedup_key(owner, q, key) return P .. ':dedup:' .. owner .. ':' .. q .. ':' .. key end

-- Create a job. `j` (decoded JSON): id, queue, owner, priority, max_attempts,
-- timeout_ms, run_at (ms; 0 now), request_id, kind, labels (object), and optionally
-- dedup_key, dedup_window_ms, dedup_return_existing, depends_on (array of ids),
-- hosts (array). `spec` is the serialized request.
-- Returns {id, state, position, existing (0|1)}, or an error reply
-- 'duplicate:<id>' when a deduplication key refuses the job.
local function create_job(j, spec, now)
  local id, q, owner = j.id, j.queue, j.owner
  -- The id is the caller's: a create sent again (a client retrying after a lost
  -- reply) answers with the job it made the first time.
  if redis.call('EXISTS', k_job(id)) == 1 then
    local eq = hget(k_job(id), 'queue')
    return {id, hget(k_job(id), 'state'), position(id, eq), 1}
  end
  local k_req
  if j.request_id and j.request_id ~= '' then
    k_req = P .. ':req:' .. owner .. ':' .. j.request_id
    local existing = redis.call('GET', k_req)
    if existing and redis.call('EXISTS', k_job(existing)) == 1 then
      local eq = hget(k_job(existing), 'queue')
      return {existing, hget(k_job(existing), 'state'), position(existing, eq), 1}
    end
  end
  local k_dedup
  if j.dedup_key and j.dedup_key ~= '' then
    k_dedup = dedup_key(owner, q, j.dedup_key)
    local other = redis.call('GET', k_dedup)
    if other then
      -- The key is held while its job has not ended, and until the end of its window.
      local st, held_until = unpack(redis.call('HMGET', k_job(other), 'state', 'dedup_until'))
      if st and (not TERMINAL[st] or (tonumber(held_until) or 0) > now) then
        if j.dedup_return_existing then
          return {other, st, position(other, q), 1}
        end
        return redis.error_reply('duplicate:' .. other)
      end
    end
    redis.call('SET', k_dedup, id)
  end
  if k_req then redis.call('SET', k_req, id, 'EX', 86400) end

  -- The job hash is written once, with its state (by move(), below).
  local h = {'id', id, 'queue', q, 'owner', owner, 'priority', j.priority,
    'attempt', 0, 'limit', j.max_attempts, 'max', j.max_attempts, 'timeout_ms', j.timeout_ms,
    'created', int(now), 'progress', 0, 'spec', spec, 'kind', j.kind,
    'labels', cjson.encode(j.labels or {}), 'request_id', j.request_id or '', 'cancel', 0, 'handed', 0}
  local function set(k, v) h[#h + 1] = k; h[#h + 1] = v end
  if k_dedup then
    set('dedup', k_dedup)
    set('dedup_until', int(now + (tonumber(j.dedup_window_ms) or 0)))
  end
  if j.hosts and #j.hosts > 0 then set('hosts', cjson.encode(j.hosts)) end
  redis.call('ZADD', K_JOBS, int(now), id)
  redis.call('ZADD', k_index(q, 'jobs'), int(now), id)

  -- Dependencies: completed ones are met; a failed or cancelled one cancels this job.
  local pending, broken = 0, nil
  for _, dep in ipairs(j.depends_on or {}) do
    local st = hget(k_job(dep), 'state')
    if st == 'FAILED' or st == 'CANCELLED' or not st then
      broken = broken or dep
    elseif st ~= 'COMPLETED' then
      pending = pending + 1
      redis.call('SADD', k_job(dep) .. ':dependents', id)
      redis.call('HSET', k_job(dep), 'has_dependents', 1)
    end
  end
  if j.depends_on and #j.depends_on > 0 then
    set('depends_on', cjson.encode(j.depends_on))
    set('deps_pending', pending)
  end

  local run_at = tonumber(j.run_at) or 0
  if run_at > now then set('run_at', int(run_at)) end
  local state, fields = nil, {}
  if broken then
    state = 'CANCELLED'
    local err = status_bytes(1, 'DEPENDENCY_FAILED', 'job ' .. broken .. ', which this job depends on, failed, ' ..
      'was cancelled or does not exist', {dependency = broken})
    set('error', err)
    set('ended', int(now))
    move(id, q, nil, 'CANCELLED', now, nil, h)
    fields = {'e', err}
  elseif pending > 0 then
    state = 'DELAYED'
    move(id, q, nil, 'DELAYED', now, nil, h)
    fields = {'m', 'waiting for ' .. pending .. ' job(s) it depends on'}
  elseif run_at > now then
    state = 'DELAYED'
    move(id, q, nil, 'DELAYED', now, run_at, h)
  else
    state = 'WAITING'
    enter_line(id, q, false, now, tonumber(j.priority), h)
    move(id, q, nil, 'WAITING', now, nil, h)
  end
  local _, qseq = emit(id, q, 'state', state, 0, fields, now)
  -- The queue's first event: a queue is known from its first job on (or from its
  -- first UpdateQueue, queue_update.lua).
  if qseq == 1 then redis.call('ZADD', K_QUEUES, 'NX', int(now), q) end
  return {id, state, position(id, q), 0}
end

-- A job completed: its dependents with nothing else pending become due (WAITING, or
-- DELAYED until their own run_at).
local function release_dependents(id, now)
  local k_deps = k_job(id) .. ':dependents'
  for _, child in ipairs(redis.call('SMEMBERS', k_deps)) do
    local kc = k_job(child)
    local st, q = unpack(redis.call('HMGET', kc, 'state', 'queue'))
    if st == 'DELAYED' and redis.call('HINCRBY', kc, 'deps_pending', -1) <= 0 then
      local run_at = tonumber(hget(kc, 'run_at')) or 0
      if run_at > now then
        redis.call('ZADD', K_DELAYED, int(run_at), child)
        redis.call('ZADD', k_index(q, 'delayed'), int(run_at), child)
      else
        move(child, q, 'DELAYED', 'WAITING', now)
        enter_line(child, q, false, now)
        emit(child, q, 'state', 'WAITING', 0, {'m', 'the jobs it depends on completed'}, now)
      end
    end
  end
  redis.call('DEL', k_deps)
end

-- A job failed for good or was cancelled: every job waiting on it (and on those, in
-- turn) is CANCELLED, with the reason.
local function cancel_dependents(id, now)
  local todo = {id}
  while #todo > 0 do
    local parent = table.remove(todo)
    local k_deps = k_job(parent) .. ':dependents'
    for _, child in ipairs(redis.call('SMEMBERS', k_deps)) do
      local kc = k_job(child)
      local st, q = unpack(redis.call('HMGET', kc, 'state', 'queue'))
      if st == 'DELAYED' then
        local err = status_bytes(1, 'DEPENDENCY_FAILED', 'job ' .. parent .. ', which this job depends on, ' ..
          'failed or was cancelled', {dependency = parent})
        redis.call('HSET', kc, 'error', err, 'ended', int(now))
        move(child, q, 'DELAYED', 'CANCELLED', now)
        emit(child, q, 'state', 'CANCELLED', 0, {'e', err}, now)
        todo[#todo + 1] = child
      end
    end
    redis.call('DEL', k_deps)
  end
end

-- After a job reached a terminal state: settle the jobs that depend on it.
-- `has_dependents` is the job's field of that name, when the caller read it already.
local function settle_dependents(id, state, now, has_dependents)
  if (has_dependents or hget(k_job(id), 'has_dependents')) ~= '1' then return end
  if state == 'COMPLETED' then
    release_dependents(id, now)
  elseif state == 'FAILED' or state == 'CANCELLED' then
    cancel_dependents(id, now)
  end
end

-- ---- statistics, history, retention ---------------------------------------------------

local SAMPLES = 1000

-- A timing sample (ms) of a queue: 'wait' (ready to started) or 'run' (started to ended).
local function sample(q, kind, ms)
  local key = k_index(q, kind .. '-ms')
  if redis.call('LPUSH', key, int(ms)) > SAMPLES + 100 then redis.call('LTRIM', key, 0, SAMPLES - 1) end
end

-- Count a job that ended (COMPLETED, or FAILED for good) in its minute: a hash per
-- queue of 'c:<minute>' and 'f:<minute>' counters. The first count of a minute drops
-- the counters older than an hour, so the hash stays small.
local THROUGHPUT_MINUTES = 60
local function count_end(q, state, now)
  if state ~= 'COMPLETED' and state ~= 'FAILED' then return end
  local key = k_index(q, 'throughput')
  local minute = math.floor(now / 60000)
  if redis.call('HINCRBY', key, (state == 'COMPLETED' and 'c:' or 'f:') .. minute, 1) == 1 then
    local stale = {}
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if tonumber(string.sub(field, 3)) <= minute - THROUGHPUT_MINUTES then stale[#stale + 1] = field end
    end
    if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  end
end

-- The record of one attempt: fields '@<n>:<name>' of the job's hash, added to `into`,
-- a flat list of fields about to be written to it (by move()).
local function attempt_fields(attempt, fields, into)
  for k, v in pairs(fields) do
    into[#into + 1] = '@' .. attempt .. ':' .. k
    into[#into + 1] = v
  end
  return into
end

-- Delete a job and everything of it: hash, events, attempts, indexes, counters, its
-- request-id and dedup keys; its id goes to the gc list so its artifacts follow.
local function delete_job(id)
  local kj = k_job(id)
  local q, state, owner, request_id, dedup = unpack(redis.call('HMGET', kj, 'queue', 'state', 'owner',
    'request_id', 'dedup'))
  if not q then return 0 end
  if not TERMINAL[state] then return 0 end  -- only jobs that have ended
  move(id, q, state, nil, 0)
  redis.call('ZREM', K_JOBS, id)
  redis.call('ZREM', k_index(q, 'jobs'), id)
  if request_id and request_id ~= '' then
    local k_req = P .. ':req:' .. owner .. ':' .. request_id
    if redis.call('GET', k_req) == id then redis.call('DEL', k_req) end
  end
  if dedup and redis.call('GET', dedup) == id then redis.call('DEL', dedup) end
  redis.call('DEL', kj, k_job_events(id), kj .. ':dependents')
  redis.call('RPUSH', P .. ':gc', id)
  return 1
end

-- Keep a queue's history bounded: the newest `keep` jobs of a finished state, none
-- older than max_age_ms. `count` is the queue's count of that state, when known.
local function trim_history(q, state, t, now, count)
  local keep = state == 'COMPLETED' and t.keep_completed or t.keep_failed
  local idx = k_index(q, STATE_INDEX[state])
  local excess = (count or redis.call('ZCARD', idx)) - keep
  if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', idx, 0, math.min(excess, 100) - 1)) do delete_job(old) end
  end
  if t.max_age_ms > 0 then
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', idx, '-inf', now - t.max_age_ms, 'LIMIT', 0, 100)) do
      delete_job(old)
    end
  end
end

-- A job reached `state` for good (COMPLETED, FAILED or CANCELLED): count it, settle
-- the jobs that depend on it, and keep its queue's history bounded (`count`, the
-- queue's count of jobs in that state, when the caller has it from move();
-- `has_dependents`, the job's field, when the caller read it).
local function settle(id, q, state, t, now, count, has_dependents)
  count_end(q, state, now)
  settle_dependents(id, state, now, has_dependents)
  trim_history(q, state, t, now, count)
end

-- Give a FAILED or CANCELLED job a fresh set of attempts (its attempt number keeps
-- counting). Returns nil, or the state that refuses it.
local function retry_job(id, now)
  local kj = k_job(id)
  local state, q, attempt, per_set = unpack(redis.call('HMGET', kj, 'state', 'queue', 'attempt', 'max'))
  if state ~= 'FAILED' and state ~= 'CANCELLED' then return state or 'missing' end
  redis.call('HSET', kj, 'limit', tonumber(attempt) + tonumber(per_set), 'cancel', 0, 'progress', 0, 'pmsg', '')
  redis.call('HDEL', kj, 'ended', 'result', 'error', 'started', 'run_at', 'score')
  move(id, q, state, 'WAITING', now)
  enter_line(id, q, false, now)
  emit(id, q, 'state', 'WAITING', tonumber(attempt), {'m', 'retry requested'}, now)
  return nil
end

-- ---- the executor side ------------------------------------------------------------------

-- Claim attempt `attempt` of a handed-over job for `executor` (see claim.lua). Returns
-- {1, spec, timeout_ms, limit, kind, queue} or {0, reason}.
local function claim_job(id, attempt, executor, stall_ms, now)
  local kj = k_job(id)
  local state, handed, cur, q, ready, spec, timeout_ms, limit, kind, run_at = unpack(redis.call('HMGET', kj,
    'state', 'handed', 'attempt', 'queue', 'ready', 'spec', 'timeout_ms', 'limit', 'kind', 'run_at'))
  if not state then return {0, 'gone'} end
  if state ~= 'WAITING' then return {0, 'state ' .. state} end
  if handed ~= '1' then return {0, 'not handed over'} end
  if tonumber(cur) + 1 ~= attempt then return {0, 'attempt ' .. attempt .. ' is stale'} end
  sample(q, 'wait', now - (tonumber(ready) or now))
  if run_at then redis.call('HDEL', kj, 'run_at') end
  redis.call('ZADD', K_INFLIGHT, int(now + stall_ms), id)
  move(id, q, 'WAITING', 'ACTIVE', now, nil, attempt_fields(attempt, {start = int(now), worker = executor,
    outcome = 'ACTIVE'}, {'attempt', attempt, 'handed', 0, 'started', int(now), 'worker', executor,
    'progress', 0, 'pmsg', ''}))
  emit(id, q, 'state', 'ACTIVE', attempt, {}, now)
  return {1, spec, timeout_ms, limit, kind, q}
end

-- Dramatiq's bookkeeping of a delivery (its Redis layout, see transport.py): the
-- message a worker took sits in that worker's ack set and in the queue's message hash.
local function dramatiq_acks(t, worker) return t.ns .. ':__acks__.' .. worker .. '.' .. t.queue end

-- Acknowledge a delivery, as Dramatiq's own ack does.
local function ack_delivery(t, worker, message_id)
  if redis.call('SREM', dramatiq_acks(t, worker), message_id) > 0 then
    redis.call('HDEL', t.ns .. ':' .. t.queue .. '.msgs', message_id)
  end
end
