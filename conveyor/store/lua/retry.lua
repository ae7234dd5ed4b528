-- Give a FAILED or CANCELLED job a fresh set of attempts; its attempt number keeps
-- counting. ARGV: prefix, id. Returns {state, position} or an error reply
-- 'state:<STATE>' / 'missing'.
local id = ARGV[2]
local kj = k_job(id)
local state, q, attempt, per_set = unpack(redis.call('HMGET', kj, 'state', 'queue', 'attempt', 'max'))
if not state then return redis.error_reply('missing') end
if state ~= 'FAILED' and state ~= 'CANCELLED' then return redis.error_reply('state:' .. state) end
local now = now_ms()
redis.call('HSET', kj, 'limit', tonumber(attempt) + tonumber(per_set), 'cancel', 0, 'progress', 0, 'pmsg', '')
redis.call('HDEL', kj, 'ended', 'result', 'error', 'started', 'run_at', 'score')
move(id, q, state, 'WAITING', now)
enter_line(id, q, false)
emit(id, q, 'state', 'WAITING', tonumber(attempt), {'m', 'retry requested'}, now)
return {'WAITING', position(id, q)}
