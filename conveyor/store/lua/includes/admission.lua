-- Admission and hand-over: the executors' capacity, and handing waiting jobs to the
-- executors' free slots as Dramatiq messages (the policy arguments: transport.lua).
-- @include line
-- @include transport

-- Forget the executors that went silent, and sum the slots of the live ones into
-- K_CAPACITY, and per kind they serve into K_KIND_CAPACITY (read by every admit()).
-- Run by every heartbeat and every reap, so a dead executor's slots stop counting
-- within a second of its time-to-live. With `recount` (the reaps, about once a second
-- per gateway: not every executor's heartbeat, as the in-flight set may be large), the
-- kinds' in-flight counts are recounted from the in-flight set, so none drifts for long.
local function refresh_capacity(now, recount)
  for _, ex in ipairs(redis.call('ZRANGEBYSCORE', K_EXECUTORS, '-inf', now)) do
    redis.call('ZREM', K_EXECUTORS, ex)
    redis.call('DEL', k_executor(ex))
  end
  local capacity, by_kind = 0, {}
  for _, ex in ipairs(redis.call('ZRANGE', K_EXECUTORS, 0, -1)) do
    local slots, kinds = unpack(redis.call('HMGET', k_executor(ex), 'slots', 'kinds'))
    slots = tonumber(slots) or 0
    capacity = capacity + slots
    for _, kind in ipairs(kinds and cjson.decode(kinds) or {}) do by_kind[kind] = (by_kind[kind] or 0) + slots end
  end
  redis.call('SET', K_CAPACITY, capacity)
  local flat = {}
  for kind, slots in pairs(by_kind) do flat[#flat + 1] = kind; flat[#flat + 1] = slots end
  redis.call('DEL', K_KIND_CAPACITY)
  if #flat > 0 then redis.call('HSET', K_KIND_CAPACITY, unpack(flat)) end
  if not recount then return end
  local kinds, tenants = {}, {}
  local function add(counts, key) counts[key] = (counts[key] or 0) + 1 end
  for _, id in ipairs(redis.call('ZRANGE', K_INFLIGHT, 0, -1)) do
    local kind, owner, q = unpack(redis.call('HMGET', k_job(id), 'kind', 'owner', 'queue'))
    if kind then add(kinds, kind) end
    if owner and q then
      add(tenants, owner)
      add(tenants, q .. ' ' .. owner)
    end
  end
  for key, counts in pairs({[K_KIND_INFLIGHT] = kinds, [K_TENANT_INFLIGHT] = tenants}) do
    flat = {}
    for name, n in pairs(counts) do flat[#flat + 1] = name; flat[#flat + 1] = n end
    redis.call('DEL', key)
    if #flat > 0 then redis.call('HSET', key, unpack(flat)) end
  end
end

-- The Dramatiq queue jobs of `kind` travel on (the executors serving that kind take
-- from it): the transport queue's name, a dot, the kind.
local function kind_queue(t, kind) return t.queue .. '.' .. kind end

-- Every Dramatiq queue jobs travel on: the transport queue (messages sent with
-- Dramatiq's own API) and one per kind executors have published.
local function transport_queues(t)
  local queues = {t.queue}
  for _, kind in ipairs(redis.call('HKEYS', K_KINDS)) do queues[#queues + 1] = kind_queue(t, kind) end
  return queues
end

-- Write the Dramatiq message "run attempt `attempt` of job `id`" straight into the
-- broker's queue of the job's kind (its layout: <ns>:<queue> list of ids,
-- <ns>:<queue>.msgs hash), in the same atomic step that marks the job handed over: a
-- job is never handed over without its message, nor sent twice for one hand-over.
local MESSAGE_HEADS = {}  -- actor -> Dramatiq queue -> the message's JSON up to its args (kept: a few)
local function hand_over(id, attempt, kind, now, t)
  -- Unique per hand-over: the same attempt is handed over again only after the
  -- hand-over timeout.
  local n = int(now)
  local mid = id .. '-' .. dec(attempt) .. '-' .. n
  local queue = kind_queue(t, kind)
  -- The message's JSON written out around its strings (each encoded by cjson, which
  -- escapes what needs it): a fraction of the cost of cjson encoding the whole table.
  local heads = MESSAGE_HEADS[t.actor]
  if not heads then
    heads = {}
    MESSAGE_HEADS[t.actor] = heads
  end
  local head = heads[queue]
  if not head then
    head = '{"queue_name":' .. cjson.encode(queue) .. ',"actor_name":' .. cjson.encode(t.actor) .. ',"args":['
    heads[queue] = head
  end
  local jmid = cjson.encode(mid)
  local msg = head .. cjson.encode(id) .. ',' .. dec(attempt) .. '],"kwargs":{},"options":{"redis_message_id":' ..
    jmid .. '},"message_id":' .. jmid .. ',"message_timestamp":' .. n .. '}'
  local qkey = t.ns .. ':' .. queue
  redis.call('HSET', qkey .. '.msgs', mid, msg)
  redis.call('RPUSH', qkey, mid)
end

-- What tenants may start now, for one admission (cached in `room`, which admit()
-- keeps up to date as it hands jobs over): the most jobs a tenant may run at once
-- (`most`, 0: no limit), and, within a queue, what its operators set: paused, its own
-- concurrency (0: the queue's).
local function tenant_room(room, q, owner, most)
  if most > 0 and room[owner] == nil then
    room[owner] = most - (tonumber(cget(K_TENANT_INFLIGHT, owner)) or 0)
  end
  local key = q .. ' ' .. owner
  if room[key] == nil then
    local paused, limit = unpack(redis.call('HMGET', k_queue_tenant(q, owner), 'paused', 'concurrency'))
    limit = tonumber(limit) or 0
    if paused == '1' then
      room[key] = 0
    elseif limit > 0 then
      room[key] = limit - (tonumber(cget(K_TENANT_INFLIGHT, key)) or 0)
    else
      room[key] = math.huge
    end
  end
  if most > 0 then return math.min(room[key], room[owner]) end
  return room[key]
end

-- The next job of a queue's line that may start now, taken out of the line: the
-- first one whose tenant may start one (tenant_room), whose kind has room on the
-- executors serving it (`kind_room`: kind -> free slots) and, under the queue's
-- per-host navigation rate (`rate` per second; a job's hosts are those it navigates
-- to), whose hosts are under it. Only the first SCAN jobs of the line are looked at;
-- when a tenant that may not start more jobs held some of them back, the first jobs
-- of each of the first SCAN tenants' own lines as well (so a tenant at its limit,
-- however many jobs it has waiting, holds nobody else up). Returns its id, kind,
-- tenant and attempt so far; nil when nothing within reach may start.
local SCAN = 50
local SCAN_PER_TENANT = 5
local function take_next(q, rate, now, kind_room, room, most)
  local line = k_index(q, 'waiting')
  local sec = math.floor(now / 1000)
  local held_by_tenant = false
  -- The job `id` if it may start now: its kind, tenant, attempt so far; else nil.
  local function admissible(id)
    local kind, attempt, hosts, owner = unpack(redis.call('HMGET', k_job(id), 'kind', 'attempt', 'hosts', 'owner'))
    owner = owner or ''
    if tenant_room(room, q, owner, most) <= 0 then
      held_by_tenant = true
      return nil
    end
    if not kind or (kind_room[kind] or 0) <= 0 then return nil end
    local windows = {}
    if rate > 0 then
      for _, host in ipairs(hosts and cjson.decode(hosts) or {}) do
        local window = k_rate(q, host, sec)
        if (tonumber(redis.call('GET', window)) or 0) >= rate then return nil end
        windows[#windows + 1] = window
      end
    end
    for _, window in ipairs(windows) do
      redis.call('INCR', window)
      redis.call('PEXPIRE', window, 2000)
    end
    return kind, owner, tonumber(attempt)
  end
  local function take(id, kind, owner, attempt, popped)
    line_remove(id, q, owner, popped)
    return id, kind, owner, attempt
  end
  -- The head of the line first (nearly always the one: taken out as it is read, and
  -- put back at its place when it may not start), then the next few.
  local first = redis.call('ZPOPMIN', line)
  local head = first[1]
  if not head then return nil end
  local kind, owner, attempt = admissible(head)
  if kind then return take(head, kind, owner, attempt, true) end
  redis.call('ZADD', line, first[2], head)
  local candidates = redis.call('ZRANGE', line, 1, SCAN - 1)
  for _, id in ipairs(candidates) do
    kind, owner, attempt = admissible(id)
    if kind then return take(id, kind, owner, attempt) end
  end
  if not held_by_tenant or #candidates < SCAN - 1 then return nil end
  for _, tenant in ipairs(redis.call('ZRANGE', k_index(q, 'tenants'), 0, SCAN - 1)) do
    if tenant_room(room, q, tenant, most) > 0 then
      for _, id in ipairs(redis.call('ZRANGE', k_tenant_line(q, tenant), 0, SCAN_PER_TENANT - 1)) do
        kind, owner, attempt = admissible(id)
        if kind then return take(id, kind, owner, attempt) end
      end
    end
  end
  return nil
end

-- Admission: hand waiting jobs to the executors, only as many as they have free
-- slots (in all, and for each job's kind on the executors that serve it), and only
-- as many of one queue as its concurrency allows. Queues take turns, one job each,
-- highest priority (then oldest) first within a queue.
-- Returns a flat list {id1, attempt1, id2, attempt2, ...}.
local function admit(t, now)
  local capacity = tonumber(redis.call('GET', K_CAPACITY)) or 0
  local free = math.min(capacity - redis.call('ZCARD', K_INFLIGHT), t.max)
  local out = {}
  if free <= 0 then return out end

  local open = {}
  for _, q in ipairs(redis.call('SMEMBERS', K_READY_QUEUES)) do
    local paused, limit, inflight, rate = unpack(redis.call('HMGET', k_queue(q), 'paused', 'concurrency',
      'inflight', 'host_rate_limit'))
    local cached = CACHE[k_queue(q)]  -- (a finish's in-flight count, not yet written back)
    if cached and cached.v.inflight ~= nil then inflight = cached.v.inflight end
    limit = tonumber(limit) or t.limit
    if limit <= 0 then limit = t.limit end
    local room = limit - (tonumber(inflight) or 0)
    if paused ~= '1' and room > 0 then
      open[#open + 1] = {q = q, room = room, rate = tonumber(rate) or 0}
    end
  end
  -- Nothing may start (no waiting job, or every queue with some paused or full): the
  -- kinds' room is not read (the common case of a finish or a submit on a busy system).
  if #open == 0 then return out end

  local kind_room = {}
  local caps = redis.call('HGETALL', K_KIND_CAPACITY)
  for i = 1, #caps, 2 do kind_room[caps[i]] = tonumber(caps[i + 1]) end
  local busy = {}
  local flat = redis.call('HGETALL', K_KIND_INFLIGHT)
  for i = 1, #flat, 2 do busy[flat[i]] = tonumber(flat[i + 1]) end
  local cached = CACHE[K_KIND_INFLIGHT]  -- (a finish's in-flight counts, not yet written back)
  if cached then
    for kind, n in pairs(cached.v) do busy[kind] = n end
  end
  for kind, n in pairs(busy) do
    if kind_room[kind] then kind_room[kind] = kind_room[kind] - n end
  end

  local room = {}  -- what tenants may start (see tenant_room)
  local woken = {}
  local progress = true
  while free > 0 and progress do
    progress = false
    for oi = 1, #open do
      local entry = open[oi]
      if free > 0 and entry.room > 0 then
        local id, kind, owner, attempt = take_next(entry.q, entry.rate, now, kind_room, room, t.tenant_running)
        if not id then
          entry.room = 0
          if redis.call('ZCARD', k_index(entry.q, 'waiting')) == 0 then
            redis.call('SREM', K_READY_QUEUES, entry.q)
          end
        else
          attempt = attempt + 1
          redis.call('HSET', k_job(id), 'handed', '1')
          redis.call('ZADD', K_INFLIGHT, int(now + t.handover_ms), id)
          count_inflight(entry.q, kind, owner, 1)
          local key = entry.q .. ' ' .. owner
          room[key] = room[key] - 1
          if t.tenant_running > 0 then room[owner] = room[owner] - 1 end
          hand_over(id, attempt, kind, now, t)
          out[#out + 1] = id
          out[#out + 1] = attempt
          kind_room[kind] = kind_room[kind] - 1
          woken[kind] = (woken[kind] or 0) + 1
          entry.room = entry.room - 1
          free = free - 1
          progress = true
        end
      end
    end
  end
  -- Wake as many idle consumers of each kind's queue as it got new messages (bounded).
  for kind, n in pairs(woken) do
    local wake = t.ns .. ':' .. kind_queue(t, kind) .. '.wake'
    local tokens = {}
    for i = 1, math.min(n, 64) do tokens[i] = '1' end
    if redis.call('LPUSH', wake, unpack(tokens)) > 64 then redis.call('LTRIM', wake, 0, 63) end
  end
  return out
end
