-- Creating jobs: request ids, deduplication keys, dependencies, the first state.
-- @include status
-- @include transition

-- What a request id made, for a repeat of the request: {id, state, position,
-- existing = 1}; the refusal REQUEST_ID_REUSED when the repeat's body differs from
-- the first's; nil when the record names no job (the create goes ahead). The record,
-- '<job id> <fingerprint> [<final state>]', outlives its job (see delete_job).
local function made_by_request(k_req, fingerprint)
  local record = redis.call('GET', k_req)
  if not record then return nil end
  local made, first, final = string.match(record, '^(%S+) ?(%S*) ?(%S*)$')
  if not made then return nil end
  if first ~= '' and first ~= '-' and first ~= fingerprint then
    return refuse('REQUEST_ID_REUSED', made)
  end
  local state, q = unpack(redis.call('HMGET', k_job(made), 'state', 'queue'))
  if state then return {made, state, position(made, q), 1} end
  if final ~= '' then return {made, final, 0, 1} end
  return nil
end

-- Create a job. `j` (decoded JSON): id, queue, owner, priority, max_attempts,
-- timeout_ms, run_at (ms; 0 now), request_id, kind, labels (object), and optionally
-- dedup_key, dedup_window_ms, dedup_return_existing, depends_on (array of ids),
-- hosts (array), weight (its tenant's fair-share weight, 1-10; 1 by default), trace (its
-- trace context, conveyor/tracing.py; kept as the field `trace` for the executor's
-- claim). `spec` is the serialized request (its SHA-1 is the request's
-- fingerprint, for request ids).
-- Returns {id, state, position, existing (0|1)}, or the refusals DUPLICATE_JOB <id>
-- (a deduplication key), REQUEST_ID_REUSED <id> (the request id made that job from
-- another request), QUOTA_EXCEEDED <tenant> <most> (`max_open`: the most open jobs a
-- tenant may have) and RATE_EXCEEDED <tenant> <most> (`max_rate`: the most jobs it may
-- submit in a second); 0 for no limit.
local function create_job(j, spec, now)
  local id, q, owner = j.id, j.queue, j.owner
  -- The id is the caller's: a create sent again (a client retrying after a lost
  -- reply) answers with the job it made the first time.
  if redis.call('EXISTS', k_job(id)) == 1 then
    local eq = hget(k_job(id), 'queue')
    return {id, hget(k_job(id), 'state'), position(id, eq), 1}
  end
  local k_req, fingerprint
  if j.request_id and j.request_id ~= '' then
    k_req = k_request(owner, j.request_id)
    fingerprint = redis.sha1hex(spec)
    local made = made_by_request(k_req, fingerprint)
    if made then return made end
  end
  -- The tenant's quota of open (waiting, delayed or running) jobs: refused before
  -- anything is written.
  local max_open = tonumber(j.max_open) or 0
  if max_open > 0 and (tonumber(cget(k_tenant(owner), 'open')) or 0) >= max_open then
    return refuse('QUOTA_EXCEEDED', owner, max_open)
  end
  -- Its submit rate: at most `max_rate` new jobs in one second of Redis's clock (a job
  -- refused for it is not counted).
  local max_rate = tonumber(j.max_rate) or 0
  if max_rate > 0 then
    local window = k_tenant(owner) .. ':rate:' .. math.floor(now / 1000)
    if (tonumber(redis.call('GET', window)) or 0) >= max_rate then
      return refuse('RATE_EXCEEDED', owner, max_rate)
    end
    redis.call('INCR', window)
    redis.call('PEXPIRE', window, 2000)
  end
  local k_dedup_key
  if j.dedup_key and j.dedup_key ~= '' then
    k_dedup_key = k_dedup(owner, q, j.dedup_key)
    local other = redis.call('GET', k_dedup_key)
    if other then
      -- The key is held while its job has not ended, and until the end of its window.
      local st, held_until = unpack(redis.call('HMGET', k_job(other), 'state', 'dedup_until'))
      if st and (not TERMINAL[st] or (tonumber(held_until) or 0) > now) then
        if j.dedup_return_existing then
          return {other, st, position(other, q), 1}
        end
        return refuse('DUPLICATE_JOB', other)
      end
    end
    redis.call('SET', k_dedup_key, id)
  end
  if k_req then redis.call('SET', k_req, id .. ' ' .. fingerprint, 'EX', REQUEST_ID_TTL_S) end

  -- The job hash is written once, with its state (by transition(), below). Fields at
  -- their default are left out (a smaller hash): 'progress' 0, 'cancel' 0, 'handed' 0,
  -- 'labels' {} and 'request_id' '' (their readers take a missing field as that); the
  -- id is the key's (get.lua adds it to what it reads).
  local created = int(now)
  local h = {'queue', q, 'owner', owner, 'priority', num(j.priority),
    'attempt', '0', 'limit', num(j.max_attempts), 'max', num(j.max_attempts), 'timeout_ms', num(j.timeout_ms),
    'created', created, 'spec', spec, 'kind', j.kind}
  local function set(k, v) h[#h + 1] = k; h[#h + 1] = v end
  if j.labels and next(j.labels) then set('labels', cjson.encode(j.labels)) end
  if j.request_id and j.request_id ~= '' then set('request_id', j.request_id) end
  if k_dedup_key then
    set('dedup', k_dedup_key)
    set('dedup_until', int(now + (tonumber(j.dedup_window_ms) or 0)))
  end
  if j.hosts and #j.hosts > 0 then set('hosts', cjson.encode(j.hosts)) end
  local weight = tonumber(j.weight) or 1
  if weight ~= 1 then set('weight', num(weight)) end  -- its tenant's fair-share weight (see fair_tag)
  if j.trace and j.trace ~= '' then set('trace', j.trace) end  -- read back by claim_job (executor.lua)
  redis.call('ZADD', K_JOBS, created, id)
  redis.call('ZADD', k_index(q, 'jobs'), created, id)
  redis.call('ZADD', k_index(q, 'kind:' .. j.kind), created, id)  -- ListJobs by kind
  -- ListJobs of one tenant pages within its own jobs: in all, in a queue, of a kind in
  -- a queue, by label (and in a state: see move()).
  redis.call('ZADD', k_owner_jobs(owner), created, id)
  redis.call('ZADD', k_index(q, 'owner:' .. owner), created, id)
  redis.call('ZADD', k_index(q, 'kind:' .. j.kind .. ':owner:' .. owner), created, id)
  for key, value in pairs(j.labels or {}) do redis.call('ZADD', k_owner_label(owner, key, value), created, id) end

  -- Dependencies: completed ones are met; a failed or cancelled one cancels this job.
  local pending, broken = 0, nil
  for _, dep in ipairs(j.depends_on or {}) do
    local st = hget(k_job(dep), 'state')
    if st == 'FAILED' or st == 'CANCELLED' or not st then
      broken = broken or dep
    elseif st ~= 'COMPLETED' then
      pending = pending + 1
      redis.call('SADD', k_job_dependents(dep), id)
      redis.call('HSET', k_job(dep), 'has_dependents', 1)
    end
  end
  if j.depends_on and #j.depends_on > 0 then
    set('depends_on', cjson.encode(j.depends_on))
    set('deps_pending', pending)
  end

  local run_at = tonumber(j.run_at) or 0
  if run_at > now then set('run_at', int(run_at)) end
  local o = {attempt = 0, fields = h, priority = tonumber(j.priority), owner = owner, weight = weight}
  local state
  if broken then
    state = 'CANCELLED'
    local err = status_bytes(1, 'DEPENDENCY_FAILED', 'job ' .. broken .. ', which this job depends on, failed, ' ..
      'was cancelled or does not exist', {dependency = broken})
    set('error', err)
    set('ended', int(now))
    o.event = {'e', err}
  elseif pending > 0 then
    state = 'DELAYED'
    o.event = {'m', 'waiting for ' .. pending .. ' job(s) it depends on'}
  elseif run_at > now then
    state = 'DELAYED'
    o.score = run_at
  else
    state = 'WAITING'
  end
  local _, qseq = transition(id, q, nil, state, now, o)
  -- The queue's first event: a queue is known from its first job on (or from its
  -- first UpdateQueue, queue_update.lua).
  if qseq == 1 then redis.call('ZADD', K_QUEUES, 'NX', created, q) end
  return {id, state, position(id, q), 0}
end
