-- Give a FAILED or CANCELLED job a fresh set of attempts; its attempt number keeps
-- counting. ARGV: prefix, id. Returns {state, position} or an error reply
-- 'state:<STATE>' / 'missing'.
local id = ARGV[2]
local refused = retry_job(id, now_ms())
if refused == 'missing' then return redis.error_reply('missing') end
if refused then return redis.error_reply('state:' .. refused) end
return {'WAITING', position(id, hget(k_job(id), 'queue'))}
