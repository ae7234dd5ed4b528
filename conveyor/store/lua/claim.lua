-- claim: an executor claims a handed-over job before running it. Duplicate or stale
-- deliveries (wrong attempt, not handed over, cancelled, gone) claim nothing.
--   ARGV[1]  key prefix
--   ARGV[2]  job id
--   ARGV[3]  attempt
--   ARGV[4]  executor id
--   ARGV[5]  stall timeout ms
-- Reply: {1, spec, timeout_ms, limit, kind, queue, trace, waited_from} (see claim_job
-- in includes/executor.lua), or {0, reason} for a delivery
-- that runs nothing (an outcome of at-least-once delivery, not a refusal).
-- Its counters are read once per hash and written back once (cache_load, base.lua).
-- @include executor

cache_open()  -- the claim's counters, written back once (see base.lua)
local claimed = claim_job(ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), now_ms())
cache_flush()
return claimed
