-- Create a job. ARGV: prefix, id, queue, owner, priority (1..5), attempt limit,
-- timeout ms, run_at ms (0: now), spec (serialized request), request id, kind, labels json
-- Returns {id, state, position, existing (0|1)}.
local id, q, owner = ARGV[2], ARGV[3], ARGV[4]
local priority, limit, timeout_ms = ARGV[5], ARGV[6], ARGV[7]
local run_at = tonumber(ARGV[8])
local spec, request_id, kind, labels = ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local now = now_ms()

if request_id ~= '' then
  local k_req = P .. ':req:' .. owner .. ':' .. request_id
  local existing = redis.call('GET', k_req)
  if existing and redis.call('EXISTS', k_job(existing)) == 1 then
    local eq = hget(k_job(existing), 'queue')
    return {existing, hget(k_job(existing), 'state'), position(existing, eq), 1}
  end
  redis.call('SET', k_req, id, 'EX', 86400)
end

local kj = k_job(id)
redis.call('HSET', kj, 'id', id, 'queue', q, 'owner', owner, 'priority', priority,
  'attempt', 0, 'limit', limit, 'max', limit, 'timeout_ms', timeout_ms, 'created', int(now),
  'progress', 0, 'seq', 0, 'spec', spec, 'kind', kind, 'labels', labels,
  'request_id', request_id, 'cancel', 0, 'handed', 0)
redis.call('ZADD', K_JOBS, int(now), id)
redis.call('ZADD', k_index(q, 'jobs'), int(now), id)
redis.call('ZADD', K_QUEUES, 'NX', int(now), q)

local state
if run_at > now then
  state = 'DELAYED'
  redis.call('HSET', kj, 'run_at', int(run_at))
  move(id, q, nil, 'DELAYED', now, run_at)
else
  state = 'WAITING'
  move(id, q, nil, 'WAITING', now)
  enter_line(id, q, false)
end
emit(id, q, 'state', state, 0, {}, now)
return {id, state, position(id, q), 0}
