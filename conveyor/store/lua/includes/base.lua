-- The base of every script: the key prefix, key names, clock, states, and the one
-- convention for refusals. Every script takes the key prefix as ARGV[1]; keys are
-- built here, in one place (conveyor/store/keys.py builds the same names for Python;
-- tests/test_store_scripts.py checks that they agree).
-- States are the proto names without the JOB_STATE_ prefix.
-- The scripts are one Redis function library (conveyor/store/scripts.py): what is
-- defined here and in the includes is made once, when the library loads, not on
-- every call. So nothing of one call may stay for the next: each command starts with
-- begin() (at the end of this file), which sets the call's arguments and prefix and
-- clears what a call keeps while it runs (the counter cache). What the library keeps
-- between calls depends on nothing but its own inputs (the digits of small integers,
-- SMALL; key names, QKEYS; the head of a Dramatiq message, MESSAGE_HEADS in admission.lua).

local ARGV  -- the call's arguments (a function's, given to begin())
local P  -- the key prefix, ARGV[1]

local function k_job(id) return P .. ':job:' .. id end
local function k_job_events(id) return P .. ':job:' .. id .. ':events' end
local function k_job_dependents(id) return P .. ':job:' .. id .. ':dependents' end
-- A queue's key names, made once and kept by the library (a lookup costs a third of
-- the concatenation and the new string): per queue, its hash's name (QKEYS[q][1]) and
-- its indexes'. Emptied when the prefix changes; once it holds KEY_MEMO_MAX names (the
-- tenants' indexes of a queue may be many), it keeps no more, and a new queue empties it.
local QKEYS, QKEYS_N, KEY_MEMO_MAX = {}, 0, 10000
local function queue_keys(q)
  local t = QKEYS[q]
  if t then return t end
  if QKEYS_N >= KEY_MEMO_MAX then QKEYS, QKEYS_N = {}, 0 end
  t = {P .. ':q:' .. q}
  QKEYS[q] = t
  QKEYS_N = QKEYS_N + 1
  return t
end
local function k_queue(q) return queue_keys(q)[1] end
local function k_index(q, name)
  local t = queue_keys(q)
  local k = t[name]
  if not k then
    k = t[1] .. ':' .. name
    if QKEYS_N < KEY_MEMO_MAX then
      t[name] = k
      QKEYS_N = QKEYS_N + 1
    end
  end
  return k
end
local function k_executor(ex) return P .. ':executor:' .. ex end
local function k_request(owner, request_id) return P .. ':req:' .. owner .. ':' .. request_id end
local function k_dedup(owner, q, key) return P .. ':dedup:' .. owner .. ':' .. q .. ':' .. key end
local function k_rate(q, host, sec) return P .. ':rate:' .. q .. ':' .. host .. ':' .. sec end
local function k_schedule(sid) return P .. ':schedule:' .. sid end
local function k_schedule_request(owner, request_id) return P .. ':schedule-req:' .. owner .. ':' .. request_id end
local function k_owner_schedules(owner) return P .. ':schedules:owner:' .. owner end
local function k_owner_jobs(owner) return P .. ':owner:' .. owner .. ':jobs' end  -- a tenant's jobs, by creation
local function k_tenant(owner) return P .. ':tenant:' .. owner end  -- a tenant's counters: 'open' jobs
-- A tenant's share of a queue: its counts per state, and what its operators set
-- ('paused', 'concurrency'); its jobs in line (by place) and its line's fair-share clock.
local function k_queue_tenant(q, owner) return P .. ':q:' .. q .. ':t:' .. owner end
local function k_tenant_line(q, owner) return P .. ':q:' .. q .. ':line:' .. owner end
-- A tenant's jobs with one label, by creation (ListJobs by label).
local function k_owner_label(owner, key, value)
  return P .. ':owner:' .. owner .. ':label:' .. #key .. ':' .. key .. '=' .. value
