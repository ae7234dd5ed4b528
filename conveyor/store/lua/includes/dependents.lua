-- Jobs that wait for others (depends_on): released when those complete, cancelled
-- when one fails for good or is cancelled.
-- @include status
-- @include transition

-- A job completed: its dependents with nothing else pending become due (WAITING, or
-- DELAYED until their own run_at).
local function release_dependents(id, now)
  local k_deps = k_job_dependents(id)
  for _, child in ipairs(redis.call('SMEMBERS', k_deps)) do
    local kc = k_job(child)
    local st, q = unpack(redis.call('HMGET', kc, 'state', 'queue'))
    if st == 'DELAYED' and redis.call('HINCRBY', kc, 'deps_pending', -1) <= 0 then
      local run_at = tonumber(hget(kc, 'run_at')) or 0
      if run_at > now then
        redis.call('ZADD', K_DELAYED, int(run_at), child)
        redis.call('ZADD', k_index(q, 'delayed'), int(run_at), child)
      else
        transition(child, q, 'DELAYED', 'WAITING', now, {attempt = 0, event = {'m', 'the jobs it depends on completed'}})
      end
    end
  end
  redis.call('DEL', k_deps)
end

-- A job failed for good or was cancelled: every job waiting on it (and on those, in
-- turn) is CANCELLED, with the reason.
local function cancel_dependents(id, now)
  local todo = {id}
  while #todo > 0 do
    local parent = table.remove(todo)
    local k_deps = k_job_dependents(parent)
    for _, child in ipairs(redis.call('SMEMBERS', k_deps)) do
      local st, q = unpack(redis.call('HMGET', k_job(child), 'state', 'queue'))
      if st == 'DELAYED' then
        local err = status_bytes(1, 'DEPENDENCY_FAILED', 'job ' .. parent .. ', which this job depends on, ' ..
          'failed or was cancelled', {dependency = parent})
        transition(child, q, 'DELAYED', 'CANCELLED', now,
          {attempt = 0, fields = {'error', err, 'ended', int(now)}, event = {'e', err}})
        todo[#todo + 1] = child
      end
    end
    redis.call('DEL', k_deps)
  end
end

-- After a job reached a terminal state: settle the jobs that depend on it.
-- `has_dependents` is the job's field of that name, when the caller read it already.
local function settle_dependents(id, state, now, has_dependents)
  if (has_dependents or hget(k_job(id), 'has_dependents')) ~= '1' then return end
  if state == 'COMPLETED' then
    release_dependents(id, now)
  elseif state == 'FAILED' or state == 'CANCELLED' then
    cancel_dependents(id, now)
  end
end
