-- A queue's history: settling jobs that ended, keeping it bounded, deleting jobs.
-- @include samples
-- @include dependents

-- Delete a job and everything of it: hash, events, attempts, indexes, counters, its
-- dedup key; its id goes to the gc list so its artifacts follow. Its request-id
-- record stays for its full time-to-live and learns the job's final state, so a
-- repeat of the request still answers with this job (see create_job).
local function delete_job(id, popped)
  local kj = k_job(id)
  local q, state, owner, request_id, dedup, kind, labels = unpack(redis.call('HMGET', kj, 'queue', 'state',
    'owner', 'request_id', 'dedup', 'kind', 'labels'))
  if not q then return 0 end
  if not TERMINAL[state] then return 0 end  -- only jobs that have ended
  move(id, q, state, nil, 0, nil, nil, owner, popped == state)
  redis.call('ZREM', K_JOBS, id)
  redis.call('ZREM', k_index(q, 'jobs'), id)
  if kind then redis.call('ZREM', k_index(q, 'kind:' .. kind), id) end
  if owner then
    redis.call('ZREM', k_owner_jobs(owner), id)
    redis.call('ZREM', k_index(q, 'owner:' .. owner), id)
    if kind then redis.call('ZREM', k_index(q, 'kind:' .. kind .. ':owner:' .. owner), id) end
    local ok, decoded = false, nil
    if labels then ok, decoded = pcall(cjson.decode, labels) end  -- (a job without labels has no field)
    if ok and type(decoded) == 'table' then
      for key, value in pairs(decoded) do redis.call('ZREM', k_owner_label(owner, key, tostring(value)), id) end
    end
  end
  if request_id and request_id ~= '' then
    local k_req = k_request(owner, request_id)
    local made, fingerprint = string.match(redis.call('GET', k_req) or '', '^(%S+) ?(%S*)')
    if made == id then
      redis.call('SET', k_req, id .. ' ' .. (fingerprint ~= '' and fingerprint or '-') .. ' ' .. state, 'KEEPTTL')
    end
  end
  if dedup and redis.call('GET', dedup) == id then redis.call('DEL', dedup) end
  redis.call('DEL', kj, k_job_events(id), k_job_dependents(id))
  redis.call('RPUSH', K_GC, id)
  return 1
end

-- Keep a queue's history bounded: the newest `keep` jobs of a finished state, none
-- older than max_age_ms. `count` is the queue's count of that state, when known.
local function trim_history(q, state, t, now, count)
  local keep = state == 'COMPLETED' and t.keep_completed or t.keep_failed
  local idx = k_index(q, STATE_INDEX[state])
  local excess = (count or redis.call('ZCARD', idx)) - keep
  local oldest_left  -- the score the jobs left in the index are at or above, when known
  if excess > 0 then
    -- Taken out of the state's index as they are read (ZPOPMIN: one command, not a
    -- ZRANGE and a ZREM each); one found in another state (never, but then) goes back.
    local popped = redis.call('ZPOPMIN', idx, num(math.min(excess, 100)))
    for i = 1, #popped, 2 do
      local old = popped[i]
      if delete_job(old, state) == 0 and hget(k_job(old), 'state') == state then
        redis.call('ZADD', idx, popped[i + 1], old)
      end
    end
    if #popped > 0 then oldest_left = tonumber(popped[#popped]) end
  end
  local cutoff = now - t.max_age_ms
  -- (None older than the cutoff when the last one popped was newer: not looked for.)
  if t.max_age_ms > 0 and not (oldest_left and oldest_left > cutoff) then
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', idx, '-inf', num(cutoff), 'LIMIT', '0', '100')) do
      delete_job(old)
    end
  end
end

-- A job reached `state` for good (COMPLETED, FAILED or CANCELLED): count it, settle
-- the jobs that depend on it, and keep its queue's history bounded (`count`, the
-- queue's count of jobs in that state, when the caller has it from move();
-- `has_dependents`, the job's field, when the caller read it). Declared in
-- transition.lua, which calls it for a transition given the policy.
settle = function(id, q, state, t, now, count, has_dependents)
  count_end(q, state, now)
  settle_dependents(id, state, now, has_dependents)
  trim_history(q, state, t, now, count)
end