end
local function k_api_key(id) return P .. ':apikey:' .. id end
local function k_session(owner, name) return P .. ':session:' .. owner .. ':' .. name end  -- a saved session
local function k_owner_sessions(owner) return P .. ':sessions:owner:' .. owner end  -- its names, by expiry
local function k_api_key_hash(hash) return P .. ':apikey-hash:' .. hash end
-- The keys of one name under the prefix (set by set_prefix(), below):
--   K_JOBS, K_QUEUES, K_READY_QUEUES, K_INFLIGHT, K_DELAYED, K_EXECUTORS;
--   K_CAPACITY: the live executors' slots, summed by refresh_capacity();
--   K_KIND_CAPACITY: per kind, the slots of the live executors serving it;
--   K_KIND_INFLIGHT: per kind, its jobs handed over or running;
--   K_TENANT_INFLIGHT: per tenant ('<tenant>') and per tenant in a queue
--     ('<queue> <tenant>'), its jobs handed over or running;
--   K_KINDS: per kind, the spec its executors published (JSON);
--   K_CANCEL_CHANNEL; K_GC: ids of deleted jobs whose artifacts are still to be
--   removed; K_SCHEDULES_DUE; K_API_KEYS: every key's id, by creation time.
local K_JOBS, K_QUEUES, K_READY_QUEUES, K_INFLIGHT, K_DELAYED, K_EXECUTORS, K_CAPACITY, K_KIND_CAPACITY
local K_KIND_INFLIGHT, K_TENANT_INFLIGHT, K_KINDS, K_CANCEL_CHANNEL, K_GC, K_SCHEDULES_DUE, K_API_KEYS
local function set_prefix(prefix)
  if prefix == P then return end  -- (the same as the last call's: nearly always)
  P = prefix
  QKEYS, QKEYS_N = {}, 0
  K_JOBS, K_QUEUES, K_READY_QUEUES = P .. ':jobs', P .. ':queues', P .. ':ready-queues'
  K_INFLIGHT, K_DELAYED, K_EXECUTORS = P .. ':inflight', P .. ':delayed', P .. ':executors'
  K_CAPACITY, K_KIND_CAPACITY = P .. ':capacity', P .. ':capacity:kinds'
  K_KIND_INFLIGHT, K_TENANT_INFLIGHT = P .. ':inflight:kinds', P .. ':inflight:tenants'
  K_KINDS, K_CANCEL_CHANNEL, K_GC = P .. ':kinds', P .. ':cancel', P .. ':gc'
  K_SCHEDULES_DUE, K_API_KEYS = P .. ':schedules:due', P .. ':apikeys'
end

-- A request id (of a job or a schedule) answers with what it made for this long,
-- whatever has happened to that since.
local REQUEST_ID_TTL_S = 86400

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The digits of the integers 0 .. SMALL_INTS - 1 (counts, attempts, counters), each
-- formatted once, when first asked for, and kept by the library (string.format costs
-- more than the rest of a counter's update).
local SMALL_INTS = 4096
local SMALL = {}
local function small(n)
  local s = SMALL[n]
  if not s then
    s = string.format('%d', n)
    SMALL[n] = s
  end
  return s
end

-- Integers as exact decimal strings (tostring would switch to exponent form). The
-- same digits as '%.0f', which is costly (libc's exact float printing): an integral
-- value within 2^53 is printed as an integer ('%d'), a small one taken from SMALL,
-- and the last large one (most often the script's `now`) is remembered.
local int_n, int_s
local function int(n)
  if n % 1 == 0 and n >= 0 and n < SMALL_INTS then return small(n) end
  if n == int_n then return int_s end
  if n % 1 == 0 and n < 9007199254740992 and n > -9007199254740992 then
    int_n, int_s = n, string.format('%d', n)
    return int_s
  end
  return string.format('%.0f', n)
end

-- A command's numeric argument: integral, as int() prints it (the digits Redis's own
-- '%.17g' would print, without its cost); any other value as it is.
local function num(n)
  if type(n) == 'number' and n % 1 == 0 then
    if n >= 0 and n < SMALL_INTS then return small(n) end
    if n < 9007199254740992 and n > -9007199254740992 then return string.format('%d', n) end
  end
  return n
end

-- A number in a string built by concatenation, as Lua's own conversion ('%.14g')
-- would write it, without its cost for an integer (within 1e14).
local function dec(n)
  if n % 1 == 0 then
    if n >= 0 and n < SMALL_INTS then return small(n) end
    if n < 1e14 and n > -1e14 then return string.format('%d', n) end
  end
  return tostring(n)
end

local function hget(key, field) return redis.call('HGET', key, field) end

-- Counters of one hash that one step changes together (a state change moves a queue's
-- 'ACTIVE', 'COMPLETED', 'inflight', 'qseq'...): loaded once (one HMGET, cache_load),
-- changed here, written back once (one HSET, cache_flush), instead of one HINCRBY each.
-- Only in a script that opened the cache (cache_open; elsewhere cache_load does nothing),
-- only the fields loaded, and only until cache_flush, which that script calls before
-- it returns; while loaded, such a field is changed and read only through incr/cget/cset
-- (the writers: move, count_inflight, count_total, emit, observe, transition). Any other
-- field is its own HINCRBY, as before.
local CACHE = {}
local CACHING = false
-- A batch of creates' memo (submit_many.lua; nil in every other call) of what its
-- jobs' steps read or wrote once and need not again: `fair`, the fair-share state of a
-- queue's priority (fair_tag in line.lua); `ready`, the queues it marked ready; `first`,
-- per queue and tenant, the lowest place it gave the 'tenants' set (line_add).
local BATCH = nil
local function cache_open() CACHING = true end
local function cache_load(key, fields)
  if not CACHING then return end
  local c = CACHE[key]
  if not c then
    c = {v = {}, dirty = {}}
    CACHE[key] = c
  end
  local todo, v = {}, c.v
  for i = 1, #fields do  -- (numeric loops here and on hot paths: ipairs costs a C call a step)
    local f = fields[i]
    if v[f] == nil then
      v[f] = 0  -- (set from the HMGET below: so a field listed twice is read once)
      todo[#todo + 1] = f
    end
  end
  if #todo == 0 then return end
  local values = redis.call('HMGET', key, unpack(todo))
  for i = 1, #todo do v[todo[i]] = tonumber(values[i]) or 0 end
end

-- HINCRBY, or its cached equivalent: returns the new value.
local function incr(key, field, by)
  local c = CACHE[key]
  if c and c.v[field] ~= nil then
    c.v[field] = c.v[field] + by
    c.dirty[field] = true
    return c.v[field]
  end
  return redis.call('HINCRBY', key, field, num(by))
end

-- HSET of one counter that may be cached.
local function cset(key, field, value)
  local c = CACHE[key]
  if c and c.v[field] ~= nil then
    c.v[field] = value
    c.dirty[field] = true
  else
    redis.call('HSET', key, field, value)
  end
end

-- HGET of a counter that may be cached.
local function cget(key, field)
  local c = CACHE[key]
  if c and c.v[field] ~= nil then return int(c.v[field]) end
  return redis.call('HGET', key, field)
end

local function cache_flush()
  for key, c in pairs(CACHE) do
    local flat = {}
    for f in pairs(c.dirty) do
      flat[#flat + 1] = f
      flat[#flat + 1] = int(c.v[f])
    end
    if #flat > 0 then redis.call('HSET', key, unpack(flat)) end
  end
  CACHE = {}
  CACHING = false
end

-- The per-state index of a queue that a job in `state` sits in (WAITING has its own
-- priority-ordered set, filled by enter_line and emptied by admission or the caller).
local STATE_INDEX = {DELAYED = 'delayed', ACTIVE = 'active', COMPLETED = 'completed',
                     FAILED = 'failed', CANCELLED = 'cancelled'}
local TERMINAL = {COMPLETED = true, FAILED = true, CANCELLED = true}
-- The states whose jobs a tenant's own per-state index of a queue also holds (see
-- move()). Not ACTIVE: a queue's running jobs are few (its executors' slots bound
-- them), and ListJobs finds a tenant's among them by reading them (job_store.py's
-- TENANT_STATE_INDEXES says the same).
local TENANT_STATE_INDEX = {DELAYED = true, COMPLETED = true, FAILED = true, CANCELLED = true}

-- Refusals, the one reply convention of these scripts: what a script refuses to do
-- is an error reply 'CONVEYOR <REASON> <arg>...' (REASON one of the words that
-- conveyor/store/replies.py maps to a domain error; args without spaces). Every other
-- reply is data, described in the script's header.
local function refuse(reason, ...)
  local words = {'CONVEYOR', reason}
  for _, arg in ipairs({...}) do words[#words + 1] = tostring(arg) end
  return redis.error_reply(table.concat(words, ' '))
end

-- A command's first step: its arguments (ARGV[1] the key prefix), and nothing left
-- of the call before (a call that failed half-way may have left the cache open).
local function begin(args)
  ARGV = args
  set_prefix(args[1])
  CACHE = {}
  CACHING = false
  BATCH = nil
end
