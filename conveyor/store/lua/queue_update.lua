-- Change a queue's settings (created on first use). ARGV: prefix, queue, then
-- field/value pairs among: paused (0|1), concurrency (0: default), host_rate_limit
-- (navigations per second to one host; 0: none). Returns 1.
local q = ARGV[2]
redis.call('ZADD', K_QUEUES, 'NX', int(now_ms()), q)
for i = 3, #ARGV, 2 do
  redis.call('HSET', k_queue(q), ARGV[i], ARGV[i + 1])
end
return 1
