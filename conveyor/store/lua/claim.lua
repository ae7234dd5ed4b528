-- An executor claims a handed-over job before running it. Duplicate or stale
-- deliveries (wrong attempt, not handed over, cancelled, gone) claim nothing.
-- ARGV: prefix, id, attempt, executor id, stall timeout ms
-- Returns {1, spec, timeout_ms, limit, kind, queue} or {0, reason}.
local id, attempt, executor = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local stall_ms = tonumber(ARGV[5])
local kj = k_job(id)
local state, handed, cur, q = unpack(redis.call('HMGET', kj, 'state', 'handed', 'attempt', 'queue'))
if not state then return {0, 'gone'} end
if state ~= 'WAITING' then return {0, 'state ' .. state} end
if handed ~= '1' then return {0, 'not handed over'} end
if tonumber(cur) + 1 ~= attempt then return {0, 'attempt ' .. attempt .. ' is stale'} end
local now = now_ms()
sample(q, 'wait', now - (tonumber(hget(kj, 'ready')) or now))
record_attempt(id, attempt, {start = int(now), worker = executor, outcome = 'ACTIVE'})
redis.call('HSET', kj, 'attempt', attempt, 'handed', 0, 'started', int(now), 'worker', executor,
  'progress', 0, 'pmsg', '')
redis.call('HDEL', kj, 'run_at')
redis.call('ZADD', K_INFLIGHT, int(now + stall_ms), id)
move(id, q, 'WAITING', 'ACTIVE', now)
emit(id, q, 'state', 'ACTIVE', attempt, {}, now)
local spec, timeout_ms, limit, kind = unpack(redis.call('HMGET', kj, 'spec', 'timeout_ms', 'limit', 'kind'))
return {1, spec, timeout_ms, limit, kind, q}
