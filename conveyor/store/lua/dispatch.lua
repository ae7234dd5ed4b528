-- Admission: hand waiting jobs to the executors, only as many as they have free
-- slots, and only as many of one queue as its concurrency allows. Queues take turns,
-- one job each, highest priority (then oldest) first within a queue.
-- ARGV: prefix, max jobs this call, default queue concurrency, handover timeout ms
-- Returns a flat list {id1, attempt1, id2, attempt2, ...}.
local max_jobs = tonumber(ARGV[2])
local default_limit = tonumber(ARGV[3])
local handover_ms = tonumber(ARGV[4])
local now = now_ms()

-- Live executors and their slots; forget the silent ones.
local expired = redis.call('ZRANGEBYSCORE', K_EXECUTORS, '-inf', now)
for _, ex in ipairs(expired) do
  redis.call('ZREM', K_EXECUTORS, ex)
  redis.call('DEL', P .. ':executor:' .. ex)
end
local capacity = 0
for _, ex in ipairs(redis.call('ZRANGE', K_EXECUTORS, 0, -1)) do
  capacity = capacity + (tonumber(hget(P .. ':executor:' .. ex, 'slots')) or 0)
end
local free = math.min(capacity - redis.call('ZCARD', K_INFLIGHT), max_jobs)
if free <= 0 then return {} end

local out = {}
local queues = redis.call('SMEMBERS', K_READY_QUEUES)
local open = {}
for _, q in ipairs(queues) do
  local kq = k_queue(q)
  local paused, limit, inflight = unpack(redis.call('HMGET', kq, 'paused', 'concurrency', 'inflight'))
  limit = tonumber(limit) or default_limit
  if limit <= 0 then limit = default_limit end
  if paused ~= '1' then
    open[#open + 1] = {q = q, room = limit - (tonumber(inflight) or 0)}
  end
end

local progress = true
while free > 0 and progress do
  progress = false
  for _, entry in ipairs(open) do
    if free > 0 and entry.room > 0 then
      local popped = redis.call('ZPOPMIN', k_index(entry.q, 'waiting'))
      if #popped == 0 then
        entry.room = 0
        redis.call('SREM', K_READY_QUEUES, entry.q)
      else
        local id = popped[1]
        local kj = k_job(id)
        local attempt = tonumber(hget(kj, 'attempt')) + 1
        redis.call('HSET', kj, 'handed', 1)
        redis.call('ZADD', K_INFLIGHT, int(now + handover_ms), id)
        redis.call('HINCRBY', k_queue(entry.q), 'inflight', 1)
        out[#out + 1] = id
        out[#out + 1] = attempt
        entry.room = entry.room - 1
        free = free - 1
        progress = true
      end
    end
  end
end
return out
