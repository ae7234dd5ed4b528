-- Counters, per-state indexes and the line of waiting jobs.
-- @include base

-- A waiting job's score: priority * 2^44 + its fair-share start tag (see enter_line).
local PRIORITY_SHIFT = 17592186044416  -- 2^44
-- A tenant of weight w advances its own clock by FAIR_STEP / w per job: weights 1-10
-- divide it exactly. (The clock of a priority restarts from 0 each time its line is
-- empty; a line that never empties overflows its band after 2^44 / FAIR_STEP, about
-- 7 billion jobs.)
local FAIR_STEP = 2520

-- Move the per-queue counters and per-state indexes from one state to another, and
-- the job's tenant's (`owner`; read from the job when nil) counters and per-state
-- indexes in the queue (its WAITING jobs are its own line, see line_add; its ACTIVE
-- ones have none, see TENANT_STATE_INDEX).
-- `from` or `to` may be nil (a new job; a deleted job). `fields`, a flat list, is
-- written to the job hash with its new state; `popped`: the job was taken out of the
-- index of `from` already (trim_history's ZPOPMIN). Returns the queue's count of `to`.
local function move(id, q, from, to, now, to_score, fields, owner, popped)
  local kq = k_queue(q)
  owner = owner or hget(k_job(id), 'owner')
  local kt = owner and k_queue_tenant(q, owner)
  if from then
    incr(kq, from, -1)
    local idx = STATE_INDEX[from]
    if idx and not popped then redis.call('ZREM', k_index(q, idx), id) end
    if kt then
      incr(kt, from, -1)
      if TENANT_STATE_INDEX[from] then redis.call('ZREM', k_index(q, idx .. ':owner:' .. owner), id) end
    end
    if from == 'DELAYED' then redis.call('ZREM', K_DELAYED, id) end
  end
  local count
  if to then
    count = incr(kq, to, 1)
    local idx = STATE_INDEX[to]
    if idx then redis.call('ZADD', k_index(q, idx), int(to_score or now), id) end
    if kt then
      incr(kt, to, 1)
      if TENANT_STATE_INDEX[to] then
        redis.call('ZADD', k_index(q, idx .. ':owner:' .. owner), int(to_score or now), id)
      end
    end
    -- A DELAYED job with a due time is promoted by promote.lua; one without (waiting
    -- for the jobs it depends on) is released by release_dependents().
    if to == 'DELAYED' and to_score then redis.call('ZADD', K_DELAYED, int(to_score), id) end
    redis.call('HSET', k_job(id), 'state', to, unpack(fields or {}))
  end
  return count
end

-- The line of a queue is one sorted set of its waiting jobs (by score: their places,
-- which ZRANK reads); each tenant's jobs are also in a line of their own, and the
-- queue's 'tenants' set holds each tenant by the score of its first job, so that
-- admission can pass over a tenant that may not start more jobs (see take_next) at
-- the cost of one step per tenant, not per job.
local function line_add(id, q, owner, score)
  redis.call('ZADD', k_index(q, 'waiting'), score, id)
  redis.call('ZADD', k_tenant_line(q, owner), score, id)
  local first = BATCH and BATCH.first
  if first then  -- (a batch of creates: once per tenant, unless a job goes in ahead)
    local key = q .. ' ' .. owner
    local lowest = first[key]
    if lowest and lowest <= tonumber(score) then return end
    first[key] = tonumber(score)
  end
  redis.call('ZADD', k_index(q, 'tenants'), 'LT', score, owner)
end

-- Take job `id` of tenant `owner` out of the line (`popped`: out of the queue's line
-- already, its tenant's line still to do).
local function line_remove(id, q, owner, popped)
  if not popped then redis.call('ZREM', k_index(q, 'waiting'), id) end
  local line = k_tenant_line(q, owner)
  if redis.call('ZREM', line, id) == 0 then return end
  local first = redis.call('ZRANGE', line, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', k_index(q, 'tenants'), first[2], owner)
  else
    redis.call('ZREM', k_index(q, 'tenants'), owner)
  end
end

-- Fair share within a priority (start-time fair queueing): a job's start tag is the
-- later of the line's virtual time (the tag of the first job of its priority in line)
-- and the end of its tenant's previous job's turn (its tenant's clock, which each of
-- its jobs advances by FAIR_STEP / weight). So tenants take turns: a tenant with many
-- jobs waiting has them spread over its future turns, and another tenant's new job
-- goes in at the head's turn, not behind them. One tenant alone is FIFO. The line's
-- order is the order of the turns, so positions (ZRANK) stay exact.
-- The fair-share state of a priority in a queue is a hash: its epoch (a new one each
-- time its line was found empty, when the clocks start again from 0), the floor of
-- the clocks (for a line made before fair share, the last place in it), and each
-- tenant's clock. Returns the tag and the epoch.
local function fair_tag(q, priority, owner, weight)
  local lo = priority * PRIORITY_SHIFT
  local hi = lo + PRIORITY_SHIFT
  local line = k_index(q, 'waiting')
  local kf = k_index(q, 'fair:' .. dec(priority))
  -- In a batch of creates (BATCH, submit_many.lua), the epoch, the floor and the
  -- virtual time are read once per priority of a queue: jobs are only added to the
  -- line, each at or after the virtual time, so its first job's tag does not change.
  local memo = BATCH and BATCH.fair[kf]
  local epoch, floor, clock, virtual
  if memo then
    epoch, floor, virtual = memo.epoch, memo.floor, memo.virtual
    clock = memo.clocks[owner]
    if clock == nil then clock = tonumber(hget(kf, owner)) or false end
  else
    epoch, floor, clock = unpack(redis.call('HMGET', kf, 'epoch', 'floor', owner))
    local first = redis.call('ZRANGEBYSCORE', line, num(lo), '(' .. int(hi), 'WITHSCORES', 'LIMIT', '0', '1')
    if not first[1] then
      -- Nobody of this priority in line: every clock starts again, from 1 (a job of
      -- an earlier epoch coming back goes in at 0, in front), and a tenant's clock is
      -- forgotten with it, so a tenant gone quiet leaves nothing behind.
      epoch = (tonumber(epoch) or 0) + 1
      redis.call('DEL', kf)
      redis.call('HSET', kf, 'epoch', num(epoch), 'floor', '1')
      floor, clock, virtual = 1, nil, 1
    else
      virtual = tonumber(first[2]) - lo
      if not epoch then
        -- A line made before fair share (its places a counter): everyone's jobs go
        -- behind what is in it.
        local last = redis.call('ZREVRANGEBYSCORE', line, '(' .. int(hi), lo, 'WITHSCORES', 'LIMIT', 0, 1)
        epoch, floor = 1, tonumber(last[2]) - lo + 1
        redis.call('HSET', kf, 'epoch', epoch, 'floor', int(floor))
      end
    end
    epoch, floor = tonumber(epoch), tonumber(floor)
    if BATCH then
      memo = {epoch = epoch, floor = floor, virtual = virtual, clocks = {}}
      BATCH.fair[kf] = memo
    end
  end
  local tag = math.max(virtual, tonumber(clock) or floor or 0)
  local step = math.floor(FAIR_STEP / math.max(1, math.min(10, weight or 1)))
  if memo then
    memo.clocks[owner] = tag + step  -- (written once for the batch: fair_flush)
  else
    redis.call('HSET', kf, owner, int(tag + step))
  end
  return tag, epoch
end

-- The tenants' clocks a batch of creates moved (BATCH.fair), written once each.
local function fair_flush()
  for kf, memo in pairs(BATCH.fair) do
    local flat = {}
    for owner, clock in pairs(memo.clocks) do
      flat[#flat + 1] = owner
      flat[#flat + 1] = int(clock)
    end
    if #flat > 0 then redis.call('HSET', kf, unpack(flat)) end
  end
end

-- Put a WAITING job in line (its score: priority first, its fair-share turn within a
-- priority). A job that was already in line (a lost hand-over, a stalled run) keeps
-- its old place -- or, if its priority's line has been empty since (its clocks
-- started again), goes to the front of it (tag 0). Its place ('score', and 'fair_epoch') and
-- when it became ready go to its hash; a new job whose hash is still to be written
-- passes its priority, tenant and fair-share weight, and `into`, the flat list of
-- fields it will be written with, and they go there instead.
local function enter_line(id, q, keep_place, now, priority, into, owner, weight)
  local kj = k_job(id)
  local fields = into or {}
  local score
  if keep_place or not (priority and owner) then
    local p, o, w, s, e = unpack(redis.call('HMGET', kj, 'priority', 'owner', 'weight', 'score', 'fair_epoch'))
    priority, owner, weight = priority or tonumber(p), owner or o, weight or tonumber(w)
    if keep_place and s then
      score = tonumber(s)
      local band = math.floor(score / PRIORITY_SHIFT)
      local epoch = tonumber(hget(k_index(q, 'fair:' .. band), 'epoch')) or 1
      if epoch ~= (tonumber(e) or 1) then score = band * PRIORITY_SHIFT end
    end
  end
  owner = owner or ''
  if not score then
    local tag, epoch = fair_tag(q, priority, owner, weight)
    score = priority * PRIORITY_SHIFT + tag
    fields[#fields + 1] = 'score'
    fields[#fields + 1] = int(score)
    fields[#fields + 1] = 'fair_epoch'
    fields[#fields + 1] = num(epoch)
  end
  line_add(id, q, owner, int(score))
  if not (BATCH and BATCH.ready[q]) then
    redis.call('SADD', K_READY_QUEUES, q)
    if BATCH then BATCH.ready[q] = true end
  end
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

-- Count job `id` of `kind` and tenant `owner` in queue `q` as handed over or running
-- (`by` 1), or no longer (`by` -1).
local function count_inflight(q, kind, owner, by)
  incr(k_queue(q), 'inflight', by)
  if kind then incr(K_KIND_INFLIGHT, kind, by) end
  if owner then
    incr(K_TENANT_INFLIGHT, owner, by)
    incr(K_TENANT_INFLIGHT, q .. ' ' .. owner, by)
  end
end

-- Leave the in-flight set (handed over or running): frees a slot of the queue, of
-- the job's kind (`kind`, when the caller knows it; refresh_capacity() recounts the
-- kinds' and tenants' in-flight jobs anyway) and of its tenant (`owner`; read from the
-- job when nil).
local function leave_inflight(id, q, kind, owner)
  if redis.call('ZREM', K_INFLIGHT, id) == 1 then
    count_inflight(q, kind, owner or hget(k_job(id), 'owner'), -1)
  end
end
