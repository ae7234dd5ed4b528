-- The one recipe of a job's state change.
-- @include line
-- @include events

-- Settle a job that reached a terminal state (see history.lua, which defines it; a
-- script that passes `settle` to transition() includes history).
local settle

-- Move job `id` of queue `q` from state `from` (nil: a new job) to `to`, at `now`:
-- its queue's counters and indexes, its hash (`o.fields`, a flat list, written with
-- the state in one HSET), its place in line when it becomes WAITING (`o.keep_place`:
-- back at its old place; `o.priority`, `o.weight`: a new job's priority and its
-- tenant's fair-share weight, its hash not yet written), the event (attempt `o.attempt`, extra fields `o.event`), and, given the
-- policy `o.settle`, settling a terminal state (counts, dependents, history;
-- `o.has_dependents`, the job's field of that name, when the caller read it).
-- `o.score` is a DELAYED job's due time. Returns the queue's count of `to` and the
-- event's queue sequence.
-- A job that opens (is made, or retried) or closes (ends) is counted in its tenant's
-- open jobs (`o.owner`: the tenant, when the caller has it), which quotas read.
local function transition(id, q, from, to, now, o)
  local owner = o.owner or hget(k_job(id), 'owner')
  local opens = (from == nil or TERMINAL[from]) and not TERMINAL[to]
  local closes = from ~= nil and not TERMINAL[from] and TERMINAL[to]
  if owner and (opens or closes) then
    if incr(k_tenant(owner), 'open', opens and 1 or -1) < 0 then
      cset(k_tenant(owner), 'open', 0)  -- (jobs made before the count began)
    end
  end
  local fields = o.fields or {}
  if to == 'WAITING' then enter_line(id, q, o.keep_place, now, o.priority, fields, owner, o.weight) end
  local count = move(id, q, from, to, now, o.score, fields, owner)
  local _, qseq = emit(id, q, 'state', to, o.attempt, o.event or {}, now)
  if o.settle and TERMINAL[to] then settle(id, q, to, o.settle, now, count, o.has_dependents) end
  return count, qseq
end
