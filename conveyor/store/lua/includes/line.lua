-- Counters, per-state indexes and the line of waiting jobs.
-- @include base

local PRIORITY_SHIFT = 17592186044416  -- 2^44: waiting score = priority * 2^44 + FIFO counter

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

-- Leave the in-flight set (handed over or running): frees a slot of the queue and
-- of the job's kind (`kind`, when the caller knows it; refresh_capacity() recounts
-- the kinds' in-flight jobs anyway).
local function leave_inflight(id, q, kind)
  if redis.call('ZREM', K_INFLIGHT, id) == 1 then
    redis.call('HINCRBY', k_queue(q), 'inflight', -1)
    if kind then redis.call('HINCRBY', K_KIND_INFLIGHT, kind, -1) end
  end
end
