-- queue_update: change a queue's settings (the queue is created on first use).
--   ARGV[1]  key prefix
--   ARGV[2]  queue
--   ARGV[3…] field, value pairs among: paused (0|1), concurrency (0: the default),
--            host_rate_limit (navigations per second to one host; 0: none)
-- Reply: 1.
-- @include base

local q = ARGV[2]
redis.call('ZADD', K_QUEUES, 'NX', int(now_ms()), q)
for i = 3, #ARGV, 2 do
  redis.call('HSET', k_queue(q), ARGV[i], ARGV[i + 1])
end
return 1
