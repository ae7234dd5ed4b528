-- Statistics of a queue (timing samples, per-minute counts) and attempt records.
-- @include base

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
