-- submit: create a job (see create_job).
--   ARGV[1]  key prefix
--   ARGV[2]  the job (JSON, as NewJob.to_json writes it)
--   ARGV[3]  its spec (the serialized SubmitJobRequest)
-- Reply: {id, state, position, existing (0|1)}.
-- Refusals: DUPLICATE_JOB <id>; REQUEST_ID_REUSED <id>; QUOTA_EXCEEDED <tenant> <most>;
-- RATE_EXCEEDED <tenant> <most>.
-- @include create

return create_job(cjson.decode(ARGV[2]), ARGV[3], now_ms())
