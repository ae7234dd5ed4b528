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

-- The record of one attempt: fields '@<n>:<name>' of the job's hash ('start',
-- 'worker', 'end', 'outcome', 'error'), added to `into`, a flat list of fields about
-- to be written to it (by move()).
-- The job's last attempt has no such fields while it is the last: its record is the
-- job's own 'started', 'worker', 'ended', 'error' and state (records.py's
-- AttemptRecord.from_job_hash reads it so), so a claim and an end write none. An
-- attempt is written out as '@<n>:' fields when it ends and another may follow (a
-- retry, a stalled run: finish.lua, reap.lua) or when a job that ended has a fresh set
-- of attempts (seal_attempt, from retry_job), before those fields change.
local function attempt_fields(attempt, fields, into)
  for k, v in pairs(fields) do
    into[#into + 1] = '@' .. attempt .. ':' .. k
    into[#into + 1] = v
  end
  return into
end

-- Write out the record of the last attempt of job `kj` (its key), which ended in
-- `state`, as its '@<n>:' fields: what it has none of yet (all, nearly always).
local function seal_attempt(kj, attempt, state)
  if (tonumber(attempt) or 0) < 1 then return end
  local p = '@' .. attempt .. ':'
  local started, worker, ended, err, s, o = unpack(redis.call('HMGET', kj, 'started', 'worker', 'ended', 'error',
    p .. 'start', p .. 'outcome'))
  local record = {}
  if not s then
    record.start, record.worker = started or '0', worker or ''
  end
  if not o or o == 'ACTIVE' then
    record['end'], record.outcome = ended or '0', state
    if err and state ~= 'COMPLETED' then record.error = err end
  end
  local h = attempt_fields(attempt, record, {})
  if #h > 0 then redis.call('HSET', kj, unpack(h)) end
end
