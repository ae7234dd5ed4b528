-- progress: a running attempt reports progress.
--   ARGV[1]  key prefix
--   ARGV[2]  job id
--   ARGV[3]  attempt
--   ARGV[4]  progress (0..100)
--   ARGV[5]  message
--   ARGV[6]  step index (-1: none)
--   ARGV[7]  step name
-- Reply: 1, or 0 when the attempt no longer runs (its report is dropped).
-- @include events

local id, attempt = ARGV[2], ARGV[3]
local kj = k_job(id)
local state, cur, q = unpack(redis.call('HMGET', kj, 'state', 'attempt', 'queue'))
if state ~= 'ACTIVE' or cur ~= attempt then return 0 end
local now = now_ms()
redis.call('HSET', kj, 'progress', ARGV[4], 'pmsg', ARGV[5])
local fields = {'p', ARGV[4], 'm', ARGV[5]}
if ARGV[6] ~= '-1' then
  fields[#fields + 1] = 'si'; fields[#fields + 1] = ARGV[6]
  fields[#fields + 1] = 'sn'; fields[#fields + 1] = ARGV[7]
end
emit(id, q, 'progress', 'ACTIVE', tonumber(attempt), fields, now)
return 1
