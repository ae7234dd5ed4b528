-- The executor side: claiming a handed-over job, and taking messages (Dramatiq's
-- delivery bookkeeping: transport.lua).
-- @include samples
-- @include transition
-- @include transport

-- Claim attempt `attempt` of a handed-over job for `executor` (see claim.lua). Returns
-- {1, spec, timeout_ms, limit, kind, queue, trace, waited_from} or {0, reason} (a
-- duplicate or stale delivery: an outcome, not a refusal). `trace` is the job's trace
-- context as create_job stored it ('' for none); `waited_from` (ms) is when this
-- attempt's wait began: the job's creation for the first attempt, else when it joined
-- the line again (the start of its "queue wait" span, conveyor/tracing.py).
local function claim_job(id, attempt, executor, stall_ms, now)
  local kj = k_job(id)
  local state, handed, cur, q, ready, spec, timeout_ms, limit, kind, run_at, trace, created, owner = unpack(
    redis.call('HMGET', kj, 'state', 'handed', 'attempt', 'queue', 'ready', 'spec', 'timeout_ms', 'limit', 'kind',
      'run_at', 'trace', 'created', 'owner'))
  if not state then return {0, 'gone'} end
  if state ~= 'WAITING' then return {0, 'state ' .. state} end
  if handed ~= '1' then return {0, 'not handed over'} end
  if tonumber(cur) + 1 ~= attempt then return {0, 'attempt ' .. attempt .. ' is stale'} end
  cache_load(k_queue(q), {'WAITING', 'ACTIVE', 'qseq'})  -- (see base.lua; nothing when loaded already)
  if owner then cache_load(k_queue_tenant(q, owner), {'WAITING', 'ACTIVE'}) end
  sample(q, 'wait', now - (tonumber(ready) or now))
  if run_at then redis.call('HDEL', kj, 'run_at') end
  redis.call('ZADD', K_INFLIGHT, int(now + stall_ms), id)
  local started = int(now)
  local h = {'attempt', num(attempt), 'handed', '0', 'started', started, 'worker', executor}
  if attempt > 1 then  -- an earlier attempt's progress (the first has none to clear)
    h[#h + 1] = 'progress'; h[#h + 1] = '0'; h[#h + 1] = 'pmsg'; h[#h + 1] = ''
  end
  -- (The attempt's record is the job's 'started' and 'worker' while it is the last: see
  -- attempt_fields in samples.lua.)
  transition(id, q, 'WAITING', 'ACTIVE', now, {attempt = attempt, owner = owner, fields = h})
  local waited_from = tonumber(ready) or now
  if attempt == 1 then waited_from = tonumber(created) or waited_from end
  return {1, spec, timeout_ms, limit, kind, q, trace or '', int(waited_from)}
end

-- Take up to `count` handed-over messages off the Dramatiq `queues` (in that order) for
-- executor worker `worker`, claiming their jobs (see take.lua, whose reply this is):
-- Dramatiq's fetch (its heartbeat, pop, ack set, message hash; see dispatch.lua in
-- Dramatiq) followed by claim_job for each.
local function take_messages(t, count, worker, stall_ms, queues, now)
  local out = {0}
  if count <= 0 then return out end
  redis.call('ZADD', t.ns .. ':__heartbeats__', int(now), worker)
  local function pass_on(data, mid, queue)
    local n = #out
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = data, mid, queue, 0
    for i = n + 5, n + 11 do out[i] = '' end
  end
  for qi = 1, #queues do
    local queue = queues[qi]
    if count <= 0 then break end
    local qkey = t.ns .. ':' .. queue
    local mids = redis.call('LPOP', qkey, num(count))
    if mids then
      count = count - #mids
      out[1] = out[1] + #mids
      local acks = dramatiq_acks(t, worker, queue)
      redis.call('SADD', acks, unpack(mids))
      local datas = redis.call('HMGET', qkey .. '.msgs', unpack(mids))
      for i = 1, #mids do
        local mid = mids[i]
        local data = datas[i]
        if data then
          local id, attempt = string.match(mid, '^(.+)-(%d+)-%d+$')
          if not id then
            pass_on(data, mid, queue)
          else
            local claim = claim_job(id, tonumber(attempt), worker, stall_ms, now)
            if claim[1] == 1 then
              out[#out + 1] = data
              out[#out + 1] = mid
              out[#out + 1] = queue
              for k = 1, #claim do out[#out + 1] = claim[k] end
            elseif claim[2] == 'gone' then
              -- No such job: an id shaped like a hand-over's that is not one (a message
              -- sent with Dramatiq's own API), or one whose job was deleted. Its actor decides.
              pass_on(data, mid, queue)
            else
              ack_delivery(t, worker, mid, queue)
            end
          end
        else
          redis.call('SREM', acks, mid)  -- acknowledged already (a duplicate id in the list)
        end
      end
    end
  end
  return out
end
