-- schedule_create: create a schedule.
--   ARGV[1]   key prefix
--   ARGV[2]   schedule id
--   ARGV[3]   owner
--   ARGV[4]   name
--   ARGV[5]   cron expression
--   ARGV[6]   time zone
--   ARGV[7]   template (the serialized SubmitJobRequest, also each job's spec)
--   ARGV[8]   job JSON (create_job's input, without id and request id)
--   ARGV[9]   delay ms
--   ARGV[10]  next run ms
--   ARGV[11]  most schedules per owner
--   ARGV[12]  request id ('' for none)
--   ARGV[13]  the request's fingerprint (a repeat of the request has the same)
-- Reply: {id, existing (0|1)}: the schedule made, or the one the request id made
-- (for 24 h, whatever happened to it since).
-- Refusals: TOO_MANY_SCHEDULES <most>; REQUEST_ID_REUSED <id> (the request id made
-- that schedule from another request); SCHEDULE_DELETED <id> (the request id made
-- that schedule, since deleted).
-- @include base

local id, owner, request_id, fingerprint = ARGV[2], ARGV[3], ARGV[12], ARGV[13]
local k_req
if request_id ~= '' then
  k_req = k_schedule_request(owner, request_id)
  local made, first = string.match(redis.call('GET', k_req) or '', '^(%S+) ?(%S*)')
  if made then
    if first ~= '' and first ~= fingerprint then return refuse('REQUEST_ID_REUSED', made) end
    if redis.call('EXISTS', k_schedule(made)) == 0 then return refuse('SCHEDULE_DELETED', made) end
    return {made, 1}
  end
end
local ks = k_schedule(id)
local k_owner = k_owner_schedules(owner)
if redis.call('ZCARD', k_owner) >= tonumber(ARGV[11]) then
  return refuse('TOO_MANY_SCHEDULES', ARGV[11])
end
if k_req then redis.call('SET', k_req, id .. ' ' .. fingerprint, 'EX', REQUEST_ID_TTL_S) end
local next_run = tonumber(ARGV[10])
redis.call('HSET', ks, 'id', id, 'owner', owner, 'name', ARGV[4], 'cron', ARGV[5], 'tz', ARGV[6],
  'template', ARGV[7], 'job', ARGV[8], 'delay_ms', ARGV[9], 'paused', 0, 'next_run', int(next_run),
  'created', int(now_ms()), 'runs', 0)
-- Ids start with their creation time in hex: the owner's index lists them in order.
redis.call('ZADD', k_owner, 0, id)
redis.call('ZADD', K_SCHEDULES_DUE, int(next_run), id)
return {id, 0}
