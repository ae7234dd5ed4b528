-- submit_many: create several jobs in one step (create_job for each, in order), and,
-- when asked, admit waiting jobs after them (as submit.lua does). SubmitJobs sends its
-- jobs in calls of a few dozen (job_store.py's SUBMIT_CHUNK): one call's clock, one
-- read and one write of each counter hash its jobs touch (cache_load, base.lua)
-- instead of four HINCRBYs a job, and the fair-share state of a queue's priority read
-- once and its tenants' clocks written once, its queue marked ready once (BATCH,
-- base.lua).
--   ARGV[1]  key prefix
--   ARGV[2]  n, the jobs in this call
--   ARGV[3…2+2n] each job (JSON, as NewJob.to_json writes it) then its spec (the
--            serialized SubmitJobRequest)
--   ARGV[3+2n…] optional: the policy arguments (transport_args); given, admit() runs
--            after the creates
-- Reply: one entry per job, in order: {id, state, position, existing (0|1)} as
-- submit.lua answers, or {refusal} for a job refused (the text of the error reply
-- submit.lua would give: 'CONVEYOR DUPLICATE_JOB <id>', REQUEST_ID_REUSED,
-- QUOTA_EXCEEDED, RATE_EXCEEDED). A refused job wrote nothing; the others are made.
-- @include create
-- @include admission

local now = now_ms()
local n = tonumber(ARGV[2])
local out = {}
cache_open()
BATCH = {fair = {}, ready = {}, first = {}}  -- (what need be read or written once: see base.lua)
for i = 1, n do
  local j = cjson.decode(ARGV[1 + 2 * i])
  local q, owner = j.queue, j.owner
  -- The counters create_job moves (transition, move, emit): read once per hash.
  cache_load(k_tenant(owner), {'open'})
  cache_load(k_queue(q), {'qseq', 'WAITING', 'DELAYED', 'CANCELLED'})
  cache_load(k_queue_tenant(q, owner), {'WAITING', 'DELAYED', 'CANCELLED'})
  local reply = create_job(j, ARGV[2 + 2 * i], now)
  if reply.err then
    local text = reply.err
    if string.byte(text) == 45 then text = string.sub(text, 2) end  -- ('-', as some versions add)
    reply = {text}
  end
  out[i] = reply
end
cache_flush()
fair_flush()
if #ARGV >= 2 + 2 * n + TRANSPORT_ARGC then admit(transport_args(3 + 2 * n), now) end
return out
