-- heartbeat: an executor's heartbeat registers it with its slots, keeps its running
-- jobs from being taken for stalled, and beats its Dramatiq worker heartbeat (the
-- executor id is its Dramatiq worker id: see reap.lua for what a stale one means).
--   ARGV[1]  key prefix
--   ARGV[2]  executor id
--   ARGV[3]  slots
--   ARGV[4]  time to live ms
--   ARGV[5]  stall timeout ms
--   ARGV[6]  info (JSON)
--   ARGV[7]  Dramatiq namespace
--   ARGV[8]  the kinds it serves (a JSON list)
--   ARGV[9…] job id, attempt pairs: the jobs it runs
-- Reply: the ids among those that the executor should stop: cancel asked, or no
-- longer its own (recovered as stalled, deleted).
-- @include admission

local executor, slots = ARGV[2], ARGV[3]
local ttl_ms, stall_ms, info = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local now = now_ms()
redis.call('ZADD', K_EXECUTORS, int(now + ttl_ms), executor)
redis.call('ZADD', ARGV[7] .. ':__heartbeats__', int(now), executor)
local kx = k_executor(executor)
local running = {}
for i = 9, #ARGV, 2 do running[#running + 1] = ARGV[i] end
redis.call('HSET', kx, 'slots', slots, 'info', info, 'seen', int(now), 'jobs', cjson.encode(running),
  'kinds', ARGV[8])
redis.call('PEXPIRE', kx, int(ttl_ms * 10))
refresh_capacity(now)
local stop = {}
for i = 9, #ARGV, 2 do
  local id, attempt = ARGV[i], ARGV[i + 1]
  local kj = k_job(id)
  local state, cur, worker, cancel = unpack(redis.call('HMGET', kj, 'state', 'attempt', 'worker', 'cancel'))
  if state == 'ACTIVE' and cur == attempt and worker == executor then
    redis.call('ZADD', K_INFLIGHT, 'XX', int(now + stall_ms), id)
    if cancel == '1' then stop[#stop + 1] = id end
  else
    stop[#stop + 1] = id
  end
end
return stop
