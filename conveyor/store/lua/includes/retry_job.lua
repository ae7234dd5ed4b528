-- Retrying a job that ended badly.
-- @include samples
-- @include transition

-- Give a FAILED or CANCELLED job a fresh set of attempts (its attempt number keeps
-- counting): `attempts` of them (nil: its own max_attempts), at `priority` (nil: its
-- own), asked by the API key `by` ('' for none). Returns nil, or the state that
-- refuses it ('missing' for no job).
local function retry_job(id, now, priority, attempts, by)
  local kj = k_job(id)
  local state, q, attempt, per_set = unpack(redis.call('HMGET', kj, 'state', 'queue', 'attempt', 'max'))
  if state ~= 'FAILED' and state ~= 'CANCELLED' then return state or 'missing' end
  seal_attempt(kj, attempt, state)  -- (its record is in the fields deleted here)
  redis.call('HDEL', kj, 'ended', 'result', 'error', 'started', 'run_at', 'score', 'cancel_error')
  local fields = {'limit', tonumber(attempt) + (attempts or tonumber(per_set)), 'cancel', 0, 'progress', 0,
    'pmsg', ''}
  if priority then
    fields[#fields + 1] = 'priority'
    fields[#fields + 1] = priority
  end
  local said = (by and by ~= '') and ('retry requested by key ' .. by) or 'retry requested'
  transition(id, q, state, 'WAITING', now, {attempt = tonumber(attempt), event = {'m', said},
    fields = fields, priority = priority})
  return nil
end
