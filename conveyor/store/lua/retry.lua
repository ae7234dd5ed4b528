-- retry: give a FAILED or CANCELLED job a fresh set of attempts; its attempt number
-- keeps counting.
--   ARGV[1]  key prefix
--   ARGV[2]  job id
--   ARGV[3]  the API key that asks ('' for none)
-- Reply: {state, position}.
-- Refusals: JOB_NOT_FOUND <id>; JOB_STATE <id> <state> (it has not failed or been cancelled).
-- @include retry_job

local id = ARGV[2]
local refused = retry_job(id, now_ms(), nil, nil, ARGV[3])
if refused == 'missing' then return refuse('JOB_NOT_FOUND', id) end
if refused then return refuse('JOB_STATE', id, refused) end
return {'WAITING', position(id, hget(k_job(id), 'queue'))}
