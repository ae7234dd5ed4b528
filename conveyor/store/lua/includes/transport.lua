-- The Dramatiq transport as the scripts see it: the policy arguments, and the
-- bookkeeping of a delivery. (Apart from admission, so a script that only takes or
-- acknowledges messages does not define all of it.)
-- @include base

-- Where handed-over jobs go (a Dramatiq queue), how many finished jobs a queue keeps,
-- and the most jobs one tenant may run. The policy arguments are TRANSPORT_ARGC ARGV
-- values starting at `i`: max jobs, default queue concurrency, hand-over timeout ms,
-- Dramatiq namespace, Dramatiq queue, actor name, completed jobs kept,
-- failed/cancelled jobs kept, max age ms of finished jobs, the most jobs of one tenant
-- handed over or running at once (0: no limit).
local TRANSPORT_ARGC = 10
local function transport_args(i)
  return {max = tonumber(ARGV[i]), limit = tonumber(ARGV[i + 1]), handover_ms = tonumber(ARGV[i + 2]),
          ns = ARGV[i + 3], queue = ARGV[i + 4], actor = ARGV[i + 5],
          keep_completed = tonumber(ARGV[i + 6]), keep_failed = tonumber(ARGV[i + 7]),
          max_age_ms = tonumber(ARGV[i + 8]), tenant_running = tonumber(ARGV[i + 9])}
end

-- Dramatiq's bookkeeping of a delivery (its Redis layout, see transport.py): the
-- message a worker took off `queue` sits in that worker's ack set of the queue and in
-- the queue's message hash.
local function dramatiq_acks(t, worker, queue) return t.ns .. ':__acks__.' .. worker .. '.' .. queue end

-- Acknowledge a delivery, as Dramatiq's own ack does.
local function ack_delivery(t, worker, message_id, queue)
  if redis.call('SREM', dramatiq_acks(t, worker, queue), message_id) > 0 then
    redis.call('HDEL', t.ns .. ':' .. queue .. '.msgs', message_id)
  end
end
