-- submit: create a job (see create_job), and, when asked, admit waiting jobs at once
-- (admit(), as dispatch.lua does: a new job that may run is handed to a free slot in
-- the same step, without waiting for a gateway's admission round).
--   ARGV[1]  key prefix
--   ARGV[2]  the job (JSON, as NewJob.to_json writes it)
--   ARGV[3]  its spec (the serialized SubmitJobRequest)
--   ARGV[4…13] optional: the policy arguments (transport_args); given, admit() runs
--            after the create (whatever it made: it also serves the jobs submitted
--            before it in the same pipeline)
-- Reply: {id, state, position, existing (0|1)} (the state and position as created,
-- before any admission).
-- Refusals: DUPLICATE_JOB <id>; REQUEST_ID_REUSED <id>; QUOTA_EXCEEDED <tenant> <most>;
-- RATE_EXCEEDED <tenant> <most>.
-- @include create
-- @include admission

local now = now_ms()
local reply = create_job(cjson.decode(ARGV[2]), ARGV[3], now)
if #ARGV >= 3 + TRANSPORT_ARGC then admit(transport_args(4), now) end
return reply
