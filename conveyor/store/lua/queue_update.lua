-- queue_update: change a queue's settings (the queue is created on first use), or
-- a tenant's settings in it.
--   ARGV[1]  key prefix
--   ARGV[2]  queue
--   ARGV[3]  tenant ('' for the queue's own settings): a tenant's 'paused' holds its
--            jobs in line and its 'concurrency' caps how many of them run at once in
--            this queue (see tenant_room in includes/admission.lua)
--   ARGV[4…] field, value pairs among: paused (0|1), concurrency (0: the default),
--            host_rate_limit (navigations per second to one host; 0: none; the queue's only)
-- Reply: {the queue's hash, the tenant's hash in it ({} without a tenant)}, as flat
--   field/value lists read right after the change: the caller answers with the queue
--   as this change left it, not as a later read finds it (a resume's waiting jobs may
--   be running by then).
-- @include base

local q, tenant = ARGV[2], ARGV[3]
redis.call('ZADD', K_QUEUES, 'NX', int(now_ms()), q)
local key = tenant ~= '' and k_queue_tenant(q, tenant) or k_queue(q)
for i = 4, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
return {redis.call('HGETALL', k_queue(q)), tenant ~= '' and redis.call('HGETALL', key) or {}}
