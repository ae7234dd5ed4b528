-- take: an executor worker takes up to `count` handed-over messages off the Dramatiq
-- queue and claims their jobs, in one step (take_messages in includes/executor.lua:
-- Dramatiq's fetch followed by claim_job for each). finish.lua does the same after
-- ending attempts, for the slots they free.
-- A message whose claim is refused (a duplicate or stale delivery) is acknowledged
-- here and not returned, so a stale delivery costs the executor nothing. A message
-- whose id does not name a job goes to its actor as it is.
--   ARGV[1]  key prefix
--   ARGV[2]  most messages to take
--   ARGV[3]  worker id (the executor worker: Dramatiq's worker id for the ack set and
--            heartbeat, and the claimant of the jobs)
--   ARGV[4]  stall timeout ms
--   ARGV[5…14] the policy arguments (transport_args)
--   ARGV[15…] the Dramatiq queues to take from, in order (the transport queue and
--            the queues of the kinds the worker serves)
-- Reply: the number of messages popped, then 11 entries per message returned: data,
-- message id, the Dramatiq queue it came from, then 1, spec, timeout_ms, limit, kind,
-- queue, trace, waited_from for a claimed job (claim_job's reply), or 0 and seven
-- empty strings for a message that is not a hand-over (its actor then claims the job
-- itself).
-- The claims' counters are read once per hash and written back once (cache_load, base.lua).
-- @include transport
-- @include executor

local queues = {}
for q = 5 + TRANSPORT_ARGC, #ARGV do queues[#queues + 1] = ARGV[q] end
cache_open()  -- the claims' counters, written back once (see base.lua)
local taken = take_messages(transport_args(5), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), queues, now_ms())
cache_flush()
return taken
