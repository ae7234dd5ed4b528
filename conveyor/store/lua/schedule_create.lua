-- Create a schedule. ARGV: prefix, id, owner, name, cron, time zone, template (the
-- serialized SubmitJobRequest, also each job's spec), job json (create_job's input,
-- without id and request id), delay ms, next run ms, most schedules per owner.
-- Returns 1, or the error 'too_many'.
local id, owner = ARGV[2], ARGV[3]
local ks = P .. ':schedule:' .. id
local k_owner = P .. ':schedules:owner:' .. owner
if redis.call('ZCARD', k_owner) >= tonumber(ARGV[11]) then
  return redis.error_reply('too_many')
end
local next_run = tonumber(ARGV[10])
redis.call('HSET', ks, 'id', id, 'owner', owner, 'name', ARGV[4], 'cron', ARGV[5], 'tz', ARGV[6],
  'template', ARGV[7], 'job', ARGV[8], 'delay_ms', ARGV[9], 'paused', 0, 'next_run', int(next_run),
  'created', int(now_ms()), 'runs', 0)
-- Ids start with their creation time in hex: the owner's index lists them in order.
redis.call('ZADD', k_owner, 0, id)
redis.call('ZADD', P .. ':schedules:due', int(next_run), id)
return 1
