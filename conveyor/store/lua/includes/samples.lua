-- Statistics of a queue (timing samples, per-minute counts) and attempt records.
-- @include base
-- @include stats

local SAMPLES = 1000

-- A timing sample (ms) of a queue: 'wait' (ready to started) or 'run' (started to ended).
local function sample(q, kind, ms)
  local key = k_index(q, kind .. '-ms')
  if redis.call('LPUSH', key, int(ms)) > SAMPLES + 100 then redis.call('LTRIM', key, 0, SAMPLES - 1) end
  observe(q, kind, ms)
end

-- Count a job that ended (COMPLETED, FAILED for good, or CANCELLED) in its queue's
-- totals (count_total) and in its minute: a hash per queue of 'c:<minute>',
-- 'f:<minute>' and 'x:<minute>' (cancelled) counters. The first count of a minute
-- notes the queue's waiting jobs then ('w:<minute>', for the backlog's trend) and
-- drops the fields older than an hour, so the hash stays small.
local THROUGHPUT_MINUTES = 60
local END_FIELD = {COMPLETED = 'c:', FAILED = 'f:', CANCELLED = 'x:'}
local function count_end(q, state, now)
  local prefix = END_FIELD[state]
  if not prefix then return end
  count_total(q, state)
  local key = k_index(q, 'throughput')
  local minute = math.floor(now / 60000)
  local m = dec(minute)
  if incr(key, prefix .. m, 1) == 1 then
    redis.call('HSETNX', key, 'w:' .. m, cget(k_queue(q), 'WAITING') or 0)
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
