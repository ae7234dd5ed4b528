-- Create a schedule. ARGV: prefix, id, owner, name, cron, time zone, template (the
-- serialized SubmitJobRequest, also each job's spec), job json (create_job's input,
-- without id and request id), delay ms, next run ms, most schedules per owner,
-- request id ('' for none).
-- Returns {id, existing (0|1)}: the schedule made, or the one the request id already
-- made (for 24 h); or the error 'too_many'.
local id, owner, request_id = ARGV[2], ARGV[3], ARGV[12]
local k_req
if request_id ~= '' then
  k_req = P .. ':schedule-req:' .. owner .. ':' .. request_id
  local existing = redis.call('GET', k_req)
  if existing and redis.call('EXISTS', P .. ':schedule:' .. existing) == 1 then
    return {existing, 1}
  end
end
local ks = P .. ':schedule:' .. id
local k_owner = P .. ':schedules:owner:' .. owner
if redis.call('ZCARD', k_owner) >= tonumber(ARGV[11]) then
  return redis.error_reply('too_many')
end
if k_req then redis.call('SET', k_req, id, 'EX', 86400) end
local next_run = tonumber(ARGV[10])
redis.call('HSET', ks, 'id', id, 'owner', owner, 'name', ARGV[4], 'cron', ARGV[5], 'tz', ARGV[6],
  'template', ARGV[7], 'job', ARGV[8], 'delay_ms', ARGV[9], 'paused', 0, 'next_run', int(next_run),
  'created', int(now_ms()), 'runs', 0)
-- Ids start with their creation time in hex: the owner's index lists them in order.
redis.call('ZADD', k_owner, 0, id)
redis.call('ZADD', P .. ':schedules:due', int(next_run), id)
return {id, 0}
