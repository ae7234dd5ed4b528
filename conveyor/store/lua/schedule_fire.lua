-- schedule_fire: fire one occurrence of a schedule: claim it and create its job, in
-- one step. The claim is a compare-and-set of next_run from the expected value to the
-- new one: of several gateways firing the same occurrence, one creates the job and
-- the others get {}.
--   ARGV[1]  key prefix
--   ARGV[2]  schedule id
--   ARGV[3]  expected next run ms (the occurrence)
--   ARGV[4]  new next run ms (the first occurrence after now, computed by the caller)
--   ARGV[5]  new job id
-- Reply: {job id, state, existing (0|1), duplicate of} ('' job id and state
-- 'DUPLICATE' when the template's dedup key refused the job), or {} when there is
-- nothing to fire.
-- Refusals: NEXT_RUN_NOT_AFTER <new> <expected> (the caller's next run is wrong).
-- @include create

local sid = ARGV[2]
local expected, new_next = tonumber(ARGV[3]), tonumber(ARGV[4])
local ks = k_schedule(sid)
local next_run, paused, owner = unpack(redis.call('HMGET', ks, 'next_run', 'paused', 'owner'))
if not owner or paused == '1' or not next_run then
  -- Deleted or paused meanwhile: nothing to fire.
  redis.call('ZREM', K_SCHEDULES_DUE, sid)
  return {}
end
local now = now_ms()
if tonumber(next_run) ~= expected then
  -- Fired by someone else first: the due set already says (or now says) when next.
  redis.call('ZADD', K_SCHEDULES_DUE, next_run, sid)
  return {}
end
if expected > now then return {} end
if new_next <= expected then return refuse('NEXT_RUN_NOT_AFTER', ARGV[4], ARGV[3]) end

local j = cjson.decode(hget(ks, 'job'))
j.id = ARGV[5]
j.owner = owner
-- One job per occurrence, whatever happens: a repeated fire finds this request id.
j.request_id = 'schedule:' .. sid .. ':' .. int(expected)
if type(j.labels) ~= 'table' then j.labels = {} end
j.labels.schedule_id = sid
local delay = tonumber(hget(ks, 'delay_ms')) or 0
j.run_at = 0
if delay > 0 then j.run_at = now + delay end

local created = create_job(j, hget(ks, 'template'), now)
local out
if created.err then
  local other = string.match(created.err, '^CONVEYOR DUPLICATE_JOB (%S+)$')
  if not other then return created end
  out = {'', 'DUPLICATE', 0, other}
else
  out = {created[1], created[2], created[4], ''}
end
redis.call('HSET', ks, 'next_run', int(new_next), 'last_run', int(now), 'last_job', out[1])
redis.call('HINCRBY', ks, 'runs', 1)
redis.call('ZADD', K_SCHEDULES_DUE, int(new_next), sid)
return out
