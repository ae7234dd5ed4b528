-- An executor claims a handed-over job before running it. Duplicate or stale
-- deliveries (wrong attempt, not handed over, cancelled, gone) claim nothing.
-- ARGV: prefix, id, attempt, executor id, stall timeout ms
-- Returns {1, spec, timeout_ms, limit, kind, queue} or {0, reason}.
return claim_job(ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), now_ms())
