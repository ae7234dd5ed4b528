-- Delete a queue's jobs of one finished state that ended before a time, with their
-- events and attempts (their ids go to the gc list for their artifacts).
-- ARGV: prefix, queue, state, ended before (ms), max jobs. Returns how many.
local q, state, before, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if not TERMINAL[state] then return redis.error_reply('state:' .. state) end
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', k_index(q, STATE_INDEX[state]), '-inf', before, 'LIMIT', 0, limit)) do
  n = n + delete_job(id)
end
return n
