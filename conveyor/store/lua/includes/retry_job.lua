-- Retrying a job that ended badly.
-- @include transition

-- Give a FAILED or CANCELLED job a fresh set of attempts (its attempt number keeps
-- counting). Returns nil, or the state that refuses it ('missing' for no job).
local function retry_job(id, now)
  local kj = k_job(id)
  local state, q, attempt, per_set = unpack(redis.call('HMGET', kj, 'state', 'queue', 'attempt', 'max'))
  if state ~= 'FAILED' and state ~= 'CANCELLED' then return state or 'missing' end
  redis.call('HDEL', kj, 'ended', 'result', 'error', 'started', 'run_at', 'score')
  transition(id, q, state, 'WAITING', now, {attempt = tonumber(attempt), event = {'m', 'retry requested'},
    fields = {'limit', tonumber(attempt) + tonumber(per_set), 'cancel', 0, 'progress', 0, 'pmsg', ''}})
  return nil
end
