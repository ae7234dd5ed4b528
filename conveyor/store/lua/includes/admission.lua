-- Admission and hand-over: the executors' capacity, the policy arguments, and
-- handing waiting jobs to the executors' free slots as Dramatiq messages.
-- @include base

-- Forget the executors that went silent, and sum the slots of the live ones into
-- K_CAPACITY (read by every admit()). Run by every heartbeat and every reap, so a
-- dead executor's slots stop counting within a second of its time-to-live.
local function refresh_capacity(now)
  for _, ex in ipairs(redis.call('ZRANGEBYSCORE', K_EXECUTORS, '-inf', now)) do
    redis.call('ZREM', K_EXECUTORS, ex)
    redis.call('DEL', k_executor(ex))
  end
  local capacity = 0
  for _, ex in ipairs(redis.call('ZRANGE', K_EXECUTORS, 0, -1)) do
    capacity = capacity + (tonumber(hget(k_executor(ex), 'slots')) or 0)
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
      local window = k_rate(q, host, sec)
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
